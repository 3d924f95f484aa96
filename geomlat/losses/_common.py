"""Small validation helpers shared by the losses."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor


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
