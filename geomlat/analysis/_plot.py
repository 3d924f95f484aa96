"""Saving analysis figures: atomically (temp file in the same folder, then ``os.replace``)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def save_pyplot_figure(fig, path: str | Path) -> Path:
    """Write a pyplot ``fig`` to ``path`` (format from the suffix), then close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
