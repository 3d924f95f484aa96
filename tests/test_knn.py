import numpy as np
import pytest
import torch

from geomlat import knn, knn_graph
from geomlat.knn import WITH_TORCH_CLUSTER


def _points(n=200, d=16, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _brute_force(x, k, metric):
    x = x.numpy().astype(np.float64)
    if metric == "cosine":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        score = u @ u.T
    else:
        score = -((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(score, -np.inf)
    return np.argsort(-score, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend,chunk", [("dense", None), ("chunked", 7), ("chunked", 64), ("chunked", None)])
def test_backends_agree_with_brute_force(metric, backend, chunk):
    x = _points()
    got = knn(x, 5, metric=metric, backend=backend, chunk_size=chunk).numpy()
    expected = _brute_force(x, 5, metric)
    assert [set(r) for r in got] == [set(r) for r in expected]
    np.testing.assert_array_equal(got[:, 0], expected[:, 0])  # nearest first


@pytest.mark.skipif(not WITH_TORCH_CLUSTER, reason="torch-cluster not installed (make install-cluster)")
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_cluster_backend_matches_dense(metric):
    x = _points()
    a = knn(x, 5, metric=metric, backend="cluster")
    b = knn(x, 5, metric=metric, backend="dense")
    assert [set(r) for r in a.tolist()] == [set(r) for r in b.tolist()]


def test_cluster_backend_missing_is_a_clear_error():
    if WITH_TORCH_CLUSTER:
        pytest.skip("torch-cluster is installed")
    with pytest.raises(ImportError, match="torch-cluster"):
        knn(_points(), 3, backend="cluster")


def test_self_is_never_a_neighbor_even_with_duplicates():
    x = torch.ones(6, 3)
    idx = knn(x, 5)
    assert not bool((idx == torch.arange(6)[:, None]).any())


def test_knn_graph_follows_pyg_flow_convention():
    """PyG's knn_graph (flow="source_to_target"): edge_index[0] = neighbor (source), edge_index[1] = center
    (target), so sum-aggregating messages gives every node the sum of its k nearest neighbors' features."""
    from torch_geometric.utils import scatter

    x = _points(n=30)
    edge_index = knn_graph(x, 4)
    assert edge_index.shape == (2, 120)
    np.testing.assert_array_equal(edge_index[1].numpy(), np.repeat(np.arange(30), 4))  # every target has k edges
    # message passing x_j -> i (source -> target) sums the features of the k nearest neighbors
    unit = x / x.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    cos.fill_diagonal_(-2.0)
    nearest = cos.argsort(dim=1, descending=True)[:, :4]  # independent dense k-NN
    aggregated = scatter(x[edge_index[0]], edge_index[1], dim=0, dim_size=30, reduce="sum")
    torch.testing.assert_close(aggregated, x[nearest].sum(1))
    flipped = knn_graph(x, 4, flow="target_to_source")
    assert torch.equal(flipped, edge_index.flip(0))
    with pytest.raises(ValueError, match="flow"):
        knn_graph(x, 4, flow="both")


def test_bad_arguments():
    with pytest.raises(ValueError, match="k=30"):
        knn(_points(n=30), 30)
    with pytest.raises(ValueError, match="unknown backend"):
        knn(_points(), 3, backend="faiss")
    with pytest.raises(ValueError, match="NaN"):
        knn(torch.full((5, 2), float("nan")), 2)


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("levels", [None, 3])  # continuous scores, or only 3 distinct values (ties everywhere)
def test_grouped_topk_equals_torch_topk(dim, levels):
    from geomlat.knn import TOPK_GROUP, _topk

    gen = torch.Generator().manual_seed(dim)
    shape = (TOPK_GROUP * 24, TOPK_GROUP * 20) if dim == 1 else (TOPK_GROUP * 20, TOPK_GROUP * 24)
    scores = torch.randn(shape, generator=gen) if levels is None else torch.randint(0, levels, shape, generator=gen).float()
    val, idx = _topk(scores, 5, dim)  # pruned path: the size along dim is a multiple of the group, >= 4 k groups
    ref = scores.topk(5, dim=dim).values
    np.testing.assert_array_equal(val.numpy(), ref.numpy() if dim == 1 else ref.T.numpy())
    picked = scores.gather(1, idx) if dim == 1 else scores.T.gather(1, idx)
    np.testing.assert_array_equal(picked.numpy(), val.numpy())  # the indices point at those values
    assert all(len(set(r)) == 5 for r in idx.tolist())  # k distinct entries


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend,chunk", [("dense", None), ("chunked", 256), ("chunked", 320)])
def test_symmetric_tiles_and_grouped_topk_agree_with_brute_force(metric, backend, chunk):
    """N = 1,024 exercises the pruned top-k (rows and columns) and several off-diagonal tiles."""
    x = _points(n=1024, d=8, seed=3)
    got = knn(x, 6, metric=metric, backend=backend, chunk_size=chunk).numpy()
    expected = _brute_force(x, 6, metric)
    assert [set(r) for r in got] == [set(r) for r in expected]
    np.testing.assert_array_equal(got[:, 0], expected[:, 0])
