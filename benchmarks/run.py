"""Run every benchmark and write ``benchmarks/results.md``, ``benchmarks/results.json`` and the scaling figure.

Usage: ``python -m benchmarks [--profile full|smoke] [--only NAME ...] [--threads N]``. ``full`` is the
``make bench`` run (sizes of the issue, repetitions cut to fit in 10 minutes on 2 CPU cores); ``smoke``
runs tiny sizes (used by the tests, writes to a temporary folder).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from . import bench_amp, bench_gkd, bench_knn, bench_lgg, bench_nnk, bench_nnk_knn, bench_regularizer, bench_similarity
from .common import Result

ROOT = Path(__file__).resolve().parent.parent

PROFILES = {
    "full": {
        # PreActResNet18 steps cost seconds on a CPU: few repetitions at batch 512, authors' step only at 100
        "preact_batches": {
            100: {"reps": 5, "warmup": 1, "authors_in_step": True, "alone_reps": 3},
            512: {"reps": 1, "warmup": 1, "authors_in_step": False, "alone_reps": 1},
        },
        "quick_batches": {128: {"reps": 9, "warmup": 1, "authors_in_step": True, "alone_reps": 7}},
        "gkd_batch": 128, "gkd_reps": 5,
        "lgg_size": (256, 65536), "lgg_reps": 7,
        "nnk_size": (5000, 64, 30), "nnk_reps": 3,
        "knn_size": (50000, 256, 10), "knn_reps": 2,
        "nnk_knn_size": (50000, 64, 30), "nnk_knn_reps": 3,
        "lgg_scaling": ((64, 128, 256, 512, 1024, 2048), 4096),
        "nnk_scaling": ((250, 500, 1000, 2000, 5000), 64, 30),
        "scaling_reps": 3,
        "amp_batch": 32, "amp_reps": 3, "amp_preact_width": 64,
        # platonic-rep's CKA forms three (N, N) matrices and four (N, N) products: N = 2,000 for its side
        "similarity_knn_size": (10000, 512, 10), "similarity_cka_n": 2000, "similarity_reps": 1,
    },
    "smoke": {
        "preact_batches": {12: {"reps": 1, "warmup": 0, "authors_in_step": True, "alone_reps": 1}},
        "quick_batches": {16: {"reps": 1, "warmup": 0, "authors_in_step": True, "alone_reps": 1}},
        "gkd_batch": 8, "gkd_reps": 1,
        "lgg_size": (32, 256), "lgg_reps": 1,
        "nnk_size": (60, 16, 10), "nnk_reps": 1,
        "knn_size": (300, 16, 5), "knn_reps": 1,
        "nnk_knn_size": (400, 16, 10), "nnk_knn_reps": 1,
        "lgg_scaling": ((16, 32), 64),
        "nnk_scaling": ((40, 80), 16, 10),
        "scaling_reps": 1,
        "amp_batch": 8, "amp_reps": 1, "amp_preact_width": 4,
        "similarity_knn_size": (200, 16, 5), "similarity_cka_n": 100, "similarity_reps": 1,
    },
}

BENCHES = {
    "regularizer": bench_regularizer.run,
    "gkd": bench_gkd.run,
    "lgg": bench_lgg.run,
    "nnk": bench_nnk.run,
    "knn": bench_knn.run,
    "nnk_knn": bench_nnk_knn.run,
    "amp": bench_amp.run,
    "similarity": bench_similarity.run,
}


def scaling_figure(lgg: dict, nnk: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    for name, style in (("geomlat", "o-"), ("mm", "s--"), ("authors", "^:")):
        ax.loglog(lgg["B"], lgg[name], style, label={"mm": "torch.mm (floor)", "authors": "authors' approach"}.get(name, name))
    ax.set(xlabel="batch size B", ylabel="seconds (median)", title=f"LGG construction, d = {lgg['d']}, k = 10")
    ax.legend()
    ax = axes[1]
    ax.loglog(nnk["N"], nnk["geomlat"], "o-", label="geomlat batched exact")
    ax.loglog(nnk["N"], nnk["authors_loop"], "^:", label="authors' per-node loop (SciPy Cholesky)")
    ax.loglog(nnk["N"], nnk["scipy_loop"], "s--", label="per-node scipy.optimize.nnls")
    ax.set(xlabel="points N", ylabel="seconds (median)", title=f"NNK weights, d = {nnk['d']}, k = {nnk['k']}")
    ax.legend()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax, ticks in zip(axes, (lgg["B"], nnk["N"])):
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(list(ticks))  # label the measured sizes only: log minor labels overlap
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    return f"{v:.3g}" if abs(v) < 1e-2 else f"{v:.3f}"


def markdown(results: list[Result], header: str, scaling: dict | None) -> str:
    lines = [header, "", "| name | value | goal | unit | met |", "|---|---|---|---|---|"]
    for r in results:
        met = r.met()
        flag = "-" if met is None else ("yes" if met else "**NO**")
        lines.append(f"| {r.name} | {_fmt(r.value)} | {r.goal} | {r.unit} | {flag} |")
    missed = [r for r in results if r.met() is False]
    if missed:
        lines += ["", "## Goals not met on this machine, and why", ""]
        lines += [f"- **{r.name}** ({_fmt(r.value)}, goal {r.goal}): {r.why or 'no measured explanation recorded'}" for r in missed]
    lines += ["", "## Details", ""]
    lines += [f"- **{r.name}**: {r.detail}" for r in results if r.detail]
    if scaling:
        lines += ["", "## Scaling (figures/bench/scaling.png)", ""]
        lgg, nnk = scaling["lgg"], scaling["nnk"]
        lines.append(f"LGG construction, d = {lgg['d']}: B = {lgg['B']}")
        for name in ("geomlat", "mm", "authors"):
            lines.append(f"- {name}: " + ", ".join(f"{s * 1e3:.1f} ms" for s in lgg[name]))
        lines.append(f"\nNNK weights, d = {nnk['d']}, k = {nnk['k']}: N = {nnk['N']}")
        for name in ("geomlat", "authors_loop", "scipy_loop"):
            lines.append(f"- {name}: " + ", ".join(f"{s:.3f} s" for s in nnk[name]))
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling figure")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="folder of results.md/json")
    parser.add_argument("--figures", type=Path, default=ROOT / "figures" / "bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = dict(PROFILES[args.profile], threads=args.threads)
    start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: list[Result] = []
    for name in args.only or BENCHES:
        t0 = time.perf_counter()
        results += BENCHES[name](cfg)
        print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    scaling = None
    if not args.no_scaling and args.only is None:
        t0 = time.perf_counter()
        scaling = {"lgg": bench_lgg.scaling(cfg), "nnk": bench_nnk.scaling(cfg)}
        scaling_figure(scaling["lgg"], scaling["nnk"], args.figures / "scaling.png")
        print(f"[bench] scaling: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    header = (
        f"# geomlat benchmarks ({args.profile} profile)\n\n"
        f"Device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}, "
        f"torch.set_num_threads({args.threads}); 1-minute load average at start {load:.2f}; total {total:.0f} s.\n"
        "Each value is a ratio of medians over repetitions after a warm-up, the compared sides interleaved "
        "in one run. 'met' compares the value with the goal; '-' = reported only."
    )
    _atomic_write(args.out / "results.json", json.dumps([r.as_json() for r in results], indent=1) + "\n")
    _atomic_write(args.out / "results.md", markdown(results, header, scaling))
    print(markdown(results, header, None))
    return 0
