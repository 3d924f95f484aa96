"""Process-group helpers: which process writes run records.

On one process these are trivial (rank 0 of 1). Under ``torchrun`` with an initialized
``torch.distributed`` process group, only rank 0 writes files (config, metrics, checkpoints, tables,
figures); every rank computes.
"""
from __future__ import annotations

import torch.distributed as dist

__all__ = ["get_rank", "get_world_size", "is_main_process"]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Rank of this process (0 without an initialized process group)."""
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    """Number of processes (1 without an initialized process group)."""
    return dist.get_world_size() if _active() else 1


def is_main_process() -> bool:
    """True on the process that writes files (rank 0)."""
    return get_rank() == 0
