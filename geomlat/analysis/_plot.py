"""Saving analysis figures: atomically (:mod:`geomlat.io`), on the main process only under
:func:`geomlat.distributed.main_process_writes` (the other ranks close the figure and write nothing)."""
from __future__ import annotations

import io
from pathlib import Path

from ..io import atomic_write_bytes


def save_pyplot_figure(fig, path: str | Path) -> Path:
    """Write a pyplot ``fig`` to ``path`` (format from the suffix), then close it; returns the path.

    The figure is rendered in memory and written with :func:`geomlat.io.atomic_write_bytes`, so
    inside :func:`geomlat.distributed.main_process_writes` only rank 0 writes the file.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:].lower() or None)
        return atomic_write_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)
