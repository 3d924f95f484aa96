"""Statistics, tables and figures of the interpolating regime (:mod:`.interpolation`).

Each measure is oriented by its registered sign (``MEASURES[name].sign``, fixed before any run): a positive
Kendall tau means it ranks the models by test error the expected way. For every measure: tau with the test
error (percentile bootstrap CI over models), the granulated coefficient Psi over the axes and the seed, Jiang
et al.'s conditional mutual information score (|S| <= 2, bootstrap CI) and PGDL's, and the paired bootstrap
difference of its tau to the best baseline's (same resampled models). Early stopping: the patience rule on the
measure's curve over the snapshots against the same rule on the validation error.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...analysis import bootstrap_ci, conditional_mutual_information, early_stopping_regret, granulated_kendall, kendall_tau, pgdl_cmi
from ...analysis.measures import MEASURES
from ...io import atomic_write_text
from ..figures import PALETTE, new_figure, save_figure
from ..tables import Column, csv_text, markdown_table
from .interpolation import AXES

GEOMETRIC = {"nnk_loo", "nnk_loo_deepnnk", "channel_nnk_deepnnk", "pgdl_smoothness_rate", "pgdl_smoothness_max",
             "pgdl_smoothness_mixup", "pgdl_dbi_mixup", "davies_bouldin"}
MODERN = {"rankme", "alpha_req_distance", "nc1", "twonn"}


def family(name: str) -> str:
    return "geometric" if name in GEOMETRIC else "modern baseline" if name in MODERN else "classic baseline"


def _boot(stat, *arrays, n_boot):
    return bootstrap_ci(stat, *[torch.as_tensor(np.asarray(a, dtype=float)) for a in arrays], n_boot=n_boot, seed=0)


def _axes_arrays(records):
    return {a: np.array([r[a] for r in records], dtype=float) for a in (*AXES, "seed")}


def statistics(records: list[dict], it: dict) -> list[dict]:
    """One row per measure (see the module docstring); ``records``: the models that reached the stopping rule."""
    test = np.array([r["test_error"] for r in records])
    axes = _axes_arrays(records)
    cond_axes = {a: axes[a] for a in AXES}
    names = list(axes)

    def cmi(m, t, ids, *cols):  # a resampled model's pairs with its own copies are left out (they would count as
        return conditional_mutual_information(m, t, dict(zip(AXES, cols)), ids=ids)["score"]  # perfectly agreeing ties)

    oriented = {n: MEASURES[n].sign * np.array([r["measures"][n] for r in records]) for n in it["measures"]}
    rows = []
    for n, m in oriented.items():
        row = {"measure": n, "family": family(n), "tau": kendall_tau(m, test)}
        row["tau_lo"], row["tau_hi"] = _boot(kendall_tau, m, test, n_boot=it["n_boot"])
        gran = granulated_kendall(m, test, {a: axes[a].tolist() for a in names})
        row["psi"] = gran["psi"]
        row.update({f"gk_{a}": gran["per_axis"][a] for a in names})
        row["cmi"] = conditional_mutual_information(m, test, cond_axes)["score"]
        row["cmi_lo"], row["cmi_hi"] = _boot(cmi, m, test, np.arange(len(m)), *cond_axes.values(), n_boot=it["cmi_boot"])
        row["pgdl_cmi"] = pgdl_cmi(m, test, cond_axes)
        rows.append(row)
    base = [r for r in rows if r["family"] != "geometric" and not math.isnan(r["tau"])]
    best = max(base, key=lambda r: r["tau"])
    for row in rows:
        b = oriented[best["measure"]]
        row["vs_best"] = best["measure"]
        row["tau_minus_best"] = row["tau"] - best["tau"]
        row["tau_minus_best_lo"], row["tau_minus_best_hi"] = _boot(
            lambda a, bb, t: kendall_tau(a, t) - kendall_tau(bb, t), oriented[row["measure"]], b, test, n_boot=it["n_boot"])
    return sorted(rows, key=lambda r: -r["tau"] if not math.isnan(r["tau"]) else 2)


def early_stopping(records: list[dict], it: dict) -> list[dict]:
    """Per early-stopping measure: mean regret (test error at the kept snapshot - best over snapshots, in points)
    with a bootstrap CI over models, and the paired difference to stopping on the validation error."""
    from ...analysis import paired_difference

    def regrets(key, sign):
        out = []
        for r in records:
            test = torch.tensor([s["test_error"] for s in r["curve"]], dtype=torch.float64)
            curve = torch.tensor([sign * s[key] for s in r["curve"]], dtype=torch.float64)
            out.append(100 * early_stopping_regret(curve, test, it["patience"])["regret"])
        return np.array(out)

    val = regrets("val_error", 1)
    last = np.array([100 * (r["curve"][-1]["test_error"] - min(s["test_error"] for s in r["curve"])) for r in records])
    rows = []
    for key, reg in [("validation error (held out)", val), ("none: the last snapshot", last),
                     *[(n, regrets(n, MEASURES[n].sign)) for n in it["early_stopping"]]]:
        lo, hi = _boot(lambda x: float(np.mean(np.asarray(x))), reg, n_boot=it["n_boot"])
        d = paired_difference(reg, val, n_boot=it["n_boot"]) if key != "validation error (held out)" else None
        rows.append({"rule": key, "regret": float(reg.mean()), "regret_lo": lo, "regret_hi": hi,
                     "vs_val": d["mean"] if d else math.nan, "vs_val_lo": d["lo"] if d else math.nan, "vs_val_hi": d["hi"] if d else math.nan})
    return rows


def _ci(v, lo, hi, fmt="+.2f"):
    return "–" if v is None or not math.isfinite(v) else f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def write_all(records: list[dict], spec: dict, results_dir: Path, figures_dir: Path) -> list[Path]:
    it = spec["interpolation"]
    done = [r for r in records if r["reached"]]
    missed = [r for r in records if not r["reached"]]
    lines = [f"- {r['run']}: {r['reason']}" for r in missed] or ["- none: every model reached the rule"]
    paths = [atomic_write_text(results_dir / "not_interpolated.md", "# Models that did not reach the stopping rule\n\n" + "\n".join(lines) + "\n")]
    if len(done) < 3:
        raise ValueError(f"only {len(done)} of {len(records)} models reached the stopping rule: no ranking statistics "
                         f"(raise interpolation.max_epochs; the list with the reasons: {paths[0]})")
    rows, es = statistics(done, it), early_stopping(done, it)
    test = np.array([r["test_error"] for r in done])
    head = (f"{len(done)} of {len(records)} models reached the stopping rule (training CE <= {it['loss_threshold']} or "
            f"accuracy 100%, cap {it['max_epochs']} epochs); test error {100 * test.min():.1f}% to {100 * test.max():.1f}% "
            f"(median {100 * np.median(test):.1f}%). Oriented measures: tau > 0 = ranks the models the expected way.\n\n")
    for r in rows:
        r["tau_text"] = _ci(r["tau"], r["tau_lo"], r["tau_hi"])
        r["cmi_text"] = _ci(r["cmi"], r["cmi_lo"], r["cmi_hi"], ".3f")
        r["diff_text"] = _ci(r["tau_minus_best"], r["tau_minus_best_lo"], r["tau_minus_best_hi"])
    cols = [Column("measure", "measure"), Column("family", "family"), Column("tau_text", "tau with test error [95% CI]"),
            Column("psi", "granulated Psi", "+.2f"), *[Column(f"gk_{a}", a, "+.2f") for a in (*AXES, "seed")],
            Column("cmi_text", "CMI (Jiang, |S|<=2) [95% CI]"), Column("pgdl_cmi", "CMI (PGDL)", ".3f"),
            Column("diff_text", f"tau - tau of the best baseline ({rows[0]['vs_best'] if rows else ''}) [95% CI]")]
    md = "# Ranking interpolating models by test error\n\n" + head + markdown_table(rows, cols) + "\n"
    paths += [atomic_write_text(results_dir / "ranking.md", md), atomic_write_text(results_dir / "ranking.csv", csv_text(rows, ["measure", "family", "tau", "tau_lo", "tau_hi", "psi", *[f"gk_{a}" for a in (*AXES, "seed")], "cmi", "cmi_lo", "cmi_hi", "pgdl_cmi", "vs_best", "tau_minus_best", "tau_minus_best_lo", "tau_minus_best_hi"]))]
    for r in es:
        r["regret_text"] = _ci(r["regret"], r["regret_lo"], r["regret_hi"])
        r["vs_val_text"] = _ci(r["vs_val"], r["vs_val_lo"], r["vs_val_hi"])
    ecols = [Column("rule", "stopping rule"), Column("regret_text", "regret, points of test error [95% CI]"),
             Column("vs_val_text", "minus the validation rule's regret [95% CI]")]
    paths.append(atomic_write_text(results_dir / "early_stopping.md",
                                   f"# Early stopping (patience {it['patience']} on snapshots every {it['snapshot_every']} epochs)\n\n"
                                   + markdown_table(es, ecols) + "\n"))
    flat = [{**{k: r[k] for k in ("run", "seed", *AXES, "epochs", "reached", "train_loss", "train_acc", "test_error", "val_error", "seconds")},
             **r["measures"]} for r in records]
    paths.append(atomic_write_text(results_dir / "models.csv", csv_text(flat, list(flat[0]))))
    paths += figures(done, rows, figures_dir)
    return paths


def figures(records: list[dict], rows: list[dict], figures_dir: Path) -> list[Path]:
    colors = {"geometric": PALETTE[0], "classic baseline": PALETTE[1], "modern baseline": PALETTE[2]}
    fig, ax = new_figure(width=7, height=0.32 * len(rows) + 1.2)
    for i, r in enumerate(rows[::-1]):
        ax.errorbar(r["tau"], i, xerr=[[max(0.0, r["tau"] - r["tau_lo"])], [max(0.0, r["tau_hi"] - r["tau"])]], fmt="o", color=colors[r["family"]])
    ax.set_yticks(range(len(rows)), [r["measure"] for r in rows[::-1]], fontsize=8)
    ax.axvline(0, color="0.5", lw=0.8)
    for fam, c in colors.items():
        ax.plot([], [], "o", color=c, label=fam)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("Kendall tau with the test error (95% bootstrap CI over models)")
    ax.set_title(f"Interpolating models (n = {len(records)}): which training-data measure ranks them?", fontsize=9)
    paths = [save_figure(fig, figures_dir / "tau.png")]
    fig, axs = new_figure(ncols=2, width=9, height=3.6)
    for ax, axis in zip(axs, ("label_noise", "train_size")):
        values = sorted({r[axis] for r in records})
        ax.boxplot([[100 * r["test_error"] for r in records if r[axis] == v] for v in values])
        ax.set_xticks(range(1, len(values) + 1), [f"{v:g}" for v in values])
        ax.set_xlabel(axis)
        ax.set_ylabel("test error (%)")
    axs[0].set_title("Generalization varies although every model fits its training set", fontsize=9)
    paths.append(save_figure(fig, figures_dir / "test_error_by_axis.png"))
    return paths
