"""Benchmark 2: a distillation step with GKD on three layer pairs over the same step with Hinton KD only.

Teacher WRN-28-1, student WRN-28-0.5 (the paper's Table 1 pair), CIFAR shape, both sides run the
teacher under ``no_grad``; GKD on the ends of the three stages, authors' setting (full normalized
cosine graphs, weight 25). Measured in the same run, for a missed goal: the GKD loss alone (forward and
backward given the captured features) and the floor of any exact GKD, the (B, d) x (d, B) Gram products
of the three pairs (teacher forward, student forward and backward).
"""
from __future__ import annotations

from functools import partial

import torch

from geomlat import LatentCapture
from geomlat.losses import GKD, HintonKD
from geomlat.objectives import Distiller
from geomlat.models import build_model

from .common import Result, interleaved


def _step(objective, opt, x, y):
    opt.zero_grad(set_to_none=True)
    _, losses = objective(x, y)
    sum(losses.values()).backward()
    opt.step()


def _grams(pairs):
    for t, s in pairs:
        t, s = t.flatten(1), s.detach().flatten(1)
        t @ t.T, s @ s.T, s @ s.T


def _gkd_alone(loss, pairs):
    for _, s in pairs:
        s.grad = None
    loss([t for t, _ in pairs], [s for _, s in pairs]).backward()


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


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
    result = Result("gkd_overhead", t.ratio("gkd", "hinton"), "<= 1.05", "x Hinton-KD step",
                    f"teacher WRN-28-1, student WRN-28-0.5, batch {b}, input (3, 32, 32), GKD on {len(pairs)} stage "
                    f"pairs; step medians: {t.describe()} ({cfg['gkd_reps']} reps)")
    if result.met() is False:
        with torch.no_grad(), LatentCapture(teacher, teacher.stage_names) as t_out, LatentCapture(student, student.stage_names) as s_out:
            teacher(x), student(x)
        feats = [(t_out[a], s_out[c].clone().requires_grad_(True)) for a, c in pairs]
        tiny = [(torch.rand(b, 1, generator=gen), torch.rand(b, 1, generator=gen).requires_grad_(True)) for _ in pairs]
        alone = interleaved({"gkd_loss": partial(_gkd_alone, GKD(), feats), "grams": partial(_grams, feats),
                             "fixed": partial(_gkd_alone, GKD(), tiny)}, cfg["gkd_reps"], 1)
        budget = 0.05 * t.median("hinton")
        loss, grams, fixed = alone.median("gkd_loss"), alone.median("grams"), alone.median("fixed")
        result.why = (f"budget {_ms(budget)} (5% of a {_ms(t.median('hinton'))} Hinton-KD step); floor of any exact GKD: "
                      f"the 9 (B, d) x (d, B) Gram products (teacher forward, student forward and backward, 3 pairs) = "
                      f"{_ms(grams)}; fixed cost (the same loss on (B, 1) features: Python and dispatch) {_ms(fixed)}; "
                      f"ours {_ms(loss)} alone (forward and backward given the features). ")
        if grams > budget or fixed > budget:
            result.why += ("The floor alone" if grams > budget else "The fixed cost alone") + " exceeds the budget."
        else:
            result.why += ("The floor fits in the budget, the floor plus our fixed cost and (B, B) work (normalization, "
                           "loss) does not." if grams + fixed > budget else "Both fit: ours does not.")
    return [result]
