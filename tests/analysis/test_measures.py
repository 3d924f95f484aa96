"""Generalization measures: the registry, and each measure against an independent computation (sklearn, NumPy
rewrites of the PGDL entries' TensorFlow code, brute-force path enumeration, closed forms)."""
import itertools

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from sklearn.metrics import davies_bouldin_score
from torch import nn

from geomlat.analysis import _pgdl
from geomlat.analysis.measures import (
    MEASURES, alpha_req, compute_measures, nc1, pacbayes_mag_flatness, path_norm, rankme, register_measure,
    twonn_dimension,
)
from geomlat.registry import UnknownNameError


def clusters(n=90, d=6, c=3, seed=0, spread=0.5):
    g = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = g.normal(size=(c, d))[y] * 2 + spread * g.normal(size=(n, d))
    return x, y


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3)).double()


# ------------------------------------------------------------------------------------------ registry
def test_a_measure_is_one_registered_function_computed_by_name():
    @register_measure("test_mean_logit", sign=-1)
    def mean_logit(model, inputs, labels, *, layers, generator, scale=1.0):
        return scale * float(model(inputs).detach().mean())

    try:
        net, x = small_net(), torch.randn(20, 5, dtype=torch.float64)
        y = torch.arange(20) % 3
        out = compute_measures(net, x, y, ["test_mean_logit", "train_error"], options={"test_mean_logit": {"scale": 2.0}})
        assert out["test_mean_logit"] == pytest.approx(2 * float(net(x).mean()))
        assert out["train_error"] == pytest.approx(float((net(x).argmax(1) != y).double().mean()))
        assert MEASURES["test_mean_logit"].sign == -1 and net.training
        with pytest.raises(ValueError, match="already registered"):
            register_measure("test_mean_logit", mean_logit)
    finally:
        MEASURES.unregister("test_mean_logit")
    with pytest.raises(UnknownNameError, match="registered: "):
        compute_measures(net, x, y, ["no_such_measure"])
    with pytest.raises(ValueError, match="sign"):
        register_measure("bad_sign", lambda *a, **k: 0.0, sign=0)
    with pytest.raises(ValueError, match="needs at least 1 layer"):
        compute_measures(net, x, y, ["rankme"])


# ------------------------------------------------------------------------------------------ representations
def test_davies_bouldin_matches_sklearn():
    x, y = clusters()
    assert _pgdl.davies_bouldin(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(davies_bouldin_score(x, y))
    with pytest.raises(ValueError, match="2 to N - 1 classes"):
        _pgdl.davies_bouldin(torch.from_numpy(x), torch.zeros(len(x), dtype=torch.long))


def test_rankme_matches_its_formula_and_counts_the_rank():
    x, _ = clusters(d=8)
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(torch.from_numpy(x)) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    equal = np.linalg.qr(np.random.default_rng(1).normal(size=(50, 4)))[0]  # 4 equal singular values
    assert rankme(torch.from_numpy(equal)) == pytest.approx(4.0, rel=1e-5)


def test_alpha_req_recovers_a_constructed_power_law():
    n, d, alpha = 200, 30, 1.5
    lam = np.arange(1, d + 1) ** -alpha
    g = np.random.default_rng(0).normal(size=(n, d))
    q = np.linalg.qr(g - g.mean(0))[0]  # orthonormal, centered columns
    z = q * np.sqrt((n - 1) * lam)  # covariance exactly diag(lam)
    assert alpha_req(torch.from_numpy(z)) == pytest.approx(alpha, abs=1e-8)
    assert alpha_req(torch.from_numpy(z), fit=(3, 20)) == pytest.approx(alpha, abs=1e-8)


def test_nc1_matches_numpy_and_is_zero_when_classes_collapse():
    x, y = clusters(d=5)
    c = 3
    mu = np.stack([x[y == k].mean(0) for k in range(c)])
    sw = sum(np.outer(v - mu[k], v - mu[k]) for v, k in zip(x, y)) / len(x)
    sb = sum(np.outer(m - mu.mean(0), m - mu.mean(0)) for m in mu) / c
    assert nc1(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(np.trace(sw @ np.linalg.pinv(sb)) / c)
    collapsed = mu[y]
    assert nc1(torch.from_numpy(collapsed), torch.from_numpy(y)) == pytest.approx(0.0, abs=1e-12)


def test_twonn_matches_a_numpy_rewrite_and_finds_a_plane():
    g = np.random.default_rng(0)
    plane = g.uniform(size=(800, 2)) @ g.normal(size=(2, 10))
    dist, _ = cKDTree(plane).query(plane, k=3)
    mu = np.sort(dist[:, 2] / dist[:, 1])
    m = int(np.floor(len(mu) * 0.9))
    xs, ys = np.log(mu[:m]), -np.log(1 - np.arange(1, m + 1) / len(mu))
    ours = twonn_dimension(torch.from_numpy(plane))
    assert ours == pytest.approx((xs @ ys) / (xs @ xs))
    assert ours == pytest.approx(2.0, abs=0.25)


# ------------------------------------------------------------------------------------------ weights
def test_path_norm_equals_brute_force_path_enumeration():
    net = small_net()
    w = [m.weight.detach().numpy() for m in net if isinstance(m, nn.Linear)]
    total = 0.0
    for path in itertools.product(*(range(s) for s in (5, 7, 6, 3))):
        total += np.prod([w[l][path[l + 1], path[l]] ** 2 for l in range(3)])
    assert path_norm(net, (5,)) == pytest.approx(total)
    assert compute_measures(net, torch.randn(4, 5, dtype=torch.float64), torch.arange(4) % 3, ["path_norm"])["path_norm"] == pytest.approx(total)


def test_pacbayes_flatness_closed_form_on_a_quadratic():
    """loss(w) = (w - w0)^2 and eps = 0: the mean rise over the draws e_j at scale s is s^2 w0^2 mean(e_j^2),
    so the largest s with rise <= deviation is sqrt(deviation / (w0^2 mean e^2)) and the measure 1 / s^2."""
    w0 = 0.7
    p = nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    model = nn.Module()
    model.p = p
    loss = lambda m: ((m.p - w0) ** 2).sum()
    gen = torch.Generator().manual_seed(3)
    e2 = np.mean([float(torch.randn((1,), generator=gen, dtype=torch.float64)) ** 2 for _ in range(10)])
    value = pacbayes_mag_flatness(model, loss, deviation=0.1, samples=10, iterations=60, eps=0.0,
                                  generator=torch.Generator().manual_seed(3))
    assert value == pytest.approx(w0**2 * e2 / 0.1, rel=1e-6)
    assert float(p) == w0  # restored


# ------------------------------------------------------------------------------------------ PGDL entries
def np_knn_adjacency(m, k, symmetric):
    """Their knn_tf: top_k(k+1) threshold, >=, zero diagonal, optional clip(A + A^T)."""
    thr = -np.sort(-m, axis=1)[:, k][:, None]
    a = (m >= thr).astype(float)
    np.fill_diagonal(a, 0)
    return np.clip(a + a.T, 0, 1) if symmetric else a


def np_vr_smoothness(x, onehot, k=20):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = np.clip(u @ u.T, 0, 1)
    adj = np_knn_adjacency(cos, k, True) * cos
    lap = np.diag(adj.sum(1)) - adj
    return np.trace(onehot.T @ lap @ onehot) / (2 * 50 * 1000)


def np_wcv_smoothness(x, onehot, symmetric=True):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    r = (u * u).sum(1)[:, None]
    d = r - 2 * u @ u.T + r.T
    gamma = 1 / (3 * abs(np.std(d)))
    adj = np_knn_adjacency(np.exp(-gamma * d), 1, symmetric)
    deg = np.diag(adj.sum(1) ** -0.5)
    lap = np.eye(len(u)) - deg @ adj @ deg
    return np.clip(np.trace(onehot.T @ lap @ onehot) / 2000, 0, 1000)


@pytest.mark.parametrize("symmetric", [True, False])
def test_pgdl_smoothness_matches_numpy_rewrites_of_their_code(symmetric):
    x, y = clusters(n=120, d=10, spread=2.0)
    onehot = np.eye(3)[y]
    x2 = x + np.random.default_rng(5).normal(size=x.shape)
    t = lambda a: torch.from_numpy(a)
    assert _pgdl.smoothness_cosine_knn(t(x), t(onehot)) == pytest.approx(np_vr_smoothness(x, onehot))
    assert _pgdl.smoothness_rbf_1nn(t(x), t(onehot), symmetric) == pytest.approx(np_wcv_smoothness(x, onehot, symmetric))
    rate = abs(np_vr_smoothness(x, onehot) - np_vr_smoothness(x2, onehot))
    assert _pgdl.smoothness_rate([t(x), t(x2)], t(onehot)) == pytest.approx(rate)
    assert _pgdl.smoothness_max([t(x), t(x2)], t(onehot)) == pytest.approx(max(np_wcv_smoothness(x, onehot), np_wcv_smoothness(x2, onehot)))


def test_intraclass_mixup_pairs_and_input_mixup():
    x = torch.arange(12, dtype=torch.float64).view(6, 2)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    mx, my = _pgdl.intraclass_mixup_pairs(x, y)
    expected = {tuple(((x[i] + x[j]) / 2).tolist()) for i, j in itertools.combinations(range(6), 2) if y[i] == y[j]}
    assert {tuple(r.tolist()) for r in mx} == expected and len(mx) == 6
    assert my.bincount().tolist() == [3, 3] and bool((my[:3] == 0).all())  # 3 pairs per class, grouped by class
    mixed, soft = _pgdl.input_mixup(x, torch.eye(2, dtype=torch.float64)[y], 2.0, torch.Generator().manual_seed(0))
    assert torch.allclose(soft.sum(1), torch.ones(6, dtype=torch.float64))
    lam = soft[torch.arange(6), y]  # weight of the sample's own class: lambda (+ 1 - lambda if the partner shares it)
    assert bool(((lam >= 0) & (lam <= 1)).all())
