"""The declarative parameter checks of geomlat._params against the hand-written rule they replace:
``isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high`` (ints) and the same with a finite real
number (numbers), over a grid of values of every kind."""
from __future__ import annotations

import math

import numpy as np
import pytest

from geomlat._params import check_int, check_number

VALUES = [None, True, False, 0, 1, 2, 5, 6, -1, 0.0, 0.5, 1.0, 2.5, -0.5, math.inf, -math.inf, math.nan, "1", [1],
          np.int64(3), np.float64(0.25), np.float32(2.0)]


def _int_ok(v, low, high, none_ok, numpy_ok):
    if v is None:
        return none_ok
    types = (int, np.integer) if numpy_ok else (int,)
    return not isinstance(v, bool) and isinstance(v, types) and (low is None or v >= low) and (high is None or v <= high)


def _number_ok(v, low, high, low_open, high_open, finite):
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    if finite and not math.isfinite(v):
        return False
    lo = low is None or (v > low if low_open else v >= low)
    hi = high is None or (v < high if high_open else v <= high)
    return bool(lo and hi)


@pytest.mark.parametrize("low,high", [(None, None), (0, None), (1, None), (1, 5), (None, 2)])
@pytest.mark.parametrize("none_ok,numpy_ok", [(False, False), (True, False), (False, True)])
def test_check_int_matches_the_hand_written_rule(low, high, none_ok, numpy_ok):
    for v in VALUES:
        if _int_ok(v, low, high, none_ok, numpy_ok):
            assert check_int(v, "n", low, high, none_ok=none_ok, numpy_ok=numpy_ok) is v
        else:
            with pytest.raises(ValueError, match=r"^n must be ") as info:
                check_int(v, "n", low, high, none_ok=none_ok, numpy_ok=numpy_ok)
            assert str(info.value).endswith(f"got {v!r}")


@pytest.mark.parametrize("low,high,low_open,high_open", [(None, None, False, False), (0, None, False, False),
                                                         (0, None, True, False), (0, 1, False, True)])
@pytest.mark.parametrize("finite", [True, False])
def test_check_number_matches_the_hand_written_rule(low, high, low_open, high_open, finite):
    for v in VALUES:
        kwargs = dict(low_open=low_open, high_open=high_open, finite=finite)
        if _number_ok(v, low, high, low_open, high_open, finite):
            assert check_number(v, "x", low, high, **kwargs) is v
        else:
            with pytest.raises(ValueError, match=r"^x must be "):
                check_number(v, "x", low, high, **kwargs)


def test_messages_state_the_constraint():
    cases = [(lambda: check_int(0, "steps", low=1), ValueError, "steps must be an int >= 1, got 0"),
             (lambda: check_int(7, "severity", 1, 5), ValueError, "severity must be an int in 1..5, got 7"),
             (lambda: check_int(0, "every", low=1, none_ok=True), ValueError, "every must be None or an int >= 1, got 0"),
             (lambda: check_int(2.0, "k", none_ok=True, error=TypeError), TypeError, "k must be None or an int, got float"),
             (lambda: check_number(0, "alpha", low=0, low_open=True), ValueError,
              "alpha must be a finite number > 0, got 0"),
             (lambda: check_number(math.nan, "eps", low=0), ValueError, "eps must be a finite number >= 0, got nan"),
             (lambda: check_number(1.0, "p", 0, 1, high_open=True), ValueError, "p must be a finite number in [0, 1), got 1.0"),
             (lambda: check_number("a", "w", finite=False, error=TypeError), TypeError, "w must be a number, got str")]
    for call, error, message in cases:
        with pytest.raises(error) as info:
            call()
        assert str(info.value) == message
