"""Generalization-measure statistics against scipy / brute force, and the baseline measures on known cases."""
import itertools
import math

import pytest
import torch
from scipy.stats import kendalltau
from torch import nn

from geomlat.analysis.generalization import (
    bootstrap_ci,
    early_stopping_regret,
    granulated_kendall,
    kendall_tau,
    output_margin,
    parameter_norm,
    selection_regret,
    sharpness_proxy,
)


def test_kendall_tau_equals_scipy_without_ties_and_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
    assert kendall_tau(a, b) == pytest.approx(kendalltau(a.numpy(), b.numpy()).statistic, abs=1e-12)
    assert kendall_tau(a, a) == 1.0 and kendall_tau(a, -a) == -1.0
    ta, tb = (a * 2).round(), (b * 2).round()  # ties
    pairs = [(i, j) for i in range(30) for j in range(30) if i != j]
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    want = sum(sign(float(ta[i] - ta[j])) * sign(float(tb[i] - tb[j])) for i, j in pairs) / len(pairs)
    assert kendall_tau(ta, tb) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        kendall_tau([1.0, float("nan")], [1.0, 2.0])


def test_granulated_kendall_on_a_grid():
    # 3 widths x 2 weight decays x 2 seeds; the target is ordered by width; the measure follows width exactly
    # but inverts weight decay, and is constant along the seed
    rows = list(itertools.product([1, 2, 4], [0.0, 1e-4], [0, 1]))
    width = [r[0] for r in rows]
    wd = [r[1] for r in rows]
    seed = [r[2] for r in rows]
    target = torch.tensor([-w + 0.1 * d * 1e4 + 0.01 * s for w, d, s in rows], dtype=torch.float64)
    measure = torch.tensor([-w - 0.1 * d * 1e4 for w, d, s in rows], dtype=torch.float64)
    out = granulated_kendall(measure, target, {"width": width, "wd": wd, "seed": seed})
    assert out["per_axis"]["width"] == pytest.approx(1.0)  # 4 groups of 3 widths, all concordant
    assert out["per_axis"]["wd"] == pytest.approx(-1.0)  # 6 groups of 2, all discordant
    assert out["per_axis"]["seed"] == pytest.approx(0.0)  # measure tied along the seed
    assert out["groups"] == {"width": 4, "wd": 6, "seed": 6}
    assert out["psi"] == pytest.approx(0.0)
    # brute-force one axis: groups by the other two
    taus = []
    for d, s in itertools.product([0.0, 1e-4], [0, 1]):
        idx = [i for i, r in enumerate(rows) if r[1] == d and r[2] == s]
        taus.append(kendall_tau(measure[idx], target[idx]))
    assert out["per_axis"]["width"] == pytest.approx(sum(taus) / len(taus))
    with pytest.raises(ValueError, match="axis 'width' has 2 values"):
        granulated_kendall(measure, target, {"width": [1, 2]})


def test_bootstrap_ci_covers_the_estimate_and_narrows_with_more_models():
    g = torch.Generator().manual_seed(1)
    widths = []
    for m in (20, 320):
        a = torch.randn(m, generator=g, dtype=torch.float64)
        b = a + torch.randn(m, generator=g, dtype=torch.float64)
        low, high = bootstrap_ci(kendall_tau, a, b, n_boot=300, seed=2)
        assert low <= kendall_tau(a, b) <= high and -1 <= low < high <= 1
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~ 1 / sqrt(M): 16x the models, about 4x narrower
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(kendall_tau, a, b, level=1.0)


def test_selection_and_early_stopping_regret():
    test_err = [0.30, 0.20, 0.25, 0.40]
    assert selection_regret([3.0, 1.0, 2.0, 4.0], test_err) == pytest.approx(0.0)
    assert selection_regret([1.0, 3.0, 2.0, 4.0], test_err) == pytest.approx(0.10)
    assert selection_regret([0.0, 0.0, 1.0, 1.0], test_err) == pytest.approx(0.05)  # tie: mean of 0.30 and 0.20
    assert selection_regret([1.0, 5.0, 2.0, 0.0], test_err, lower_is_better=False) == pytest.approx(0.0)
    curve = [0.5, 0.4, 0.35, 0.36, 0.37, 0.38, 0.2]
    test_curve = [0.5, 0.4, 0.30, 0.28, 0.29, 0.31, 0.35]
    out = early_stopping_regret(curve, test_curve, patience=3)
    assert out == {"selected": 2, "stop": 5, "regret": pytest.approx(0.02)}


def test_output_margin_and_parameter_norm():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.5]])
    assert output_margin(logits, torch.tensor([0, 0, 1])).tolist() == [1.0, -3.0, 0.0]
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.fill_(2.0)
        lin.bias.fill_(-1.0)
    assert parameter_norm(lin) == pytest.approx(6 * 4 + 2 * 1)
    with pytest.raises(ValueError, match="logits"):
        output_margin(torch.zeros(3), torch.zeros(3))


def test_sharpness_proxy_restores_weights_and_grows_with_sigma():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    before = [p.detach().clone() for p in model.parameters()]
    loss = lambda m: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    small = sharpness_proxy(model, loss, sigma=1e-3, n_samples=8)
    large = sharpness_proxy(model, loss, sigma=0.3, n_samples=8)
    for p, w in zip(model.parameters(), before):
        assert torch.equal(p, w)
    assert abs(small) < 1e-3 and large > 10 * abs(small)
    # a quadratic loss around the weights: E[loss(w + delta)] - loss(w) = sigma^2 sum w^2 exactly in expectation
    lin = nn.Linear(5, 1, bias=False)
    lin_w = lin.weight.detach().clone()
    quad = lambda m: ((m.weight - lin_w) ** 2).sum()  # noqa: E731
    est = sharpness_proxy(lin, quad, sigma=0.1, n_samples=4000, seed=1)
    assert est == pytest.approx(0.01 * float((lin_w ** 2).sum()), rel=0.1)
    assert not math.isnan(est)
