"""Representation similarity measures vs independent NumPy/SciPy rewrites of their reference formulas
(platonic-rep ``metrics.py``, netrep ``LinearMetric``, RSA), their permutation nulls, and the comparison API.

The rewrites follow the reference code literally (dense (N, N) matrices, argsort neighbors, Python dynamic
programs) and share no code with geomlat.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import torch

from geomlat.analysis import (
    SIMILARITIES,
    layer_similarity,
    plot_similarity_heatmaps,
    register_similarity,
    representation_similarity,
    similarity_null,
    similarity_tables,
)
from geomlat.analysis import _similarity_math
from geomlat.knn import knn
from geomlat.sequences import sample_vectors


# ------------------------------------------------------------------ reference rewrites (NumPy, dense)
def np_knn(X, k):
    S = X @ X.T
    np.fill_diagonal(S, -1e8)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


def np_lcs(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    return dp[-1][-1]


def np_edit(a, b):
    dp = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i][j] = min(dp[i - 1][j - 1] + (a[i - 1] != b[j - 1]), dp[i - 1][j] + 1, dp[i][j - 1] + 1)
    return dp[-1][-1]


def np_hsic(K, L, unbiased):
    m = len(K)
    if not unbiased:
        H = np.eye(m) - 1.0 / m
        return np.trace(K @ H @ L @ H)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    v = (K * L.T).sum() + K.sum() * L.sum() / ((m - 1) * (m - 2)) - 2 * (K @ L).sum() / (m - 2)
    return v / (m * (m - 3))


def np_cka(K, L, unbiased):
    return np_hsic(K, L, unbiased) / (np.sqrt(np_hsic(K, K, unbiased) * np_hsic(L, L, unbiased)) + 1e-6)


def np_cknna(X, Y, k, unbiased):
    K, L, n = X @ X.T, Y @ Y.T, len(X)

    def sim(K, L):
        Kh, Lh = K.copy(), L.copy()
        if unbiased:
            np.fill_diagonal(Kh, -np.inf)
            np.fill_diagonal(Lh, -np.inf)
        mK, mL = np.zeros((n, n)), np.zeros((n, n))
        for i in range(n):
            mK[i, np.argsort(-Kh[i])[:k]] = 1
            mL[i, np.argsort(-Lh[i])[:k]] = 1
        mask = mK * mL
        return np_hsic(mask * K, mask * L, unbiased)

    return sim(K, L) / (np.sqrt(sim(K, K) * sim(L, L)) + 1e-6)


def np_platonic(name, X, Y, normalize, topk=5, sigma=1.0, cca_dim=4):
    if normalize:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    n = len(X)
    if name in ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"):
        A, B = np_knn(X, topk), np_knn(Y, topk)
        if name == "mutual_knn":
            return np.mean([len(set(A[i]) & set(B[i])) / topk for i in range(n)])
        if name == "cycle_knn":
            return np.mean([any(i in A[j] for j in B[i]) for i in range(n)])
        if name == "lcs_knn":
            return np.mean([np_lcs(list(A[i]), list(B[i])) for i in range(n)])
        return 1 - np.mean([np_edit(list(A[i]), list(B[i])) for i in range(n)]) / topk
    if name in ("linear_cka", "unbiased_cka"):
        return np_cka(X @ X.T, Y @ Y.T, name == "unbiased_cka")
    if name == "rbf_cka":
        rbf = lambda Z: np.exp(-scipy.spatial.distance.cdist(Z, Z) ** 2 / (2 * sigma**2))  # noqa: E731
        return np_cka(rbf(X), rbf(Y), False)
    if name == "cknna":
        return np_cknna(X, Y, topk, True)
    assert name == "svcca"

    def top(Z):
        Z = Z - Z.mean(0)
        Z = Z / (Z.std(0, ddof=1) + 1e-8)
        return np.linalg.svd(Z, full_matrices=False)[0][:, :cca_dim]

    U1, U2 = top(X), top(Y)  # canonical correlations from the covariances (a route other than U1^T U2)
    C = np.cov(np.hstack([U1, U2]).T)
    Cxx, Cyy, Cxy = C[:cca_dim, :cca_dim], C[cca_dim:, cca_dim:], C[:cca_dim, cca_dim:]
    isq = lambda S: np.real(scipy.linalg.inv(scipy.linalg.sqrtm(S)))  # noqa: E731
    return np.mean(np.linalg.svd(isq(Cxx) @ Cxy @ isq(Cyy), compute_uv=False))


def pair(seed, n=40, d1=12, d2=9):
    """Related representations (a shared 4-dim factor plus noise), float64."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, generator=g, dtype=torch.float64)
    x = z @ torch.randn(4, d1, generator=g, dtype=torch.float64) + 0.7 * torch.randn(n, d1, generator=g, dtype=torch.float64)
    y = z @ torch.randn(4, d2, generator=g, dtype=torch.float64) + 0.7 * torch.randn(n, d2, generator=g, dtype=torch.float64)
    return x, y


PLATONIC = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "linear_cka", "unbiased_cka", "rbf_cka",
            "cknna", "svcca")


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("name", PLATONIC)
def test_platonic_measures_equal_the_reference_formulas(name, normalize):
    x, y = pair(PLATONIC.index(name))
    opts = {"topk": 5} if "knn" in name else {"cca_dim": 4} if name == "svcca" else {}
    if name == "rbf_cka":
        opts = {"sigma": 1.0 if normalize else 4.0}
    ours = representation_similarity(x, y, name, normalize=normalize, **opts)
    ref = np_platonic(name, x.numpy(), y.numpy(), normalize, **{k: v for k, v in opts.items()})
    assert ours == pytest.approx(ref, abs=1e-5)
    assert not math.isclose(ours, representation_similarity(x, torch.randn_like(y), name, normalize=normalize, **opts))


@pytest.mark.parametrize("unbiased", [True, False])
def test_cknna_sparse_equals_dense_rewrite(unbiased):
    x, y = pair(3, n=30)
    ours = representation_similarity(x, y, "cknna", topk=6, unbiased=unbiased)
    assert ours == pytest.approx(np_cknna(x.numpy(), y.numpy(), 6, unbiased), abs=1e-10)


def test_cka_block_paths_equal_the_dense_formula(monkeypatch):
    """Wide features (Gram row blocks) and RBF kernels over many small blocks give the dense values."""
    x, y = pair(5, n=24, d1=60, d2=50)  # d > N: the Gram-block path of linear CKA
    K, L = (x @ x.T).numpy(), (y @ y.T).numpy()
    for unbiased in (False, True):
        want = np_cka(K, L, unbiased)
        assert representation_similarity(x, y, "linear_cka", unbiased=unbiased) == pytest.approx(want, abs=1e-12)
    monkeypatch.setattr(_similarity_math, "BLOCK_BYTES", 8 * 24 * 5)  # blocks of 5 rows
    ref = np_platonic("rbf_cka", x.numpy(), y.numpy(), False, sigma=8.0)
    assert representation_similarity(x, y, "rbf_cka", sigma=8.0) == pytest.approx(ref, abs=1e-12)


def angular(A, B):
    return np.arccos(np.clip((A * B).sum() / (np.linalg.norm(A) * np.linalg.norm(B)), -1, 1))


def test_procrustes_and_cca_equal_netreps_formulas():
    x, y = pair(7, n=60, d1=8, d2=5)
    X, Y = x.numpy() - x.numpy().mean(0), y.numpy() - y.numpy().mean(0)
    Yp = np.pad(Y, ((0, 0), (0, 3)))  # netrep zero-pads to a common width
    R, _ = scipy.linalg.orthogonal_procrustes(X, Yp)
    assert representation_similarity(x, y, "procrustes") == pytest.approx(angular(X @ R, Yp), abs=1e-10)
    rho = np.linalg.svd(np.linalg.qr(X)[0].T @ np.linalg.qr(Y)[0], compute_uv=False)  # canonical correlations
    assert representation_similarity(x, y, "cca") == pytest.approx(np.arccos(rho.sum() / np.sqrt(8 * 5)), abs=1e-10)
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))
    moved = torch.tensor(3.0 * x.numpy() @ Q + 5.0)
    assert representation_similarity(x, moved, "procrustes") == pytest.approx(0.0, abs=1e-6)
    assert representation_similarity(x, x @ torch.randn(8, 8, dtype=torch.float64), "cca") == pytest.approx(0.0, abs=1e-6)
    assert 0.1 < representation_similarity(x, y, "procrustes") < math.pi / 2


def test_rsa_equals_scipy_spearman_of_rdms():
    x, y = pair(9, n=25)
    ux = np.triu_indices(25, 1)
    want = scipy.stats.spearmanr((1 - np.corrcoef(x.numpy()))[ux], (1 - np.corrcoef(y.numpy()))[ux])[0]
    assert representation_similarity(x, y, "rsa") == pytest.approx(want, abs=1e-10)
    ties = torch.tensor([[0.0, 1, 2], [0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]])  # tied RDM entries
    v = _similarity_math.average_ranks(torch.tensor([3.0, 1, 3, 2, 1]))
    assert v.tolist() == scipy.stats.rankdata([3, 1, 3, 2, 1]).tolist()
    t = np.triu_indices(5, 1)
    want = scipy.stats.spearmanr((1 - np.corrcoef(ties.numpy()))[t], (1 - np.corrcoef(ties.numpy() ** 2))[t])[0]
    assert representation_similarity(ties, ties**2, "rsa") == pytest.approx(want, abs=1e-10)


def test_lgg_measure_is_the_cosine_of_normalized_graphs():
    x, y = pair(11, n=30)

    def norm_adj(v):
        u = v / v.norm(dim=1, keepdim=True)
        A = (u @ u.T).clamp_min(0)
        A.fill_diagonal_(0)
        d = A.sum(1).rsqrt()
        return d[:, None] * A * d[None, :]

    A, B = norm_adj(x.clamp_min(0) + 0.1), norm_adj(y.clamp_min(0) + 0.1)
    got = representation_similarity(x.clamp_min(0) + 0.1, y.clamp_min(0) + 0.1, "lgg", kernel="cosine")
    assert got == pytest.approx(float((A * B).sum() / (A.norm() * B.norm())), abs=1e-10)


@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_inner_product_knn_equals_argsort(backend):
    x = torch.randn(70, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = knn(x, 7, metric="inner", backend=backend, chunk_size=16)
    assert np.array_equal(got.numpy(), np_knn(x.numpy(), 7))


def test_token_features_follow_the_sequence_rule():
    g = torch.Generator().manual_seed(4)
    h1, h2 = torch.randn(20, 6, 5, generator=g), torch.randn(20, 6, 3, generator=g)
    mask = (torch.arange(6)[None, :] < torch.randint(1, 7, (20, 1), generator=g)).long()
    h1[mask == 0] = float("nan")  # padding never enters
    want = representation_similarity(sample_vectors(h1, mask), sample_vectors(h2, mask), "linear_cka")
    assert representation_similarity(h1, h2, "linear_cka", attention_mask=mask) == pytest.approx(want, abs=1e-12)
    pooled = sample_vectors(h2, mask, reduce="last")
    got = representation_similarity(h1, pooled, "mutual_knn", attention_mask=(mask, None), topk=3)
    assert got == pytest.approx(representation_similarity(sample_vectors(h1, mask), pooled, "mutual_knn", topk=3))


def test_bad_inputs_get_clear_errors():
    x, y = pair(1, n=20)
    with pytest.raises(ValueError, match="same inputs"):
        representation_similarity(x, y[:10], "linear_cka")
    with pytest.raises(ValueError, match="NaN"):
        representation_similarity(x, y.masked_fill(y > 2, float("nan")), "linear_cka")
    with pytest.raises(TypeError, match="unknown \\['sigma'\\]"):
        representation_similarity(x, y, "mutual_knn", sigma=2.0)
    with pytest.raises(ValueError, match="unknown similarity measure 'cka2'"):
        representation_similarity(x, y, "cka2")
    with pytest.raises(ValueError, match="topk"):
        representation_similarity(x, y, "mutual_knn", topk=20)
    with pytest.raises(ValueError, match="no variance"):
        representation_similarity(torch.ones(20, 3), y, "linear_cka")
    with pytest.raises(ValueError, match="exceeds the rank"):
        representation_similarity(x, y, "svcca", cca_dim=10)
    with pytest.raises(ValueError, match="constant"):
        representation_similarity(torch.ones(20, 3), y, "procrustes")


def test_register_similarity_and_layer_similarity_with_several_measures(tmp_path):
    @register_similarity("neg_mse", kind="distance", range="[0, inf)", bounds=None)
    def neg_mse(x, y, scale: float = 1.0):
        """Mean squared difference (same widths): a distance."""
        return float(scale * (x - y).square().mean())

    try:
        x, y = pair(2, n=30, d1=6, d2=6)
        feats_a, feats_b = {"a1": x, "a2": y}, {"b1": y}
        out = layer_similarity(feats_a, feats_b, ["neg_mse", "mutual_knn"], topk=4, scale=2.0)
        assert out["neg_mse"][0, 0] == pytest.approx(2.0 * float((x - y).square().mean())) and out["neg_mse"][1, 0] == 0
        assert out["mutual_knn"][1, 0] == 1.0
        assert float(out["mutual_knn"][0, 0]) == pytest.approx(np_platonic("mutual_knn", x.numpy(), y.numpy(), False, topk=4))
        with pytest.raises(TypeError, match="no selected measure takes the options \\['sigma'\\]"):
            layer_similarity(feats_a, feats_b, ["neg_mse", "mutual_knn"], sigma=1.0)
        with pytest.raises(ValueError, match="already registered"):
            register_similarity("neg_mse", neg_mse)
        with pytest.raises(ValueError, match="kind"):
            register_similarity("bad_kind", neg_mse, kind="score")
        tables = similarity_tables(feats_a, feats_b, ["neg_mse", "linear_cka"], calibrate="zscore", n_permutations=9)
        res = {m: dict(t, layers_a=["a1", "a2"], layers_b=["b1"]) for m, t in tables.items()}
        path = plot_similarity_heatmaps(res, tmp_path / "sim.png", calibrated=True)
        assert path.exists() and path.stat().st_size > 1000
    finally:
        SIMILARITIES.unregister("neg_mse")
    assert "neg_mse" not in SIMILARITIES


# ------------------------------------------------------------------ nulls
def test_null_p_values_of_independent_pairs_are_uniform():
    """For independent x, y the rank of the score among the permuted scores is uniform, so the +1-corrected
    p-values spread uniformly over (0, 1]: Kolmogorov-Smirnov over 150 independent pairs."""
    pvals = []
    for seed in range(150):
        g = torch.Generator().manual_seed(1000 + seed)
        x, y = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(10, 4, generator=g, dtype=torch.float64)
        pvals.append(similarity_null(x, y, "linear_cka", n_permutations=49, seed=seed).p_value)
    pvals = np.array(pvals)
    assert pvals.min() >= 1 / 50 and pvals.max() <= 1.0
    assert scipy.stats.kstest(pvals, "uniform").pvalue > 0.01
    assert abs(pvals.mean() - 0.51) < 0.07  # mean of the uniform grid {1/50, ..., 1}


@pytest.mark.parametrize("measure", ["mutual_knn", "procrustes"])
def test_null_of_a_dependent_pair_is_significant(measure):
    x, y = pair(8, n=50)
    null = similarity_null(x, y, measure, n_permutations=29, seed=1, topk=5) if measure == "mutual_knn" else \
        similarity_null(x, y, measure, n_permutations=29, seed=1)
    assert null.p_value == pytest.approx(1 / 30)  # no permuted score as extreme as the real one
    extreme = (null.null >= null.score) if null.kind == "similarity" else (null.null <= null.score)
    assert null.p_value == (1 + int(extreme.sum())) / 30
    assert null.null_mean == pytest.approx(float(null.null.mean())) and null.null_std == pytest.approx(float(null.null.std()))
    z = null.calibrated("zscore")
    assert (z > 3) if null.kind == "similarity" else (z < -3)
    assert null.calibrated("difference") == pytest.approx(null.score - null.null_mean)


def test_layer_similarity_calibrated_equals_similarity_null():
    x, y = pair(6, n=30)
    feats_a, feats_b = {"x": x}, {"y": y, "x": x}
    for how in ("difference", "zscore"):
        got = layer_similarity(feats_a, feats_b, "linear_cka", calibrate=how, n_permutations=15, seed=3)
        for j, v in enumerate((y, x)):
            assert float(got[0, j]) == pytest.approx(similarity_null(x, v, "linear_cka", 15, 3).calibrated(how))
