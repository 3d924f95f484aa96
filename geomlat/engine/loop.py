"""The training loop (:func:`train`) with run records, atomic checkpoints and exact resume; the optimizer (SGD, AdamW) and the lr
schedule (the paper's multi-step by default, cosine, constant; linear warm-up) come from :class:`TrainConfig`.

An *objective* is an ``nn.Module`` with an attribute ``.model`` (the network being trained and evaluated)
and ``forward(x, y) -> (output (B, C), {name: scalar loss})``; :func:`train` minimizes the sum of the
losses over the objective's parameters that require grad (a frozen teacher has ``requires_grad=False``).
Objectives (:class:`Supervised`, ``Distiller``, ...) and their protocol: :mod:`geomlat.objectives`.

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
(:mod:`geomlat.engine.evaluation`).

Run folder (``run_dir``: config.json, metrics.jsonl, checkpoint.pt, final.json) and resume:
:mod:`geomlat.engine.run_folder`. The configuration: :mod:`geomlat.engine.config`; the precision:
:mod:`geomlat.engine.precision`; one step and its checks: :mod:`geomlat.engine.step`; evaluation:
:mod:`geomlat.engine.evaluation`.

Mixed precision (``TrainConfig.precision``, the names of PyTorch Lightning): ``"bf16-mixed"`` / ``"16-mixed"``
run the objective's forward under ``torch.autocast`` on the training device (weights, gradients and the
optimizer in float32); ``"16-mixed"`` adds a ``torch.amp.GradScaler`` (its state is in the checkpoint, so
resume stays exact; skipped steps are counted in ``skipped_steps``). The loop never waits for the device
inside a step for ``"32"`` and ``"bf16-mixed"``: the losses are checked for NaN/Inf every
:data:`~geomlat.engine.step.FINITE_CHECK_EVERY` steps (see :func:`~geomlat.engine.step.train_step`).

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
decides skip/resume (:func:`geomlat.distributed.on_main_process`); errors there are raised on every rank. The run folder must be on a file system all
ranks see (they read the checkpoint when resuming). A last batch smaller than ``2 * W`` is dropped (every
rank needs two samples), which on one process is the usual rule of dropping a batch of one sample.
"""
from __future__ import annotations

import functools
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import DeferredChecks, deferred_value_checks
from ..batch import Inputs, map_tensors, to_device
from ..distributed import (all_reduce_sum, barrier, get_world_size, is_distributed, is_main_process, main_process_writes,
                           on_main_process, shard)
from ..io import load_checkpoint, to_jsonable, write_json
from .batches import derive_seed, epoch_batches, loader_batches
from .config import TrainConfig, make_optimizer, make_scheduler
from .devices import model_device, training_device
from .evaluation import evaluate_accuracy
from .precision import Precision
from .run_folder import RunPaths, fingerprint, inspect_folder, load_objective_state, resume, save_checkpoint
from .step import FINITE_CHECK_EVERY, train_step, verify

__all__ = ["train", "epoch_summary", "EvaluateFn", "AfterStepFn"]

EvaluateFn = Callable[[nn.Module, Any], Mapping[str, float]]
AfterStepFn = Callable[[nn.Module], None]


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
            :data:`~geomlat.engine.step.FINITE_CHECK_EVERY` steps, at the end of each epoch and when a step raises, before
            any checkpoint of that epoch is written).
    """
    _check_arguments(objective, config)
    paths = RunPaths(Path(run_dir))
    full_record = to_jsonable({"train": config.to_dict(), **dict(record or {}), "fingerprint": fingerprint(objective)})
    status, final = on_main_process(functools.partial(inspect_folder, paths, full_record))  # rank 0 decides for every rank
    if status == "done":  # the given objective gets the final weights: it is the model the metrics describe
        load_objective_state(objective, load_checkpoint(paths.checkpoint, map_location=model_device(objective))["objective"])
        return final
    with main_process_writes():  # the run folder's files are written by rank 0 only
        return _fit(objective, splits, config, paths, full_record, resuming=status == "resume", evaluate=evaluate,
                    after_step=after_step, progress=progress)


def _check_arguments(objective: nn.Module, config: TrainConfig) -> None:
    if not isinstance(objective, nn.Module) or not isinstance(getattr(objective, "model", None), nn.Module):
        raise TypeError("objective must be an nn.Module with an nn.Module attribute .model (e.g. Supervised(model))")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")


def _fit(objective: nn.Module, splits, config: TrainConfig, paths: RunPaths, record: Mapping[str, Any], *,
         resuming: bool, evaluate: EvaluateFn | None, after_step: AfterStepFn | None, progress: bool) -> dict[str, Any]:
    """The epochs of :func:`train` from the start or the checkpoint (``resuming``); returns the final metrics."""
    device = training_device(config)
    objective.to(device)
    params = [p for p in objective.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the objective has no trainable parameter (requires_grad=True)")
    optimizer = make_optimizer(params, config)
    scheduler = make_scheduler(optimizer, config)
    precision = Precision.from_name(config.precision, device)  # "16-mixed": a grad scaler, checkpointed
    if not paths.config.exists():
        write_json(paths.config, record)
    start_epoch, history = resume(paths, objective, optimizer, scheduler, precision, device) if resuming else (0, [])

    module = _step_module(objective, config, device)
    evaluate_fn = evaluate or (lambda model, s: {"test_error": 1.0 - evaluate_accuracy(model, s.test, config.eval_batch_size, device)})
    bars, lines = _progress_modes(progress and is_main_process())
    for epoch in range(start_epoch, config.epochs):
        line: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        line.update(_train_epoch(objective, splits, config, optimizer, epoch, device, after_step, bars,
                                 desc=f"{paths.folder.name} {epoch + 1}/{config.epochs}", module=module, precision=precision))
        scheduler.step()
        evaluate_now = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        finish = functools.partial(_finish_line, line, evaluate_fn if evaluate_now else None, objective.model, splits, epoch)
        history.append(on_main_process(finish))  # rank 0 evaluates; every rank records rank 0's line
        save_checkpoint(paths, objective, optimizer, scheduler, precision, epoch + 1, history)
        if lines:
            print(epoch_summary(paths.folder.name, history[-1], config.epochs), file=sys.stderr, flush=True)

    final = _final_metrics(history, config, objective, precision.skips_steps)
    write_json(paths.final, final)
    barrier()  # the other ranks return once the run folder is complete
    return final


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


def _accepts_epoch(fn: Callable) -> bool:
    """Whether ``fn`` takes an ``epoch`` keyword (or ``**kwargs``)."""
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



class _EpochTotals:
    """Running sums of an epoch, on the training device (no host read): each loss term x batch size, the
    correct predictions (while the outputs are class scores) and the number of samples."""

    def __init__(self, device: torch.device, num_classes: int | None):
        self.device, self.num_classes = device, num_classes
        self.sums: dict[str, Tensor] = {}
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = 0
        self.track_acc = True

    def add(self, out: Tensor, y: Tensor, losses: Mapping[str, Tensor], total: Tensor) -> None:
        """One step: ``out`` (B, ...) detached outputs, ``y`` (B,) labels, the loss terms and their sum."""
        bs = len(y)
        self.seen += bs
        for name, loss in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + loss * bs
        self.sums["loss"] = self.sums.get("loss", 0.0) + total * bs
        # train accuracy only when the output is class scores (not an embedding)
        self.track_acc = self.track_acc and out.dim() == 2 and out.shape[1] == self.num_classes
        if self.track_acc:
            self.correct += (out.argmax(dim=1) == y).sum()

    def postfix(self) -> dict[str, str]:
        """The progress bar's running loss and accuracy (host reads)."""
        postfix = {"loss": f"{float(self.sums['loss']) / self.seen:.4f}"}
        if self.track_acc:
            postfix["acc"] = f"{int(self.correct) / self.seen:.3f}"
        return postfix

    def metrics(self, world: int) -> dict[str, Any]:
        """Mean loss terms and train accuracy (None for non-class outputs), summed over the ``world`` ranks
        first: the one-process values of the epoch."""
        sums, correct, seen = self.sums, self.correct, self.seen
        if world > 1:
            names = sorted(sums)
            packed = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in names]
                                 + [correct.to(torch.float64), torch.tensor(float(seen), dtype=torch.float64, device=self.device)])
            packed = all_reduce_sum(packed).cpu()
            sums = {k: packed[i] for i, k in enumerate(names)}
            correct, seen = int(packed[-2].round()), int(packed[-1].round())
        metrics: dict[str, Any] = {name: float(value) / seen for name, value in sums.items()}
        metrics["train_acc"] = int(correct) / seen if self.track_acc else None
        return metrics


def _epoch_source(train_set, config: TrainConfig, epoch: int, device: torch.device, world: int):
    """``(index batches, iterator of (x, y) batches)`` of epoch ``epoch``: a TensorDataset is sliced in memory,
    any other map-style dataset of (x, y) samples goes through a DataLoader at the same index batches (the same
    numbers, see :func:`geomlat.engine.batches.loader_batches`)."""
    tensors = getattr(train_set, "tensors", None)
    batches = epoch_batches(len(tensors[1]) if tensors is not None else len(train_set), config, epoch, world)
    if tensors is not None:  # the in-memory fast path
        return batches, ((tensors[0][idx], tensors[1][idx]) for idx in batches)
    return batches, loader_batches(train_set, batches, config, epoch, device)


def _step_inputs(x: Inputs, y: Tensor, augment, generator: torch.Generator, world: int,
                 device: torch.device) -> tuple[Inputs, Tensor]:
    """A global batch augmented (the whole batch: the same random draws as on one process), this rank's shard
    of it, on ``device``."""
    if augment is not None:
        if not isinstance(x, Tensor):
            raise TypeError(f"splits.augment(x, generator) augments tensor batches, but the training set yields "
                            f"{type(x).__name__} inputs: augment inside the dataset or its collate_fn")
        x = augment(x, generator)
    if world > 1:
        x, y = map_tensors(x, shard), shard(y)
    return to_device(x, device, non_blocking=True), y.to(device, non_blocking=True)


def _checked_step(module: nn.Module, x: Inputs, y: Tensor, optimizer, config: TrainConfig, precision: Precision,
                  loss_factor: float, checks: DeferredChecks, pending: list, step: int, epoch: int,
                  step_hook: Callable | None, model: nn.Module) -> tuple[Tensor, dict[str, Tensor], Tensor, bool]:
    """:func:`train_step`, its losses appended to ``pending`` (checked later), then ``step_hook(model)``. When
    the step raises, a bad input or NaN loss of an unchecked earlier step (weights now NaN) is the cause
    reported."""
    try:
        out, losses, total, skipped = train_step(module, x, y, optimizer, precision=precision, loss_factor=loss_factor,
                                                 clip_grad_norm=config.clip_grad_norm)
        pending.append((step, {**losses, "loss": total}))
        if step_hook is not None:
            step_hook(model)
    except Exception as err:
        try:
            verify(checks, pending, epoch)
        except (ValueError, FloatingPointError) as cause:
            raise cause from err
        raise
    return out, losses, total, skipped


def _train_epoch(objective, splits, config: TrainConfig, optimizer, epoch: int, device: torch.device,
                 after_step: AfterStepFn | None, progress: bool, desc: str, module: nn.Module,
                 precision: Precision) -> dict[str, Any]:
    """One epoch. ``module`` is what runs forward: the objective, or its DistributedDataParallel wrapper.

    The input value checks of the losses are deferred (:func:`geomlat.checks.deferred_value_checks`) and
    verified with the losses every :data:`~geomlat.engine.step.FINITE_CHECK_EVERY` steps."""
    world = get_world_size()
    batches, source = _epoch_source(splits.train, config, epoch, device, world)
    step_hook = _with_epoch(after_step, epoch)
    aug_generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, 1))
    augment = getattr(splits, "augment", None)
    totals = _EpochTotals(device, getattr(splits, "num_classes", None))
    skipped = 0
    pending: list[tuple[int, dict[str, Tensor]]] = []  # (step, losses) not yet checked for NaN/Inf
    module.train()
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    start = time.perf_counter()
    # updated by hand: an iterated tqdm syncs its count lazily, so a bar refreshed from set_postfix showed 0/N
    bar = tqdm(total=len(batches), desc=desc, disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True)
    with torch.random.fork_rng(devices=rng_devices), deferred_value_checks(verify_on_exit=False) as checks:
        torch.manual_seed(derive_seed(config.seed, epoch, 2))  # dropout & co: reproducible per epoch
        for step, (idx, (x, y)) in enumerate(zip(batches, source)):
            checks.step = step
            x, y = _step_inputs(x, y, augment, aug_generator, world, device)
            # DDP averages over ranks: weight W * b_r / B makes it the one-process gradient (module docstring)
            factor = world * len(y) / len(idx) if world > 1 else 1.0
            out, losses, total, was_skipped = _checked_step(module, x, y, optimizer, config, precision, factor, checks,
                                                            pending, step, epoch, step_hook, objective.model)
            skipped += int(was_skipped)
            totals.add(out, y, losses, total)
            bar.update(1)
            if (step + 1) % FINITE_CHECK_EVERY == 0 or step == len(batches) - 1:
                verify(checks, pending, epoch)  # the only host synchronization of the loop (with the bar's)
                pending = []
                if progress:
                    bar.set_postfix(totals.postfix(), refresh=step == len(batches) - 1)
    bar.close()
    metrics = totals.metrics(world)
    metrics["steps"] = len(batches)
    if precision.skips_steps:
        metrics["skipped_steps"] = skipped
    metrics["seconds"] = time.perf_counter() - start
    return metrics
