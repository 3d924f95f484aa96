"""Benchmark 4: NNK weights, batched exact solver against a per-node SciPy loop (the reference code's way).

Both sides get the same k-NN candidates (computed once with :func:`geomlat.knn`), so the comparison is
the solve: ``geomlat.nnk.nnk_weights(..., neighbors=...)`` (batched Lawson-Hanson, float64) against
:func:`benchmarks.reference.scipy_nnk_weights` (Cholesky + ``scipy.optimize.nnls`` per node). The
weights are compared entry by entry.
"""
from __future__ import annotations

import numpy as np
import torch

from geomlat import knn
from geomlat.nnk import nnk_weights

from .common import Result, interleaved
from .reference import scipy_nnk_weights


def points(n: int, d: int, seed: int = 0, intrinsic: int = 8) -> torch.Tensor:
    """Points near a curved ``intrinsic``-dimensional manifold in R^d (features-like data), float32."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, intrinsic, generator=gen)
    w1 = torch.randn(intrinsic, 4 * intrinsic, generator=gen)
    w2 = torch.randn(4 * intrinsic, d, generator=gen) / (4 * intrinsic) ** 0.5
    return torch.tanh(z @ w1) @ w2 + 0.01 * torch.randn(n, d, generator=gen)


def sides(n: int, d: int, k: int, seed: int = 0):
    x = points(n, d, seed)
    nbrs = knn(x, k, metric="cosine")
    xd, nd = x.double().numpy(), nbrs.numpy()
    box = {}

    def ours():
        box["ours"] = nnk_weights(x.double(), k, kernel="cosine", neighbors=nbrs).weights.numpy()

    def ref():
        box["ref"] = scipy_nnk_weights(xd, nd)

    return {"geomlat": ours, "scipy_loop": ref}, box


def run(cfg: dict) -> list[Result]:
    n, d, k = cfg["nnk_size"]
    fns, box = sides(n, d, k)
    t = interleaved(fns, cfg["nnk_reps"], 1)
    diff = float(np.abs(box["ours"] - box["ref"]).max())
    kept = float((box["ours"] > 0).sum(1).mean())
    size = (f"N = {n}, d = {d}, k = {k}, cosine kernel, float64, same k-NN candidates for both, "
            f"{kept:.1f} NNK neighbours per node on average; medians: {t.describe()}")
    return [
        Result("nnk_speedup", t.ratio("scipy_loop", "geomlat"), ">= 20", "x (scipy loop / ours)", size),
        Result("nnk_max_weight_difference", diff, "<= 1e-5", "abs", "max |theta_ours - theta_scipy| over all (node, candidate)"),
    ]


def scaling(cfg: dict) -> dict:
    ns, d, k = cfg["nnk_scaling"]
    out = {"N": [], "d": d, "k": k, "geomlat": [], "scipy_loop": []}
    for n in ns:
        fns, _ = sides(n, d, k, seed=n)
        t = interleaved(fns, cfg["scaling_reps"], 1)
        out["N"].append(n)
        out["geomlat"].append(t.median("geomlat"))
        out["scipy_loop"].append(t.median("scipy_loop"))
    return out
