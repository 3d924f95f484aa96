"""Process-group helpers: which process writes run records, and the collectives the engine needs.

On one process these are trivial (rank 0 of 1). Under ``torchrun`` (or ``geomlat study NAME --nproc N``,
or :func:`geomlat.distributed.launch`) with an initialized ``torch.distributed`` process group, only
rank 0 writes files (config, metrics, checkpoints, tables, figures); every rank computes.

Files are shared through the file system: with several nodes, the output folder must be on a file
system every node sees (as usual on a cluster), so that a resumed run finds its checkpoints.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "is_main_process",
    "is_distributed",
    "init_from_env",
    "barrier",
    "broadcast_object",
    "all_reduce_sum",
    "shard",
    "main_process_writes",
    "writes_skipped",
]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Rank of this process (0 without an initialized process group)."""
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    """Number of processes (1 without an initialized process group)."""
    return dist.get_world_size() if _active() else 1


def get_local_rank() -> int:
    """Rank of this process on its node (``LOCAL_RANK`` set by torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on the process that writes files (rank 0)."""
    return get_rank() == 0


def is_distributed() -> bool:
    """True when an initialized process group has more than one process."""
    return get_world_size() > 1


def default_backend() -> str:
    """``"cpu:gloo,cuda:nccl"`` when CUDA is available (CPU tensors through gloo, GPU tensors through
    NCCL), else ``"gloo"``; ``GEOMLAT_DIST_BACKEND`` overrides."""
    env = os.environ.get("GEOMLAT_DIST_BACKEND")
    if env:
        return env
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``) when ``WORLD_SIZE > 1``.

    With CUDA, rank ``LOCAL_RANK`` uses GPU ``LOCAL_RANK`` (``torch.cuda.set_device``), so that ``"cuda"``
    and ``"auto"`` devices mean this process's GPU. Returns True if a process group was initialized here
    (False: single process, or already initialized).
    """
    if _active():
        return False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {missing} are not set: start the processes with torchrun "
                           "(or `geomlat study NAME --nproc N`)")
    if torch.cuda.is_available():
        torch.cuda.set_device(get_local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend or default_backend(), init_method="env://", timeout=timedelta(seconds=timeout_s))
    return True


def barrier() -> None:
    """Wait for every process (no-op on one process).

    Through gloo with a CPU tensor whenever gloo is available: ``dist.barrier()`` would go through NCCL on
    a machine with GPUs, also for a CPU-only run whose processes share a GPU (which NCCL refuses)."""
    if not is_distributed():
        return
    if "gloo" in str(dist.get_backend()):
        dist.all_reduce(torch.zeros(1))
    else:
        dist.barrier()


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled: use for small Python values only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over the processes (a new tensor; the input is left untouched)."""
    out = tensor.clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def shard(batch: Tensor, rank: int | None = None, world: int | None = None) -> Tensor:
    """This rank's contiguous part of a batch (of indices or samples) along dim 0, in rank order.

    ``torch.tensor_split``: sizes differ by at most one, rank 0's rows first, so that gathering the shards
    in rank order (:func:`geomlat.distributed.all_gather_with_grad`) gives back the batch itself.
    """
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world is None else world
    return batch.tensor_split(world)[rank]


_SKIP_WRITES = False


@contextlib.contextmanager
def main_process_writes() -> Iterator[None]:
    """Within this block, the atomic writers of :mod:`geomlat.engine.io` write on rank 0 only (the other
    ranks skip the write and return the path). The study runner wraps every study in it, so that code
    written for one process (tables, figures, caches) writes each file once under torchrun."""
    global _SKIP_WRITES
    before = _SKIP_WRITES
    _SKIP_WRITES = not is_main_process()
    try:
        yield
    finally:
        _SKIP_WRITES = before


def writes_skipped() -> bool:
    """True inside :func:`main_process_writes` on a rank other than 0."""
    return _SKIP_WRITES
