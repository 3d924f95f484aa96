"""Exact k-nearest-neighbour search behind one function, for graphs larger than a batch.

Backends:

- ``"dense"`` (default): one N x d x N matrix product and ``topk``; memory O(N^2).
- ``"chunked"``: the same computation over blocks of ``chunk_size`` query rows; memory O(chunk_size * N).
- ``"cluster"``: ``torch_cluster.knn_graph`` (optional, ``pip install geomlat[cluster]``); a KD-tree on
  CPU, much slower than a matmul at moderate d.

All return the same neighbour sets on the same data (up to ties).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_choice, check_features, check_k

try:  # optional backend
    import torch_cluster  # noqa: F401

    WITH_TORCH_CLUSTER = True
except ImportError:  # pragma: no cover - depends on the environment
    WITH_TORCH_CLUSTER = False

BACKENDS = ("dense", "chunked", "cluster")
METRICS = ("cosine", "euclidean")

#: Default bytes of the (chunk_size, N) score block of the chunked backend.
CHUNK_BYTES = 256 * 2**20


def default_chunk_size(n: int, element_size: int = 4) -> int:
    """Rows per block so that a (rows, n) score block takes about :data:`CHUNK_BYTES`."""
    return max(1, min(n, CHUNK_BYTES // max(1, n * element_size)))


def _prepare(x: Tensor, metric: str) -> Tensor:
    return F.normalize(x, dim=1, eps=1e-12) if metric == "cosine" else x


def _block_knn(queries: Tensor, base: Tensor, base_sq: Tensor | None, offset: int, k: int) -> Tensor:
    """Indices (rows, k) of the k best base rows for each query row, excluding the query itself."""
    scores = queries @ base.T  # cosine similarity, or <q, x> for euclidean
    if base_sq is not None:  # maximize -|q - x|^2 = 2<q, x> - |x|^2 - |q|^2 (|q|^2 is constant per row)
        scores = 2.0 * scores - base_sq[None, :]
    rows = torch.arange(queries.shape[0], device=queries.device)
    scores[rows, rows + offset] = float("-inf")
    return scores.topk(k, dim=1).indices


@torch.no_grad()
def knn(x: Tensor, k: int, metric: str = "cosine", backend: str = "dense", chunk_size: int | None = None) -> Tensor:
    """Exact k nearest neighbours of every row of ``x`` among the other rows.

    Args:
        x: (N, ...) points, flattened to (N, d).
        k: neighbours per point, ``1 <= k < N``.
        metric: ``"cosine"`` (largest cosine similarity) or ``"euclidean"`` (smallest distance).
        backend: ``"dense"``, ``"chunked"`` or ``"cluster"`` (see module docstring).
        chunk_size: query rows per block for ``"chunked"`` (default: blocks of about 256 MiB).

    Returns:
        (N, k) long tensor; row i lists i's neighbours from nearest to farthest (self excluded).
    """
    check_choice(metric, "metric", METRICS)
    check_choice(backend, "backend", BACKENDS)
    x = check_features(x)
    n = x.shape[0]
    check_k(k, n)
    if backend == "cluster":
        return _knn_cluster(x, k, metric)
    points = _prepare(x, metric)
    base_sq = (points * points).sum(1) if metric == "euclidean" else None
    if backend == "dense":
        return _block_knn(points, points, base_sq, 0, k)
    step = chunk_size or default_chunk_size(n, points.element_size())
    if step < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return torch.cat([_block_knn(points[s : s + step], points, base_sq, s, k) for s in range(0, n, step)])


def _knn_cluster(x: Tensor, k: int, metric: str) -> Tensor:
    if not WITH_TORCH_CLUSTER:
        raise ImportError("backend='cluster' needs torch-cluster: `make install-cluster` or pip install 'geomlat[cluster]'")
    import torch_cluster

    n = x.shape[0]
    # torch-cluster's CPU kernel has no cosine option: on unit vectors |u - v|^2 = 2 - 2 cos(u, v), so the
    # Euclidean neighbours of the normalized points are the cosine neighbours.
    points = _prepare(x, metric)
    # edge_index[0] = neighbour (source), edge_index[1] = centre (target); exactly k per centre.
    edge_index = torch_cluster.knn_graph(points, k=k, loop=False, flow="source_to_target")
    order = torch.argsort(edge_index[1], stable=True)
    neighbours = edge_index[0, order].view(n, k)
    # torch-cluster does not sort neighbours: order them by distance like the other backends
    if metric == "cosine":
        score = (points[:, None, :] * points[neighbours]).sum(-1)
    else:
        score = -((points[:, None, :] - points[neighbours]) ** 2).sum(-1)
    return neighbours.gather(1, score.argsort(dim=1, descending=True))


def knn_graph(x: Tensor, k: int, metric: str = "cosine", backend: str = "dense", chunk_size: int | None = None) -> Tensor:
    """Directed k-NN edge list ``(2, N * k)``: row 0 the centre i, row 1 its neighbour j."""
    neighbours = knn(x, k, metric, backend, chunk_size)
    centres = torch.arange(neighbours.shape[0], device=neighbours.device).repeat_interleave(k)
    return torch.stack([centres, neighbours.reshape(-1)])
