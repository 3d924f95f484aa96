"""Shared table helpers of the studies: aggregation over seeds and Markdown/CSV tables written atomically."""
from __future__ import annotations

import csv
import io
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..io import atomic_write_text

__all__ = ["median_std", "paired_rows", "paired_text", "holm", "PAIRED_NOTE", "write_paired_table", "Column", "format_value",
           "markdown_table", "csv_text", "write_table"]


def median_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """``(median, std, n)`` of the finite values; ``std`` is the sample standard deviation (ddof=1),
    NaN when fewer than 2 values; ``median`` NaN when none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(np.median(v)), float(np.std(v, ddof=1)) if v.size > 1 else math.nan, int(v.size)


PAIRED_NOTE = (
    "Paired difference: for each seed, the method's value minus its reference's value on the same seed (same "
    "data, same initialization seed), averaged over the seeds both have (negative = fewer errors); [lo, hi] is its "
    "95% Student-t interval (mean +- t_(n-1) sd / sqrt(n)) and p the two-sided paired t-test "
    "(`geomlat.analysis.paired_difference`, method='t'). Reading: 'lower' or 'higher' only where the interval "
    "excludes 0, 'not resolved' otherwise; the readings of the README and the study pages claim no more than this "
    "column. The intervals are per comparison: over the m comparisons of this table about 5% of the true-zero "
    "differences would read as resolved by chance, so 'p (Holm)' adjusts the p-values for the whole table (Holm's "
    "step-down correction, family-wise error 5%); a reading whose Holm p is above 0.05 is weak evidence.")


def paired_rows(per_run: Sequence[Mapping[str, Any]], metrics: Sequence[str], pairs: Iterable[Sequence[str]],
                *, group: Sequence[str] = (), level: float = 0.95) -> list[dict[str, Any]]:
    """Each method's paired difference to its reference method over seeds, per metric, with a Student-t CI.

    Args:
        per_run: one dict per (method, seed[, group keys]) with the keys ``"method"``, ``"seed"``, ``group`` and
            ``metrics`` (real numbers; None or NaN entries are skipped pairwise).
        metrics: the keys to compare (e.g. ``["test_error"]``).
        pairs: ``(method, reference)`` pairs, in the order of the output (a method is never compared with itself;
            a pair repeated is reported once).
        group: keys that must match besides the seed (e.g. ``["classifier"]``).

    Returns:
        One dict per (method, group values, metric) with >= 2 paired seeds: ``method``, ``reference``, the group
        keys, ``metric``, ``n``, ``mean``, ``lo``, ``hi``, ``p`` (see
        :func:`geomlat.analysis.paired_difference`) and ``reading`` ('lower' / 'higher' when the interval
        excludes 0, else 'not resolved'). A (method, group) with fewer than 2 seeds shared with its reference has
        no entry.

    Raises:
        ValueError: two records with the same (method, seed, group values), or a pair naming a method that has no
            record.
    """
    from ..analysis.statistics import paired_difference

    index: dict[tuple, Mapping[str, Any]] = {}
    for r in per_run:
        key = (r["method"], r["seed"], *(r[g] for g in group))
        if key in index:
            raise ValueError(f"two records for method {key[0]!r}, seed {key[1]!r}"
                             + (f", {dict(zip(group, key[2:]))}" if group else "") + ": cannot pair them by seed")
        index[key] = r
    known = {k[0] for k in index}
    pairs = list(dict.fromkeys(tuple(p) for p in pairs))
    for pair in pairs:
        for m in pair:
            if m not in known:
                raise ValueError(f"no record of method {m!r} (pair {list(pair)}); methods with records: {sorted(known)}")
    groups = list(dict.fromkeys(k[2:] for k in index))
    out = []
    for method, ref, gvals in [(m, r, g) for m, r in pairs if m != r for g in groups]:
        for metric in metrics:
            # (method's value, reference's value) on each seed both have, in this group
            values = [(r[metric], index[(ref, r["seed"], *gvals)][metric]) for r in per_run
                      if r["method"] == method and tuple(r[g] for g in group) == gvals
                      and (ref, r["seed"], *gvals) in index]
            values = [(float(a), float(b)) for a, b in values if _finite(a) and _finite(b)]
            if len(values) < 2:
                continue
            d = paired_difference([a for a, _ in values], [b for _, b in values], level=level, method="t")
            reading = "lower" if d["hi"] < 0 else "higher" if d["lo"] > 0 else "not resolved"
            out.append({"method": method, "reference": ref, **dict(zip(group, gvals)), "metric": metric,
                        **{k: d[k] for k in ("n", "mean", "lo", "hi", "p")}, "reading": reading})
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control): with the m p-values sorted ascending,
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``, returned in the input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled) if m else scaled
    return adjusted.tolist()


def _signed(x: float, fmt: str) -> str:
    text = format(x, "+" + fmt)
    return "+" + text[1:] if text.startswith("-") and float(text) == 0 else text   # no "-0.00"


def paired_text(d: Mapping[str, Any] | None, scale: float = 100.0, fmt: str = ".2f") -> str | None:
    """``"+1.20 [+0.40, +2.00]"``: a :func:`paired_rows` entry's mean and interval, scaled (100: points of %)."""
    if d is None:
        return None
    return f"{_signed(d['mean'] * scale, fmt)} [{_signed(d['lo'] * scale, fmt)}, {_signed(d['hi'] * scale, fmt)}]"


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


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


def write_paired_table(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str],
                       metrics: Mapping[str, tuple[str, float, str]], md_path: str | Path, csv_path: str | Path,
                       *, title: str, group: Sequence[tuple[str, str]] = (), group_titles: Mapping[Any, str] = {},
                       notes: str = "") -> None:
    """Write :func:`paired_rows` as ``paired.md`` / ``paired.csv``, with Holm-adjusted p-values over the table.

    ``labels``: method -> display name; ``metrics``: metric key -> (title, scale, format) of its numbers in
    Markdown (CSV keeps the raw values); ``group``: (key, title) of the group columns, in order; ``group_titles``:
    display names of group values in Markdown (e.g. ``{"knn": "k-NN"}``)."""
    adjusted = holm([r["p"] for r in rows])
    shown = [{**r, "label": labels.get(r["method"], r["method"]), "ref_label": labels.get(r["reference"], r["reference"]),
              **{f"{k}_title": group_titles.get(r[k], r[k]) for k, _ in group},
              "metric_title": metrics[r["metric"]][0], "p_holm": p_holm, "p_text": _p_text(r["p"]),
              "p_holm_text": _p_text(p_holm),
              "diff": paired_text(r, metrics[r["metric"]][1], metrics[r["metric"]][2])} for r, p_holm in zip(rows, adjusted)]
    cols = ([Column("label", "Method"), Column("ref_label", "Compared with")] + [Column(f"{k}_title", t) for k, t in group]
            + [Column("metric_title", "Metric"), Column("n", "Seeds"),
               Column("diff", "Paired difference, mean [95% CI] (negative = fewer errors)"), Column("p_text", "p"),
               Column("p_holm_text", "p (Holm)"), Column("reading", "Reading")])
    keys = ["method", "reference", *(k for k, _ in group), "metric", "n", "mean", "lo", "hi", "p", "p_holm", "reading"]
    write_table(shown, cols, md_path, csv_path, title=title, notes=(notes + "\n\n" + PAIRED_NOTE).strip(), csv_keys=keys)
