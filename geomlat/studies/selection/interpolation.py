"""The interpolating regime of the ``selection`` study (issue 21): every model trained until it fits its training set.

A spec with an ``interpolation`` table (profile ``interpolation`` of ``studies/selection.toml``) runs this mode:
a complete grid over ``interpolation.axes`` (width, depth, label_noise, train_size) times ``seeds``, each model
trained with Adam until its training cross-entropy is <= ``loss_threshold`` or its training accuracy is 100%
(Jiang et al. 2020's stopping rule; evaluated after every epoch, eval mode, the model's own possibly noisy
labels), at most ``max_epochs`` epochs. A model that does not reach the rule is listed with the reason in
``not_interpolated.md`` and left out of the statistics (never silently). The other tables of the base spec
(``train``, ``population``, ``analysis``) are not used in this mode.

Every registered measure named in ``measures`` (:func:`geomlat.analysis.measures.compute_measures`) is computed on
the first ``samples`` training samples of each model (nested training sets: the same samples, with the labels
the model was trained with), and :mod:`.interp_report` ranks them against the test error.
"""
from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...analysis.measures import MEASURES, compute_measures
from ...io import read_json, to_jsonable, write_json
from ...models import build_model, count_parameters
from ..common import blas_threads, data_fields
from ..processes import run_in_processes
from ..spec import Fields, SpecError
from .run import model_data

AXES = ("width", "depth", "label_noise", "train_size")
#: which layers of a staged model (``stage_names``, ``feature_name``) each measure reads; others: the features
LAYER_ROLES = {"channel_nnk_deepnnk": ("last",), "pgdl_smoothness_rate": ("last", "pool", "logits"),
               "pgdl_smoothness_max": ("last", "pool"), "pgdl_dbi_mixup": ("first",)}


def validate(spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
    """The ``interpolation`` table (module docstring); the base ``train``/``population``/``analysis`` are ignored."""
    for key in ("train", "population", "analysis"):
        fields.raw(key, None)
    data = data_fields(fields)
    if not data["options"].get("val_size"):
        raise SpecError("data.options.val_size", "required: the validation reference of early stopping")
    model = fields.str("model")
    f = fields.fields("interpolation")
    out = {"lr": f.number("lr", 3e-3, minimum=0.0), "batch_size": f.int("batch_size", 50, minimum=1),
           "max_epochs": f.int("max_epochs", 300, minimum=1), "loss_threshold": f.number("loss_threshold", 0.01, minimum=0.0),
           "samples": f.int("samples", 500, minimum=20), "snapshot_every": f.int("snapshot_every", 10, minimum=1),
           "patience": f.int("patience", 2, minimum=1), "n_boot": f.int("n_boot", 500, minimum=10),
           "cmi_boot": f.int("cmi_boot", 200, minimum=10),
           "measures": f.list("measures", item=str, nonempty=True), "early_stopping": f.list("early_stopping", [], item=str)}
    axes = f.table_("axes")
    measure_options = f.table_("measure_options", {})
    f.finish()
    for name, opts in measure_options.items():
        if name not in out["measures"] + out["early_stopping"] or not isinstance(opts, dict):
            raise SpecError(f"interpolation.measure_options.{name}",
                            f"expected a table of options of a measure in `measures`, got {opts!r}")
    out["measure_options"] = measure_options
    for name in out["measures"] + out["early_stopping"]:
        if name not in MEASURES:
            raise SpecError("interpolation.measures", f"unknown measure {name!r}; registered: {sorted(MEASURES)}")
    if set(axes) != set(AXES) or any(not isinstance(v, list) or len(v) < 2 for v in axes.values()):
        raise SpecError("interpolation.axes", f"give >= 2 values for each of {list(AXES)}, got {axes}")
    if min(axes["train_size"]) < out["samples"]:
        raise SpecError("interpolation.axes.train_size", f"every train_size must be >= samples={out['samples']}")
    out["axes"] = {a: axes[a] for a in AXES}
    return {"data": data, "model": model, "interpolation": out}


def configs(axes: dict[str, list]) -> list[dict]:
    """The complete grid of ``axes`` (every combination), in a fixed order."""
    return [{**dict(zip(AXES, v)), "weight_decay": 0.0} for v in itertools.product(*(axes[a] for a in AXES))]


def run_name(config: dict, seed: int) -> str:
    return f"w{config['width']}_d{config['depth']}_ln{config['label_noise']:g}_n{config['train_size']}_s{seed}"


@torch.no_grad()
def _fit(model, x, y) -> tuple[float, float]:
    """(training cross-entropy, training accuracy) in eval mode."""
    model.eval()
    logits = torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


@torch.no_grad()
def _error(model, x, y) -> float:
    model.eval()
    return float((model(x).argmax(1) != y).double().mean())


def train_to_interpolation(model, x, y, it: dict, seed: int, val=None, test=None) -> dict:
    """Adam (``lr``) on minibatches of ``batch_size`` until ``CE <= loss_threshold`` or accuracy 1, at most
    ``max_epochs``. Returns ``{"epochs", "reached", "reason", "train_loss", "train_acc", "snapshots"}``, the
    snapshots (every ``snapshot_every`` epochs and the last) as ``(epoch, state_dict copy, val error, test error)``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=it["lr"])
    snaps = []
    for epoch in range(1, it["max_epochs"] + 1):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), it["batch_size"]):
            b = perm[i : i + it["batch_size"]]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        ce, acc = _fit(model, x, y)
        done = ce <= it["loss_threshold"] or acc == 1.0
        if epoch % it["snapshot_every"] == 0 or done or epoch == it["max_epochs"]:
            errs = [_error(model, *s) if s is not None else None for s in (val, test)]
            snaps.append((epoch, copy.deepcopy(model.state_dict()), *errs))
        if done:
            break
    reason = None if done else f"after the cap of {it['max_epochs']} epochs: training CE {ce:.4f} > {it['loss_threshold']} and accuracy {acc:.4f} < 1"
    return {"epochs": epoch, "reached": done, "reason": reason, "train_loss": ce, "train_acc": acc, "snapshots": snaps}


def measure_layers(model, name: str) -> list[str]:
    roles = {"first": model.stage_names[0], "last": model.stage_names[-1], "pool": model.feature_name, "logits": "logits"}
    return [roles[r] for r in LAYER_ROLES.get(name, ("pool",))]


def measures_of(model, xs, ys, names: list[str], seed: int, options: dict | None = None) -> dict[str, float]:
    """``{name: raw value}`` of the registered measures on the training samples ``xs`` (N, ...), ``ys`` (N,);
    ``options``: ``{name: {option: value}}`` of the spec's ``measure_options``."""
    out = {}
    for name in names:
        out.update(compute_measures(model, xs, ys, [name], layers=measure_layers(model, name), seed=seed,
                                    options={name: (options or {}).get(name, {})}))
    return out


def run_model(spec: dict, config: dict, seed: int, runs_dir: str) -> dict:
    """Train one model to the stopping rule and measure it (resumable: a finished record is read back)."""
    path = Path(runs_dir) / f"{run_name(config, seed)}.json"
    made_by = to_jsonable({"data": spec["data"], "model": spec["model"], "interpolation": spec["interpolation"]})
    if path.exists():
        rec = read_json(path)
        if "made_by" in rec and rec["made_by"] != made_by:  # never a stale record (records without it: accepted)
            field = next(k for k in made_by if rec["made_by"].get(k) != made_by[k])
            raise ValueError(f"{path} was made with another spec ({field} differs); delete {path.parent} to start afresh")
        return rec
    it, t0 = spec["interpolation"], time.perf_counter()
    splits, idx = model_data(spec["data"], config, it["samples"])
    x, y = splits.train.tensors
    torch.manual_seed(seed)
    model = build_model(spec["model"], num_classes=splits.num_classes, width=config["width"], depth=config["depth"])
    with blas_threads(spec.get("threads")):
        fit = train_to_interpolation(model, x, y, it, seed, val=splits.val.tensors, test=splits.test.tensors)
        xs, ys = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
        rec = {"run": path.stem, "seed": seed, **config, "params": count_parameters(model),
               **{k: fit[k] for k in ("epochs", "reached", "reason", "train_loss", "train_acc")},
               "test_error": fit["snapshots"][-1][3], "val_error": fit["snapshots"][-1][2],
               "measures": measures_of(model, xs, ys, it["measures"], seed, it["measure_options"])}
        curve = []
        for epoch, state, val_err, test_err in fit["snapshots"]:
            model.load_state_dict(state)
            curve.append({"epoch": epoch, "val_error": val_err, "test_error": test_err,
                          **measures_of(model, xs, ys, it["early_stopping"], seed, it["measure_options"])})
        rec["curve"] = curve
    rec["seconds"] = time.perf_counter() - t0
    rec["made_by"] = made_by
    write_json(path, rec)
    return rec


def run(spec: dict[str, Any], ctx) -> dict[str, Any]:
    from ..machine import write_machine_info
    from . import interp_report

    it = spec["interpolation"]
    jobs = [(spec, c, s, str(ctx.runs_dir)) for c in configs(it["axes"]) for s in spec["seeds"]]
    ctx.log(f"[{ctx.name}] {len(jobs)} models trained to training CE <= {it['loss_threshold']} or accuracy 100% (cap {it['max_epochs']} epochs)")
    records = {}
    for _, rec in run_in_processes(run_model, jobs, ctx.workers, ctx.threads):
        records[rec["run"]] = rec
        ctx.log(f"  {rec['run']}: {rec['epochs']} epochs, reached={rec['reached']}, test error {100 * rec['test_error']:.1f}% "
                f"({rec['seconds']:.0f} s; {len(records)}/{len(jobs)})")
    ordered = [records[run_name(c, s)] for c in configs(it["axes"]) for s in spec["seeds"]]
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    write_machine_info(ctx.results_dir)
    paths = interp_report.write_all(ordered, spec, ctx.results_dir, ctx.figures_dir)
    return {"records": ordered, "paths": [str(p) for p in paths]}
