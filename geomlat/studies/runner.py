"""The generic study runner: spec -> validated spec -> runs -> table -> figures.

A *study kind* (``kind = "distill"`` in a spec) is a class registered with
:func:`register_study_kind`; it validates its part of the spec (building models to check layer names,
before any training) and runs the study. The runner handles what every kind shares: finding and
parsing the TOML file, profiles, overrides, the common fields (``name``, ``kind``, ``description``,
``seeds``, ``threads``, ``workers``), output folders and the CPU thread count.

``threads``: torch CPU threads of each process (default: torch's). ``workers``: number of processes a
kind may use to train independent runs in parallel (default 1; on a CPU with few cores and small
models, ``workers = cores`` with ``threads = 1`` is much faster than one process using every core).

Output layout under ``out_root``: ``runs/NAME/PROFILE/<run>/`` (one folder per training run, see
:func:`geomlat.engine.train`), ``results/NAME/`` (tables), ``figures/NAME/`` (PNG figures).

Distributed (``torchrun``, or ``geomlat study NAME --nproc N``): every rank runs the study; each training
run is data parallel over all ranks (:func:`geomlat.engine.train`), ``workers`` is ignored (1). Only rank 0
writes files (the atomic writers of :mod:`geomlat.io` skip the write on other ranks, see
:func:`geomlat.distributed.main_process_writes`) and prints; the others compute the same evaluations and
wait for rank 0 at the end.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

# torch and the engine are imported inside the functions that need them: `geomlat --help` and the spec
# errors found before the study kind is loaded answer without importing torch
from .processes import torch_threads
from .spec import Fields, SpecError, apply_profile, check_train_tables, deep_merge, find_spec_file, read_spec_file

__all__ = ["StudyKind", "StudyContext", "RunPlan", "kind_packages", "STUDY_KINDS", "InputError", "register_study_kind", "load_study_kind", "load_spec",
           "run_study", "check_device"]


class InputError(ValueError):
    """A study input that cannot be used (a malformed data file); raised before anything is written."""


@dataclass
class StudyContext:
    """Where a study writes and how it runs (not part of the spec: the same spec runs anywhere).

    Attributes:
        runs_dir: ``out_root/runs/NAME/PROFILE``; results_dir: ``out_root/results/NAME``;
        figures_dir: ``out_root/figures/NAME``; data_dir: folder of file-based data sets (CIFAR-10);
        progress: show progress bars; log: function printing one status line;
        workers / threads: processes for independent runs and torch threads per process (from the spec).
        rank / world_size: this process in a distributed run (0 / 1 on one process); only rank 0 writes.
    """

    name: str
    profile: str
    runs_dir: Path
    results_dir: Path
    figures_dir: Path
    data_dir: str | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    workers: int = 1
    threads: int | None = None
    rank: int = 0
    world_size: int = 1


def _quiet(message: str) -> None:
    """The log of ranks other than 0."""


@dataclass
class RunPlan:
    """One training run of a study kind (one method, one seed): what :func:`geomlat.engine.train` takes.

    Attributes:
        objective: the ``nn.Module`` trained (``.model``: the network), freshly initialized after
            ``torch.manual_seed(seed)``; config: its :class:`geomlat.engine.TrainConfig` (seed included);
        after_step / evaluate: the engine hooks (None: none / the default test error);
        record: what the run folder's ``config.json`` records (it must match on resume).
    """

    objective: Any
    config: Any
    after_step: Callable | None = None
    evaluate: Callable | None = None
    record: dict[str, Any] = field(default_factory=dict)


class StudyKind:
    """Base class of study kinds. Subclasses implement :meth:`validate` and :meth:`run`; the per-run hooks
    (:meth:`build_run`; :meth:`validation_errors` and :attr:`validation_metrics` for ``--tune``) let the tools
    over kinds (:mod:`geomlat.studies.tools`, ``benchmarks/gpu_check.py``) train a kind's runs without
    naming it."""

    name: str = ""
    #: errors in [0, 1] returned by :meth:`validation_errors` (the choices of ``[tune]``'s ``select`` and
    #: ``tiebreak``); empty: the kind has no validation grid
    validation_metrics: tuple[str, ...] = ()
    #: further values of :meth:`validation_errors` shown in the grid table (never selected on)
    validation_extras: tuple[str, ...] = ()

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        """Check the kind-specific fields of ``spec`` (read them from ``fields``, which already consumed
        the common fields) and return the normalized spec with defaults filled in. Raise SpecError."""
        raise NotImplementedError

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        """Train/evaluate what the spec declares, write tables and figures; return a summary dict."""
        raise NotImplementedError

    def build_run(self, spec: dict[str, Any], method: str, seed: int, splits: Any, runs_dir: Path | None = None) -> RunPlan:
        """The run of ``method`` (a key of ``spec["methods"]``) and ``seed`` on ``splits``
        (:class:`geomlat.data.DatasetSplits`). ``runs_dir``: the study's runs folder, for runs that start from
        another run (a distillation teacher); None: such inputs are freshly initialized (throughput checks)."""
        raise NotImplementedError(f"study kind {self.name!r} does not define its runs one method at a time")

    def validation_errors(self, spec: dict[str, Any], plan: RunPlan, splits: Any, final: Mapping[str, Any]) -> dict[str, float]:
        """Errors of the trained ``plan.objective`` on ``splits.test`` (the validation split under ``--tune``),
        one per :attr:`validation_metrics` and :attr:`validation_extras`; ``final``: what ``train`` returned."""
        raise NotImplementedError(f"study kind {self.name!r} has no validation grid")

    def tuning_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A raw spec whose ``methods`` were replaced by the settings of a validation grid, made valid again
        (e.g. a baseline that is not among them); the default returns it unchanged."""
        return spec

    def tuning_figure(self, tune: Mapping[str, Any], spec: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Any:
        """A matplotlib figure of the validation grid (``rows``: the grid table), or None for the tools'
        default (the selected metric per setting)."""
        return None


STUDY_KINDS: dict[str, StudyKind] = {}


def register_study_kind(name: str):
    """Class decorator registering a :class:`StudyKind` subclass under ``name`` (``kind = "name"`` in specs)."""

    def decorator(cls):
        if name in STUDY_KINDS:
            raise ValueError(f"study kind {name!r} is already registered")
        if not (isinstance(cls, type) and issubclass(cls, StudyKind)):
            raise TypeError(f"@register_study_kind({name!r}) expects a StudyKind subclass, got {cls!r}")
        cls.name = name
        STUDY_KINDS[name] = cls()
        return cls

    return decorator


def kind_packages() -> dict[str, str]:
    """``{kind name: subpackage}`` of the study kinds of this package, found without importing them: a kind
    is a subpackage ``geomlat/studies/<package>/`` whose ``__init__.py`` registers it with
    ``@register_study_kind("name")``. Shared modules (``runner``, ``spec``, ...) are plain modules, and the
    tools over kinds (:mod:`geomlat.studies.tools`) register none."""
    out: dict[str, str] = {}
    for init in sorted(Path(__file__).parent.glob("*/__init__.py")):
        for node in ast.walk(ast.parse(init.read_text(), str(init))):
            if isinstance(node, ast.ClassDef):
                for deco in node.decorator_list:
                    if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register_study_kind"
                            and deco.args and isinstance(deco.args[0], ast.Constant)):
                        out[deco.args[0].value] = init.parent.name
    return out


def load_study_kind(kind: str) -> StudyKind:
    """The registered kind ``kind``; a kind of this package (:func:`kind_packages`) is imported on demand."""
    if kind not in STUDY_KINDS:
        package = kind_packages().get(kind)
        if package is not None:
            importlib.import_module(f"{__package__}.{package}")
    if kind not in STUDY_KINDS:
        raise SpecError("kind", f"unknown value {kind!r}; expected one of {sorted(set(STUDY_KINDS) | set(kind_packages()))}")
    return STUDY_KINDS[kind]


def load_spec(
    path_or_name: str | Path | Mapping[str, Any],
    profile: str = "quick",
    *,
    overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Read, merge and validate a study spec; nothing is trained.

    Args:
        path_or_name: a study name (``studies/NAME.toml``), a path to a TOML file, or an already parsed
            spec (dict, e.g. in tests).
        profile: name of a ``[profiles.*]`` table merged over the base fields.
        overrides: nested dict merged after the profile (e.g. ``{"train": {"epochs": 1}}``).
        seeds: replaces the spec's ``seeds``.

    Returns:
        the normalized spec (a dict), with ``profile`` set.

    Raises:
        SpecError (a ValueError): malformed spec; the message starts with the field path.
        FileNotFoundError: no such study or file.
    """
    raw = dict(path_or_name) if isinstance(path_or_name, Mapping) else read_spec_file(find_spec_file(path_or_name))
    spec = apply_profile(raw, profile)
    if overrides:
        spec = deep_merge(spec, overrides)
    if seeds is not None:
        spec["seeds"] = list(seeds)
    fields = Fields(spec, "")
    out: dict[str, Any] = {
        "name": fields.str("name"),
        "kind": fields.str("kind"),
        "description": fields.str("description", ""),
        "profile": fields.str("profile"),
    }
    seeds_ = fields.list("seeds", item=int, nonempty=True)
    for i, s in enumerate(seeds_):
        if s < 0:
            raise SpecError(f"seeds[{i}]", f"seeds must be >= 0, got {s}")
    if len(set(seeds_)) != len(seeds_):
        raise SpecError("seeds", f"duplicate seeds in {seeds_}")
    out["seeds"] = seeds_
    out["threads"] = fields.int("threads", None, minimum=1)
    out["workers"] = fields.int("workers", 1, minimum=1)
    if not out["name"].replace("_", "").replace("-", "").isalnum():
        raise SpecError("name", f"must be letters, digits, '-' or '_' (it names folders), got {out['name']!r}")
    fields.raw("tune", None)  # the validation grid of `geomlat study NAME --tune` (geomlat.studies.tuning)
    check_train_tables(spec)  # before the study kind imports torch: a typo answers at once
    out.update(load_study_kind(out["kind"]).validate(spec, fields))
    fields.finish()
    _check_devices(out)
    return out


def check_device(value: str, path: str = "device") -> None:
    """Raise :class:`SpecError` at ``path`` unless ``value`` names a device this machine has: ``"auto"``,
    ``"cpu"``, ``"cuda"``/``"cuda:N"`` with CUDA (and GPU N) available, ``"mps"`` with MPS available."""
    import torch

    if value == "auto":
        return
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise SpecError(path, f"unknown device {value!r}; expected \"cpu\", \"cuda\", \"cuda:N\", \"mps\" or \"auto\"") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(path, f"device {value!r} requested but CUDA is not available on this machine; use \"cpu\" or \"auto\"")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecError(path, f"device {value!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise SpecError(path, f"device {value!r} requested but MPS is not available on this machine; use \"cpu\" or \"auto\"")
    elif device.type != "cpu":
        raise SpecError(path, f"device {value!r} is not supported; expected \"cpu\", \"cuda\", \"cuda:N\", \"mps\" or \"auto\"")


def _check_devices(table: Mapping[str, Any], path: str = "") -> None:
    """:func:`check_device` on every string field named ``device`` of the (normalized) spec, at any depth."""
    for key, value in table.items():
        sub = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping):
            _check_devices(value, sub)
        elif key == "device" and isinstance(value, str):
            check_device(value, sub)


def check_data(spec: Mapping[str, Any], data_dir: str | None) -> None:
    """Read and check the data files the spec needs (CIFAR-10 batches) before anything is written.

    Raises:
        FileNotFoundError: missing folder or file. InputError: a truncated, garbage or refused batch file.
    """
    data = spec.get("data")
    if not (isinstance(data, Mapping) and data.get("name") == "cifar10"):
        return  # the other data sets are generated or shipped, nothing to check
    from ..data.cifar import check_cifar10

    try:
        check_cifar10(data_dir)
    except ValueError as err:
        raise InputError(str(err)) from err


def _spec_name(path_or_name: str | Path | Mapping[str, Any], profile: str, overrides: Mapping[str, Any] | None) -> str | None:
    """The ``name`` of a spec after its profile and overrides, read without validation (None when it has none
    usable: :func:`load_spec` reports that)."""
    raw = dict(path_or_name) if isinstance(path_or_name, Mapping) else read_spec_file(find_spec_file(path_or_name))
    try:
        spec = apply_profile(raw, profile)
    except SpecError:
        return None
    name = deep_merge(spec, overrides or {}).get("name")
    return name if isinstance(name, str) and name.replace("_", "").replace("-", "").isalnum() else None


def _check_study_folder_free(path_or_name, profile: str, overrides: Mapping[str, Any] | None, out_root: Path) -> None:
    """FolderInUseError, before anything heavy is imported, when another process runs this study into
    ``out_root`` (rank 0 only: it holds the lock for every rank). The lock itself is taken later."""
    from ..locks import check_folder_free

    name = _spec_name(path_or_name, profile, overrides)
    if name is not None and int(os.environ.get("RANK", "0")) == 0:
        check_folder_free(out_root / "runs" / name, what=f"study {name!r} in {out_root}")


def run_study(
    name: str | Path,
    profile: str = "quick",
    data_dir: str | None = None,
    out_root: str | Path = ".",
    *,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Validate the spec, then run the study: ``runs/NAME/PROFILE/``, ``results/NAME/``, ``figures/NAME/``
    under ``out_root``. Finished runs are skipped, interrupted ones resume. Returns the kind's summary
    (paths of the tables and figures, rows of the table, wall-clock seconds).

    Nothing is written before the spec, its devices and its data files are checked. While it runs, the study
    holds a lock on ``out_root/runs/NAME/.lock`` (released by the OS if the process dies).

    Raises:
        SpecError: malformed spec or unavailable device. FileNotFoundError: no such study, data folder or
        file. InputError: a malformed data file. FolderInUseError: another process runs this study into
        ``out_root``. CheckpointError: a refused checkpoint (an unreadable one is retrained instead).
    """
    # a folder in use is refused before the heavy imports of the validation (torch, the study kind)
    _check_study_folder_free(name, profile, overrides, Path(out_root))
    # everything is checked (spec, devices, data files) before the first file is written
    spec = load_spec(name, profile, overrides=overrides, seeds=seeds)
    check_data(spec, data_dir)
    from ..distributed import barrier, get_rank, get_world_size, is_main_process, main_process_writes
    from ..io import folder_lock, write_json

    out_root = Path(out_root)
    world, main = get_world_size(), is_main_process()
    if not main:
        log = _quiet
    if world > 1 and spec["workers"] > 1:
        log(f"[{spec['name']}/{spec['profile']}] {world} processes: each run is data parallel; workers = {spec['workers']} ignored")
    ctx = StudyContext(
        name=spec["name"],
        profile=spec["profile"],
        runs_dir=out_root / "runs" / spec["name"] / spec["profile"],
        results_dir=out_root / "results" / spec["name"],
        figures_dir=out_root / "figures" / spec["name"],
        data_dir=data_dir,
        progress=progress and main,
        log=log,
        workers=1 if world > 1 else spec["workers"],
        threads=spec["threads"],
        rank=get_rank(),
        world_size=world,
    )
    start = time.perf_counter()
    # one run of a study per output folder at a time (rank 0 holds the lock for every rank); a second one
    # stops here with FolderInUseError naming the folder and the PID of the holder
    lock = folder_lock(out_root / "runs" / spec["name"], what=f"study {spec['name']!r} in {out_root}") if main else contextlib.nullcontext()
    with lock, torch_threads(spec["threads"]), main_process_writes():
        write_json(ctx.runs_dir / "spec.json", spec)
        summary = STUDY_KINDS[spec["kind"]].run(spec, ctx)
        from .machine import write_machine_info  # imports torch: not at module level (specs are read without it)

        write_machine_info(ctx.results_dir)  # the CPU, threads, BLAS and versions behind every results folder
    barrier()  # every rank returns once rank 0 has written the tables and figures
    summary["seconds"] = time.perf_counter() - start
    log(f"[{ctx.name}/{ctx.profile}] done in {summary['seconds']:.0f} s; tables in {ctx.results_dir}, figures in {ctx.figures_dir}")
    return summary
