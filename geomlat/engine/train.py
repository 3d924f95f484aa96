"""Training loop with run records, atomic checkpoints and exact resume; the optimizer (SGD, AdamW) and the lr
schedule (the paper's multi-step by default, cosine, constant; linear warm-up) come from :class:`TrainConfig`.

An *objective* is an ``nn.Module`` with an attribute ``.model`` (the network being trained and evaluated)
and ``forward(x, y) -> (output (B, C), {name: scalar loss})``; :func:`train` minimizes the sum of the
losses over the objective's parameters that require grad (a frozen teacher has ``requires_grad=False``).
Objectives (:class:`geomlat.objectives.Supervised`, ``Distiller``, ...) and their protocol: :mod:`geomlat.objectives`.

Reproducibility: the shuffling of epoch ``e`` comes from a ``torch.Generator`` seeded by ``(seed, e)``,
the augmentation from another one seeded by ``(seed, e)``, and the global RNG (dropout, ...) is re-seeded
from ``(seed, e)`` at the start of the epoch inside ``torch.random.fork_rng``. A checkpoint written at the
end of each epoch therefore holds everything a resumed run needs (weights, optimizer, scheduler, epoch,
metric history): on CPU a run killed at any point and restarted ends with bitwise the same weights and
numbers as an uninterrupted one. A training set that is not a TensorDataset is read through a
``DataLoader`` at the same seeded index batches (its workers seeded from ``(seed, e)`` too).

Batches (:mod:`geomlat.batch`): a TensorDataset, or any map-style dataset whose items are ``(x, y)`` pairs or
mappings holding the labels under ``"labels"`` (Hugging Face's convention; e.g. a tokenized
``datasets.Dataset`` with ``set_format("torch")``). The model's inputs are what remains of a mapping
(``{"input_ids", "attention_mask", ...}``, called as ``model(**inputs)``), or ``x``. Items are collated by
the dataset's own ``collate_fn`` attribute when it has one (e.g. ``dataset.collate_fn =
transformers.DataCollatorWithPadding(tokenizer)``, which pads each batch to its longest sequence), else by
torch's ``default_collate`` (sequences of equal length). The same holds for every split that is evaluated
(:func:`evaluate_accuracy`, :func:`model_outputs`, :func:`predict`).

Run folder layout (``run_dir``)::

    config.json     resolved TrainConfig + caller's record + fingerprint of the objective and model (written
                    before the first epoch; every later call into the folder must match it: run_folder.py)
    metrics.jsonl   one JSON object per finished epoch (rewritten atomically from the checkpoint's history)
    checkpoint.pt   {"objective", "optimizer", "scheduler", "epoch", "history"[, "scaler"]} (torch.load weights_only=True;
                    "objective" without the submodules named in the objective's ``checkpoint_exclude``, e.g.
                    a Distiller's frozen teacher: see :func:`checkpoint_state`)
    final.json      final metrics; its presence marks the run as finished (a rerun loads the final weights
                    of checkpoint.pt into the objective it is given and returns these metrics)

Mixed precision (``TrainConfig.precision``, the names of PyTorch Lightning): ``"bf16-mixed"`` / ``"16-mixed"``
run the objective's forward under ``torch.autocast`` on the training device (weights, gradients and the
optimizer in float32); ``"16-mixed"`` adds a ``torch.amp.GradScaler`` (its state is in the checkpoint, so
resume stays exact; skipped steps are counted in ``skipped_steps``). The loop never waits for the device
inside a step for ``"32"`` and ``"bf16-mixed"``: the losses are checked for NaN/Inf every
:data:`FINITE_CHECK_EVERY` steps (see :func:`train_step`).

Distributed data parallel (``torchrun``, see :mod:`geomlat.distributed`): with an initialized process group of
W processes, :func:`train` wraps the objective in ``DistributedDataParallel``. Every rank draws the same
per-epoch permutation and augmentation of the *global* batch (``batch_size`` samples, as on one process)
and trains on its contiguous shard (:func:`geomlat.distributed.shard`, rank order), so that losses wrapped
in :class:`geomlat.distributed.GlobalBatch` see exactly the one-process batch. Each rank's loss is multiplied by
``W * b_r / B`` (``b_r`` its shard size, ``B`` the batch size) before backward: after DDP's average
over ranks the gradient is that of one process on the whole batch, for per-sample mean losses
(cross-entropy) and for global graph losses alike, also when the last batch splits unevenly. Logged
losses and accuracies are summed over ranks (the one-process values). BatchNorm statistics and dropout
masks are per rank (as usual with DDP). Rank 0 alone evaluates (``evaluate``), writes the run folder and
decides skip/resume; errors there are raised on every rank. The run folder must be on a file system all
ranks see (they read the checkpoint when resuming). A last batch smaller than ``2 * W`` is dropped (every
rank needs two samples), which on one process is the usual rule of dropping a batch of one sample.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .._checks import DeferredChecks, deferred_value_checks
from ..batch import Inputs, call_model, first_tensor, map_tensors, split_labels, to_device
from ..capture import OutputKey, select_logits
from ..distributed import all_reduce_sum, barrier, broadcast_object, get_world_size, is_distributed, is_main_process, shard
from .io import CheckpointError, CheckpointRefused, atomic_save, atomic_write_text, load_checkpoint, read_json, to_jsonable, write_json
from .config_fields import OPTIMIZERS, PRECISION_NAMES, SCHEDULERS
from .run_folder import RunFolderMismatch, check_run_folder, fingerprint

__all__ = [
    "TrainConfig",
    "train",
    "evaluate_accuracy",
    "predict",
    "model_outputs",
    "resolve_device",
    "make_optimizer",
    "make_scheduler",
    "lr_factor",
    "checkpoint_state",
    "derive_seed",
    "load_trained_model",
    "PRECISIONS",
    "autocast_dtype",
    "train_step",
    "epoch_summary",
    "RunFolderMismatch",
]

# fields of TrainConfig that may change between a run and its resume (or rerun) without invalidating it:
# where and how the same computation runs
_RESUMABLE_CHANGES = ("device", "eval_batch_size", "num_workers", "pin_memory", "compile")

#: ``TrainConfig.precision`` values -> autocast dtype (None: no autocast, float32 throughout).
PRECISIONS: dict[str, torch.dtype | None] = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))

#: the loss values, and the input value checks of the losses (deferred: :func:`geomlat.checks.deferred_value_checks`),
#: are checked every this many steps (and at the end of each epoch): one host synchronization per interval
#: instead of several per step.
FINITE_CHECK_EVERY = 20


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

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    lr_gamma: float = 0.2
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 1
    eval_batch_size: int = 512
    limit_batches: int | None = None
    drop_last: bool = False
    precision: str = "32"
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: str = "multistep"
    warmup_epochs: int = 0
    clip_grad_norm: float | None = None
    num_workers: int = 0
    pin_memory: bool = False
    compile: bool = False

    def __post_init__(self):
        self.milestones = tuple(float(m) for m in self.milestones)
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if self.limit_batches is not None and (
            isinstance(self.limit_batches, bool) or not isinstance(self.limit_batches, int) or self.limit_batches < 1
        ):
            raise ValueError(f"TrainConfig.limit_batches must be None or a positive int, got {self.limit_batches!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be a non-negative int, got {self.seed!r}")
        for name in ("lr", "momentum", "weight_decay", "lr_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
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
        if len(self.betas) != 2 or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("warmup_epochs", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an int >= 0, got {value!r}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        clip = self.clip_grad_norm
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0):
            raise ValueError(f"TrainConfig.clip_grad_norm must be None or a finite number > 0, got {clip!r}")
        for name in ("pin_memory", "compile", "nesterov", "drop_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be a bool, got {getattr(self, name)!r}")

    def milestone_epochs(self) -> list[int]:
        """Epoch counts after which the lr drops: ``round(f * epochs)`` for each fraction, kept in
        [1, epochs - 1], duplicates merged (e.g. 200 epochs -> [60, 120, 160], 10 -> [3, 6, 8])."""
        return sorted({min(max(round(f * self.epochs), 1), self.epochs - 1) for f in self.milestones} - {0})

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys raise a ValueError listing the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**dict(values))


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config.optimizer`` over ``params`` (an iterable of parameters or param groups)."""
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
    if config.scheduler == "multistep" and config.warmup_epochs == 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestone_epochs(), gamma=config.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, config))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixing integers with NumPy's SeedSequence (well spread, no collisions of (seed, epoch))."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0]) >> 1


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; a cuda device without CUDA raises a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available; use device='cpu' or 'auto'")
    return device


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _collate_fn(dataset: Dataset) -> Callable | None:
    """The dataset's own ``collate_fn`` attribute (e.g. a ``DataCollatorWithPadding``), else None (torch's
    ``default_collate``)."""
    collate = getattr(dataset, "collate_fn", None)
    if collate is not None and not callable(collate):
        raise TypeError(f"{type(dataset).__name__}.collate_fn must be callable, got {type(collate).__name__}")
    return collate


def _inputs_and_labels(batch, what: str) -> tuple[Inputs, Tensor]:
    """``(inputs, labels tensor)`` of one collated batch: an ``(x, y)`` pair or a mapping with ``"labels"``."""
    if not isinstance(batch, (tuple, list, Mapping)):
        raise ValueError(f"{what} must yield (x, y) samples or mappings with a 'labels' key, got a batch of type "
                         f"{type(batch).__name__}")
    if isinstance(batch, (tuple, list)) and len(batch) > 2:  # (x, y, extra...): x and y, as before
        batch = batch[:2]
    try:
        inputs, labels = split_labels(batch)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{what} must yield (x, y) samples or mappings with a 'labels' key: {err}") from None
    return inputs, torch.as_tensor(labels)


def _dataset_batches(dataset: Dataset, batch_size: int):
    """Yield ``(inputs, labels)`` batches in order; TensorDatasets are sliced directly (no DataLoader
    overhead), other datasets go through a DataLoader with the dataset's ``collate_fn`` (see the module
    docstring)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        x, y = tensors[0], tensors[1]
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
    else:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate_fn(dataset)):
            yield _inputs_and_labels(batch, "the evaluated dataset")


@torch.no_grad()
def _outputs_and_labels(model: nn.Module, dataset: Dataset, batch_size: int,
                        device: str | torch.device | None) -> tuple[Tensor, Tensor]:
    """``(outputs (N, C) float on CPU, labels (N,) on CPU)`` of ``model`` in eval mode over ``dataset``, in order
    (one pass: a dataset's transforms run once). The model's train/eval mode is restored afterwards."""
    device = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    outs, labels = [], []
    try:
        for x, y in _dataset_batches(dataset, batch_size):
            outs.append(select_logits(call_model(model, to_device(x, device))).float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("cannot evaluate on an empty dataset")
    return torch.cat(outs), torch.cat(labels)


def model_outputs(model: nn.Module, dataset: Dataset, batch_size: int = 512, device: str | torch.device | None = None) -> Tensor:
    """Outputs of ``model`` in eval mode over ``dataset`` (``(x, y)`` pairs or mappings with ``"labels"``, see
    the module docstring), in order: (N, C) float tensor on CPU. The model's train/eval mode is restored
    afterwards. A tuple/dict/``ModelOutput`` output is reduced by :func:`geomlat.select_logits`'s default
    rule (``.logits`` / ``["logits"]`` / first Tensor)."""
    return _outputs_and_labels(model, dataset, batch_size, device)[0]


def predict(model: nn.Module, dataset: Dataset, batch_size: int = 512, device: str | torch.device | None = None) -> Tensor:
    """Predicted classes ``argmax model(x)`` over ``dataset``: (N,) int64 tensor on CPU."""
    return model_outputs(model, dataset, batch_size, device).argmax(dim=1)


def evaluate_accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 512, device: str | torch.device | None = None) -> float:
    """Fraction of samples of ``dataset`` whose predicted class ``argmax model(x)`` equals the label (one pass
    over the dataset: the labels come with the batches)."""
    outputs, labels = _outputs_and_labels(model, dataset, batch_size, device)
    return float((outputs.argmax(dim=1) == labels).double().mean())


EvaluateFn = Callable[[nn.Module, Any], Mapping[str, float]]
AfterStepFn = Callable[[nn.Module], None]


def _epoch_batches(n: int, config: TrainConfig, epoch: int, world: int = 1) -> list[Tensor]:
    """Index batches of epoch ``epoch`` (0-based): a permutation drawn from a generator seeded by (seed, epoch).

    The same global batches on every rank; a last batch with fewer than 2 samples per rank is dropped."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, 0))
    batches = list(torch.randperm(n, generator=generator).split(config.batch_size))
    if batches and (len(batches[-1]) < 2 * world or (config.drop_last and len(batches[-1]) < config.batch_size)):
        batches.pop()
    if config.limit_batches is not None:
        batches = batches[: config.limit_batches]
    if not batches:
        raise ValueError(f"the training set ({n} samples) gives no batch of batch_size={config.batch_size}")
    return batches


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a :attr:`TrainConfig.precision` value: None for ``"32"``, else bf16 / fp16."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A ``torch.amp.GradScaler`` on ``device`` for ``"16-mixed"``, None for the other precisions."""
    return torch.amp.GradScaler(torch.device(device).type) if autocast_dtype(precision) == torch.float16 else None


def _at_least_float32(t: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32 and float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def train_step(module: nn.Module, x: Inputs, y: Tensor, optimizer: torch.optim.Optimizer, *, precision: str = "32",
               scaler: torch.amp.GradScaler | None = None, loss_factor: float = 1.0,
               clip_grad_norm: float | None = None) -> tuple[Tensor, dict[str, Tensor], Tensor, bool]:
    """One optimization step of an objective, as :func:`train` runs it.

    The objective's forward runs under ``torch.autocast(x.device.type, dtype)`` for the mixed precisions
    (the backward pass and the optimizer step outside it, on float32 weights); the losses are summed in
    float32. ``"16-mixed"`` scales the loss with ``scaler`` and lets it skip a step whose gradients are
    not finite (``GradScaler.step`` reads that flag on the host: one synchronization per step, unlike
    ``"32"`` and ``"bf16-mixed"``, which never wait for the device here). Non-finite losses are *not*
    checked here (that would synchronize): :func:`train` checks the returned values every
    :data:`FINITE_CHECK_EVERY` steps.

    Args:
        module: the objective (or its DistributedDataParallel wrapper): ``forward(x, y) -> (out, {name: loss})``.
        x: the inputs of B samples (a tensor, tuple or mapping, see :mod:`geomlat.batch`) and y: (B,) labels,
            on the objective's device.
        optimizer: over the objective's trainable parameters.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        scaler: a ``torch.amp.GradScaler`` (required for ``"16-mixed"``, see :func:`make_grad_scaler`).
        loss_factor: the summed loss is multiplied by this before backward (the DDP weight of :func:`train`).
        clip_grad_norm: if set, clip the total 2-norm of the optimizer's gradients to it before the step
            (after ``scaler.unscale_``: the true gradients; no host read).

    Returns:
        ``(out (B, ...) detached, {name: detached scalar}, total (detached scalar), skipped)``, the losses in
        float32 at least (half values cast up, float64 kept),
        ``skipped`` True when the scaler skipped the optimizer step (always False without a scaler).
    """
    dtype = autocast_dtype(precision)
    if dtype == torch.float16 and scaler is None:
        raise ValueError('precision "16-mixed" needs a torch.amp.GradScaler (make_grad_scaler)')
    with torch.autocast(first_tensor(x).device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out, losses = module(x, y)
    if not isinstance(losses, Mapping) or not losses:
        raise ValueError(f"{type(module).__name__} returned no loss terms")
    total = torch.stack([_at_least_float32(loss.reshape(())) for loss in losses.values()]).sum()
    optimizer.zero_grad(set_to_none=True)
    scaled = total * loss_factor if loss_factor != 1.0 else total
    skipped = False
    if scaler is not None:
        scaler.scale(scaled).backward()
        if clip_grad_norm is not None:
            scaler.unscale_(optimizer)  # clip the true gradients; step() does not unscale twice
            _clip(optimizer, clip_grad_norm)
        before = scaler.get_scale()
        scaler.step(optimizer)  # skipped when a gradient is inf/NaN; the scale is then lowered by update()
        scaler.update()
        skipped = scaler.get_scale() < before
    else:
        scaled.backward()
        if clip_grad_norm is not None:
            _clip(optimizer, clip_grad_norm)
        optimizer.step()
    detached = {name: _at_least_float32(loss.detach().reshape(())) for name, loss in losses.items()}
    return out.detach(), detached, total.detach(), skipped


def _clip(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the gradients of every parameter of ``optimizer`` to total 2-norm ``max_norm`` (no host read:
    non-finite norms are left to the GradScaler / the finite-loss check)."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, max_norm)


def _seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: NumPy's and ``random``'s seeds from the worker's torch seed (itself drawn
    from the epoch's seeded generator), so that transforms using them are reproducible."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _loader_batches(dataset: Dataset, batches: list[Tensor], config: TrainConfig, epoch: int, device: torch.device):
    """``(inputs, labels)`` batches of a map-style ``dataset`` (items ``(x, y)`` or mappings with ``"labels"``,
    collated by the dataset's ``collate_fn`` if it has one) at the index batches ``batches`` through a
    ``DataLoader`` (``num_workers``, ``pin_memory``; workers seeded from ``(seed, epoch)``: reproducible and
    resumable)."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, 3))
    loader = DataLoader(dataset, batch_sampler=[idx.tolist() for idx in batches], num_workers=config.num_workers,
                        pin_memory=config.pin_memory and device.type == "cuda", generator=generator,
                        worker_init_fn=_seed_worker if config.num_workers > 0 else None,
                        collate_fn=_collate_fn(dataset))
    for item in loader:
        if isinstance(item, (tuple, list)) and len(item) < 2:
            raise ValueError(f"the training set must yield (x, y) samples, got a batch of type {type(item).__name__}")
        yield _inputs_and_labels(item, "the training set")


def _verify(checks: DeferredChecks, pending: list[tuple[int, dict[str, Tensor]]], epoch: int) -> None:
    """Raise the first failure, in step order, of the deferred input checks (ValueError, the message of the
    immediate check) and of the losses (FloatingPointError, see :func:`_check_finite`); in one step the input
    check comes first (a NaN feature makes the loss NaN)."""
    found = checks.failure()
    if found is not None:
        step, err = found
        first_nan = _first_nonfinite(pending)
        if first_nan is None or first_nan[0] >= step:
            err.add_note(f"(input value check deferred by the training engine: epoch {epoch + 1}, step {step + 1})")
            raise err
    _check_finite(pending, epoch)


def _accepts_epoch(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == "epoch" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or p.kind == p.VAR_KEYWORD
               for p in params)


def _with_epoch(fn: Callable | None, epoch: int) -> Callable | None:
    """``fn`` called with ``epoch=epoch + 1`` (1-based, as in metrics.jsonl) when it takes an ``epoch`` keyword
    (or ``**kwargs``), else ``fn`` itself (hooks written without it keep working)."""
    if fn is None or not _accepts_epoch(fn):
        return fn
    return functools.partial(fn, epoch=epoch + 1)


def _first_nonfinite(pending: list[tuple[int, dict[str, Tensor]]]) -> tuple[int, dict[str, Tensor]] | None:
    """The first (step, losses) pair of ``pending`` with a NaN/Inf loss, or None (one host synchronization)."""
    if not pending:
        return None
    finite = torch.stack([torch.isfinite(torch.stack(list(losses.values()))).all() for _, losses in pending]).cpu()
    if bool(finite.all()):
        return None
    return pending[int((~finite).nonzero()[0])]


def _check_finite(pending: list[tuple[int, dict[str, Tensor]]], epoch: int) -> None:
    """Raise FloatingPointError naming the first step of ``pending`` ((step, {name: loss}) pairs) whose
    loss terms are not all finite (one host synchronization for the whole list)."""
    found = _first_nonfinite(pending)
    if found is None:
        return
    step, losses = found
    terms = {k: float(v) for k, v in losses.items()}
    raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {terms} "
                             f"(losses are checked every {FINITE_CHECK_EVERY} steps; the run folder keeps the last epoch)")


def _train_epoch(objective, splits, config: TrainConfig, optimizer, epoch: int, device: torch.device,
                 after_step: AfterStepFn | None, progress: bool, desc: str, module: nn.Module | None = None,
                 scaler: torch.amp.GradScaler | None = None) -> dict[str, Any]:
    """One epoch. ``module`` is what runs forward: the objective, or its DistributedDataParallel wrapper.

    A training set with ``.tensors`` (TensorDataset) is sliced in memory; any other map-style dataset of
    (x, y) samples goes through a DataLoader at the same index batches (the same numbers, see
    :func:`_loader_batches`). The input value checks of the losses are deferred
    (:func:`geomlat.checks.deferred_value_checks`) and verified with the losses every
    :data:`FINITE_CHECK_EVERY` steps."""
    module = objective if module is None else module
    world = get_world_size()
    tensors = getattr(splits.train, "tensors", None)
    batches = _epoch_batches(len(tensors[1]) if tensors is not None else len(splits.train), config, epoch, world)
    if tensors is not None:  # the in-memory fast path
        source = ((tensors[0][idx], tensors[1][idx]) for idx in batches)
    else:
        source = _loader_batches(splits.train, batches, config, epoch, device)
    step_hook = _with_epoch(after_step, epoch)
    aug_generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, 1))
    augment = getattr(splits, "augment", None)
    num_classes = getattr(splits, "num_classes", None)
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = skipped = 0
    pending: list[tuple[int, dict[str, Tensor]]] = []  # (step, losses) not yet checked for NaN/Inf
    track_acc = True
    module.train()
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    start = time.perf_counter()
    # updated by hand: an iterated tqdm syncs its count lazily, so a bar refreshed from set_postfix showed 0/N
    bar = tqdm(total=len(batches), desc=desc, disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True)
    with torch.random.fork_rng(devices=rng_devices), deferred_value_checks(verify_on_exit=False) as checks:
        torch.manual_seed(derive_seed(config.seed, epoch, 2))  # dropout & co: reproducible per epoch
        for step, (idx, (x, y)) in enumerate(zip(batches, source)):
            checks.step = step
            if augment is not None:
                if not isinstance(x, Tensor):
                    raise TypeError(f"splits.augment(x, generator) augments tensor batches, but the training set yields "
                                    f"{type(x).__name__} inputs: augment inside the dataset or its collate_fn")
                x = augment(x, aug_generator)  # the whole batch: the same random draws as on one process
            if world > 1:
                x, y = map_tensors(x, shard), shard(y)
            x, y = to_device(x, device, non_blocking=True), y.to(device, non_blocking=True)
            try:
                # DDP averages over ranks: weight W * b_r / B makes it the one-process gradient (module docstring)
                out, losses, total, was_skipped = train_step(
                    module, x, y, optimizer, precision=config.precision, scaler=scaler,
                    loss_factor=world * len(y) / len(idx) if world > 1 else 1.0, clip_grad_norm=config.clip_grad_norm)
                pending.append((step, {**losses, "loss": total}))
                skipped += int(was_skipped)
                if step_hook is not None:
                    step_hook(objective.model)
            except Exception as err:
                # a bad input or NaN loss of an unchecked earlier step (weights now NaN) is the cause to report
                try:
                    _verify(checks, pending, epoch)
                except (ValueError, FloatingPointError) as cause:
                    raise cause from err
                raise
            bs = len(y)
            seen += bs
            for name, loss in losses.items():
                sums[name] = sums.get(name, 0.0) + loss * bs
            sums["loss"] = sums.get("loss", 0.0) + total * bs
            # train accuracy only when the output is class scores (not an embedding)
            track_acc = track_acc and out.dim() == 2 and out.shape[1] == num_classes
            if track_acc:
                correct += (out.argmax(dim=1) == y).sum()
            bar.update(1)
            if (step + 1) % FINITE_CHECK_EVERY == 0 or step == len(batches) - 1:
                _verify(checks, pending, epoch)  # the only host synchronization of the loop (with the bar's)
                pending = []
                if progress:
                    postfix = {"loss": f"{float(sums['loss']) / seen:.4f}"}
                    if track_acc:
                        postfix["acc"] = f"{int(correct) / seen:.3f}"
                    bar.set_postfix(postfix, refresh=step == len(batches) - 1)
    bar.close()
    if world > 1:  # sums over the ranks: the one-process values of the epoch
        names = sorted(sums)
        packed = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=device) for k in names]
                             + [correct.to(torch.float64), torch.tensor(float(seen), dtype=torch.float64, device=device)])
        packed = all_reduce_sum(packed).cpu()
        sums = {k: packed[i] for i, k in enumerate(names)}
        correct, seen = int(packed[-2].round()), int(packed[-1].round())
    metrics: dict[str, Any] = {name: float(value) / seen for name, value in sums.items()}
    metrics["train_acc"] = int(correct) / seen if track_acc else None
    metrics["steps"] = len(batches)
    if scaler is not None:
        metrics["skipped_steps"] = skipped
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def _checkpoint_readable(path: Path, run_dir: Path) -> bool:
    """True if ``path`` loads. An unreadable checkpoint (truncated, corrupt) is moved aside to
    ``checkpoint.pt.unreadable`` with a message on stderr, and the run restarts from scratch (the same
    numbers as an uninterrupted run: epochs are reproducible from the seed). A refused checkpoint
    (code in the pickle) raises :class:`CheckpointRefused` naming it."""
    try:
        load_checkpoint(path)
        return True
    except CheckpointRefused:
        raise
    except CheckpointError as err:
        aside = path.with_name(path.name + ".unreadable")
        path.replace(aside)
        print(f"geomlat: {err}; moved to {aside.name}, run {run_dir.name} restarts from scratch", file=sys.stderr)
        return False


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(to_jsonable(line), allow_nan=False) + "\n" for line in history))


def train(
    objective: nn.Module,
    splits,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    evaluate: EvaluateFn | None = None,
    after_step: AfterStepFn | None = None,
    progress: bool = True,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``objective`` on ``splits.train`` and return the final metrics (also in ``run_dir/final.json``).

    Args:
        objective: module with ``.model`` and ``forward(x, y) -> (output (B, C), {name: scalar loss})``.
        splits: a ``geomlat.data.DatasetSplits`` or any object with ``train`` (a TensorDataset, sliced in
            memory, or any map-style ``Dataset`` of ``(x, y)`` samples, read through a ``DataLoader`` with
            ``config.num_workers`` / ``pin_memory`` at the same seeded index batches), ``test``,
            ``num_classes`` and ``augment(x (B, ...), generator) -> x`` applied to training batches (or None).
        config: :class:`TrainConfig`.
        run_dir: folder of this run (created). If ``final.json`` exists the run is not trained again: its final
            weights (``checkpoint.pt``) are loaded into ``objective`` and its metrics returned; if
            ``checkpoint.pt`` exists training resumes after its epoch. Either only when the folder was made by
            the same objective, model, TrainConfig and record (:mod:`geomlat.engine.run_folder`; device,
            ``compile`` and the loader settings may change). An unreadable checkpoint (truncated, corrupt) is
            moved aside and the run restarts from scratch, with a message naming it (also for a finished run,
            whose weights would be lost otherwise).
        evaluate: ``evaluate(model, splits) -> {"test_error": float, ...}`` replacing the default
            (error of ``argmax model(x)`` on ``splits.test``), for objectives whose output is not logits.
            Extra keys are recorded too. A hook with an ``epoch`` keyword (or ``**kwargs``) is called with
            ``epoch=`` the number of epochs done (1-based, the ``epoch`` of metrics.jsonl).
        after_step: ``after_step(model)`` called after each optimizer step (e.g. a Parseval projection);
            ``epoch=`` is passed as to ``evaluate``.
        progress: show a tqdm bar on stderr with the running loss and accuracy when stderr is a terminal,
            else one line per epoch (:func:`epoch_summary`: no carriage-return frames in logs).
        record: extra JSON-serializable information stored in ``config.json`` (model names, method, ...);
            it must match on resume.

    Returns:
        dict with ``test_error``, ``train_acc``, ``loss`` and each loss term of the last epoch,
        ``epochs``, ``steps``, ``seconds`` (training + evaluation time summed over epochs), ``params``
        (trainable parameters of ``objective.model``) and any key returned by ``evaluate``.

    Raises:
        RunFolderMismatch (a ValueError): the folder holds a run made by another objective, model, TrainConfig
            or record; one line naming the folder and the first field that differs.
        ValueError: nothing to train.
        CheckpointRefused: ``checkpoint.pt`` holds code (refused by the weights-only loader, not run).
        FloatingPointError: a loss became NaN/Inf (named step and terms; checked every
            :data:`FINITE_CHECK_EVERY` steps, at the end of each epoch and when a step raises, before
            any checkpoint of that epoch is written).
    """
    _check_arguments(objective, config)
    run_dir = Path(run_dir)
    paths = _RunPaths(run_dir)
    full_record = to_jsonable({"train": config.to_dict(), **dict(record or {}), "fingerprint": fingerprint(objective)})
    status, final = _on_main(functools.partial(_inspect_folder, paths, full_record))  # rank 0 decides for every rank
    if status == "done":  # the given objective gets the final weights: it is the model the metrics describe
        _load_objective_state(objective, load_checkpoint(paths.checkpoint, map_location=_model_device(objective))["objective"])
        return final

    device = _training_device(config)
    objective.to(device)
    params = [p for p in objective.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the objective has no trainable parameter (requires_grad=True)")
    optimizer = make_optimizer(params, config)
    scheduler = make_scheduler(optimizer, config)
    scaler = make_grad_scaler(config.precision, device)  # "16-mixed" only; its state is checkpointed
    main = is_main_process()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not paths.config.exists():
            write_json(paths.config, full_record)
    start_epoch, history = 0, []
    if status == "resume":
        start_epoch, history = _resume(paths, objective, optimizer, scheduler, scaler, device, main)

    module = _step_module(objective, config, device)
    evaluate_fn = evaluate or (lambda model, s: {"test_error": 1.0 - evaluate_accuracy(model, s.test, config.eval_batch_size, device)})
    bars, lines = _progress_modes(progress and main)
    for epoch in range(start_epoch, config.epochs):
        line: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        line.update(_train_epoch(objective, splits, config, optimizer, epoch, device, after_step, bars,
                                 desc=f"{run_dir.name} {epoch + 1}/{config.epochs}", module=module, scaler=scaler))
        scheduler.step()
        evaluate_now = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        finish = functools.partial(_finish_line, line, evaluate_fn if evaluate_now else None, objective.model, splits, epoch)
        history.append(_on_main(finish))  # rank 0 evaluates; every rank records rank 0's line
        if main:
            atomic_save({"objective": checkpoint_state(objective), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                         **({"scaler": scaler.state_dict()} if scaler is not None else {})}, paths.checkpoint)
            _write_metrics(paths.metrics, history)
        if lines:
            print(epoch_summary(run_dir.name, history[-1], config.epochs), file=sys.stderr, flush=True)

    final = _final_metrics(history, config, objective, scaler is not None)
    if main:
        write_json(paths.final, final)
    barrier()  # the other ranks return once the run folder is complete
    return final


@dataclass(frozen=True)
class _RunPaths:
    """The files of a run folder (module docstring)."""

    folder: Path

    @property
    def final(self) -> Path:
        return self.folder / "final.json"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.pt"

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"


def _check_arguments(objective: nn.Module, config: TrainConfig) -> None:
    if not isinstance(objective, nn.Module) or not isinstance(getattr(objective, "model", None), nn.Module):
        raise TypeError("objective must be an nn.Module with an nn.Module attribute .model (e.g. Supervised(model))")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")


def _inspect_folder(paths: _RunPaths, record: Mapping[str, Any]) -> tuple[str, Any]:
    """``("done", final metrics)``, ``("resume", None)`` or ``("start", None)`` for a run folder; a folder made
    by another objective, model, TrainConfig or record raises :class:`RunFolderMismatch` (rank 0 only)."""
    if paths.config.exists():
        check_run_folder(paths.config, record, train_defaults=_train_defaults(), ignore_train=_RESUMABLE_CHANGES)
    if paths.checkpoint.exists() and not _checkpoint_readable(paths.checkpoint, paths.folder):
        paths.final.unlink(missing_ok=True)  # a finished run whose weights are lost is trained again
    if paths.final.exists() and not paths.checkpoint.exists():
        print(f"geomlat: {paths.final} has no checkpoint.pt beside it (its weights are lost); "
              f"run {paths.folder.name} is trained again", file=sys.stderr)
        paths.final.unlink()
    if paths.final.exists():
        try:
            return "done", read_json(paths.final)
        except ValueError as err:  # rebuilt from the checkpoint's history by the caller
            print(f"geomlat: {err}; {paths.folder.name} is finished again from its checkpoint", file=sys.stderr)
            paths.final.unlink()
    return ("resume" if paths.checkpoint.exists() else "start"), None


def _train_defaults() -> dict[str, Any]:
    """TrainConfig's defaults: the values of fields added after a run folder was recorded (e.g. precision "32")."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def _training_device(config: TrainConfig) -> torch.device:
    device = resolve_device(config.device)
    if is_distributed() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (set by init_from_env)
    return device


def _resume(paths: _RunPaths, objective, optimizer, scheduler, scaler, device: torch.device, main: bool
            ) -> tuple[int, list[dict[str, Any]]]:
    """Load the checkpoint into the objective, optimizer, scheduler (and scaler); ``(epochs done, history)``."""
    if not paths.checkpoint.exists():
        raise FileNotFoundError(f"rank 0 resumes from {paths.checkpoint} but this rank does not see it: the run folder "
                                "must be on a file system shared by every rank")
    state = load_checkpoint(paths.checkpoint, map_location=device)
    _load_objective_state(objective, state["objective"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    history = list(state["history"])
    if main:  # a kill between the checkpoint and the metrics write loses nothing
        _write_metrics(paths.metrics, history)
    return int(state["epoch"]), history


def _step_module(objective: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """What runs the forward of a step: the objective, wrapped in DistributedDataParallel under a process group
    (broadcasts rank 0's parameters and buffers; gradients averaged over ranks in backward), then compiled with
    ``torch.compile`` when ``config.compile`` (``objective`` and ``objective.model`` stay the uncompiled modules:
    evaluation, hooks and checkpoints see the same modules and state dict keys)."""
    module: nn.Module = objective
    if is_distributed():
        module = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        module = torch.compile(module)
    return module


def _finish_line(line: dict[str, Any], evaluate_fn: EvaluateFn | None, model: nn.Module, splits, epoch: int) -> dict[str, Any]:
    """The epoch's metrics line, with the evaluation's keys when ``evaluate_fn`` is given (rank 0)."""
    if evaluate_fn is not None:
        start = time.perf_counter()
        evaluated = dict(_with_epoch(evaluate_fn, epoch)(model, splits))
        if "test_error" not in evaluated:
            raise KeyError(f"evaluate() must return a dict with 'test_error', got keys {sorted(evaluated)}")
        line.update({k: float(v) for k, v in evaluated.items()})
        line["eval_seconds"] = time.perf_counter() - start
    return to_jsonable(line)


def _final_metrics(history: list[dict[str, Any]], config: TrainConfig, objective: nn.Module, scaled: bool) -> dict[str, Any]:
    """final.json: the last epoch's metrics, with totals over the epochs and the trainable parameter count."""
    last = history[-1]
    final = {k: v for k, v in last.items() if k not in ("epoch", "lr", "seconds", "eval_seconds", "steps", "skipped_steps")}
    final.update(
        epochs=config.epochs,
        steps=sum(h["steps"] for h in history),
        **({"skipped_steps": sum(h["skipped_steps"] for h in history)} if scaled else {}),
        seconds=sum(h["seconds"] + h.get("eval_seconds", 0.0) for h in history),
        params=sum(p.numel() for p in objective.model.parameters() if p.requires_grad),
    )
    return final


def _interactive(stream) -> bool:
    """True when ``stream`` is a terminal (or a Jupyter kernel's output, where tqdm draws a widget)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty()) or "ipykernel" in sys.modules
    except ValueError:  # a closed stream
        return False


def _progress_modes(progress: bool) -> tuple[bool, bool]:
    """``(tqdm bars, one summary line per epoch)`` on stderr: bars on a terminal, lines on a file or pipe
    (a bar there would fill the log with carriage-return frames)."""
    if not progress:
        return False, False
    bars = _interactive(sys.stderr)
    return bars, not bars


def epoch_summary(name: str, line: Mapping[str, Any], epochs: int) -> str:
    """One line of an epoch's metrics line, e.g. ``run 3/10: loss 0.4213, train acc 0.871, test error 12.40% (1.2 s)``."""
    parts = [f"loss {line['loss']:.4f}"]
    if line.get("train_acc") is not None:
        parts.append(f"train acc {line['train_acc']:.3f}")
    if line.get("test_error") is not None:
        parts.append(f"test error {100 * line['test_error']:.2f}%")
    return f"{name} {line['epoch']}/{epochs}: {', '.join(parts)} ({line['seconds']:.1f} s)"


def _excluded(objective: nn.Module) -> tuple[str, ...]:
    names = getattr(objective, "checkpoint_exclude", ())
    names = (names,) if isinstance(names, str) else tuple(names)
    for name in names:
        if not isinstance(getattr(objective, name, None), nn.Module):
            raise TypeError(f"{type(objective).__name__}.checkpoint_exclude names {name!r}, which is not a submodule")
    return tuple(name + "." for name in names)


def checkpoint_state(objective: nn.Module) -> dict[str, Tensor]:
    """The objective's state dict without the submodules named in its ``checkpoint_exclude`` attribute
    (a Distiller's frozen teacher: rebuilt by the caller, not stored in every checkpoint)."""
    prefixes = _excluded(objective)
    return {k: v for k, v in objective.state_dict().items() if not k.startswith(prefixes)}


def _load_objective_state(objective: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a :func:`checkpoint_state` (entries of excluded submodules, present in older checkpoints, ignored);
    any other missing or unexpected key raises as ``load_state_dict(strict=True)`` would."""
    prefixes = _excluded(objective)
    if not prefixes:
        objective.load_state_dict(state)
        return
    result = objective.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefixes)}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(prefixes)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"checkpoint does not match {type(objective).__name__}: missing keys {missing}, "
                           f"unexpected keys {list(result.unexpected_keys)}")


def _on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` run on rank 0 only, its result given to every rank; an exception there is raised on every
    rank (the original on rank 0, a RuntimeError naming it elsewhere). One process: just ``fn()``."""
    if not is_distributed():
        return fn()
    result, error = None, None
    if is_main_process():
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks were told
            error = err
    result, message = broadcast_object((result, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 failed: {message}")
    return result


def load_trained_model(run_dir: str | Path, model: nn.Module, prefix: str = "model.") -> nn.Module:
    """Load the weights of ``objective.model`` from ``run_dir/checkpoint.pt`` into ``model`` (in place).

    The checkpoint holds the objective's state dict; the network's entries start with ``prefix``
    (``"model."`` for :class:`geomlat.objectives.Supervised` and ``Distiller``). Returns ``model``.
    """
    state = load_checkpoint(Path(run_dir) / "checkpoint.pt")["objective"]
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise KeyError(f"{run_dir}/checkpoint.pt has no entry starting with {prefix!r}")
    model.load_state_dict(sub)
    return model
