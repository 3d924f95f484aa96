"""Benchmark 2: a distillation step with GKD on three layer pairs over the same step with Hinton KD only.

Teacher WRN-28-1, student WRN-28-0.5 (the paper's Table 1 pair), CIFAR shape, both sides run the
teacher under ``no_grad``; GKD on the ends of the three stages, authors' setting (full normalized
cosine graphs, weight 25).
"""
from __future__ import annotations

from functools import partial

import torch

from geomlat.losses import GKD, Distiller, HintonKD
from geomlat.models import build_model

from .common import Result, interleaved


def _step(objective, opt, x, y):
    opt.zero_grad(set_to_none=True)
    _, losses = objective(x, y)
    sum(losses.values()).backward()
    opt.step()


def run(cfg: dict) -> list[Result]:
    gen = torch.Generator().manual_seed(0)
    b = cfg["gkd_batch"]
    teacher = build_model("wrn", width=1.0)
    student = build_model("wrn", width=0.5)
    pairs = list(zip(teacher.stage_names, student.stage_names))
    hinton = Distiller(student, teacher, {"kd": (HintonKD(), 1.0)})
    gkd = Distiller(student, teacher, {"gkd": (GKD(), 25.0)}, pairs=pairs)
    hinton.train(), gkd.train()
    opt = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(b, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (b,), generator=gen)
    t = interleaved({"hinton": partial(_step, hinton, opt, x, y), "gkd": partial(_step, gkd, opt, x, y)}, cfg["gkd_reps"], 1)
    return [Result("gkd_overhead", t.ratio("gkd", "hinton"), "<= 1.05", "x Hinton-KD step",
                   f"teacher WRN-28-1, student WRN-28-0.5, batch {b}, input (3, 32, 32), GKD on {len(pairs)} stage "
                   f"pairs; step medians: {t.describe()} ({cfg['gkd_reps']} reps)")]
