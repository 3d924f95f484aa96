"""The training configuration: :class:`TrainConfig` with its validation, the optimizer and lr-schedule
factories (:func:`make_optimizer`, :func:`make_scheduler`, :func:`lr_factor`).

Torch-free at import (torch is imported inside the factories): study specs check their ``train`` tables
against :data:`TRAIN_FIELDS`, derived from TrainConfig's own fields, before torch or the study kind is
imported, so a typo answers at once.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .._params import check_int, check_number

if TYPE_CHECKING:  # annotations only: this module imports no torch
    import torch

__all__ = ["TrainConfig", "make_optimizer", "make_scheduler", "lr_factor", "train_defaults", "OPTIMIZERS",
           "SCHEDULERS", "PRECISION_NAMES", "TRAIN_FIELDS", "RESUMABLE_CHANGES"]

#: ``TrainConfig.optimizer`` values.
OPTIMIZERS = ("sgd", "adamw")
#: ``TrainConfig.scheduler`` values (the lr per epoch; see :func:`lr_factor`).
SCHEDULERS = ("multistep", "cosine", "constant")
#: ``TrainConfig.precision`` values (Lightning's names; see :class:`geomlat.engine.precision.Precision`).
PRECISION_NAMES = ("32", "bf16-mixed", "16-mixed")

#: fields of TrainConfig that may change between a run and its resume (or rerun) without invalidating it:
#: where and how the same computation runs
RESUMABLE_CHANGES = ("device", "eval_batch_size", "num_workers", "pin_memory", "compile")


def _spec(kind: str, arg: object = None) -> dict[str, tuple[str, object]]:
    """Field metadata: how a study spec type-checks the field (see :data:`TRAIN_FIELDS`)."""
    return {"spec": (kind, arg)}


@dataclass
class TrainConfig:
    """Optimization settings. Defaults are the paper's CIFAR-10 recipe (METHOD.md): SGD lr 0.1,
    momentum 0.9, weight decay 5e-4, lr x0.2 at 30/60/80% of the epochs (60/120/160 of 200), batch 128.

    Attributes:
        milestones: fractions of ``epochs`` after which the lr is multiplied by ``lr_gamma``
            (rounded to whole epochs; see :meth:`milestone_epochs`).
        device: "cpu", "cuda", "cuda:1", ... or "auto" (cuda when available).
        eval_every: evaluate the test error every this many epochs (and always after the last one).
        limit_batches: if set, train on only this many batches per epoch (smoke tests).
        drop_last: drop the last incomplete batch. A last batch of a single sample is always dropped
            (no graph over one sample, and BatchNorm cannot train on it).
        optimizer: ``"sgd"`` (``lr``, ``momentum``, ``nesterov``, ``weight_decay``) or ``"adamw"``
            (``lr``, ``betas``, ``weight_decay``, decoupled; ``momentum`` is not used).
        betas: AdamW's ``(beta1, beta2)``, each in [0, 1).
        scheduler: the lr per epoch: ``"multistep"`` (x ``lr_gamma`` after each of ``milestones``),
            ``"cosine"`` (cosine from ``lr`` towards 0 over the epochs after the warm-up) or ``"constant"``;
            see :func:`lr_factor`.
        warmup_epochs: linear warm-up: epoch ``e < warmup_epochs`` (0-based) runs at
            ``lr * (e + 1) / (warmup_epochs + 1)`` times the scheduler's factor (``multistep``: milestones
            keep their absolute epochs; ``cosine``: starts after the warm-up). 0: none.
        clip_grad_norm: if set, the gradients' total 2-norm is clipped to this value before each optimizer
            step (:func:`torch.nn.utils.clip_grad_norm_`; with ``"16-mixed"`` on the unscaled gradients).
        num_workers, pin_memory: the ``DataLoader`` of a training set that is not a ``TensorDataset``
            (ignored for TensorDatasets, sliced in memory); they do not change the numbers (resume may change them).
        precision: ``"32"`` (float32), ``"bf16-mixed"`` (the objective's forward under
            ``torch.autocast(dtype=torch.bfloat16)`` on the training device) or ``"16-mixed"`` (autocast
            float16 with a ``torch.amp.GradScaler``: a step whose gradients overflow is skipped, counted in
            the ``skipped_steps`` of the epoch's record, and the scale is lowered). Weights, optimizer
            state and the backward pass stay float32 (Lightning's names and meaning).
        compile: run each step's forward through ``torch.compile`` (the objective, or its DDP wrapper; Inductor,
            needs a C compiler on CPU). ``objective.model`` stays the uncompiled module (evaluation, hooks,
            checkpoints and their keys unchanged); the numbers agree with eager ones to rounding, so a run may
            be resumed with another value.
    """

    epochs: int = field(default=200, metadata=_spec("int", 1))
    batch_size: int = field(default=128, metadata=_spec("int", 2))
    lr: float = field(default=0.1, metadata=_spec("number", 0.0))
    momentum: float = field(default=0.9, metadata=_spec("number", 0.0))
    weight_decay: float = field(default=5e-4, metadata=_spec("number", 0.0))
    nesterov: bool = field(default=False, metadata=_spec("bool"))
    milestones: tuple[float, ...] = field(default=(0.3, 0.6, 0.8), metadata=_spec("numbers"))
    lr_gamma: float = field(default=0.2, metadata=_spec("number", 0.0))
    seed: int = 0
    device: str = field(default="cpu", metadata=_spec("str"))
    eval_every: int = field(default=1, metadata=_spec("int", 1))
    eval_batch_size: int = field(default=512, metadata=_spec("int", 1))
    limit_batches: int | None = field(default=None, metadata=_spec("int", 1))
    drop_last: bool = field(default=False, metadata=_spec("bool"))
    precision: str = field(default="32", metadata=_spec("choice", PRECISION_NAMES))
    optimizer: str = field(default="sgd", metadata=_spec("choice", OPTIMIZERS))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=_spec("numbers"))
    scheduler: str = field(default="multistep", metadata=_spec("choice", SCHEDULERS))
    warmup_epochs: int = field(default=0, metadata=_spec("int", 0))
    clip_grad_norm: float | None = field(default=None, metadata=_spec("number", 0.0))
    num_workers: int = field(default=0, metadata=_spec("int", 0))
    pin_memory: bool = field(default=False, metadata=_spec("bool"))
    compile: bool = field(default=False, metadata=_spec("bool"))

    def __post_init__(self):
        self.milestones = tuple(float(m) for m in self.milestones)
        if not isinstance(self.precision, str) or self.precision not in PRECISION_NAMES:
            raise ValueError(f"TrainConfig.precision must be one of {list(PRECISION_NAMES)}, got {self.precision!r}")
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            check_int(getattr(self, name), f"TrainConfig.{name}", low=1)
        check_int(self.limit_batches, "TrainConfig.limit_batches", low=1, none_ok=True)
        check_int(self.seed, "TrainConfig.seed", low=0)
        for name in ("lr", "momentum", "weight_decay", "lr_gamma"):
            check_number(getattr(self, name), f"TrainConfig.{name}", low=0)
        if self.lr <= 0 or self.lr_gamma <= 0:
            raise ValueError(f"TrainConfig.lr and lr_gamma must be > 0, got lr={self.lr}, lr_gamma={self.lr_gamma}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"TrainConfig.milestones are fractions of the epochs in (0, 1), got {self.milestones}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"TrainConfig.milestones must be increasing, got {self.milestones}")
        for name, choices in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainConfig.{name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.optimizer != "sgd" and self.nesterov:
            raise ValueError(f"TrainConfig.nesterov is an SGD option; optimizer is {self.optimizer!r}")
        self.betas = tuple(self.betas)
        if len(self.betas) != 2:
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        for b in self.betas:
            check_number(b, "TrainConfig.betas[i]", low=0, high=1, high_open=True)
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("warmup_epochs", "num_workers"):
            check_int(getattr(self, name), f"TrainConfig.{name}", low=0)
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        check_number(self.clip_grad_norm, "TrainConfig.clip_grad_norm", low=0, low_open=True, none_ok=True)
        for name in ("pin_memory", "compile", "nesterov", "drop_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be a bool, got {getattr(self, name)!r}")

    def milestone_epochs(self) -> list[int]:
        """Epoch counts after which the lr drops: ``round(f * epochs)`` for each fraction, kept in
        [1, epochs - 1], duplicates merged (e.g. 200 epochs -> [60, 120, 160], 10 -> [3, 6, 8])."""
        return sorted({min(max(round(f * self.epochs), 1), self.epochs - 1) for f in self.milestones} - {0})

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys raise a ValueError listing the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**dict(values))


#: The fields a study spec may set in a ``train`` table (all but ``seed``, which comes from the study's seeds),
#: each ``name -> (kind, argument)``: ``("int", minimum)``, ``("number", minimum)``, ``("bool", None)``,
#: ``("str", None)``, ``("choice", allowed values)`` or ``("numbers", None)`` (a list of numbers); read from
#: the ``metadata`` of TrainConfig's fields. TrainConfig itself checks the values further (ranges, orderings).
TRAIN_FIELDS: dict[str, tuple[str, object]] = {
    f.name: f.metadata["spec"] for f in dataclasses.fields(TrainConfig) if "spec" in f.metadata}


def train_defaults() -> dict[str, Any]:
    """TrainConfig's defaults: the values of fields added after a run folder was recorded (e.g. precision "32")."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config.optimizer`` over ``params`` (an iterable of parameters or param groups)."""
    import torch

    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The lr of epoch ``epoch`` (0-based) divided by ``config.lr``: warm-up factor x scheduler factor.

    warm-up (``w = warmup_epochs``): ``(epoch + 1) / (w + 1)`` for ``epoch < w``, else 1;
    ``multistep``: ``lr_gamma ** (number of milestone epochs <= epoch)``;
    ``cosine``: ``(1 + cos(pi * t / (epochs - w))) / 2`` with ``t = max(epoch - w, 0)``; ``constant``: 1.
    """
    w = config.warmup_epochs
    warm = (epoch + 1) / (w + 1) if epoch < w else 1.0
    if config.scheduler == "multistep":
        return warm * config.lr_gamma ** sum(m <= epoch for m in config.milestone_epochs())
    if config.scheduler == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * max(epoch - w, 0) / (config.epochs - w)))
    return warm


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch lr scheduler of ``config`` (stepped once after each epoch).

    ``multistep`` without warm-up is ``MultiStepLR`` (the numbers and checkpoints of earlier versions);
    every other choice is a ``LambdaLR`` of :func:`lr_factor` (a function of the epoch alone: exact resume)."""
    import torch

    if config.scheduler == "multistep" and config.warmup_epochs == 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestone_epochs(), gamma=config.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, config))

