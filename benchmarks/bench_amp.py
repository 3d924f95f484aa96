"""Benchmark 6: mixed precision. The engine's training step (:func:`geomlat.engine.step.train_step`) under
``precision="bf16-mixed"`` over the same step in float32, with GKD (the paper's WRN-28-1 -> WRN-28-0.5
distillation on three stage pairs, weight 25) and with the label-variation regularizer (PreActResNet18,
every ReLU output, the authors' m = 2, gamma = 0.01), both sides interleaved in one run.

On a CPU without bfloat16 matrix units (no AVX512-BF16 / AMX) autocast bf16 is usually *slower* than
float32 (conversions, no faster kernels): the ratio is reported as measured ("info"), the speed-up is a
GPU matter (``make gpu-check``).
"""
from __future__ import annotations

from functools import partial

import torch

from geomlat.engine.step import train_step
from geomlat.losses import GKD
from geomlat.objectives import Distiller, SmoothnessObjective
from geomlat.models import build_model

from .common import Result, interleaved


def _cpu_bf16_units() -> str:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) if found else "none"


def _pair(name: str, objective: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int, detail: str) -> Result:
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    objective.train()
    sides = {p: partial(train_step, objective, x, y, opt, precision=p) for p in ("32", "bf16-mixed")}
    t = interleaved(sides, reps, 1)
    return Result(name, t.ratio("bf16-mixed", "32"), "info", "x float32 step",
                  f"{detail}; engine train_step medians: {t.describe()} ({reps} reps); CPU bf16 units: {_cpu_bf16_units()}")


def run(cfg: dict) -> list[Result]:
    gen = torch.Generator().manual_seed(0)
    b, reps = cfg["amp_batch"], cfg["amp_reps"]
    x = torch.rand(b, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (b,), generator=gen)
    torch.manual_seed(0)
    teacher, student = build_model("wrn", width=1.0), build_model("wrn", width=0.5)
    pairs = list(zip(teacher.stage_names, student.stage_names))
    gkd = Distiller(student, teacher, {"gkd": (GKD(), 25.0)}, pairs=pairs)
    results = [_pair("amp_gkd_step", gkd, x, y, reps,
                     f"GKD step, teacher WRN-28-1, student WRN-28-0.5, batch {b}, {len(pairs)} stage pairs")]
    model = build_model("preact_resnet18", width=cfg["amp_preact_width"])
    reg = SmoothnessObjective(model)
    results.append(_pair("amp_regularizer_step", reg, x, y, reps,
                         f"regularizer step, PreActResNet18 (width {cfg['amp_preact_width']}), {len(model.relu_names)} ReLU outputs, batch {b}"))
    return results
