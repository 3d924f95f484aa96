"""Benchmark: representation similarity measures against platonic-rep's approach on the same inputs.

geomlat's ``mutual_knn`` and ``lcs_knn`` (exact chunked k-NN, vectorized dynamic program) and
``linear_cka`` (feature space, no (N, N) matrix) against the rewrite of platonic-rep's ``metrics.py`` in
:mod:`benchmarks.reference` (dense (N, N) inner products and ``argsort``, (N, N) masks, a Python dynamic
program per row, Gram and centring matrices). Values are ratios of medians (platonic-rep / geomlat).
"""
from __future__ import annotations

import torch

from geomlat.analysis import representation_similarity

from .common import Result, interleaved
from .reference import platonic_lcs_knn, platonic_linear_cka, platonic_mutual_knn


def features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two related float32 representations (a shared factor plus noise), rows scaled to unit length."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 32, generator=g)
    x = z @ torch.randn(32, d, generator=g) + torch.randn(n, d, generator=g)
    y = z @ torch.randn(32, d, generator=g) + torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(y, dim=1)


def run(cfg: dict) -> list[Result]:
    n, d, k = cfg["similarity_knn_size"]
    x, y = features(n, d, 0)
    reps = cfg["similarity_reps"]
    t = interleaved({"geomlat": lambda: representation_similarity(x, y, "mutual_knn", topk=k),
                     "platonic": lambda: platonic_mutual_knn(x, y, k)}, reps, 0)
    t_lcs = interleaved({"geomlat": lambda: representation_similarity(x, y, "lcs_knn", topk=k),
                         "platonic": lambda: platonic_lcs_knn(x, y, k)}, reps, 0)
    n_cka = cfg["similarity_cka_n"]
    xc, yc = x[:n_cka], y[:n_cka]
    t_cka = interleaved({"geomlat": lambda: representation_similarity(xc, yc, "linear_cka"),
                         "platonic": lambda: platonic_linear_cka(xc, yc)}, reps, 0)
    size = f"N = {n}, d = {d}, topk = {k}, float32 unit rows"
    return [
        Result("similarity_mutual_knn_speedup_vs_platonic", t.ratio("platonic", "geomlat"), "info",
               "x (platonic-rep / ours)", f"{size}; medians: {t.describe()}"),
        Result("similarity_lcs_knn_speedup_vs_platonic", t_lcs.ratio("platonic", "geomlat"), "info",
               "x (platonic-rep / ours)", f"{size}; medians: {t_lcs.describe()}"),
        Result("similarity_linear_cka_speedup_vs_platonic", t_cka.ratio("platonic", "geomlat"), "info",
               "x (platonic-rep / ours)", f"N = {n_cka}, d = {d}; medians: {t_cka.describe()}"),
    ]
