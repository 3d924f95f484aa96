"""Adversarial attacks (FGSM, PGD); the PGD adversarial-training objective is :class:`geomlat.objectives.PGDTraining`.

- FGSM (Goodfellow et al. 2015, "Explaining and harnessing adversarial examples"):
  ``x' = clip_[0,1](x + eps * sign(grad_x L(f(x), y)))``, L-infinity.
- PGD (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks"):
  random start uniform in the eps-ball, ``steps`` signed gradient steps of size ``alpha``, each followed
  by projection onto the eps-ball around ``x`` and onto [0, 1].

The latent-geometry paper (Lassance et al., section 4.3) sets the FGSM budget per image from a
signal-to-noise ratio of 33 dB: ``eps_i = |x_i|_2 / (sqrt(numel(x_i)) * 10^(snr/20))``
(:func:`snr_to_eps`).

Conventions shared by every attack here:

- Images ``x`` are (B, ...) floats in [0, 1]; labels ``y`` are whatever ``loss_fn`` expects
  (class indices for the default cross-entropy).
- ``loss_fn(outputs, y)`` is maximized. The default is cross-entropy summed over the batch (a sum, not a
  mean, so confident samples do not have their gradients scaled towards float underflow; the sign is
  unaffected by the scale). Pass any differentiable loss to attack models whose output is not logits
  (e.g. an embedding followed by a differentiable classifier).
- The attack runs the model in eval mode by default (``eval_mode=True``: batch-norm running statistics are
  used and not updated, dropout is off) and restores the model's previous ``training`` flag afterwards.
- Gradients are taken with ``torch.autograd.grad`` with respect to the input only, so no ``.grad`` is
  accumulated on the model's parameters. Works when called under ``torch.no_grad()``.
- The returned adversarial batch is detached.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import checks_deferred, value_check
from .._params import check_int, check_number

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy_sum(outputs: Tensor, y: Tensor) -> Tensor:
    """Default attack loss: cross-entropy summed over the batch."""
    return F.cross_entropy(outputs, y, reduction="sum")


def _check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor of images in [0, 1], got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, ...), got shape {tuple(x.shape)}")
    if checks_deferred():  # inside the engine's deferred checks: device-side flags, no host read
        lo, hi = x.detach().aminmax()
        value_check(torch.isfinite(x).all(), "x contains NaN or Inf values")
        value_check((lo >= 0.0) & (hi <= 1.0), "x must be images with values in [0, 1]")
        return
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"x must be images with values in [0, 1], got min {lo:.4g} and max {hi:.4g}")


def _eps_tensor(eps: float | Tensor, x: Tensor, name: str = "eps") -> Tensor:
    """Budget as a tensor broadcastable to x: a scalar, or one value per image (shape (B,))."""
    if isinstance(eps, bool):
        raise TypeError(f"{name} must be a number or a (B,) tensor, got bool")
    e = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if e.dim() == 1:
        if e.numel() != x.shape[0]:
            raise ValueError(f"per-image {name} has {e.numel()} values for a batch of {x.shape[0]} images")
        e = e.reshape(-1, *([1] * (x.dim() - 1)))
    elif e.dim() != 0:
        raise ValueError(f"{name} must be a scalar or a (B,) tensor, got shape {tuple(e.shape)}")
    if not isinstance(eps, Tensor):  # a Python number: checked without reading the device
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {eps}")
        return e
    if checks_deferred():  # no host read inside the engine's deferred checks
        value_check(torch.isfinite(e).all() & (e.min() >= 0), f"{name} must be finite and >= 0")
        return e
    if not torch.isfinite(e).all():
        raise ValueError(f"{name} must be finite, got {eps}")
    if float(e.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got min {float(e.min()):.4g}")
    return e


def snr_to_eps(x: Tensor, snr_db: float) -> Tensor:
    """Per-image L-inf budget from a signal-to-noise ratio in dB (the paper used 33 dB).

    ``eps_i = |x_i|_2 / (sqrt(numel(x_i)) * 10^(snr_db / 20))``: the RMS value of the image divided by the
    amplitude ratio, so that a perturbation of +-eps_i on every entry has exactly that SNR.

    Args:
        x: (B, ...) images.
        snr_db: finite ratio in decibels.

    Returns:
        (B,) tensor of budgets.
    """
    check_number(snr_db, "snr_db")
    flat = x.detach().reshape(x.shape[0], -1)
    return flat.norm(dim=1) / (math.sqrt(flat.shape[1]) * 10.0 ** (snr_db / 20.0))


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    """grad_x loss_fn(model(x), y), without touching parameter .grad fields."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x), y)
        if loss.dim() != 0:  # a per-sample loss: sum (sign of the gradient is what matters)
            loss = loss.sum()
        (grad,) = torch.autograd.grad(loss, [x])
    value_check(torch.isfinite(grad).all(), "the attack loss produced a non-finite input gradient")
    return grad


class _ModelMode:
    """Put the model in eval mode (optionally) and restore every submodule's training flag on exit."""

    def __init__(self, model: nn.Module, eval_mode: bool):
        self.model, self.eval_mode = model, eval_mode

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        if self.eval_mode:
            self.model.eval()

    def __exit__(self, *exc) -> bool:
        for module, flag in self.flags:
            module.training = flag
        return False


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor | None = None,
    snr_db: float | None = None,
    loss_fn: LossFn = cross_entropy_sum,
    eval_mode: bool = True,
) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015), L-infinity.

    Args:
        model: network mapping x to what ``loss_fn`` takes.
        x: (B, ...) images in [0, 1].
        y: targets for ``loss_fn`` (class indices (B,) for the default cross-entropy).
        eps: budget, a float or a (B,) tensor; give exactly one of ``eps`` and ``snr_db``.
        snr_db: per-image budget from an SNR in dB (:func:`snr_to_eps`; the paper used 33).
        loss_fn: ``loss_fn(outputs, y) -> scalar`` to maximize.
        eval_mode: run the model in eval mode during the attack (previous mode restored).

    Returns:
        (B, ...) detached adversarial images ``clip_[0,1](x + eps * sign(grad))``.
    """
    _check_images(x)
    if (eps is None) == (snr_db is None):
        raise ValueError("give exactly one of eps (a budget) and snr_db (a per-image budget from an SNR in dB)")
    e = _eps_tensor(snr_to_eps(x, snr_db) if eps is None else eps, x)
    with _ModelMode(model, eval_mode):
        grad = _input_gradient(model, x, y, loss_fn)
    return (x.detach() + e * grad.sign()).clamp(0.0, 1.0)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 7,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    loss_fn: LossFn = cross_entropy_sum,
    eval_mode: bool = True,
) -> Tensor:
    """Projected gradient descent attack (Madry et al. 2018), L-infinity, batched.

    Starts at ``x + U(-eps, eps)`` (clipped to [0, 1]) when ``random_start``, else at ``x``; then
    ``steps`` times: ``x' <- Proj(x' + alpha * sign(grad_x' L))`` where Proj clamps ``x' - x`` to
    [-eps, eps] and ``x'`` to [0, 1] (both constraints hold for the result since x is in [0, 1]).

    Args:
        eps: budget (float or (B,) tensor), >= 0.
        alpha: step size, > 0.
        steps: number of gradient steps, >= 0.
        random_start: uniform random start in the eps-ball.
        generator: ``torch.Generator`` for the random start (same seed -> same attack). None uses the
            global RNG.

    Other arguments as in :func:`fgsm`.

    Returns:
        (B, ...) detached adversarial images.
    """
    _check_images(x)
    e = _eps_tensor(eps, x)
    check_number(alpha, "alpha", low=0, low_open=True)
    check_int(steps, "steps", low=0)
    x = x.detach()
    if random_start:
        device = generator.device if generator is not None else x.device
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        x_adv = (x + (2.0 * noise - 1.0) * e).clamp(0.0, 1.0)
    else:
        x_adv = x.clone()
    with _ModelMode(model, eval_mode):
        for _ in range(steps):
            grad = _input_gradient(model, x_adv, y, loss_fn)
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - e), x + e).clamp(0.0, 1.0)
    return x_adv.detach()
