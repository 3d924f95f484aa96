"""Public controls of geomlat's input checks.

:func:`deferred_value_checks` turns the value checks of inputs (NaN/Inf features, negative labels), which
read tensor values on the host at every loss call, into device-side flags verified together at intervals
(:class:`DeferredChecks`): a training loop that never waits for the GPU inside a step. The training engine
(:func:`geomlat.engine.train`) uses it; outside such a block every check is immediate.
"""
from __future__ import annotations

from ._checks import DeferredChecks, deferred_value_checks

__all__ = ["DeferredChecks", "deferred_value_checks"]
