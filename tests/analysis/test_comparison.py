"""Layer similarity: CKA vs an independent NumPy formula and invariances; kNN overlap; LGG similarity."""
import numpy as np
import pytest
import torch
from torch import nn

from geomlat.analysis import compare_models, layer_similarity, linear_cka, plot_similarity_heatmaps


def np_cka(X, Y):
    """Kornblith et al. 2019 feature-space form: |Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F), centered features."""
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def np_unbiased_hsic(K, L):
    n = len(K)
    K = K - np.diag(np.diag(K))
    L = L - np.diag(np.diag(L))
    t = np.trace(K @ L) + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * K.sum(0) @ L.sum(1)
    return t / (n * (n - 3))


def test_cka_matches_numpy_and_invariances():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 7)), rng.normal(size=(40, 12))
    assert linear_cka(torch.tensor(X), torch.tensor(Y), eps=0.0) == pytest.approx(np_cka(X, Y), rel=1e-10)
    Q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    assert linear_cka(torch.tensor(X), torch.tensor(3.0 * X @ Q), eps=0.0) == pytest.approx(1.0, abs=1e-12)
    K, L = X @ X.T, Y @ Y.T
    expected = np_unbiased_hsic(K, L) / np.sqrt(np_unbiased_hsic(K, K) * np_unbiased_hsic(L, L))
    assert linear_cka(torch.tensor(X), torch.tensor(Y), unbiased=True, eps=0.0) == pytest.approx(expected, rel=1e-10)
    assert linear_cka(torch.tensor(X), torch.tensor(X @ Q), unbiased=True, eps=0.0) == pytest.approx(1.0, abs=1e-12)


def test_knn_overlap_and_lgg():
    g = torch.Generator().manual_seed(1)
    feats = {"a": torch.rand(50, 8, generator=g), "b": torch.rand(50, 20, generator=g)}
    M = layer_similarity(feats, feats, "knn_overlap", k=5)
    assert torch.allclose(M, M.T) and torch.allclose(M.diagonal(), torch.ones(2, dtype=torch.float64))
    # independent brute force of the overlap between a and b
    def nn_sets(x):
        u = x / x.norm(dim=1, keepdim=True)
        s = u @ u.T
        s.fill_diagonal_(-2)
        return [set(r.tolist()) for r in s.topk(5, dim=1).indices]
    sa, sb = nn_sets(feats["a"]), nn_sets(feats["b"])
    assert float(M[0, 1]) == pytest.approx(np.mean([len(p & q) / 5 for p, q in zip(sa, sb)]))
    L = layer_similarity(feats, feats, "lgg")
    assert torch.allclose(L.diagonal(), torch.ones(2, dtype=torch.float64))
    assert 0 < float(L[0, 1]) < 1
    # LGG similarity is the cosine between normalized adjacencies: brute force
    def norm_adj(x):
        u = x.double() / x.double().norm(dim=1, keepdim=True)
        A = u @ u.T
        A.fill_diagonal_(0)
        d = A.sum(1).rsqrt()
        return d[:, None] * A * d[None, :]
    A, B = norm_adj(feats["a"]), norm_adj(feats["b"])
    assert float(L[0, 1]) == pytest.approx(float((A * B).sum() / (A.norm() * B.norm())), rel=1e-10)
    with pytest.raises(ValueError, match="unknown similarity measure 'svd'"):
        layer_similarity(feats, feats, "svd")


def test_compare_models_and_plot(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 5), nn.ReLU())
    x = torch.randn(30, 6)
    res = compare_models(model, model, x, ["1", "3"], ["1", "3"], methods=("cka", "lgg", "knn_overlap"), k=4)
    for m in ("cka", "lgg", "knn_overlap"):
        assert torch.allclose(res[m]["matrix"].diagonal(), torch.ones(2, dtype=torch.float64), atol=1e-10)
    assert model.training  # mode restored
    out = plot_similarity_heatmaps(res, tmp_path / "figs" / "sim.png")
    assert out.exists() and out.stat().st_size > 1000


def test_analysis_figures_written_by_the_main_process_only(tmp_path, monkeypatch):
    """Under main_process_writes (the study runner under torchrun) a rank other than 0 writes no figure file
    (and leaves no temporary file); rank 0 writes it, in the format of the suffix, and every rank closes it."""
    import matplotlib.pyplot as plt

    from geomlat.analysis.layerwise import plot_layer_curves
    from geomlat import distributed as dist

    values = {"model": {"l1": 0.5, "l2": 0.25}}
    res = {"lgg": {"matrix": torch.eye(2, dtype=torch.float64), "layers_a": ["a", "b"], "layers_b": ["c", "d"]}}
    monkeypatch.setattr(dist, "is_main_process", lambda: False)
    with dist.main_process_writes():
        assert plot_layer_curves(values, tmp_path / "r1" / "curves.png") == tmp_path / "r1" / "curves.png"
        plot_similarity_heatmaps(res, tmp_path / "r1" / "sim.png")
    assert not (tmp_path / "r1").exists() or not any((tmp_path / "r1").iterdir())
    assert plt.get_fignums() == []
    monkeypatch.setattr(dist, "is_main_process", lambda: True)
    with dist.main_process_writes():
        png = plot_layer_curves(values, tmp_path / "r0" / "curves.png")
        pdf = plot_similarity_heatmaps(res, tmp_path / "r0" / "sim.pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "r0").iterdir()) == ["curves.png", "sim.pdf"]
    assert plt.get_fignums() == []
