"""Token sequences: the one rule by which (B, T, H) features become one vector per sample.

Every function of geomlat that takes a batch of representations (graphs, losses, analyses, the Lightning
monitor) turns them into (B, d) with :func:`sample_vectors`, so that padding is treated the same way
everywhere:

- ``attention_mask`` (B, T) follows Hugging Face's convention: 1 (or True) on real tokens, 0 on padding.
  With a mask, ``x`` must be (B, T, H) and padding never enters the geometry: ``reduce="mean"`` (the
  default when a mask is given; sentence-transformers' pooling) averages the real tokens only,
  ``"first"`` keeps position 0 (BERT's [CLS] under right padding), ``"last"`` the last real token
  (decoder models). ``"flatten"`` with a mask is refused (the padding would become coordinates).
- Without a mask, ``reduce="mean"`` averages dimensions 1..-2, ``"first"`` keeps ``x[:, 0]``, ``"last"``
  ``x[:, -1]``, and ``"flatten"`` flattens silently (e.g. Conv1d maps (B, C, L)).
- ``reduce=None`` without a mask flattens (B, ...) to (B, d); for a 3-D input it warns (a UserWarning naming
  the function; Python shows it once per call site) that the sequence dimension is flattened: pass
  ``reduce="flatten"`` to say that is what you want, or a reduction and the mask for token sequences.

Example:
    >>> h = torch.arange(12.0).reshape(2, 3, 2)     # (B=2, T=3, H=2)
    >>> mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # right padding
    >>> sample_vectors(h, mask)                       # mean of the real tokens
    tensor([[1., 2.],
            [6., 7.]])
    >>> sample_vectors(h, mask, reduce="last")
    tensor([[2., 3.],
            [6., 7.]])
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

#: ``reduce=`` options of every function that takes (B, T, H) features.
REDUCTIONS = (None, "flatten", "mean", "first", "last")


def check_attention_mask(attention_mask: Tensor, x: Tensor, what: str = "x") -> Tensor:
    """The (B, T) boolean form of ``attention_mask`` for features ``x`` (B, T, H); ``ValueError`` naming the
    shapes if they do not match or if ``x`` is not 3-D."""
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a (B, T) tensor, got {type(attention_mask).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"attention_mask is given, so {what} must be token features (B, T, H), got {shape}")
    if attention_mask.dim() != 2 or tuple(attention_mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"attention_mask must be (B, T) = {tuple(x.shape[:2])} for {what} of shape "
                         f"{tuple(x.shape)}, got {tuple(attention_mask.shape)}")
    if attention_mask.is_floating_point() or attention_mask.is_complex():
        return attention_mask.to(device=x.device) != 0
    return attention_mask.to(device=x.device, dtype=torch.bool)


def _check_reduce(reduce) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {list(REDUCTIONS)}, got {reduce!r}")


def sample_vectors(x: Tensor, attention_mask: Tensor | None = None, reduce: str | None = None,
                   what: str = "x") -> Tensor:
    """(B, d) vectors of a batch of representations ``x`` (B, ...), by the rule of this module's docstring.

    Args:
        x: (B, ...) features; (B, T, H) token features when ``attention_mask`` is given.
        attention_mask: (B, T), 1 on real tokens, 0 on padding (Hugging Face's convention), or ``None``.
        reduce: ``None``, ``"flatten"``, ``"mean"``, ``"first"`` or ``"last"`` (see the module docstring).
        what: the name of ``x`` in messages (e.g. the function and argument).

    Returns:
        (B, d) tensor, differentiable w.r.t. ``x``. Padding positions (mask 0) never reach it, whatever
        their values (NaN included).
    """
    _check_reduce(reduce)
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{what} must be (B, ...) with at least 2 dimensions, got shape {tuple(x.shape)}")
    if attention_mask is not None:
        keep = check_attention_mask(attention_mask, x, what)
        if reduce == "flatten":
            raise ValueError(f"reduce='flatten' with an attention_mask would make the padding of {what} coordinates; "
                             "use reduce='mean', 'first' or 'last'")
        if reduce in (None, "mean"):
            count = keep.sum(dim=1, keepdim=True)
            # torch.where, not a product: padding may hold anything (inf * 0 would be NaN)
            total = torch.where(keep[:, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
            return total / count.clamp(min=1).to(total.dtype)  # a sequence without tokens: zeros (checked by callers)
        if reduce == "first":
            return x[:, 0]
        # last real token: the highest position whose mask is 1
        positions = torch.arange(x.shape[1], device=x.device).expand_as(keep)
        last = torch.where(keep, positions, torch.zeros_like(positions)).amax(dim=1)
        return x[torch.arange(x.shape[0], device=x.device), last]
    if reduce in ("mean", "first", "last"):
        if x.dim() < 3:
            raise ValueError(f"reduce={reduce!r} needs token features (B, T, ..., H) in {what}, got shape {tuple(x.shape)}")
        if reduce == "mean":
            return x.mean(dim=tuple(range(1, x.dim() - 1))).flatten(1)
        return (x[:, 0] if reduce == "first" else x[:, -1]).flatten(1)
    if reduce is None and x.dim() == 3:
        b, t, h = x.shape
        warnings.warn(
            f"{what}: the 3-D input of shape {tuple(x.shape)} is flattened to ({b}, {t * h}), one vector per sample. "
            "For token sequences (B, T, H) pass attention_mask= (and reduce='mean', 'first' or 'last'); "
            "to flatten (e.g. Conv1d maps (B, C, L)) pass reduce='flatten'",
            UserWarning, stacklevel=3)
    return x.flatten(1)


def empty_sequences(attention_mask: Tensor) -> Tensor:
    """(B,) boolean: the sequences of ``attention_mask`` (B, T) without any real token."""
    return ~(attention_mask != 0).any(dim=1)
