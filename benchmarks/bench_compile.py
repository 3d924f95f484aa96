"""Benchmark: training steps under ``torch.compile`` (Inductor), as the engine runs them (inside
:func:`geomlat.checks.deferred_value_checks`, where every loss and objective forward traces into one graph).

- the compiled step against the eager one (a GKD distillation step; a step with the smoothness regularizer
  on every ReLU output): ``x eager`` speedups, reported (info);
- the compiled overhead of GKD over a compiled Hinton-KD step (goal <= 1.05), and of the smoothness
  regularizer over a compiled plain cross-entropy step on the quick small CNN (goal <= 1.15; the eager
  overhead is measured beside it, info).

Each side is an objective compiled with ``torch.compile(objective, fullgraph=True)`` (forward and its
backward through AOTAutograd), the SGD update eager; the sides of a ratio run interleaved in one process
on their own copies of the models. Compilation (the first calls) is excluded from the timings and reported.
"""
from __future__ import annotations

import copy
import time
from functools import partial

import torch

from geomlat.checks import deferred_value_checks
from geomlat.losses import GKD, HintonKD
from geomlat.models import build_model
from geomlat.objectives import Distiller, SmoothnessObjective, Supervised

from .common import Result, interleaved


def _step(objective, fn, opt, x, y):
    opt.zero_grad(set_to_none=True)
    _, losses = fn(x, y)
    sum(losses.values()).backward()
    opt.step()


def _sides(objectives: dict, x, y) -> tuple[dict, dict]:
    """{name: step} for each objective eager and compiled (``name`` and ``name_compiled``), and the seconds
    of each compiled side's first two steps (compilation of forward and backward)."""
    sides, compile_s = {}, {}
    for name, objective in objectives.items():
        objective.train()
        opt = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        sides[name] = partial(_step, objective, objective, opt, x, y)
        compiled = partial(_step, objective, torch.compile(objective, fullgraph=True), opt, x, y)
        start = time.perf_counter()
        compiled(), compiled()
        compile_s[name] = time.perf_counter() - start
        sides[f"{name}_compiled"] = compiled
    return sides, compile_s


def bench_gkd(cfg: dict) -> list[Result]:
    gen = torch.Generator().manual_seed(0)
    b = cfg["compile_gkd_batch"]
    teacher, student = build_model("wrn", width=1.0), build_model("wrn", width=0.5)
    pairs = list(zip(teacher.stage_names, student.stage_names))
    objectives = {
        "hinton": Distiller(copy.deepcopy(student), copy.deepcopy(teacher), {"kd": (HintonKD(), 1.0)}),
        "gkd": Distiller(student, teacher, {"gkd": (GKD(), 25.0)}, pairs=pairs),
    }
    x, y = torch.rand(b, 3, 32, 32, generator=gen), torch.randint(0, 10, (b,), generator=gen)
    with deferred_value_checks():
        sides, compile_s = _sides(objectives, x, y)
        t = interleaved(sides, cfg["compile_reps"], 1)
    size = (f"teacher WRN-28-1, student WRN-28-0.5, batch {b}, input (3, 32, 32), GKD on {len(pairs)} stage pairs; "
            f"step medians: {t.describe()} ({cfg['compile_reps']} reps); compilation {compile_s['gkd']:.0f} s (GKD), "
            f"{compile_s['hinton']:.0f} s (Hinton)")
    return [
        Result("compiled_gkd_overhead", t.ratio("gkd_compiled", "hinton_compiled"), "<= 1.05", "x compiled Hinton-KD step", size),
        Result("compile_speedup_gkd_step", t.ratio("gkd", "gkd_compiled"), "info", "x eager GKD step", size),
        Result("eager_gkd_overhead_same_run", t.ratio("gkd", "hinton"), "info", "x eager Hinton-KD step", size),
    ]


def bench_regularizer(cfg: dict) -> list[Result]:
    gen = torch.Generator().manual_seed(0)
    b = cfg["compile_quick_batch"]
    model = build_model("small_cnn")
    objectives = {"plain": Supervised(copy.deepcopy(model)), "smoothness": SmoothnessObjective(model)}
    x, y = torch.rand(b, 1, 8, 8, generator=gen), torch.randint(0, 10, (b,), generator=gen)
    with deferred_value_checks():
        sides, compile_s = _sides(objectives, x, y)
        t = interleaved(sides, cfg["compile_reps"], 1)
    size = (f"quick small CNN, batch {b}, input (1, 8, 8), regularizer on its {len(model.relu_names)} ReLU outputs "
            f"(full graphs, m = 2); step medians: {t.describe()} ({cfg['compile_reps']} reps); compilation "
            f"{compile_s['smoothness']:.0f} s (regularized), {compile_s['plain']:.0f} s (plain)")
    return [
        Result("compiled_regularizer_overhead_quick_small_cnn", t.ratio("smoothness_compiled", "plain_compiled"), "<= 1.15",
               "x compiled plain step", size),
        Result("compile_speedup_regularizer_step", t.ratio("smoothness", "smoothness_compiled"), "info",
               "x eager regularized step", size),
        Result("eager_regularizer_overhead_quick_small_cnn_same_run", t.ratio("smoothness", "plain"), "info",
               "x eager plain step", size),
    ]


def run(cfg: dict) -> list[Result]:
    return bench_gkd(cfg) + bench_regularizer(cfg)
