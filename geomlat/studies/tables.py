"""Shared table helpers of the studies: aggregation over seeds and Markdown/CSV tables written atomically."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..io import atomic_write_text

__all__ = ["median_std", "Column", "format_value", "markdown_table", "csv_text", "write_table"]


def median_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """``(median, std, n)`` of the finite values; ``std`` is the sample standard deviation (ddof=1),
    NaN when fewer than 2 values; ``median`` NaN when none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(np.median(v)), float(np.std(v, ddof=1)) if v.size > 1 else math.nan, int(v.size)


@dataclass(frozen=True)
class Column:
    """A table column: ``key`` in the row dicts, ``title`` in the Markdown header, ``fmt`` a format spec
    for numbers in Markdown (CSV keeps full precision), ``scale`` multiplies numbers in Markdown (100 for %)."""

    key: str
    title: str
    fmt: str = ""
    scale: float = 1.0
    signed: bool = False


def format_value(value: Any, column: Column) -> str:
    """Markdown cell text: numbers scaled and formatted, None/NaN as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        fmt = ("+" if column.signed else "") + (column.fmt or "g")
        return format(value * column.scale, fmt)
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub-flavoured Markdown table; text columns left-aligned, number columns right-aligned."""
    numeric = [
        all(isinstance(r.get(c.key), (int, float)) and not isinstance(r.get(c.key), bool) or r.get(c.key) is None for r in rows)
        for c in columns
    ]
    lines = ["| " + " | ".join(c.title for c in columns) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c.key), c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """CSV with a header of ``keys``; floats at full precision (repr), None/NaN as empty cells."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys)
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                cells.append("")
            elif isinstance(v, float):
                cells.append(repr(v))
            else:
                cells.append(v)
        writer.writerow(cells)
    return buf.getvalue()


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    md_path: str | Path,
    csv_path: str | Path | None = None,
    *,
    title: str = "",
    notes: str = "",
    csv_keys: Sequence[str] | None = None,
) -> None:
    """Write ``rows`` as a Markdown table (with an optional ``# title`` and notes below) and as CSV
    (``csv_keys`` default: the columns' keys), each atomically."""
    text = (f"# {title}\n\n" if title else "") + markdown_table(rows, columns) + (f"\n{notes.strip()}\n" if notes else "")
    atomic_write_text(md_path, text)
    if csv_path is not None:
        atomic_write_text(csv_path, csv_text(rows, list(csv_keys or [c.key for c in columns])))
