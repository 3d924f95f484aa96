"""Timing harness shared by the benchmarks: interleaved repetitions, medians, result records."""
from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Result:
    """One line of ``results.json``: ``{"name", "value", "goal", "unit"}`` (``goal`` "info" = reported only)."""

    name: str
    value: float
    goal: str
    unit: str
    detail: str = ""  # free text for results.md (sizes, medians)
    why: str = ""  # for a goal that is not met: the measured reason (written under the table)

    def met(self) -> bool | None:
        """True/False when ``goal`` is a comparison such as ``"<= 1.05"``, None for "info" or a value not
        measured (NaN: an optional competitor such as faiss is not installed)."""
        if math.isnan(self.value):
            return None
        if self.goal.startswith("<="):
            return self.value <= float(self.goal[2:])
        if self.goal.startswith(">="):
            return self.value >= float(self.goal[2:])
        return None

    def as_json(self) -> dict:
        return {"name": self.name, "value": round(float(self.value), 6), "goal": self.goal, "unit": self.unit}


@dataclass
class Timing:
    """Per-side list of seconds and their medians."""

    times: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def ratio(self, num: str, den: str) -> float:
        return self.median(num) / self.median(den)

    def describe(self) -> str:
        return ", ".join(f"{n} {self.median(n) * 1e3:.1f} ms" for n in self.times)


def interleaved(sides: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> Timing:
    """Time each side ``reps`` times, interleaved A, B, A, B, ... after ``warmup`` untimed rounds.

    Returns the per-side times (seconds); compare medians.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    timing = Timing({name: [] for name in sides})
    for _ in range(reps):
        for name, fn in sides.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            timing.times[name].append(time.perf_counter() - start)
    return timing
