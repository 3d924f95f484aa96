"""Benchmark 6: NNK graph end to end as a ratio to the exact k-NN graph alone on the same points.

The NNK proposal (``papers/004``) promises NNK graphs "with a modest increase in complexity with respect to
k-nearest neighbor (kNN) graphs"; the goal here is NNK <= 2x k-NN at N = 50,000, d = 64, k = 30 (cosine):

- ``knn``: :func:`geomlat.knn.knn_graph` with the chunked exact backend (the (N * k) directed edge list);
- ``nnk``: :func:`geomlat.nnk.nnk_graph` with the same chunked k-NN search for its candidates, then the exact
  batched solve of every node and the max-symmetrization.

Both start from the same float32 points (features-like data near a curved 8-dimensional manifold,
:func:`benchmarks.bench_nnk.points`). When the goal is missed, the NNK time is split into its k-NN search
and its solve + symmetrization (timed on the same candidates) to say where the time goes.
"""
from __future__ import annotations

from geomlat.knn import knn, knn_graph
from geomlat.nnk import nnk_graph, nnk_symmetrize, nnk_weights

from .bench_nnk import points
from .common import Result, interleaved


def sides(n: int, d: int, k: int, seed: int = 0):
    """The two timed sides on the same points; ``box`` receives the NNK graph's mean degree."""
    x = points(n, d, seed)
    box = {}

    def knn_side():
        knn_graph(x, k, metric="cosine", backend="chunked")

    def nnk_side():
        g = nnk_graph(x, k, kernel="cosine", knn_backend="chunked")
        box["degree"] = g.edge_index.shape[1] / n

    return {"knn": knn_side, "nnk": nnk_side}, x, box


def run(cfg: dict) -> list[Result]:
    n, d, k = cfg["nnk_knn_size"]
    fns, x, box = sides(n, d, k)
    t = interleaved(fns, cfg["nnk_knn_reps"], 1)
    ratio = t.ratio("nnk", "knn")
    detail = (f"N = {n:,}, d = {d}, k = {k}, cosine kernel, chunked exact k-NN (default tiles) on both sides, float32 "
              f"points, NNK solved in float64; mean NNK degree {box['degree']:.1f} (of {k} candidates, after "
              f"max-symmetrization); medians: {t.describe()}")
    result = Result("nnk_vs_knn", ratio, "<= 2", "x (NNK graph / k-NN graph)", detail)
    if result.met() is False:
        nbrs = knn(x, k, metric="cosine", backend="chunked")
        solve = interleaved({"solve": lambda: nnk_symmetrize(nnk_weights(x, k, kernel="cosine", neighbors=nbrs))},
                            cfg["nnk_knn_reps"], 0)
        per_node = 1e6 / n
        result.why = (
            f"the k-NN search takes {t.median('knn'):.2f} s, so the goal leaves {t.median('knn'):.2f} s "
            f"({t.median('knn') * per_node:.1f} us per node) for the NNK solve; the exact solve and symmetrization "
            f"on the same candidates take {solve.median('solve'):.2f} s ({solve.median('solve') * per_node:.1f} us per "
            f"node: the float64 Gram matrix of {k + 1} gathered points and about one rank-1 update of a "
            f"({k + 1}, {k + 1}) tableau per NNK neighbor)."
        )
    return [result]
