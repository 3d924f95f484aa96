"""A run folder: its files (:class:`RunPaths`), resume (:func:`inspect_folder`, :func:`resume`), checkpoints
(:func:`save_checkpoint`, :func:`checkpoint_state`, :func:`load_trained_model`) and what made it: the fingerprint of a run (objective, model, TrainConfig, caller's record) that
:func:`geomlat.engine.train` writes in ``config.json`` and compares on every later call into the folder.

A later call whose objective, model, TrainConfig or record differs stops with :class:`RunFolderMismatch`, one
line naming the folder and the first field that differs, before anything is trained or returned: a finished
run never answers for another objective (it would return stale metrics), an unfinished one is never resumed
with another.

The fingerprint (``config.json["fingerprint"]``)::

    objective: {"class": "geomlat.objectives.Distiller",
                "modules": {"": {"class", "options"}, "terms.gkd": {"class", "options"}, ...}}
    model:     {"class": "...SmallCNN", "parameters": {"conv.weight": [16, 1, 3, 3], ...}}

``options`` are a module's plain public attributes (numbers, strings, booleans, None, and lists / dicts /
tuples of them: term weights, ``k``, ``kernel``, ``label_smoothing``, ...), callables by qualified name,
other objects by class and their plain attributes, small tensors by value and larger ones by shape.
The trained network (``objective.model``) and the submodules named in ``checkpoint_exclude`` (a Distiller's
frozen teacher) are described by class and parameter shapes. Compare with :func:`first_difference`.

Run folder layout (``run_dir``)::

    config.json     resolved TrainConfig + caller's record + fingerprint of the objective and model (written
                    before the first epoch; every later call into the folder must match it)
    metrics.jsonl   one JSON object per finished epoch (rewritten atomically from the checkpoint's history)
    checkpoint.pt   {"objective", "optimizer", "scheduler", "epoch", "history"[, "scaler"]} (torch.load weights_only=True;
                    "objective" without the submodules named in the objective's ``checkpoint_exclude``, e.g.
                    a Distiller's frozen teacher: see :func:`checkpoint_state`)
    final.json      final metrics; its presence marks the run as finished (a rerun loads the final weights
                    of checkpoint.pt into the objective it is given and returns these metrics)

Folders written before fingerprints existed (no ``fingerprint`` key) are accepted: their TrainConfig and
record are still compared, the fingerprint of the call is added to their ``config.json`` and a one-line note
on stderr says that their objective and model were not checked this once (delete the folder to be sure).
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from ..io import CheckpointError, CheckpointRefused, atomic_save, atomic_write_text, load_checkpoint, read_json, to_jsonable, write_json
from .config import RESUMABLE_CHANGES, train_defaults
from .precision import Precision

__all__ = ["RunFolderMismatch", "fingerprint", "objective_fingerprint", "model_fingerprint", "first_difference",
           "check_run_folder", "RunPaths", "inspect_folder", "resume", "save_checkpoint", "checkpoint_readable",
           "write_metrics", "checkpoint_state", "load_objective_state", "load_trained_model"]

#: tensors with at most this many elements are recorded by value, larger ones by shape and dtype
SMALL_TENSOR = 64
_MAX_DEPTH = 4


class RunFolderMismatch(ValueError):
    """A run folder made by another objective, model, TrainConfig or record; ``folder`` and ``field`` name them."""

    def __init__(self, folder: str | Path, field: str, message: str):
        self.folder, self.field = Path(folder), field
        super().__init__(message)

    def __reduce__(self):  # picklable (raised in worker processes)
        return type(self), (self.folder, self.field, self.args[0])


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def describe_value(value: Any, depth: int = 0) -> Any:
    """A JSON-able description of an attribute value (see the module docstring), stable across processes."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, torch.Tensor):
        if value.numel() <= SMALL_TENSOR:
            return {"tensor": value.detach().cpu().tolist(), "dtype": str(value.dtype)}
        return {"tensor_shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if depth >= _MAX_DEPTH:
        return {"class": _qualname(type(value))}
    if isinstance(value, Mapping):
        return {str(k): describe_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe_value(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((describe_value(v, depth + 1) for v in value), key=repr)
    if isinstance(value, functools.partial):
        return {"partial": _qualname(value.func), "args": describe_value(list(value.args), depth + 1),
                "keywords": describe_value(value.keywords, depth + 1)}
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return _qualname(value)
    return {"class": _qualname(type(value)), **_plain_attributes(value, depth + 1)}


def _plain_attributes(obj: Any, depth: int) -> dict[str, Any]:
    """Public instance attributes of ``obj`` (not modules, not ``training``), described."""
    fields = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else getattr(obj, "__dict__", {})
    return {k: describe_value(v, depth) for k, v in fields.items()
            if not k.startswith("_") and k != "training" and not isinstance(v, nn.Module)}


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """``{"class", "parameters": {name: shape}}`` of a network."""
    return {"class": _qualname(type(model)),
            "parameters": {name: list(p.shape) for name, p in model.named_parameters()}}


def _opaque(objective: nn.Module) -> dict[int, str]:
    """id -> role of the modules described by class and shapes only: ``model`` and the excluded submodules."""
    names = getattr(objective, "checkpoint_exclude", ())
    names = (names,) if isinstance(names, str) else tuple(names)
    roles = {id(objective.model): "model"}
    for name in names:
        sub = getattr(objective, name, None)
        if isinstance(sub, nn.Module):
            roles.setdefault(id(sub), name)
    return roles


def objective_fingerprint(objective: nn.Module) -> dict[str, Any]:
    """``{"class", "modules": {path: {"class", "options"} or {"class", "parameters"}}}`` of an objective, without
    ``objective.model`` (see :func:`fingerprint`)."""
    opaque = _opaque(objective)
    inside: set[int] = set()
    modules: dict[str, Any] = {}
    for path, module in objective.named_modules():
        if id(module) in inside:
            continue
        if id(module) in opaque:
            inside.update(id(m) for m in module.modules())
            if module is not objective.model:  # the model has its own entry in the fingerprint
                modules[path] = model_fingerprint(module)
        else:
            modules[path] = {"class": _qualname(type(module)), "options": _plain_attributes(module, 0)}
    return {"class": _qualname(type(objective)), "modules": modules}


def fingerprint(objective: nn.Module) -> dict[str, Any]:
    """The ``config.json["fingerprint"]`` of a run: ``{"objective": ..., "model": ...}`` (JSON types)."""
    found = {"objective": objective_fingerprint(objective), "model": model_fingerprint(objective.model)}
    return json.loads(json.dumps(to_jsonable(found)))


def _flatten(value: Any, path: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, sub in value.items():
            yield from _flatten(sub, f"{path}.{key}" if path else str(key))
    else:
        yield path, value


_ABSENT = object()


def first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first dotted field (in ``new``'s order, then ``old``'s) whose value differs: ``(field, old, new)``
    with ``None`` for a field one side lacks; None when equal."""
    flat_old, flat_new = dict(_flatten(old, "")), dict(_flatten(new, ""))
    for key in list(flat_new) + [k for k in flat_old if k not in flat_new]:
        a, b = flat_old.get(key, _ABSENT), flat_new.get(key, _ABSENT)
        if a != b:
            return key, (None if a is _ABSENT else a), (None if b is _ABSENT else b)
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_run_folder(config_path: Path, record: Mapping[str, Any], *, train_defaults: Mapping[str, Any],
                     ignore_train: Iterable[str] = ()) -> None:
    """Raise :class:`RunFolderMismatch` unless ``config_path`` (a run's ``config.json``) was written for
    ``record`` (``{"train": TrainConfig dict, ..., "fingerprint": ...}``).

    ``train_defaults`` fill the TrainConfig fields a folder recorded before they existed; the fields in
    ``ignore_train`` (device, ...) may change. A folder without a fingerprint is accepted and given this one
    (module docstring)."""
    old, new = read_json(config_path), json.loads(json.dumps(to_jsonable(record)))
    folder, ignore = config_path.parent, set(ignore_train)
    old_train = {**to_jsonable(dict(train_defaults)), **old.get("train", {})}
    old = {**old, "train": {k: v for k, v in old_train.items() if k not in ignore}}
    cmp_new = {**new, "train": {k: v for k, v in new.get("train", {}).items() if k not in ignore}}
    legacy = "fingerprint" not in old and "fingerprint" in cmp_new
    if legacy:
        cmp_new = {k: v for k, v in cmp_new.items() if k != "fingerprint"}
    found = first_difference(old, cmp_new)
    if found is not None:
        field, was, now = found
        raise RunFolderMismatch(folder, field, f"run folder {folder} was created with a different configuration: {field} "
                                f"is {_short(was)} there, {_short(now)} now; delete the folder to start afresh, or choose "
                                "another run folder")
    if legacy:
        print(f"geomlat: run folder {folder} predates run fingerprints: its objective and model were not checked "
              "(delete the folder to retrain); recording them now", file=sys.stderr)
        write_json(config_path, {**read_json(config_path), "fingerprint": new["fingerprint"]})


# ----------------------------------------------------------------------------------------------------
# the files of a run folder: checkpoint, metrics, final metrics; resume
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunPaths:
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


def inspect_folder(paths: RunPaths, record: Mapping[str, Any]) -> tuple[str, Any]:
    """``("done", final metrics)``, ``("resume", None)`` or ``("start", None)`` for a run folder; a folder made
    by another objective, model, TrainConfig or record raises :class:`RunFolderMismatch` (rank 0 only)."""
    if paths.config.exists():
        check_run_folder(paths.config, record, train_defaults=train_defaults(), ignore_train=RESUMABLE_CHANGES)
    if paths.checkpoint.exists() and not checkpoint_readable(paths.checkpoint, paths.folder):
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


def resume(paths: RunPaths, objective: nn.Module, optimizer, scheduler, precision: Precision,
           device: torch.device) -> tuple[int, list[dict[str, Any]]]:
    """Load the checkpoint into the objective, optimizer, scheduler (and the precision's grad scaler);
    ``(epochs done, history)``. The metrics file is rewritten from the history (rank 0: the writes of
    :mod:`geomlat.io`), so a kill between the checkpoint and the metrics write loses nothing."""
    if not paths.checkpoint.exists():
        raise FileNotFoundError(f"rank 0 resumes from {paths.checkpoint} but this rank does not see it: the run folder "
                                "must be on a file system shared by every rank")
    state = load_checkpoint(paths.checkpoint, map_location=device)
    load_objective_state(objective, state["objective"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    precision.load_state_dict(state)
    history = list(state["history"])
    write_metrics(paths.metrics, history)
    return int(state["epoch"]), history


def save_checkpoint(paths: RunPaths, objective: nn.Module, optimizer, scheduler, precision: Precision, epoch: int,
                    history: list[dict[str, Any]]) -> None:
    """Write ``checkpoint.pt`` after ``epoch`` epochs, then ``metrics.jsonl`` (atomically; rank 0)."""
    atomic_save({"objective": checkpoint_state(objective), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                 **precision.state_dict()}, paths.checkpoint)
    write_metrics(paths.metrics, history)


def checkpoint_readable(path: Path, run_dir: Path) -> bool:
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


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one JSON line per finished epoch, rewritten atomically."""
    atomic_write_text(path, "".join(json.dumps(to_jsonable(line), allow_nan=False) + "\n" for line in history))


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


def load_objective_state(objective: nn.Module, state: Mapping[str, Tensor]) -> None:
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


def load_trained_model(run_dir: str | Path, model: nn.Module, prefix: str = "model.") -> nn.Module:
    """Load the weights of ``objective.model`` from ``run_dir/checkpoint.pt`` into ``model`` (in place).

    The checkpoint holds the objective's state dict; the network's entries start with ``prefix``
    (``"model."`` for :class:`Supervised` and ``Distiller``). Returns ``model``.
    """
    state = load_checkpoint(Path(run_dir) / "checkpoint.pt")["objective"]
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise KeyError(f"{run_dir}/checkpoint.pt has no entry starting with {prefix!r}")
    model.load_state_dict(sub)
    return model
