"""Input validation shared by the geometry core: every bad input gets an error naming the problem."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch._library.effects import EffectType

#: Dtypes whose geometry is computed in float32 (their eps and range cannot hold squared norms).
HALF_DTYPES = (torch.float16, torch.bfloat16)
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


class DeferredChecks:
    """The value checks recorded inside :func:`deferred_value_checks`: (flag, message) pairs whose flag is a
    0-dim bool tensor on the device of the checked tensor (True: the check passed), read all at once by
    :meth:`verify` (one host synchronization instead of one per check).

    Attributes:
        step: a label the caller may set (e.g. the training step) that :meth:`verify` names in its error.
    """

    def __init__(self) -> None:
        self._records: list[tuple[Tensor, str, tuple[Tensor, ...], object]] = []
        self.step: object = None

    def __len__(self) -> int:
        return len(self._records)

    def record(self, ok: Tensor, template: str, *values: Tensor) -> None:
        """Record a check: ``ok`` a 0-dim bool tensor; on failure the error message is
        ``template.format(*values)`` (values read on the host only then)."""
        self._records.append((ok.detach().reshape(()), template, tuple(v.detach() for v in values), self.step))

    def failure(self) -> tuple[object, ValueError] | None:
        """Read every recorded flag (one synchronization per device) and forget them: ``(step, error)`` of the
        first failed check (``error`` the ValueError of the immediate check), or None when all passed."""
        records, self._records = self._records, []
        failed = []
        by_device: dict[torch.device, list[int]] = {}
        for i, (ok, _, _, _) in enumerate(records):
            by_device.setdefault(ok.device, []).append(i)
        for indices in by_device.values():
            oks = torch.stack([records[i][0] for i in indices]).cpu()
            failed += [indices[j] for j in (~oks).nonzero().flatten().tolist()]
        if not failed:
            return None
        _, template, values, step = records[min(failed)]
        return step, ValueError(template.format(*(v.item() for v in values)))

    def verify(self) -> None:
        """Raise the ValueError of the first failed check recorded since the last call (the message of the
        immediate check, with a note naming ``step`` when set); see :meth:`failure`."""
        found = self.failure()
        if found is not None:
            step, err = found
            err.add_note(f"(found by a deferred value check{'' if step is None else f' of step {step}'})")
            raise err


def value_check(ok: Tensor | bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``; inside :func:`deferred_value_checks` a tensor ``ok`` (0-dim
    bool, on any device) is recorded instead of read on the host."""
    if checks_deferred() and isinstance(ok, Tensor):
        record_check(ok, message.replace("{", "{{").replace("}", "}}"))
    elif not bool(ok):
        raise ValueError(message)


_DEFERRED: contextvars.ContextVar[DeferredChecks | None] = contextvars.ContextVar("geomlat_deferred_checks", default=None)


class _Compiled:
    """What code traced by ``torch.compile`` reads instead of the ContextVar (``ContextVar.get`` is not
    traceable): whether a :func:`deferred_value_checks` block is open in the process, a plain bool that
    dynamo guards on (a compiled function is recompiled once when it changes, never per block or per step).
    The recorder itself is looked up when the compiled code runs (:func:`_record_op`), through the ContextVar."""

    open_blocks = 0  # open deferred_value_checks blocks, all threads together
    deferred = False  # open_blocks > 0 (dynamo guards on the value of what it reads: a bool, not the count)


def checks_deferred() -> bool:
    """Whether the caller runs inside :func:`deferred_value_checks` (value checks must not read the host).

    Under ``torch.compile`` (traced code): whether a block is open in the process (see :class:`_Compiled`);
    a compiled check that runs in a thread without a block is then made immediately by :func:`_record_op`.
    """
    if torch.compiler.is_compiling():
        return _Compiled.deferred
    return _DEFERRED.get() is not None


def record_check(ok: Tensor, template: str, *values: Tensor) -> None:
    """Record a deferred check (call only when :func:`checks_deferred`): ``ok`` a 0-dim bool tensor, the error
    ``ValueError(template.format(*values))`` on failure (see :meth:`DeferredChecks.record`).

    Eager code appends to the open block's recorder; traced code (``torch.compile``) calls the op
    ``geomlat::record_check`` instead, a side effect run with the compiled graph (a list append would be
    guarded on the list's length by dynamo: a recompilation at every step)."""
    if torch.compiler.is_compiling():
        torch.ops.geomlat.record_check(ok.detach(), template, [v.detach() for v in values])
        return
    _DEFERRED.get().record(ok, template, *values)


@torch.library.custom_op("geomlat::record_check", mutates_args=())
def _record_op(ok: Tensor, template: str, values: list[Tensor]) -> None:
    """Runtime of a compiled :func:`record_check`: record into the thread's open block, or (no block open in
    this thread) check now. The tensors are copied: the compiled graph may reuse their buffers afterwards."""
    checks = _DEFERRED.get()
    if checks is None:
        if not bool(ok):
            raise ValueError(template.format(*(v.item() for v in values)))
        return
    checks.record(ok.clone(), template, *(v.clone() for v in values))


@_record_op.register_fake
def _(ok: Tensor, template: str, values: list[Tensor]) -> None:
    return None


# an op without outputs is dead code to the compiler unless it is declared to have a side effect (ordered:
# the records keep the order of the checks)
torch.library._register_effectful_op("geomlat::record_check", EffectType.ORDERED)


@contextlib.contextmanager
def deferred_value_checks(verify_on_exit: bool = True) -> Iterator[DeferredChecks]:
    """Inside this context the value checks of inputs (NaN/Inf features of :func:`check_features`, negative
    labels of :func:`check_labels`) record a device-side flag instead of reading the values on the host
    (which would wait for the GPU at every loss call); call :meth:`DeferredChecks.verify` at intervals to
    raise the same ``ValueError`` as the immediate check. Shape, dtype and argument checks stay immediate.
    The training engine runs every step inside it and verifies every ``FINITE_CHECK_EVERY`` steps. Code
    compiled with ``torch.compile`` records its checks too (see :mod:`geomlat.checks`), into the block open in
    the thread that runs it.

    Args:
        verify_on_exit: verify what is still recorded when the block ends without an error.

    Yields:
        the :class:`DeferredChecks` recorder (nesting: the inner block records into its own).

    Example::

        with deferred_value_checks() as checks:
            for step, (x, y) in enumerate(loader):
                ...  # losses calling check_features / check_labels
                if step % 20 == 19:
                    checks.verify()
    """
    checks = DeferredChecks()
    token = _DEFERRED.set(checks)
    _Compiled.open_blocks += 1
    _Compiled.deferred = True
    try:
        yield checks
    finally:
        _DEFERRED.reset(token)
        _Compiled.open_blocks -= 1
        _Compiled.deferred = _Compiled.open_blocks > 0
    if verify_on_exit:
        checks.verify()


def upcast_half(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16/bfloat16 (differentiable; gradients flow back in x's dtype), else ``x``.

    The geometry (Gram matrices, norms, distances, their epsilons) of half-precision inputs is computed in
    float32: float16 overflows at 65504 (a squared norm of 256 units) and its 1e-12 / 1e-24 guards are 0.
    """
    return x.float() if x.dtype in HALF_DTYPES else x


def _autocast_on() -> list[str]:
    on = []
    for device in _AUTOCAST_DEVICES:
        try:
            if torch.is_autocast_enabled(device):
                on.append(device)
        except (RuntimeError, ValueError):  # a device type this build does not know
            pass
    return on


def full_precision(fn):
    """Decorator: run ``fn`` with ``torch.autocast`` disabled (on every device where it is on).

    Under autocast the matrix products of the geometry (Gram, powers, angles) would run in bfloat16 /
    float16 whatever their inputs; with this, inputs are upcast by :func:`check_features` and every
    product stays in float32. Outside autocast it only costs a flag lookup.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        on = _autocast_on()
        if not on:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device in on:
                stack.enter_context(torch.autocast(device, enabled=False))
            return fn(*args, **kwargs)

    return wrapper


def check_features(x: Tensor, name: str = "x") -> Tensor:
    """Check a batch of representations of shape (B, ...) and return it flattened to (B, d).

    float16 / bfloat16 inputs are returned in float32 (:func:`upcast_half`): the geometry is computed in
    float32 for them.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: fewer than 2 samples, no feature dimension, zero-width features, or NaN/Inf values.
    """
    return check_features_min(x, name)[0]


def check_features_min(x: Tensor, name: str = "x") -> tuple[Tensor, float | Tensor]:
    """:func:`check_features` that also returns the minimum of ``x`` (a 0-dim tensor on ``x``'s device
    inside :func:`deferred_value_checks`, where the NaN/Inf test is recorded instead of read on the host).

    The finiteness test is one ``aminmax`` reading pass (NaN propagates to both, +-Inf shows in max/min)
    instead of ``isfinite(x).all()``, which fills (B, d) temporaries; the minimum also answers the sign test
    of the cosine kernel. The NaN/Inf counts are computed only for the error message.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (B, ...) with at least one feature dimension, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} has batch size {x.shape[0]}: a latent geometry graph needs at least 2 samples")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 0:
        raise ValueError(f"{name} has zero-width features (shape {tuple(x.shape)}): a sample needs at least one value")
    if checks_deferred():  # no host read: a device-side flag, read by DeferredChecks.verify()
        detached = flat.detach()
        counts = torch.stack([torch.isnan(detached).sum(), torch.isinf(detached).sum()])
        record_check(counts.sum() == 0, name + " contains non-finite values ({} NaN, {} Inf): cannot build a graph",
                        counts[0], counts[1])
        return upcast_half(flat), detached.amin()
    lo, hi = (v.item() for v in torch.aminmax(flat.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf): cannot build a graph")
    return upcast_half(flat), lo


def check_k(k: int | None, num_nodes: int) -> None:
    """``k`` must be None (full graph) or an integer with 1 <= k < num_nodes."""
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int or None, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    if k >= num_nodes:
        raise ValueError(
            f"k={k} must be smaller than the batch size {num_nodes} (a vertex has only {num_nodes - 1} "
            "other vertices); use k=None for the full graph"
        )


def check_labels(labels: Tensor, num_nodes: int, name: str = "labels") -> Tensor:
    """Labels must be an integer tensor of shape (num_nodes,) with non-negative class indices."""
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.numel() != num_nodes:
        raise ValueError(f"{name} has shape {tuple(labels.shape)} but the graph has {num_nodes} vertices; expected ({num_nodes},)")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.numel() and checks_deferred():
        low = labels.min()
        record_check(low >= 0, name + " must be non-negative class indices, got min {}", low)
    elif labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, got min {int(labels.min())}")
    return labels.long()


def check_choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(map(repr, choices))}")
