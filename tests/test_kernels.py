"""Kernels are plug-ins: a kernel defined and registered here (Laplacian ``exp(-|x_i - x_j| / sigma)``) works in
LGGs and NNK graphs and matches a dense NumPy / SciPy computation; unknown names list the registered kernels."""
import numpy as np
import pytest
import scipy.optimize as so
import torch

import geomlat
from geomlat import KERNELS, Kernel, latent_adjacency, latent_graph, nnk_graph, nnk_weights, register_kernel
from geomlat.kernels import distances_from_gram, get_kernel


class Laplacian(Kernel):
    """exp(-|x_i - x_j| / sigma): positive definite (a Matern kernel), any sign, bandwidth by the default rule."""

    uses_sigma = True

    def from_gram(self, g, sigma):
        return torch.exp(-distances_from_gram(g, squared=False) / sigma)


@pytest.fixture
def laplacian():
    register_kernel("laplacian_test")(Laplacian)
    yield "laplacian_test"
    KERNELS.unregister("laplacian_test")


def np_laplacian(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)) / sigma)


def np_kth_mean(x: np.ndarray, k: int) -> float:
    """The authors' bandwidth rule, dense: mean distance to the k-th nearest other point / 3."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return float(np.sort(d, axis=1)[:, k - 1].mean() / 3.0)


def test_registered_kernel_in_latent_graph_matches_dense(laplacian):
    torch.manual_seed(0)
    x = torch.randn(24, 6, dtype=torch.float64)
    xn = x.numpy()
    # full graph, given sigma: A = K off the diagonal
    adj, _ = latent_adjacency(x, kernel=laplacian, sigma=0.8)
    ref = np_laplacian(xn, 0.8)
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(adj.numpy(), ref, rtol=1e-10, atol=1e-12)
    # k-NN graph, estimated sigma (k-th neighbor rule), "max" symmetrization
    k = 4
    g = latent_graph(x, k=k, kernel=laplacian)
    K = np_laplacian(xn, np_kth_mean(xn, k))
    np.fill_diagonal(K, -np.inf)
    keep = np.zeros_like(K, dtype=bool)
    np.put_along_axis(keep, np.argsort(-K, axis=1)[:, :k], True, axis=1)
    keep |= keep.T
    dense = np.zeros_like(K)
    dense[g.edge_index[0].numpy(), g.edge_index[1].numpy()] = g.edge_weight.numpy()
    np.testing.assert_allclose(dense, np.where(keep, K, 0.0), rtol=1e-10, atol=1e-12)
    # differentiable through the user's from_gram (zero distances on the diagonal included)
    small = x[:6, :3].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: latent_adjacency(z, kernel=laplacian)[0], (small,))


def test_registered_kernel_in_nnk_matches_scipy_nnls(laplacian):
    torch.manual_seed(1)
    x = torch.randn(30, 5, dtype=torch.float64)
    xn = x.numpy()
    k = 6
    res = nnk_weights(x, k, kernel=laplacian)
    nbrs = res.neighbors.numpy()
    # candidates: the Euclidean k-NN (the kernel's knn_metric), nearest first
    d = np.sqrt(((xn[:, None, :] - xn[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(nbrs, np.argsort(d, axis=1)[:, :k])
    sigma = float(d[np.arange(30), nbrs[:, -1]].mean() / 3.0)
    assert res.sigma == pytest.approx(sigma, rel=1e-12)
    G = np_laplacian(xn, sigma)
    for i in range(30):
        S = nbrs[i]
        L = np.linalg.cholesky(G[np.ix_(S, S)])
        t = so.nnls(L.T, np.linalg.solve(L, G[S, i]))[0]
        t[t < 1e-10] = 0.0
        np.testing.assert_allclose(res.weights[i].numpy(), t, atol=1e-7)
        e = G[i, i] - 2 * t @ G[S, i] + t @ G[np.ix_(S, S)] @ t
        assert res.residual[i].item() == pytest.approx(e, abs=1e-8)
    g = nnk_graph(x, k, kernel=laplacian)
    assert g.edge_weight.min() > 0 and g.num_nodes == 30


def test_builtin_kernels_in_nnk_blocks_match_dense():
    """The shared definition gives NNK the same kernel values as the dense LGG similarity."""
    from geomlat.nnk import kernel_blocks

    torch.manual_seed(2)
    x = torch.randn(16, 4, dtype=torch.float64)
    cand = torch.stack([torch.roll(torch.arange(16), -s) for s in (1, 2, 3)], 1)  # (16, 3), never self
    centers = torch.arange(16)
    for name, sigma in (("cosine", None), ("cosine_shifted", None), ("rbf", 0.9)):
        kern = get_kernel(name)
        K_SS, K_Si, K_ii = kernel_blocks(kern.prepare(x), centers, cand, name, sigma)
        dense = geomlat.similarity(x, name, sigma) if name != "cosine" else geomlat.similarity(x.abs(), name)
        if name == "cosine":  # NNK's cosine accepts any sign: compare with the plain formula
            u = x / x.norm(dim=1, keepdim=True)
            dense = u @ u.T
        torch.testing.assert_close(K_SS, dense[cand[:, :, None], cand[:, None, :]], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(K_Si, dense[cand, centers[:, None]], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(K_ii, dense.diagonal(), rtol=1e-12, atol=1e-12)


def test_unknown_kernel_lists_registered_ones(laplacian):
    x = torch.rand(10, 3)
    for call in (lambda: latent_graph(x, k=3, kernel="nope"), lambda: nnk_graph(x, 3, kernel="nope"),
                 lambda: nnk_weights(x, 3, kernel="nope")):
        with pytest.raises(ValueError, match="unknown kernel") as info:
            call()
        for name in ("cosine", "cosine_shifted", "rbf", laplacian):
            assert repr(name) in str(info.value)


def test_registration_errors(laplacian):
    with pytest.raises(ValueError, match="already registered"):
        register_kernel(laplacian)(Laplacian)
    with pytest.raises(ValueError, match="auto"):
        register_kernel("auto")(Laplacian)
    with pytest.raises(TypeError, match="from_gram"):
        register_kernel("incomplete_test")(object())
    assert "incomplete_test" not in KERNELS


def test_nonnegative_kernels_reject_signed_data_in_lggs_only():
    x = torch.randn(12, 4)
    with pytest.raises(ValueError, match="needs non-negative data"):
        latent_graph(x, k=3, kernel="cosine")
    assert nnk_graph(x, 3, kernel="cosine").num_nodes == 12  # NNK only needs a PSD kernel
