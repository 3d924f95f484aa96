"""Parseval networks (Cisse et al. 2017, "Parseval networks: improving robustness to adversarial examples").

After each optimizer step every weight matrix is pulled towards a Parseval tight frame (``W W^T = I``) by
one step of the retraction ``W <- (1 + beta) W - beta W W^T W``, and the convex aggregation weights of
residual blocks are projected onto the probability simplex (Duchi et al. 2008, "Efficient projections onto
the l1-ball for learning in high dimensions").

Conventions:

- Every trainable parameter with ``dim > 1`` is a weight matrix, reshaped to ``(out, rest)`` (a conv kernel
  (out, in, kh, kw) becomes (out, in * kh * kw)), as in the authors' baseline (beta = 0.01, all such
  weights). Frozen parameters (``requires_grad=False``, e.g. a teacher) and aggregation parameters are
  skipped. Cisse et al. optionally retract a random subset of rows per step; this applies it to all rows.
- Aggregation weights: parameters whose name matches the glob pattern ``"*aggregation*"`` (e.g.
  ``layer1.0.aggregation`` holding the convex weights of the residual and the identity branch). Each is
  projected onto the simplex along its last dimension. Models without such parameters are unaffected.
"""
from __future__ import annotations

import fnmatch
import math
from typing import Callable

import torch
from torch import Tensor, nn

from .._params import check_number

AGGREGATION_PATTERN = "*aggregation*"


def _check_beta(beta: float) -> float:
    check_number(beta, "beta", low=0, low_open=True)
    return float(beta)


def parseval_retraction(weight: Tensor, beta: float = 0.01) -> Tensor:
    """One retraction step ``(1 + beta) W - beta W W^T W`` on W reshaped to (out, rest); same shape as input.

    The product is associated as ``(W W^T) W`` (cost 2 out^2 rest) when out <= rest and as ``W (W^T W)``
    (cost 2 out rest^2) otherwise.
    """
    beta = _check_beta(beta)
    if weight.dim() < 2:
        raise ValueError(f"the Parseval retraction needs a weight with dim >= 2, got shape {tuple(weight.shape)}")
    w = weight.reshape(weight.shape[0], -1)
    wwtw = (w @ w.T) @ w if w.shape[0] <= w.shape[1] else w @ (w.T @ w)
    return ((1.0 + beta) * w - beta * wwtw).reshape(weight.shape)


def _is_aggregation(name: str, pattern: str | None) -> bool:
    return pattern is not None and fnmatch.fnmatchcase(name, pattern)


@torch.no_grad()
def parseval_step(
    model: nn.Module,
    beta: float = 0.01,
    predicate: Callable[[str, Tensor], bool] | None = None,
    aggregation_pattern: str | None = AGGREGATION_PATTERN,
) -> list[str]:
    """Apply :func:`parseval_retraction` in place to the weight matrices of ``model``.

    Args:
        model: any module.
        beta: retraction step (the authors used 0.01).
        predicate: optional ``(name, parameter) -> bool`` restricting which weights are retracted (on top
            of: trainable, ``dim > 1``, name not matching ``aggregation_pattern``).
        aggregation_pattern: glob of parameters to leave to :func:`project_aggregation_weights`.

    Returns:
        Names of the retracted parameters.
    """
    beta = _check_beta(beta)
    done = []
    for name, param in model.named_parameters():
        if param.dim() < 2 or not param.requires_grad or _is_aggregation(name, aggregation_pattern):
            continue
        if predicate is not None and not predicate(name, param):
            continue
        param.copy_(parseval_retraction(param, beta))
        done.append(name)
    return done


def project_simplex(v: Tensor, radius: float = 1.0) -> Tensor:
    """Euclidean projection of each row of ``v`` (..., n) onto ``{w >= 0, sum w = radius}``.

    Duchi et al. (2008), Fig. 1: sort ``u`` decreasing, ``rho = max{j : u_j - (sum_{i<=j} u_i - radius) / j > 0}``,
    ``theta = (sum_{i<=rho} u_i - radius) / rho``, ``w = max(v - theta, 0)``. O(n log n) per row.
    """
    if not isinstance(v, Tensor) or not v.is_floating_point() or v.dim() < 1 or v.shape[-1] == 0:
        raise TypeError("v must be a floating-point tensor of shape (..., n) with n >= 1")
    if not torch.isfinite(v).all():
        raise ValueError("v contains NaN or Inf values")
    check_number(radius, "radius", low=0, low_open=True)
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(dim=-1) - radius
    j = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    cond = (u - css / j) > 0  # true on a prefix (j = 1 always holds)
    rho = cond.sum(dim=-1, keepdim=True)  # number of positive entries of the projection
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp_min(0.0)


@torch.no_grad()
def project_aggregation_weights(model: nn.Module, pattern: str = AGGREGATION_PATTERN) -> list[str]:
    """Project, in place, every parameter whose name matches ``pattern`` onto the simplex (last dimension).

    Returns:
        Names of the projected parameters.
    """
    done = []
    for name, param in model.named_parameters():
        if _is_aggregation(name, pattern):
            param.copy_(project_simplex(param))
            done.append(name)
    return done


class ParsevalRetraction:
    """Engine ``after_step`` hook: Parseval retraction of the weights + simplex projection of aggregations.

    Usage: ``train(objective, splits, config, run_dir, after_step=ParsevalRetraction(0.01))``. Called with
    the objective (its ``.model`` is retracted) or directly with a model.
    """

    def __init__(self, beta: float = 0.01, aggregation_pattern: str | None = AGGREGATION_PATTERN,
                 predicate: Callable[[str, Tensor], bool] | None = None):
        self.beta = _check_beta(beta)
        self.aggregation_pattern = aggregation_pattern
        self.predicate = predicate

    def __call__(self, objective: nn.Module) -> None:
        model = getattr(objective, "model", objective)
        if not isinstance(model, nn.Module):
            raise TypeError(f"ParsevalRetraction expects an objective with .model or an nn.Module, got {type(objective).__name__}")
        parseval_step(model, self.beta, self.predicate, self.aggregation_pattern)
        if self.aggregation_pattern is not None:
            project_aggregation_weights(model, self.aggregation_pattern)

    def __repr__(self) -> str:
        return f"ParsevalRetraction(beta={self.beta}, aggregation_pattern={self.aggregation_pattern!r})"
