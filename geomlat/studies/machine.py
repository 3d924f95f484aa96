"""The machine a study ran on, recorded next to its results (``results/<study>/machine.json``).

Numbers move in their last digits across CPUs, BLAS libraries and thread counts (reductions run in another
order); the record says where a committed table came from, so that a rerun elsewhere is compared knowingly.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

from ..io import write_json


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name: the first ``model name`` (x86) or ``Hardware`` / ``Processor`` (ARM) line of
    ``cpuinfo``; where that file does not exist, :func:`platform.processor` (or ``"unknown"``)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or "unknown"


def blas_info() -> list[dict]:
    """The BLAS / OpenMP libraries loaded in this process (``threadpoolctl``): ``[{"user_api", "internal_api",
    "version", "num_threads"}]``."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "num_threads")
    libs = [{k: lib.get(k) for k in keys} for lib in threadpool_info()]
    return sorted(libs, key=lambda lib: tuple(str(lib.get(k)) for k in keys))   # load order varies between runs


def machine_info() -> dict:
    """What a reader needs to compare a rerun: CPU model and count, threads torch uses, BLAS libraries, the
    versions of Python, torch and NumPy, and the accelerator (CUDA device name) if any."""
    import numpy

    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "blas": blas_info(),
        "torch_blas": _torch_blas(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _torch_blas() -> dict:
    """How torch was built: its ``BLAS_INFO`` / ``LAPACK_INFO`` settings and the CPU capability it dispatches to."""
    import re

    config = torch.__config__.show()
    out = {key.lower(): m.group(1) for key in ("BLAS_INFO", "LAPACK_INFO") if (m := re.search(rf"{key}=([^,\s]+)", config))}
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def write_machine_info(results_dir: str | Path) -> Path:
    """Write :func:`machine_info` to ``results_dir/machine.json`` atomically; returns the path."""
    return write_json(Path(results_dir) / "machine.json", machine_info())
