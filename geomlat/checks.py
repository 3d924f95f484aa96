"""Public controls of geomlat's input checks.

:func:`deferred_value_checks` turns the value checks of inputs (NaN/Inf features, negative labels), which
read tensor values on the host at every loss call, into device-side flags verified together at intervals
(:class:`DeferredChecks`): a training loop that never waits for the GPU inside a step. The training engine
(:func:`geomlat.engine.train`) uses it; outside such a block every check is immediate.

``torch.compile``: inside a block, every loss of :mod:`geomlat.losses`, :func:`geomlat.latent_adjacency` and the
forward of each objective of :mod:`geomlat.objectives` trace into one graph (``fullgraph=True``, no graph
break): the checks are recorded from compiled code by the op ``geomlat::record_check`` and raise at
:meth:`DeferredChecks.verify` as in eager mode. Compiled code is specialized on whether a block is open in
the process (one recompilation when that changes, none per step or per block). Outside a block the immediate
checks read values on the host, which breaks a compiled graph. :func:`geomlat.latent_graph` adds a
data-dependent edge list (``nonzero``) and PyG's ``Data`` to :func:`geomlat.latent_adjacency`: compiled
without ``fullgraph`` it runs the adjacency as one graph; the edge list itself compiles with
``torch._dynamo.config.capture_dynamic_output_shape_ops = True``; ``Data`` does not trace.
``SmoothnessRegularizer`` needs ``num_classes`` (which :class:`geomlat.objectives.SmoothnessObjective` gives)
to avoid reading ``y.max()``.
"""
from __future__ import annotations

from ._checks import DeferredChecks, deferred_value_checks

__all__ = ["DeferredChecks", "deferred_value_checks"]
