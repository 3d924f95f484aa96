"""Small validation helpers shared by the losses."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..distributed import all_gather_with_grad

GATHERS = ("local", "global")


def check_gather(gather: str) -> str:
    """``gather`` selects which samples a graph is built over.

    ``"local"``: this process's batch (on several processes: the batch-local geometry of the paper, per
    rank). ``"global"``: the batch gathered from every distributed process with a differentiable
    all-gather (:func:`geomlat.distributed.all_gather_with_grad`), so that the loss and its gradients are
    those of one process on the whole batch (gradient convention: see :mod:`geomlat.distributed`).
    Without an initialized process group both are the same.
    """
    if gather not in GATHERS:
        raise ValueError(f"unknown gather {gather!r}; expected 'local' or 'global'")
    return gather


def gather_global(tensors: Sequence[Tensor], labels: Tensor | None = None) -> tuple[list[Tensor], Tensor | None]:
    """Gather each (B_r, ...) tensor (with gradients) and the (B_r,) labels over all ranks, rank order.

    Collectives: every rank must call this with the same number of tensors, labels on all ranks or none.
    """
    out = [all_gather_with_grad(t) for t in tensors]
    if labels is not None:
        labels = all_gather_with_grad(torch.as_tensor(labels).detach())
    return out, labels


def as_feature_list(feats: Tensor | Sequence[Tensor], name: str) -> list[Tensor]:
    """Accept one (B, ...) tensor or a non-empty sequence of them; return a list."""
    if isinstance(feats, Tensor):
        return [feats]
    if not isinstance(feats, (list, tuple)) or not feats:
        raise TypeError(f"{name} must be a tensor or a non-empty list of tensors, got {type(feats).__name__}")
    for i, f in enumerate(feats):
        if not isinstance(f, Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(f).__name__}")
    return list(feats)


def check_pairs(teacher_feats, student_feats) -> list[tuple[Tensor, Tensor]]:
    """Pair up teacher and student features: same number of layers, same batch size in each pair, no
    zero-width features."""
    t_list = as_feature_list(teacher_feats, "teacher_feats")
    s_list = as_feature_list(student_feats, "student_feats")
    if len(t_list) != len(s_list):
        raise ValueError(f"got {len(t_list)} teacher feature tensors but {len(s_list)} student ones; they are paired")
    for i, (t, s) in enumerate(zip(t_list, s_list)):
        if t.dim() < 1 or s.dim() < 1 or t.shape[0] != s.shape[0]:
            raise ValueError(
                f"pair {i}: teacher batch size {tuple(t.shape)[:1]} != student batch size {tuple(s.shape)[:1]}; "
                "teacher and student must see the same batch"
            )
        for side, f in (("teacher", t), ("student", s)):
            if f.dim() >= 2 and 0 in f.shape[1:]:
                raise ValueError(f"pair {i}: {side} features have zero width (shape {tuple(f.shape)}): a sample needs at least one value")
    return list(zip(t_list, s_list))
