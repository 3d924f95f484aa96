"""Batch-level, vectorized data augmentation drawing all randomness from a ``torch.Generator``.

One gather per batch (no per-sample Python loop): each sample gets a random crop of its zero-padded
version (offsets in ``[0, 2 * padding]`` along each cropped axis) and, optionally, a horizontal flip.
The flip is folded into the column indices, so crop + flip is a single indexing operation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from .._params import check_int



@dataclass(frozen=True)
class CropFlipParams:
    """Random parameters of one batch: ``offsets`` (B, D) crop offsets in the padded input (D = number of
    cropped axes: 2 for images (rows, columns), 1 for signals), ``flip`` (B,) bool, flip along the last axis."""

    offsets: Tensor
    flip: Tensor


def _check_batch(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"augmentation expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(f"augmentation expects a batch (B, C, L) or (B, C, H, W), got shape {tuple(x.shape)}")


def draw_crop_flip(
    x: Tensor, generator: torch.Generator, padding: int, flip: bool
) -> CropFlipParams:
    """Draw the parameters for :func:`apply_crop_flip` on batch ``x`` (only its shape is used).

    Draw order (part of the contract, so results are reproducible): offsets ``randint(0, 2p + 1, (B, D))``,
    then, if ``flip``, ``rand(B) < 0.5``; all on ``generator``'s device, then moved to ``x.device``.
    """
    _check_batch(x)
    check_int(padding, "padding", low=0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    batch, dims = x.shape[0], x.dim() - 2
    offsets = torch.randint(0, 2 * padding + 1, (batch, dims), generator=generator, device=generator.device)
    if flip:
        flips = torch.rand(batch, generator=generator, device=generator.device) < 0.5
    else:
        flips = torch.zeros(batch, dtype=torch.bool, device=generator.device)
    return CropFlipParams(offsets.to(x.device), flips.to(x.device))


def apply_crop_flip(x: Tensor, params: CropFlipParams, padding: int) -> Tensor:
    """Crop each zero-padded sample at its offsets and flip it when asked; same shape as ``x``.

    For an image: ``out[b, c, i, j] = pad(x)[b, c, oy_b + i, ox_b + j']`` with ``j' = W - 1 - j`` when
    flipped and ``j`` otherwise, ``pad`` adding ``padding`` zeros on each side of H and W.
    """
    _check_batch(x)
    offsets, flips = params.offsets, params.flip
    batch = x.shape[0]
    if offsets.shape != (batch, x.dim() - 2) or flips.shape != (batch,):
        raise ValueError(f"parameters of shape {tuple(offsets.shape)}/{tuple(flips.shape)} do not fit a batch of shape {tuple(x.shape)}")
    if padding:
        x = F.pad(x, (padding,) * (2 * (x.dim() - 2)))
    b = torch.arange(batch, device=x.device)
    cols_base = torch.arange(x.shape[-1] - 2 * padding, device=x.device)
    # flipping the crop = reading its columns backwards
    cols_base = torch.where(flips[:, None], cols_base.flip(0)[None, :], cols_base[None, :])
    cols = offsets[:, -1:] + cols_base  # (B, W)
    if x.dim() == 3:
        return x[b[:, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None], cols[:, None, :]]
    rows = offsets[:, :1] + torch.arange(x.shape[-2] - 2 * padding, device=x.device)[None, :]  # (B, H)
    channels = torch.arange(x.shape[1], device=x.device)
    return x[b[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


class RandomCropFlip:
    """Batch augmentation ``(x (B, C, H, W) or (B, C, L), generator) -> same shape``.

    Random crop of the zero-padded input (``padding`` pixels on each side) plus, if ``flip``, a horizontal
    flip with probability 1/2. CIFAR: ``RandomCropFlip(4, flip=True)``; digits: ``RandomCropFlip(1, flip=False)``;
    MNIST-1D: ``RandomCropFlip(2, flip=False)`` (a shift of at most 2 samples). Values stay in the range of
    ``x`` plus 0 (the padding value). Picklable and comparable.
    """

    def __init__(self, padding: int, flip: bool):
        check_int(padding, "padding", low=0)
        self.padding = padding
        self.flip = bool(flip)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        params = draw_crop_flip(x, generator, self.padding, self.flip)
        return apply_crop_flip(x, params, self.padding)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RandomCropFlip) and (self.padding, self.flip) == (other.padding, other.flip)

    def __hash__(self) -> int:
        return hash((self.padding, self.flip))
