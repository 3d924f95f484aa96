"""The GPU path in one prepared script: ``make gpu-check`` (``python -m benchmarks.gpu_check``).

On a synthetic CIFAR-10-format folder it writes itself (uniform pixels: speed and plumbing only, no
accuracy), for each study of the LGG paper (``gkd``, ``embed``, ``robust``) with its ``paper`` profile
(models, batch size, terms and weights of ``studies/NAME.toml``) and ``precision = "bf16-mixed"``:

1. **Throughput.** Every method's training step, exactly as the engine runs it
   (:func:`geomlat.engine.step.train_step`, plus the Parseval retraction of the robust methods that use
   it), for ``--steps`` timed steps after a warm-up, on pre-augmented batches already on the device:
   images/s per method, and the step-time ratios GKD / baseline student and regularizer / baseline.
   The GKD teacher is a randomly initialized network of the profile (its values do not change the cost).
2. **No host synchronization.** On CUDA the timed steps run under
   ``torch.cuda.set_sync_debug_mode("error")``: any operation that waits for the GPU (``.item()``,
   ``bool(tensor)``, a device-to-host copy, ``nonzero``) raises; the first such error of a method is
   recorded (with the frame that caused it) and the method is timed again without the check. On a CPU
   (nothing to synchronize with) one extra step runs under :class:`HostReadCounter` instead, which lists
   the operators that read tensor values on the host (``.item()``, ``bool``, ``nonzero``) with the
   geomlat line that called them: the synchronizations the same step would make on CUDA.
3. **Every loss and analysis on the device.** Each study then runs end to end (``run_study``: training
   for a few batches, then all of its analyses and evaluations: layer-wise label variation, consistency,
   attacks, corruptions, classifiers on embeddings, tables) with the device of the check, under a
   dispatch mode that counts the tensor operations on each device; the compute operations (layers,
   products, reductions, sorts: :data:`COMPUTE_OPS`) on CPU tensors of at least 65,536 elements are
   listed by operator (on CUDA, each is a loss or analysis left on the CPU; data loading and augmentation
   only index, copy and do elementwise arithmetic there).

Output: ``benchmarks/gpu_check.json`` and ``benchmarks/gpu_check.md`` (``--out`` to change). On CUDA
the sizes are the paper's (batch 128, full models, 300 steps; under 10 minutes on one GPU); on a CPU,
``--tiny`` (the default there) shrinks models, batches and steps so that it runs in a minute as a smoke
test (``tests/test_gpu_check.py``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from geomlat.checks import deferred_value_checks
from geomlat.data import load_dataset, write_cifar_folder
from geomlat.engine.devices import resolve_device
from geomlat.engine.precision import make_grad_scaler
from geomlat.engine.step import train_step
from geomlat.studies.runner import load_spec, load_study_kind, run_study

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ("gkd", "embed", "robust")
PRECISION = "bf16-mixed"
#: CPU tensors at least this large count as heavy work left on the CPU (analysis check)
CPU_HEAVY_NUMEL = 65536
#: the compute operators watched on the CPU (network layers, products, reductions, spectra, neighbors);
#: indexing, copies and elementwise arithmetic are the data pipeline's (loading, augmentation)
COMPUTE_OPS = {"mm", "bmm", "addmm", "baddbmm", "matmul", "mv", "addmv", "convolution", "convolution_backward",
               "native_batch_norm", "native_batch_norm_backward", "relu", "threshold_backward", "_softmax",
               "_log_softmax", "topk", "sort", "_cdist_forward", "linalg_vector_norm", "norm", "aminmax", "sum",
               "mean", "_linalg_eigh", "linalg_eigh", "_linalg_svd", "linalg_svd", "_linalg_solve_ex", "linalg_cholesky_ex"}

# sizes: (train images per CIFAR batch file, test images, timed steps, warm-up steps)
FULL = {"per_file": 2000, "test": 1000, "steps": 300, "warmup": 20, "pool": 8}
TINY = {"per_file": 20, "test": 40, "steps": 2, "warmup": 1, "pool": 2}


def _tiny_overrides(study: str) -> dict[str, Any]:
    """Spec overrides of ``--tiny``: narrow models and batch 8 (CPU smoke test)."""
    train = {"batch_size": 8}
    if study == "gkd":
        return {"train": train, "teacher": {"kwargs": {"depth": 10, "width": 0.25}},
                "student": {"kwargs": {"depth": 10, "width": 0.25}}}
    out = {"train": train, "model": {"kwargs": {"width": 4}}}
    if study == "robust":
        out["methods"] = {"pgd": {"kwargs": {"steps": 1}}}
    return out


def _end_to_end_overrides(study: str, tiny: bool) -> dict[str, Any]:
    """Overrides for the end-to-end run: one epoch of a few batches, small analysis sizes."""
    out: dict[str, Any] = {"train": {"epochs": 1, "limit_batches": 2}}
    if study == "gkd":
        out["analysis"] = {"samples": 40 if tiny else 500, "k": 3 if tiny else 10}
    elif study == "embed":
        out.update(corruptions={"names": ["fog", "gaussian_noise"], "severities": [1], "samples": 20 if tiny else 200},
                   figure={"epochs": [0, 1], "samples": 20 if tiny else 200}, knn_k=1 if tiny else 5)
    else:
        out.update(attacks={"samples": 8 if tiny else 200, "pgd_steps": 1 if tiny else 10, "fgsm_eps": [], "batch_size": 8 if tiny else 100},
                   corruptions={"names": ["brightness", "gaussian_noise"], "severities": [1], "samples": 20 if tiny else 200})
    return out


def _merge(a: dict, b: dict) -> dict:
    from geomlat.studies.spec import deep_merge

    return deep_merge(a, b)


def _objectives(spec: dict[str, Any], splits):
    """Yield ``(method, objective, after_step, batch_size)`` for every method of a validated spec, each built
    by its study kind's :meth:`~geomlat.studies.StudyKind.build_run` (seed 0; a distillation teacher is a
    randomly initialized network of the spec: its values do not change the cost)."""
    kind = load_study_kind(spec["kind"])
    for name in spec["methods"]:
        plan = kind.build_run(spec, name, 0, splits)
        yield name, plan.objective, plan.after_step, plan.config.batch_size


@contextlib.contextmanager
def _sync_debug(device: torch.device, enabled: bool):
    if device.type != "cuda" or not enabled:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _where(err: BaseException) -> str:
    """The innermost frame of geomlat code in the traceback of ``err`` (what synchronized)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "geomlat" in f.filename]
    f = frames[-1] if frames else traceback.extract_tb(err.__traceback__)[-1]
    return f"{Path(f.filename).name}:{f.lineno} `{(f.line or '').strip()}`"


#: operators that read a tensor's values on the host (``.item()``, ``bool(t)``, data-dependent shapes): each
#: one is a synchronization on CUDA
HOST_READ_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_consecutive",
                 "unique_dim", "repeat_interleave"}


class HostReadCounter(TorchDispatchMode):
    """Records the operators of :data:`HOST_READ_OPS` and the geomlat line that called each (first seen):
    on a CPU, the places where the same step would synchronize on CUDA."""

    def __init__(self):
        super().__init__()
        self.reads: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_READ_OPS:
            stack = [f for f in traceback.extract_stack() if "/torch/" not in f.filename and f.filename != __file__]
            frames = [f for f in stack if "geomlat" in f.filename] or stack  # the library's line, else the caller's
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} `{(frames[-1].line or '').strip()}`" if frames else "?"
            key = f"{name} at {where}"
            self.reads[key] = self.reads.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def time_method(objective, after, batches, device: torch.device, steps: int, warmup: int) -> dict[str, Any]:
    """Warm-up, then ``steps`` engine steps (sync-checked on CUDA); seconds per step, images/s, host sync.

    On a CPU the host-sync check is the prediction of :class:`HostReadCounter` over one extra step
    (``host_reads``): the reads that would synchronize on CUDA."""
    objective.to(device).train()
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4)
    scaler = make_grad_scaler(PRECISION, device)

    def run(n: int, offset: int = 0, verify: bool = True):
        # as the engine runs its steps: input value checks deferred, verified after the steps (the engine
        # verifies every FINITE_CHECK_EVERY steps)
        with deferred_value_checks(verify_on_exit=verify) as checks:
            for i in range(n):
                x, y = batches[(offset + i) % len(batches)]
                train_step(objective, x, y, opt, precision=PRECISION, scaler=scaler)
                if after is not None:
                    after(objective.model)
        return checks

    run(warmup)
    _sync(device)
    host_sync = None
    start = time.perf_counter()
    try:
        with _sync_debug(device, True):
            run(steps, warmup)
        _sync(device)
    except RuntimeError as err:
        if "synchroniz" not in str(err).lower():
            raise
        host_sync = f"{str(err).splitlines()[0]} at {_where(err)}"
        _sync(device)
        start = time.perf_counter()
        run(steps, warmup)
        _sync(device)
    seconds = (time.perf_counter() - start) / steps
    reads = None
    if device.type != "cuda":
        counter = HostReadCounter()
        with counter:  # one step, without the interval verification (one read per FINITE_CHECK_EVERY steps)
            checks = run(1, verify=False)
        checks.verify()
        reads = counter.reads
    return {"step_ms": seconds * 1e3, "images_per_s": len(batches[0][1]) / seconds, "host_sync": host_sync,
            "host_reads": reads}


class DeviceCounter(TorchDispatchMode):
    """Counts dispatched operations by the device of their first floating-point tensor argument; CPU
    operations of :data:`COMPUTE_OPS` on tensors of >= ``min_numel`` elements are also counted per operator."""

    def __init__(self, min_numel: int = CPU_HEAVY_NUMEL):
        super().__init__()
        self.min_numel = min_numel
        self.devices: Counter = Counter()
        self.cpu_heavy: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.devices[t.device.type] += 1
                name = func.overloadpacket.__name__
                if t.device.type == "cpu" and t.numel() >= self.min_numel and name in COMPUTE_OPS:
                    self.cpu_heavy[name] += 1
                break
        return func(*args, **kwargs)


def check_study(study: str, data_root: Path, device: torch.device, sizes: dict, tiny: bool, log,
                methods_filter: list[str] | None = None, end_to_end: bool = True) -> dict[str, Any]:
    """Throughput and sync check of every method (or of ``methods_filter``), then the end-to-end run under
    the device counter (unless ``end_to_end`` is False)."""
    base = {"train": {"precision": PRECISION, "device": str(device)}}
    if tiny:
        base = _merge(base, _tiny_overrides(study))
    spec = load_spec(study, "paper", overrides=base, seeds=[0])
    splits = load_dataset("cifar10", data_dir=str(data_root), seed=spec["data"]["seed"], **spec["data"]["options"])
    gen = torch.Generator().manual_seed(0)
    methods: dict[str, Any] = {}
    pools: dict[int, list] = {}
    for name, objective, after, batch in _objectives(spec, splits):
        if methods_filter and name not in methods_filter:
            continue
        if batch not in pools:  # pre-augmented batches on the device: the step alone is timed
            x_all, y_all = splits.train.tensors
            pools[batch] = []
            for _ in range(sizes["pool"]):
                idx = torch.randperm(len(y_all), generator=gen)[:batch]
                x = splits.augment(x_all[idx], gen) if splits.augment is not None else x_all[idx]
                pools[batch].append((x.to(device), y_all[idx].to(device)))
        methods[name] = {"batch": batch, **time_method(objective, after, pools[batch], device, sizes["steps"], sizes["warmup"])}
        methods[name]["params"] = sum(p.numel() for p in objective.model.parameters())
        log(f"[gpu-check] {study}/{name}: {methods[name]['step_ms']:.1f} ms/step, {methods[name]['images_per_s']:.0f} images/s"
            + (f"; HOST SYNC: {methods[name]['host_sync']}" if methods[name]["host_sync"] else ""))
        del objective
    ratios = {}
    for key, (num, den) in {"gkd": ("gkd", "baseline"), "robust": ("regularizer", "baseline")}.items():
        if study == key and num in methods and den in methods:
            ratios[f"{num}_vs_{den}"] = methods[num]["step_ms"] / methods[den]["step_ms"]
    if not end_to_end:
        return {"methods": methods, "ratios": ratios, "end_to_end": None}
    counter = DeviceCounter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        overrides = _merge(base, _end_to_end_overrides(study, tiny))
        error = None
        try:
            with counter:
                run_study(study, "paper", data_dir=str(data_root), out_root=out, seeds=[0], overrides=overrides,
                          progress=False, log=lambda s: None)
        except Exception as err:  # noqa: BLE001 - reported in the output, the other studies still run
            error = f"{type(err).__name__}: {err}"
    end_to_end = {"seconds": time.perf_counter() - start, "error": error, "ops_by_device": dict(counter.devices),
                  "cpu_heavy_ops": dict(counter.cpu_heavy.most_common(15))}
    log(f"[gpu-check] {study} end to end: {end_to_end['seconds']:.0f} s, ops by device {end_to_end['ops_by_device']}"
        + (f"; ERROR {error}" if error else ""))
    return {"methods": methods, "ratios": ratios, "end_to_end": end_to_end}


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# GPU check ({env['device']})", "",
             f"{env['device_name']}, torch {env['torch']}, precision {PRECISION}, {report['sizes']['steps']} timed steps "
             f"after {report['sizes']['warmup']} warm-up steps per method, synthetic CIFAR-10 folder "
             f"({5 * report['sizes']['per_file']} train / {report['sizes']['test']} test images); total {report['seconds']:.0f} s.",
             "", "| study | method | batch | ms / step | images / s | host sync in the step (CPU: host reads that would sync on CUDA) |", "|---|---|---|---|---|---|"]
    for study, r in report["studies"].items():
        for name, m in r["methods"].items():
            sync = (m["host_sync"] or "none") if m.get("host_reads") is None else \
                "predicted on CPU: " + ("; ".join(f"{k} ({v}x)" for k, v in m["host_reads"].items()) or "none")
            lines.append(f"| {study} | {name} | {m['batch']} | {m['step_ms']:.1f} | {m['images_per_s']:.0f} | {sync} |")
    lines += ["", "Step-time ratios: " + ", ".join(f"{k} {v:.2f}x" for r in report["studies"].values() for k, v in r["ratios"].items()), ""]
    lines += ["## Every loss and analysis on the device (end-to-end run of each study)", ""]
    for study, r in report["studies"].items():
        e = r["end_to_end"]
        if e is None:
            lines.append(f"- **{study}**: not run (--no-end-to-end)")
            continue
        lines.append(f"- **{study}**: {'ERROR ' + e['error'] if e['error'] else 'completed'} in {e['seconds']:.0f} s; "
                     f"tensor ops by device {e['ops_by_device']}; CPU compute ops on >= {CPU_HEAVY_NUMEL} elements: "
                     f"{e['cpu_heavy_ops'] or 'none'}")
    lines += ["", f"Verdict: {report['verdict']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda, cuda:1, cpu")
    parser.add_argument("--tiny", action=argparse.BooleanOptionalAction, default=None,
                        help="tiny models and steps (default: on for a CPU, off for CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per method (default 300; tiny: 2)")
    parser.add_argument("--studies", nargs="*", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (default: every method)")
    parser.add_argument("--end-to-end", action=argparse.BooleanOptionalAction, default=True,
                        help="run each study end to end under the device counter (default on)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="folder of gpu_check.json / .md")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    tiny = device.type == "cpu" if args.tiny is None else args.tiny
    sizes = dict(TINY if tiny else FULL)
    if args.steps is not None:
        sizes["steps"] = args.steps
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    report: dict[str, Any] = {
        "environment": {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
                        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"},
        "precision": PRECISION, "tiny": tiny, "sizes": sizes, "studies": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp)
        write_cifar_folder(data_root / "cifar-10-batches-py", n_train_per_batch=sizes["per_file"], n_test=sizes["test"])
        for study in args.studies:
            report["studies"][study] = check_study(study, data_root, device, sizes, tiny, log, args.methods, args.end_to_end)
    report["seconds"] = time.perf_counter() - start
    problems = [f"{s}/{m}: host sync" for s, r in report["studies"].items() for m, v in r["methods"].items() if v["host_sync"]]
    problems += [f"{s}/{m}: host reads (a sync on CUDA)" for s, r in report["studies"].items() for m, v in r["methods"].items()
                 if v["host_reads"]]
    ran = {s: r["end_to_end"] for s, r in report["studies"].items() if r["end_to_end"] is not None}
    problems += [f"{s}: end-to-end error" for s, e in ran.items() if e["error"]]
    if device.type == "cuda":
        problems += [f"{s}: CPU ops {sorted(e['cpu_heavy_ops'])}" for s, e in ran.items() if e["cpu_heavy_ops"]]
    report["verdict"] = "all checks passed" if not problems else "; ".join(problems)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu_check.json", json.dumps(report, indent=1) + "\n"), ("gpu_check.md", markdown(report))):
        tmp_path = args.out / f".{name}.tmp"
        tmp_path.write_text(text)
        os.replace(tmp_path, args.out / name)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
