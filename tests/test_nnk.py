"""NNK graphs vs per-node scipy.optimize.nnls, closed forms on a line, and the authors' edge rule in NumPy."""
import numpy as np
import pytest
import scipy.optimize as so
import torch

import geomlat.nnk as nnk_module
from geomlat import knn
from geomlat.nnk import nnk_graph, nnk_interpolation, nnk_layer_errors, nnk_weights, solve_nnk_approx, solve_nnk_exact


def np_kernel(x: np.ndarray, kernel: str, sigma: float | None = None) -> np.ndarray:
    if kernel in ("cosine", "cosine_shifted"):
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        g = u @ u.T
        return g if kernel == "cosine" else 0.5 + 0.5 * g
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma**2))


def np_nnls_qp(K: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin_{t>=0} 1/2 t'Kt - b't via K = L L^T: equals min |L^T t - L^{-1} b|^2 (scipy NNLS)."""
    L = np.linalg.cholesky(K)
    return so.nnls(L.T, np.linalg.solve(L, b))[0]


def np_nnk(x: np.ndarray, neighbors: np.ndarray, kernel: str, sigma=None):
    """Directed NNK weights (N, N) and residuals (N,), node by node."""
    G = np_kernel(x, kernel, sigma)
    n = len(x)
    theta = np.zeros((n, n))
    err = np.zeros(n)
    for i in range(n):
        S = neighbors[i]
        t = np_nnls_qp(G[np.ix_(S, S)], G[S, i])
        t[t < 1e-10] = 0
        theta[i, S] = t
        err[i] = G[i, i] - 2 * t @ G[S, i] + t @ G[np.ix_(S, S)] @ t
    return theta, err


def dense(g, n):
    a = np.zeros((n, n))
    a[g.edge_index[0].numpy(), g.edge_index[1].numpy()] = g.edge_weight.double().numpy()
    return a


@pytest.mark.parametrize("kernel", ["cosine", "cosine_shifted", "rbf"])
def test_exact_weights_match_scipy_nnls(kernel):
    torch.manual_seed(0)
    x = torch.randn(120, 24, dtype=torch.float64)
    res = nnk_weights(x, 12, kernel=kernel, sigma=1.5 if kernel == "rbf" else None)
    theta, err = np_nnk(x.numpy(), res.neighbors.numpy(), kernel, 1.5)
    got = np.take_along_axis(theta, res.neighbors.numpy(), 1)
    np.testing.assert_allclose(res.weights.numpy(), got, atol=1e-5)
    np.testing.assert_allclose(res.residual.numpy(), err, atol=1e-8)
    assert (res.weights > 0).sum() < res.weights.numel()  # NNK actually prunes something here


def test_batched_solver_kkt_on_random_psd_systems():
    torch.manual_seed(1)
    a = torch.randn(200, 8, 5, dtype=torch.float64)  # rank 5 < 8: singular K
    K = a @ a.transpose(1, 2) + 1e-3 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(200, 8, dtype=torch.float64)
    theta, ok = solve_nnk_exact(K, b)
    assert bool(ok.all()) and bool((theta >= 0).all())
    for i in range(200):
        np.testing.assert_allclose(theta[i].numpy(), np_nnls_qp(K[i].numpy(), b[i].numpy()), atol=1e-6)


def count_fallback(monkeypatch) -> list:
    """Record the batch sizes handed to the Lawson-Hanson fallback of the exact solver."""
    calls = []
    original = nnk_module._solve_lawson_hanson

    def counted(K, b, *args):
        calls.append(K.shape[0])
        return original(K, b, *args)

    monkeypatch.setattr(nnk_module, "_solve_lawson_hanson", counted)
    return calls


def test_pivoting_matches_nnls_at_benchmark_shape(monkeypatch):
    # k = 30 candidates in d = 64 around a curved 8-dimensional manifold: the benchmark's regime, where
    # principal pivoting alone must reach the optimum (no fallback) and match per-node NNLS
    gen = torch.Generator().manual_seed(11)
    z = torch.randn(300, 8, generator=gen, dtype=torch.float64)
    x = torch.tanh(z @ torch.randn(8, 32, generator=gen, dtype=torch.float64)) @ torch.randn(32, 64, generator=gen, dtype=torch.float64)
    x = x + 0.01 * torch.randn(300, 64, generator=gen, dtype=torch.float64)
    calls = count_fallback(monkeypatch)
    res = nnk_weights(x, 30)
    theta, err = np_nnk(x.numpy(), res.neighbors.numpy(), "cosine")
    np.testing.assert_allclose(res.weights.numpy(), np.take_along_axis(theta, res.neighbors.numpy(), 1), atol=1e-8)
    np.testing.assert_allclose(res.residual.numpy(), err, atol=1e-10)
    assert calls == []
    kept = (res.weights > 0).sum(1).double().mean()
    assert 3 < kept < 25  # a real pruning problem: neither k-NN nor a single neighbor


def test_near_singular_systems_fall_back_and_stay_optimal(monkeypatch):
    # near-duplicate candidates make K_SS numerically singular: pivoting stops on a ~0 pivot and the
    # Lawson-Hanson fallback (with its ridge) takes over; the result must still be optimal
    gen = torch.Generator().manual_seed(12)
    base = torch.randn(40, 5, 8, generator=gen, dtype=torch.float64)
    twins = base[:, :3] + 1e-7 * torch.randn(40, 3, 8, generator=gen, dtype=torch.float64)
    a = torch.cat([base, twins], 1)  # candidates 5..7 within 1e-7 of 0..2: K = a a^T (8 x 8) nearly rank 5
    w = torch.randn(40, 8, generator=gen, dtype=torch.float64) + 1.0  # the center: b = a w, as for a kernel
    K, b = a @ a.transpose(1, 2), torch.einsum("ckd,cd->ck", a, w)
    calls = count_fallback(monkeypatch)
    theta, ok = solve_nnk_exact(K, b)
    assert bool(ok.all()) and bool((theta >= 0).all())
    assert sum(calls) >= 1
    grad = b - torch.einsum("cij,cj->ci", K, theta)
    assert float(grad.max()) < 1e-8  # no coordinate with a positive gradient is left out
    assert float(grad[theta > 0].abs().max()) < 1e-8  # stationary on the support
    # 1/2 t'Kt - b't = 1/2 |a^T t - w|^2 - 1/2 |w|^2: the optimal value is SciPy's NNLS residual (the weights
    # need not be unique with duplicates)
    for i in range(40):
        ref = so.nnls(a[i].T.numpy(), w[i].numpy())[1]
        assert float((a[i].T @ theta[i] - w[i]).norm()) == pytest.approx(ref, abs=1e-7)


def test_pivot_limit_warns_and_keeps_feasible_weights():
    torch.manual_seed(13)
    a = torch.randn(30, 12, 20, dtype=torch.float64)
    K = a @ a.transpose(1, 2)
    b = torch.einsum("ckd,cd->ck", a, torch.randn(30, 20, dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="KKT"):
        theta, ok = solve_nnk_exact(K, b, max_iter=1)
    assert not bool(ok.all()) and bool((theta >= 0).all())
    full, ok_full = solve_nnk_exact(K, b)
    assert bool(ok_full.all()) and not torch.allclose(theta, full)


def test_approx_solver_converges_to_exact():
    torch.manual_seed(2)
    x = torch.rand(80, 16, dtype=torch.float64)
    exact = nnk_weights(x, 10, tol=0.0).weights
    errs = [(nnk_weights(x, 10, solver="approx", approx_steps=s, tol=0.0).weights - exact).abs().max().item()
            for s in (5, 50, 500, 5000)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-4


def test_solve_approx_direct_matches_exact():
    a = torch.randn(10, 6, 6, dtype=torch.float64)
    K = a @ a.transpose(1, 2) + torch.eye(6, dtype=torch.float64)
    b = torch.randn(10, 6, dtype=torch.float64)
    assert torch.allclose(solve_nnk_approx(K, b, 20000), solve_nnk_exact(K, b)[0], atol=1e-7)


@pytest.mark.parametrize("tol", [1.0, 5.0])
def test_tol_at_least_one_rejected(tol):
    with pytest.raises(ValueError, match="k-NN"):
        nnk_graph(torch.rand(10, 3), 3, tol=tol)


def test_bad_arguments():
    x = torch.rand(10, 3)
    with pytest.raises(ValueError, match="solver"):
        nnk_graph(x, 3, solver="magic")
    with pytest.raises(ValueError, match="edge_rule"):
        nnk_graph(x, 3, edge_rule="min")
    with pytest.raises(ValueError, match="kernel"):
        nnk_graph(x, 3, kernel="laplace")
    with pytest.raises(ValueError, match="k=10"):
        nnk_graph(x, 10)
    with pytest.raises(ValueError, match="non-finite"):
        nnk_graph(torch.full((5, 2), float("nan")), 2)


def test_collinear_points_keep_only_immediate_neighbors():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 10, 40))
    direction = rng.normal(size=6)
    direction /= np.linalg.norm(direction)
    x = torch.tensor(rng.normal(size=6)[None, :] + t[:, None] * direction[None, :])
    res = nnk_weights(x, 8, kernel="rbf")
    for i in range(40):
        got = set(res.neighbors[i][res.weights[i] > 0].tolist())
        expected = {j for j in (i - 1, i + 1) if 0 <= j < 40}
        assert got == expected, (i, got)


def test_edge_rules_on_three_points_closed_form():
    # points 0, 1, 3 on a line, RBF sigma = 1, k = 2: nodes 0 and 2 keep only point 1 (the far one is
    # behind it), node 1 keeps both; residuals e_1 < e_0 < e_2.
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    k01, k12, k02 = np.exp(-1 / 2), np.exp(-4 / 2), np.exp(-9 / 2)
    t1 = np.linalg.solve([[1, k02], [k02, 1]], [k01, k12])  # node 1: weights on points 0 and 2
    assert (t1 > 0).all()
    g_max = dense(nnk_graph(x, 2, kernel="rbf", sigma=1.0, edge_rule="max"), 3)
    expected_max = np.zeros((3, 3))
    expected_max[0, 1] = expected_max[1, 0] = max(k01, t1[0])
    expected_max[1, 2] = expected_max[2, 1] = max(k12, t1[1])
    np.testing.assert_allclose(g_max, expected_max, atol=1e-12)
    g_ref = nnk_graph(x, 2, kernel="rbf", sigma=1.0, edge_rule="reference")
    e = g_ref.residual.numpy()
    np.testing.assert_allclose(e[0], 1 - k01**2, atol=1e-12)
    assert e[1] < e[0] < e[2]
    expected_ref = np.zeros((3, 3))  # only the direction from the node with smaller residual survives
    expected_ref[0, 1] = expected_ref[1, 0] = t1[0]
    expected_ref[1, 2] = expected_ref[2, 1] = t1[1]
    np.testing.assert_allclose(dense(g_ref, 3), expected_ref, atol=1e-12)


def np_reference_rule(theta: np.ndarray, neighbors: np.ndarray, err: np.ndarray) -> np.ndarray:
    """The authors' rule written out: E_ij = e_i on candidate pairs; W * (E < E^T); max(W, W^T)."""
    n = len(theta)
    E = np.zeros((n, n))
    for i in range(n):
        E[i, neighbors[i]] = err[i]
    W = theta * (E < E.T)
    return np.maximum(W, W.T)


@pytest.mark.parametrize("kernel", ["cosine", "rbf"])
def test_reference_rule_matches_numpy(kernel):
    torch.manual_seed(4)
    x = torch.rand(60, 10, dtype=torch.float64)  # d > k: K_SS positive definite, unique weights
    sigma = 0.3 if kernel == "rbf" else None
    g = nnk_graph(x, 7, kernel=kernel, sigma=sigma, edge_rule="reference")
    nb = knn(x, 7, metric="euclidean" if kernel == "rbf" else "cosine").numpy()
    theta, err = np_nnk(x.numpy(), nb, kernel, sigma)
    np.testing.assert_allclose(dense(g, 60), np_reference_rule(theta, nb, err), atol=1e-6)
    g_max = nnk_graph(x, 7, kernel=kernel, sigma=sigma, edge_rule="max")
    np.testing.assert_allclose(dense(g_max, 60), np.maximum(theta, theta.T), atol=1e-6)
    # the reference rule is a subgraph of the max rule and drops non-reciprocal pairs
    assert ((dense(g, 60) > 0) <= (dense(g_max, 60) > 0)).all()
    assert (dense(g, 60) > 0).sum() < (dense(g_max, 60) > 0).sum()


def test_backends_and_chunks_agree():
    torch.manual_seed(5)
    x = torch.rand(150, 10)
    a = nnk_graph(x, 9)
    b = nnk_graph(x, 9, knn_backend="chunked", chunk_size=17, node_chunk=13)
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.allclose(a.edge_weight, b.edge_weight)
    assert a.edge_weight.dtype == torch.float32
    assert bool((a.edge_index[0] != a.edge_index[1]).all())


def test_duplicate_points_do_not_break_solver():
    x = torch.rand(20, 4, dtype=torch.float64)
    x = torch.cat([x, x[:5]])  # exact duplicates: K_SS singular
    res = nnk_weights(x, 6)
    assert torch.isfinite(res.weights).all() and torch.isfinite(res.residual).all()
    # a duplicated point is reproduced exactly by its twin: residual 0
    assert res.residual[:5].abs().max() < 1e-10


def test_interpolation_matches_numpy_and_separated_clusters():
    torch.manual_seed(6)
    x = torch.rand(50, 12, dtype=torch.float64)
    y = torch.randint(0, 3, (50,))
    pred, err = nnk_interpolation(x, y, 8)
    nb = knn(x, 8).numpy()
    theta, _ = np_nnk(x.numpy(), nb, "cosine")
    onehot = np.eye(3)[y.numpy()]
    expected = theta @ onehot / theta.sum(1, keepdims=True)
    np.testing.assert_allclose(pred.numpy(), expected, atol=1e-6)
    assert err == pytest.approx(float(np.mean(expected.argmax(1) != y.numpy())))
    # two far-apart clusters labeled by cluster: LOO interpolation error 0
    centers = torch.tensor([[5.0, 0, 0], [0, 5.0, 0]])
    labels = torch.arange(2).repeat_interleave(30)
    pts = centers[labels] + 0.3 * torch.rand(60, 3)
    errors = nnk_layer_errors({"a": pts, "noise": torch.rand(60, 3)}, labels, 5)
    assert errors["a"] == 0.0 and errors["noise"] > 0.1


# ------------------------------------------------------------------ the authors' LOO conventions (DeepNNK code)
def np_deepnnk_loo(x: np.ndarray, labels: np.ndarray, k: int, kernel: str = "cosine_shifted"):
    """NumPy rewrite of ``nnk_loo`` of STAC-USC/CW-DeepNNK_Early_Stopping (utils/graph_utils.py), with exact
    distances instead of faiss and scipy's NNLS instead of their pruning solver.

    Returns ``(W (N, N) normalized weights, predictions (N,), error)``."""
    n = len(x)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    num_classes = labels.max() + 1
    W = np.zeros((n, n))
    pred = np.zeros(n, dtype=int)
    for i in range(n):
        order = sorted(range(n), key=lambda j: (d2[i, j], j != i))[: k + 1]  # k + 1 nearest, self first
        I, D = np.array(order[1:]), d2[i, order[1:]]  # "Remove self"
        keep = np.nonzero(D)[0]
        if len(keep) > 0:
            I = I[keep]
        pts = np.concatenate([x[i : i + 1], x[I]], 0)
        if kernel == "cosine_shifted":
            u = pts / np.linalg.norm(pts, axis=1)[:, None]
            G = 0.5 + u @ u.T / 2.0
        else:
            Dm = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
            sigma = Dm[0, -1] / 3
            G = np.exp(-(Dm**2) / (2 * sigma**2))
        t = np_nnls_psd(G[1:, 1:], G[1:, 0])
        t[t < 1e-10] = 0
        W[i, I] = t / t.sum()
        pred[i] = np.argmax(W[i] @ np.eye(num_classes)[labels])
    return W, pred, float(np.mean(pred != labels))


def np_nnls_psd(K: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin_{t>=0} 1/2 t'Kt - b't for a PSD (possibly singular: duplicate candidates) K with b in its range:
    K = A^T A with A = Lambda^1/2 V^T on the positive eigenvalues, then min |A t - Lambda^-1/2 V^T b|^2 (NNLS)."""
    lam, V = np.linalg.eigh(K)
    pos = lam > 1e-12 * lam.max()
    A = np.sqrt(lam[pos])[:, None] * V[:, pos].T
    return so.nnls(A, (V[:, pos].T @ b) / np.sqrt(lam[pos]))[0]


TWINS = {5: 3, 7: 3, 11: 10}


def with_duplicates(n=60, d=12, seed=0):
    """(n, d) points with a triplicate (3 = 5 = 7) and a pair (10 = 11); labels in 3 classes, twins alike."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.integers(0, 3, n)
    for a, b in TWINS.items():
        x[a], y[a] = x[b], y[b]
    return x, y


def merge_twins(w: np.ndarray) -> np.ndarray:
    """Columns of duplicate points summed into one (their split of a weight is not unique)."""
    w = w.copy()
    for a, b in TWINS.items():
        w[:, b] += w[:, a]
        w[:, a] = 0
    return w


def dense_result(result, n):
    w = np.zeros((n, n))
    rows = np.repeat(np.arange(n), result.neighbors.shape[1])
    np.add.at(w, (rows, result.neighbors.reshape(-1).numpy()), result.weights.reshape(-1).double().numpy())
    return w


@pytest.mark.parametrize("kernel", ["cosine_shifted", "rbf"])
def test_deepnnk_convention_matches_numpy_rewrite_of_the_authors_code(kernel):
    x, y = with_duplicates()
    k = 8
    W, pred, error = np_deepnnk_loo(x, y, k, kernel)
    opts = {"kernel": kernel} if kernel == "rbf" else {}  # cosine_shifted is the convention's default
    res = nnk_weights(torch.from_numpy(x), k, convention="deepnnk", **opts)
    assert res.kernel == kernel and res.convention == "deepnnk"
    w = dense_result(res, len(x))
    np.testing.assert_allclose(merge_twins(w / w.sum(1, keepdims=True)), merge_twins(W), atol=1e-7)
    soft, err = nnk_interpolation(torch.from_numpy(x), torch.from_numpy(y), k, convention="deepnnk", **opts)
    np.testing.assert_array_equal(soft.argmax(1).numpy(), pred)
    assert err == pytest.approx(error)
    assert nnk_layer_errors({"a": torch.from_numpy(x)}, torch.from_numpy(y), k, convention="deepnnk", **opts)["a"] == pytest.approx(error)
    # candidates: the k nearest by L2 (not by cosine), self excluded
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    np.testing.assert_allclose(np.sort(d2, 1)[:, :k], np.take_along_axis(d2, res.neighbors.numpy(), 1))


def test_deepnnk_drops_exact_duplicates_where_the_default_copies_the_twin():
    x, y = with_duplicates()
    y[3], y[5], y[7], y[10], y[11] = 0, 1, 1, 1, 2
    xt = torch.from_numpy(x)
    k = 8
    deep = nnk_weights(xt, k, convention="deepnnk")
    default = nnk_weights(xt, k, kernel="cosine_shifted")
    assert default.valid is None and default.convention == "default"
    for i, twins in ((3, {5, 7}), (5, {3, 7}), (7, {3, 5}), (10, {11}), (11, {10})):
        nb = deep.neighbors[i].tolist()
        for j, t in enumerate(nb):
            assert bool(deep.valid[i, j]) == (t not in twins)
            if t in twins:
                assert float(deep.weights[i, j]) == 0.0
        # default: the twin reconstructs the query exactly and takes all the weight
        w = dense_result(default, len(x))[i]
        assert w[list(twins)].sum() == pytest.approx(w.sum())
    assert int(deep.valid.sum()) == len(x) * k - 8  # 3 x 2 twins in the triplicate, 2 x 1 in the pair
    pred_default = nnk_interpolation(xt, torch.from_numpy(y), k, kernel="cosine_shifted")[0].argmax(1)
    assert int(pred_default[11]) == y[10] and int(pred_default[10]) == y[11]  # the twin's label, copied


def test_deepnnk_zero_vectors_and_more_candidates_than_dimensions():
    """Where the authors' code gives NaN (zero vectors) or fails (Cholesky with k > d + 1): defined results,
    at the NNK optimum (KKT conditions checked on the candidates that were kept)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2))
    x[0] = 0.0
    y = torch.from_numpy(rng.integers(0, 2, 40))
    k = 10
    res = nnk_weights(torch.from_numpy(x), k, convention="deepnnk")
    soft, err = nnk_interpolation(torch.from_numpy(x), y, k, convention="deepnnk")
    assert torch.isfinite(soft).all() and 0 <= err <= 1
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    G = 0.5 + 0.5 * u @ u.T
    for i in range(len(x)):
        S = res.neighbors[i].numpy()
        t = res.weights[i].double().numpy()
        grad = G[S, i] - G[np.ix_(S, S)] @ t
        assert (t >= 0).all() and (grad <= 1e-8).all() and np.abs(grad[t > 0]).max(initial=0) <= 1e-8


def test_convention_checks():
    x = torch.randn(20, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="convention"):
        nnk_weights(x, 3, convention="faiss")
    res = nnk_weights(x, 3)
    assert res.kernel == "cosine" and res.valid is None
    with pytest.raises(ValueError, match="convention='default'"):
        nnk_module.nnk_loo_predictions(res, torch.arange(20) % 2, convention="deepnnk")
