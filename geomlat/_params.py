"""Declarative checks of scalar parameters (ints and numbers), as scikit-learn's parameter constraints.

Each check states the constraint once and raises with a message naming the parameter, the constraint and the
value: ``check_int(steps, "steps", low=1)`` raises ``ValueError("steps must be an int >= 1, got 0")``. A ``bool``
is never an int or a number here (``True`` is a Python int, never a meaningful count). With
``error=TypeError`` (where a wrong type, not a wrong value, is the mistake) the message names the value's type
instead of its repr: ``"k must be an int or None, got float"``. See also :func:`geomlat._checks.check_choice`.
"""
from __future__ import annotations

import math
import numbers

import numpy as np


def _constraint(kind: str, low, high, low_open: bool, high_open: bool, finite: bool) -> str:
    """``"an int >= 1"``, ``"a finite number in (0, 1]"``, ``"an int in 1..5"``, ... for messages."""
    if low is not None and high is not None:
        if kind == "int":
            return f"an int in {low}..{high}"
        return f"a {'finite ' if finite else ''}number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    text = "an int" if kind == "int" else ("a finite number" if finite else "a number")
    if low is not None:
        text += f" {'>' if low_open else '>='} {low}"
    if high is not None:
        text += f" {'<' if high_open else '<='} {high}"
    return text


def _fail(value, name: str, constraint: str, none_ok: bool, error: type[Exception]):
    got = type(value).__name__ if error is TypeError else repr(value)
    raise error(f"{name} must be {'None or ' if none_ok else ''}{constraint}, got {got}")


def check_int(value, name: str, low: int | None = None, high: int | None = None, *, none_ok: bool = False,
              numpy_ok: bool = False, error: type[Exception] = ValueError) -> int | None:
    """``value`` if it is an int (not a bool) with ``low <= value <= high`` (each bound optional), else
    ``error`` naming ``name``, the constraint and the value. ``none_ok``: ``None`` passes (returned as is);
    ``numpy_ok``: NumPy integers pass too. Returns ``value`` unchanged."""
    if value is None and none_ok:
        return None
    types = (int, np.integer) if numpy_ok else int
    if isinstance(value, bool) or not isinstance(value, types) or (low is not None and value < low) or \
            (high is not None and value > high):
        _fail(value, name, _constraint("int", low, high, False, False, False), none_ok, error)
    return value


def check_number(value, name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False, finite: bool = True, none_ok: bool = False,
                 error: type[Exception] = ValueError) -> float | int | None:
    """``value`` if it is a real number (int, float or NumPy scalar; not a bool) within the bounds (``low_open``
    / ``high_open``: strict ``>`` / ``<``), finite unless ``finite=False`` (NaN always fails a bound), else
    ``error`` naming ``name``, the constraint and the value. ``none_ok``: ``None`` passes. Returns ``value``
    unchanged."""
    if value is None and none_ok:
        return None
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if ok and finite:
        ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        _fail(value, name, _constraint("number", low, high, low_open, high_open, finite), none_ok, error)
    return value
