"""One optimization step of an objective (:func:`train_step`) and the checks of its losses: NaN/Inf losses and
the deferred input checks are verified every :data:`FINITE_CHECK_EVERY` steps (:func:`verify`), one host
synchronization per interval instead of several per step."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from .._checks import DeferredChecks
from ..batch import Inputs, first_tensor
from .precision import Precision

__all__ = ["train_step", "verify", "check_finite", "first_nonfinite", "FINITE_CHECK_EVERY"]

#: the loss values and the deferred input value checks of the losses (see
#: :func:`geomlat.checks.deferred_value_checks`) are checked every this many steps and at the end of each
#: epoch: one host synchronization per interval instead of several per step.
FINITE_CHECK_EVERY = 20


def _at_least_float32(t: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32 and float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def train_step(module: nn.Module, x: Inputs, y: Tensor, optimizer: torch.optim.Optimizer, *,
               precision: str | Precision = "32", scaler: torch.amp.GradScaler | None = None, loss_factor: float = 1.0,
               clip_grad_norm: float | None = None) -> tuple[Tensor, dict[str, Tensor], Tensor, bool]:
    """One optimization step of an objective, as :func:`geomlat.engine.train` runs it.

    The objective's forward runs under ``torch.autocast(x.device.type, dtype)`` for the mixed precisions
    (the backward pass and the optimizer step outside it, on float32 weights); the losses are summed in
    float32. ``"16-mixed"`` scales the loss with ``scaler`` and lets it skip a step whose gradients are
    not finite (``GradScaler.step`` reads that flag on the host: one synchronization per step, unlike
    ``"32"`` and ``"bf16-mixed"``, which never wait for the device here). Non-finite losses are *not*
    checked here (that would synchronize): :func:`geomlat.engine.train` checks the returned values every
    :data:`FINITE_CHECK_EVERY` steps.

    Args:
        module: the objective (or its DistributedDataParallel wrapper): ``forward(x, y) -> (out, {name: loss})``.
        x: the inputs of B samples (a tensor, tuple or mapping, see :mod:`geomlat.batch`) and y: (B,) labels,
            on the objective's device.
        optimizer: over the objective's trainable parameters.
        precision: a :class:`~geomlat.engine.precision.Precision`, or its name ``"32"``, ``"bf16-mixed"`` or
            ``"16-mixed"`` with
        scaler: a ``torch.amp.GradScaler`` (required for ``"16-mixed"``, see :func:`~geomlat.engine.precision.make_grad_scaler`).
        loss_factor: the summed loss is multiplied by this before backward (the DDP weight of :func:`geomlat.engine.train`).
        clip_grad_norm: if set, clip the total 2-norm of the optimizer's gradients to it before the step
            (after ``scaler.unscale_``: the true gradients; no host read).

    Returns:
        ``(out (B, ...) detached, {name: detached scalar}, total (detached scalar), skipped)``, the losses in
        float32 at least (half values cast up, float64 kept),
        ``skipped`` True when the scaler skipped the optimizer step (always False without a scaler).
    """
    if not isinstance(precision, Precision):
        precision = Precision(precision, scaler)
    elif scaler is not None:
        raise ValueError("give the grad scaler inside the Precision, not as scaler=")
    with precision.autocast(first_tensor(x).device.type):
        out, losses = module(x, y)
    if not isinstance(losses, Mapping) or not losses:
        raise ValueError(f"{type(module).__name__} returned no loss terms")
    total = torch.stack([_at_least_float32(loss.reshape(())) for loss in losses.values()]).sum()
    optimizer.zero_grad(set_to_none=True)
    precision.backward(total * loss_factor if loss_factor != 1.0 else total)
    skipped = precision.step(optimizer, clip_grad_norm)
    detached = {name: _at_least_float32(loss.detach().reshape(())) for name, loss in losses.items()}
    return out.detach(), detached, total.detach(), skipped


def verify(checks: DeferredChecks, pending: list[tuple[int, dict[str, Tensor]]], epoch: int) -> None:
    """Raise the first failure, in step order, of the deferred input checks (ValueError, the message of the
    immediate check) and of the losses (FloatingPointError, see :func:`check_finite`); in one step the input
    check comes first (a NaN feature makes the loss NaN)."""
    found = checks.failure()
    if found is not None:
        step, err = found
        first_nan = first_nonfinite(pending)
        if first_nan is None or first_nan[0] >= step:
            err.add_note(f"(input value check deferred by the training engine: epoch {epoch + 1}, step {step + 1})")
            raise err
    check_finite(pending, epoch)


def first_nonfinite(pending: list[tuple[int, dict[str, Tensor]]]) -> tuple[int, dict[str, Tensor]] | None:
    """The first (step, losses) pair of ``pending`` with a NaN/Inf loss, or None (one host synchronization)."""
    if not pending:
        return None
    finite = torch.stack([torch.isfinite(torch.stack(list(losses.values()))).all() for _, losses in pending]).cpu()
    if bool(finite.all()):
        return None
    return pending[int((~finite).nonzero()[0])]


def check_finite(pending: list[tuple[int, dict[str, Tensor]]], epoch: int) -> None:
    """Raise FloatingPointError naming the first step of ``pending`` ((step, {name: loss}) pairs) whose
    loss terms are not all finite (one host synchronization for the whole list)."""
    found = first_nonfinite(pending)
    if found is None:
        return
    step, losses = found
    terms = {k: float(v) for k, v in losses.items()}
    raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {terms} "
                             f"(losses are checked every {FINITE_CHECK_EVERY} steps; the run folder keeps the last epoch)")

