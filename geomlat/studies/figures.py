"""Shared figure helpers: a seaborn-styled matplotlib Figure (no pyplot global state) saved atomically as PNG."""
from __future__ import annotations

import io
from pathlib import Path

import seaborn as sns
from matplotlib.figure import Figure

from ..analysis._style import MARKERS, PALETTE, series_styles
from ..io import atomic_write_bytes

__all__ = ["new_figure", "save_figure", "PALETTE", "MARKERS", "series_styles"]


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0, **subplots_kw):
    """``(fig, axes)`` with the seaborn whitegrid style; does not touch pyplot's global figure list, so
    figures are freed when they go out of scope and no display backend is needed."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = Figure(figsize=(width * ncols, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=True, **subplots_kw)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Render ``fig`` to PNG at ``dpi`` and write it atomically to ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())
