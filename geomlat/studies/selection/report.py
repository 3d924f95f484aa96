"""Statistics and tables of the ``selection`` study, from the run records of :mod:`.run`.

Every measure is *oriented* a priori (fixed before any run, never from the results): ``value = sign * raw`` with
sign -1 for the measures where a larger raw value is expected to mean better generalization (output margin,
stability between seeds), +1 otherwise. A positive tau then means the measure ranks the models the expected way;
selection and early stopping pick the model / snapshot with the smallest oriented value.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...analysis import bootstrap_ci, channelwise_early_stopping, early_stopping_regret, granulated_kendall, kendall_tau, selection_regret
from ..tables import Column, csv_text, write_table
from ...io import atomic_write_text

#: (key in the records, label, sign, family); the oriented measure is sign * record[key]
MEASURES = [
    ("train_error", "training error", 1, "baseline"),
    ("train_loss", "training loss", 1, "baseline"),
    ("margin", "output margin (10th pct)", -1, "baseline"),
    ("param_norm", "parameter norm", 1, "baseline"),
    ("sharpness", "sharpness proxy", 1, "baseline"),
    ("nnk_loo_first", "NNK LOO, first stage", 1, "geometry"),
    ("nnk_loo_last", "NNK LOO, last stage", 1, "geometry"),
    ("nnk_loo_pool", "NNK LOO, pooled", 1, "geometry"),
    ("channel_nnk", "channel-wise NNK, last stage", 1, "geometry"),
    ("label_variation_first", "label variation, first stage", 1, "geometry"),
    ("label_variation_last", "label variation, last stage", 1, "geometry"),
    ("label_variation_pool", "label variation, pooled", 1, "geometry"),
    ("nnk_neighbors", "MGM: NNK neighbors (pooled)", 1, "geometry"),
    ("diameter", "MGM: polytope diameter (pooled)", 1, "geometry"),
    ("stability", "stability between seeds (pooled)", -1, "geometry"),
    ("val_error", "validation error (held-out data)", 1, "reference"),
]
GRAN_AXES = ("width", "depth", "weight_decay", "label_noise", "train_size", "seed")


def oriented(records: list[dict], key: str, sign: int, snapshot: int = -1) -> np.ndarray:
    """(M,) oriented values of measure ``key`` at snapshot index ``snapshot`` of every model."""
    return sign * np.array([r["snapshots"][snapshot][key] for r in records], dtype=float)


def targets(records: list[dict], snapshot: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(test error, gap)`` (M,), gap = test error - training error (on the model's own, possibly noisy, training set)."""
    test = np.array([r["snapshots"][snapshot]["test_error"] for r in records])
    return test, test - np.array([r["snapshots"][snapshot]["train_error"] for r in records])


def axis_values(records: list[dict]) -> dict[str, list]:
    return {a: [r[a] if r[a] is not None else -1 for r in records] for a in GRAN_AXES}


def group_taus(measure: np.ndarray, target: np.ndarray, axes: dict[str, list], axis: str) -> list[float]:
    """Kendall tau of every group of models that differ only along ``axis`` (as :func:`granulated_kendall`)."""
    buckets: dict[tuple, list[int]] = {}
    for i in range(len(measure)):
        buckets.setdefault(tuple(axes[o][i] for o in axes if o != axis), []).append(i)
    return [kendall_tau(measure[idx], target[idx]) for idx in buckets.values() if len(idx) >= 2 and len({axes[axis][i] for i in idx}) >= 2]


def _ci(stat, *arrays, n_boot: int) -> tuple[float, float]:
    return bootstrap_ci(stat, *[torch.as_tensor(a, dtype=torch.float64) for a in arrays], n_boot=n_boot, seed=0)


def _mean(x) -> float:
    return float(torch.as_tensor(x).mean())


def es_regret(record: dict, key: str, sign: int, patience: int) -> float:
    """Early-stopping regret of one model: test error at the snapshot kept by the patience rule on the measure's curve
    (``channel_nnk``: the channel-wise rule on the per-channel errors) minus the best test error over its snapshots."""
    test = torch.tensor([s["test_error"] for s in record["snapshots"]], dtype=torch.float64)
    if key == "channel_nnk":
        history = torch.tensor([s["channel_errors"] for s in record["snapshots"]], dtype=torch.float64)
        return float(test[channelwise_early_stopping(history, patience)["selected"]] - test.min())
    curve = torch.tensor([sign * s[key] for s in record["snapshots"]], dtype=torch.float64)
    return early_stopping_regret(curve, test, patience)["regret"]


def statistics(records: list[dict], patience: int, n_boot: int) -> list[dict]:
    """One row per measure: tau with test error and gap (final snapshot) with CIs, granulated tau per axis with CIs
    (resampling the groups), Psi, selection regret with CI, mean early-stopping regret with CI."""
    test, gap = targets(records)
    axes = axis_values(records)
    train = oriented(records, "train_error", 1)
    rows = []
    for key, label, sign, family in MEASURES:
        m = oriented(records, key, sign)
        row = {"measure": label, "key": key, "family": family, "sign": sign,
               "tau_test": kendall_tau(m, test), "tau_gap": kendall_tau(m, gap)}
        row["tau_test_lo"], row["tau_test_hi"] = _ci(kendall_tau, m, test, n_boot=n_boot)
        row["tau_gap_lo"], row["tau_gap_hi"] = _ci(kendall_tau, m, gap, n_boot=n_boot)
        row["tau_vs_train"] = row["tau_test"] - kendall_tau(train, test)  # paired bootstrap: same resampled models
        row["tau_vs_train_lo"], row["tau_vs_train_hi"] = _ci(lambda a, t, b: kendall_tau(a, b) - kendall_tau(t, b), m, train, test,
                                                             n_boot=n_boot)
        gran = granulated_kendall(m, test, axes)
        row["psi"] = gran["psi"]
        for axis in GRAN_AXES:
            taus = group_taus(m, test, axes, axis)
            row[f"gk_{axis}"], row[f"groups_{axis}"] = gran["per_axis"][axis], gran["groups"][axis]
            row[f"gk_{axis}_lo"], row[f"gk_{axis}_hi"] = _ci(_mean, taus, n_boot=n_boot) if taus else (math.nan, math.nan)
        row["sel_regret"] = selection_regret(m, test)
        row["sel_regret_lo"], row["sel_regret_hi"] = _ci(lambda a, b: selection_regret(a, b), m, test, n_boot=n_boot)
        es = np.array([es_regret(r, key, sign, patience) for r in records])
        row["es_regret"] = float(es.mean())
        row["es_regret_lo"], row["es_regret_hi"] = _ci(_mean, es, n_boot=n_boot)
        rows.append(row)
    last = np.array([s["snapshots"][-1]["test_error"] - min(x["test_error"] for x in s["snapshots"]) for s in records])
    rows.append({"measure": "no early stopping (last snapshot)", "key": "last", "family": "reference", "es_regret": float(last.mean()),
                 **dict(zip(("es_regret_lo", "es_regret_hi"), _ci(_mean, last, n_boot=n_boot)))})
    return rows


def _ci_text(row: dict, key: str, scale: float = 1.0, fmt: str = "+.2f") -> str:
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if v is None or not math.isfinite(v):
        return "–"
    return f"{format(v * scale, fmt)} [{format(lo * scale, fmt)}, {format(hi * scale, fmt)}]" if lo is not None and math.isfinite(lo) else format(v * scale, fmt)


def write_tables(records: list[dict], rows: list[dict], results_dir: Path, spec: dict) -> list[Path]:
    """``kendall``, ``granulated``, ``regret`` (Markdown + CSV) and ``models.csv`` (every model and snapshot)."""
    m, an = len(records), spec["analysis"]
    geo = [r for r in rows if r["family"] == "geometry"]
    train = next(r for r in rows if r["key"] == "train_error")
    verdict = []
    for key, name in (("tau_test", "tau with the test error"), ("psi", "granulated Psi")):
        best = max(geo, key=lambda r: r[key])
        verdict.append(f"{name}: the training error ({train[key]:+.2f}) "
                       + ("beats every geometric measure" if train[key] > best[key] else "is matched or beaten by a geometric measure")
                       + f" (best geometric: {best['measure']}, {best[key]:+.2f})")
    best = max(geo, key=lambda r: r["tau_test"])
    verdict = (f"Over these {m} models, " + "; ".join(verdict) + f". Difference of tau, {best['measure']} minus training error: "
               f"{best['tau_vs_train']:+.2f} [{best['tau_vs_train_lo']:+.2f}, {best['tau_vs_train_hi']:+.2f}]"
               + (" (the interval contains 0: no measurable difference)." if best["tau_vs_train_lo"] <= 0 <= best["tau_vs_train_hi"] else "."))
    common = (f"{m} models (the population of studies/selection.toml), final snapshot (epoch {an['snapshots'][-1]}). Measures on "
              f"training data only ({an['samples']} class-balanced training samples with the labels the model was trained on; "
              "training error, loss and margin on the whole training set), oriented a priori so that larger = predicts larger "
              "error (margin and stability negated). Brackets: 95% percentile bootstrap over models "
              f"({an['n_boot']} resamples). The validation error uses {spec['data']['options']['val_size']} held-out samples "
              "(extra data the other measures do not see): a reference, not a candidate. The stability is one value per "
              "configuration (shared by its seeds), so its tau on the seed axis is 0 by construction.")
    for r in rows:
        for k in ("tau_test", "tau_gap", "tau_vs_train", "sel_regret", "es_regret", *[f"gk_{a}" for a in GRAN_AXES]):
            r[f"{k}_text"] = _ci_text(r, k, 100, ".1f") if "regret" in k else _ci_text(r, k)
    cand = [r for r in rows if r["key"] != "last"]
    out = []
    cols = [Column("measure", "measure"), Column("family", "family"), Column("tau_test_text", "tau with test error [95% CI]"),
            Column("tau_vs_train_text", "tau minus the training error's tau [95% CI]"),
            Column("tau_gap_text", "tau with gap [95% CI]"), Column("psi", "Psi (granulated, mean over axes)", "+.2f")]
    keys = ["measure", "key", "family", "sign", "tau_test", "tau_test_lo", "tau_test_hi", "tau_vs_train", "tau_vs_train_lo",
            "tau_vs_train_hi", "tau_gap", "tau_gap_lo", "tau_gap_hi", "psi"]
    for name, c, k, title, note in (
        ("kendall", cols, keys, "Kendall's tau of each measure with the test error and the generalization gap",
         "Gap = test error - training error. tau as Jiang et al. (2020, Eq. 3), tied pairs count 0. 'tau minus the training "
         "error's tau': paired bootstrap (the same resampled models for both); an interval containing 0 means this population "
         "cannot tell the measure from the training error."),
        ("granulated", [Column("measure", "measure"), *[Column(f"gk_{a}_text", f"{a} [CI]") for a in GRAN_AXES]],
         ["measure", "key", *[f"{p}_{a}{s}" for a in GRAN_AXES for p, s in (("gk", ""), ("gk", "_lo"), ("gk", "_hi"), ("groups", ""))]],
         "Granulated Kendall coefficient per hyperparameter axis (tau with the test error)",
         "Per axis: mean tau over the groups of models that differ only along that axis (Jiang et al. 2020, Eq. 4); CI: "
         "bootstrap over those groups. Groups per axis: " + ", ".join(f"{a} {cand[0][f'groups_{a}']}" for a in GRAN_AXES) + "."),
        ("regret", [Column("measure", "measure"), Column("sel_regret_text", "model-selection regret, pp [CI]"),
                    Column("es_regret_text", "early-stopping regret, pp, mean over models [CI]")],
         ["measure", "key", "sel_regret", "sel_regret_lo", "sel_regret_hi", "es_regret", "es_regret_lo", "es_regret_hi"],
         "Regret: test error lost by trusting each measure",
         f"Model selection: test error of the model with the smallest oriented measure minus the best test error of the "
         f"population (percentage points). Early stopping: per model, patience rule (patience {an['patience']}) on the measure "
         f"at the snapshots {an['snapshots']}, test error of the snapshot kept minus the best over the snapshots; the channel-wise "
         "row replays the channel-wise rule (each channel of the last stage its own patience, the model of the last improvement "
         "of any channel is kept).")):
        md, csv = results_dir / f"{name}.md", results_dir / f"{name}.csv"
        write_table(rows if name == "regret" else cand, c, md, csv, title=f"{spec['name']}: {title}",
                    notes=f"{note}\n\n{common}\n\n**{verdict}**", csv_keys=k)
        out += [md, csv]
    flat = [{k: v for k, v in r.items() if k not in ("snapshots",)} | {f"{k}": v for k, v in s.items() if k != "channel_errors"}
            for r in records for s in r["snapshots"]]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    atomic_write_text(results_dir / "models.csv", csv_text(flat, keys))
    return out + [results_dir / "models.csv"]
