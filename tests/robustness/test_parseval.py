"""Parseval retraction (Cisse et al. 2017) and simplex projection (Duchi et al. 2008)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from torch import nn

from geomlat.robustness import ParsevalRetraction, parseval_step, project_aggregation_weights, project_simplex
from geomlat.robustness.parseval import parseval_retraction


def frame_error(w: torch.Tensor) -> float:
    w = w.reshape(w.shape[0], -1)
    return float(torch.linalg.matrix_norm(w @ w.T - torch.eye(w.shape[0], dtype=w.dtype)))


@pytest.mark.parametrize("shape", [(6, 20), (20, 6), (8, 3, 3, 3)])
def test_retraction_formula_and_convergence(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape, dtype=torch.float64) / np.sqrt(np.prod(shape[1:]))
    m = w.reshape(shape[0], -1)
    expected = (1.01 * m - 0.01 * m @ m.T @ m).reshape(shape)  # direct formula
    assert torch.allclose(parseval_retraction(w, 0.01), expected, atol=1e-12)
    # one step reduces ||W W^T - I||, iterating converges to a tight frame (rows orthonormal when out <= rest)
    assert frame_error(parseval_retraction(w, 0.05)) < frame_error(w)
    for _ in range(600):
        w = parseval_retraction(w, 0.2)
    m = w.reshape(shape[0], -1)
    if m.shape[0] <= m.shape[1]:
        assert frame_error(w) < 1e-8
    else:  # tall matrix: W^T W -> I (columns orthonormal); W W^T is then a projection
        assert torch.allclose(m.T @ m, torch.eye(m.shape[1], dtype=m.dtype), atol=1e-8)
    # singular values all -> 1 (the fixed points of s -> (1 + b) s - b s^3)
    assert torch.allclose(torch.linalg.svdvals(m), torch.ones(min(m.shape), dtype=m.dtype), atol=1e-8)


def test_parseval_step_on_model_and_hook():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 5))
    model.register_parameter("aggregation", nn.Parameter(torch.tensor([[0.9, 0.6], [-1.0, 0.2]])))
    frozen = nn.Linear(3, 3)
    frozen.weight.requires_grad_(False)
    model.add_module("frozen", frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    done = parseval_step(model, beta=0.01)
    assert done == ["0.weight", "2.weight"]  # dim > 1, trainable, not aggregation
    for name, p in model.named_parameters():
        if name in done:
            assert torch.allclose(p, parseval_retraction(before[name], 0.01))
        else:
            assert torch.equal(p, before[name])  # biases, frozen and aggregation untouched

    class Objective(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.model = m

    hook = ParsevalRetraction(beta=0.01)
    hook(Objective(model))
    agg = model.aggregation.detach()
    assert torch.allclose(agg, torch.tensor([[0.65, 0.35], [0.0, 1.0]]))  # projected rows
    assert torch.allclose(model[2].weight, parseval_retraction(parseval_retraction(before["2.weight"], 0.01), 0.01))
    with pytest.raises(ValueError, match="beta"):
        ParsevalRetraction(beta=0)


def brute_force_projection(v: np.ndarray) -> np.ndarray:
    n = len(v)
    res = minimize(lambda w: 0.5 * np.sum((w - v) ** 2), np.full(n, 1.0 / n), jac=lambda w: w - v,
                   bounds=[(0, None)] * n, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return res.x


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=7))
def test_simplex_projection_vs_scipy(values):
    v = torch.tensor(values, dtype=torch.float64)
    w = project_simplex(v)
    assert torch.all(w >= 0) and abs(float(w.sum()) - 1) < 1e-12
    ref = brute_force_projection(np.array(values))
    np.testing.assert_allclose(w.numpy(), ref, atol=1e-6)
    # optimality (KKT): v - w is constant (= theta) on the support and <= theta off it
    diff = (v - w).numpy()
    support = w.numpy() > 0
    theta = diff[support].mean()
    np.testing.assert_allclose(diff[support], theta, atol=1e-12)
    assert np.all(v.numpy()[~support] <= theta + 1e-12)


def test_simplex_projection_cases():
    assert torch.equal(project_simplex(torch.tensor([0.2, 0.3, 0.5])), torch.tensor([0.2, 0.3, 0.5]))
    assert torch.allclose(project_simplex(torch.tensor([2.0, 0.0])), torch.tensor([1.0, 0.0]))
    assert torch.allclose(project_simplex(torch.zeros(4)), torch.full((4,), 0.25))
    batch = torch.randn(5, 3)
    out = project_simplex(batch)
    assert torch.allclose(out, torch.stack([project_simplex(r) for r in batch]))
    assert torch.allclose(project_simplex(torch.tensor([3.0, 1.0]), radius=3.0), torch.tensor([2.5, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        project_simplex(torch.tensor([float("nan"), 1.0]))
    with pytest.raises(TypeError):
        project_simplex(torch.tensor([1, 2]))


def test_project_aggregation_weights_names():
    m = nn.Module()
    m.block_aggregation = nn.Parameter(torch.tensor([3.0, -1.0]))
    m.other = nn.Parameter(torch.tensor([3.0, -1.0]))
    assert project_aggregation_weights(m) == ["block_aggregation"]
    assert torch.allclose(m.block_aggregation, torch.tensor([1.0, 0.0]))
    assert torch.equal(m.other, torch.tensor([3.0, -1.0]))
