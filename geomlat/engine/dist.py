"""Compatibility alias: the process-group helpers live in :mod:`geomlat.distributed` (one distributed home)."""
from ..distributed import (  # noqa: F401
    all_reduce_sum,
    barrier,
    broadcast_object,
    default_backend,
    get_local_rank,
    get_rank,
    get_world_size,
    init_from_env,
    is_distributed,
    is_main_process,
    main_process_writes,
    shard,
    writes_skipped,
)

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
