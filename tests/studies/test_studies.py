"""Tests of geomlat.studies: spec validation (errors name the field), the distill study end to end on a
tiny spec (table values re-derived from the run records and checkpoints), skip/resume, the paper profile
for one batch on a tiny CIFAR-format folder, and the shared table helpers."""
from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from PIL import Image

from geomlat.data import load_dataset, write_cifar_folder
from geomlat.engine import load_checkpoint, load_trained_model, predict, read_json
from geomlat.models import build_model
from geomlat.studies import STUDY_KINDS, Column, SpecError, StudyKind, load_spec, median_std, register_study_kind, run_study
from geomlat.studies.distill import run as distill_run
from geomlat.studies.spec import read_spec_file
from geomlat.studies.tables import csv_text, holm, markdown_table, paired_rows, paired_text

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_spec() -> dict:
    """A complete distill spec on 300 digits, tiny CNNs, one short epoch: seconds per study."""
    return {
        "name": "tiny",
        "kind": "distill",
        "seeds": [0, 1],
        "pairs": [["stage1", "stage1"], ["stage2", "stage2"], ["stage3", "stage3"]],
        "train": {"epochs": 2, "batch_size": 50, "lr": 0.05},
        "data": {"name": "digits", "options": {"train_size": 200, "test_size": 100}},
        "teacher": {"model": "small_cnn", "kwargs": {"width": 8}, "train": {"epochs": 3}},
        "student": {"model": "small_cnn", "kwargs": {"width": 4}},
        "methods": {
            "baseline": {},
            "hinton": {"task_weight": 0.1, "terms": {"kd": {"loss": "hinton", "weight": 0.9, "kwargs": {"T": 4.0}}}},
            "fitnet": {"pairs": [["stage2", "stage2"]], "terms": {"fitnet": {"loss": "fitnet", "weight": 1.0}}},
            "rkd_d": {"pairs": [["pool", "pool"]], "terms": {"rkd_d": {"loss": "rkd_d", "weight": 25.0}}},
            "gkd": {"terms": {"gkd": {"loss": "gkd", "weight": 25.0}}},
            "gkd_inter": {"terms": {"gkd": {"loss": "gkd", "weight": 25.0, "kwargs": {"mask": "inter"}}}},
            "gkd_intra": {"terms": {"gkd": {"loss": "gkd", "weight": 25.0, "kwargs": {"mask": "intra"}}}},
        },
        "analysis": {"samples": 60, "k": 5},
        "profiles": {"quick": {}},
    }


def with_change(path: str, value, delete: bool = False) -> dict:
    spec = tiny_spec()
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    if delete:
        del node[last]
    else:
        node[last] = value
    return spec


# ------------------------------------------------------------------ spec validation
@pytest.mark.parametrize(
    "path, value, delete, field, message",
    [
        ("methods.gkd.terms.gkd.loss", "gdk", False, "methods.gkd.terms.gkd.loss", "unknown value 'gdk'"),
        ("methods.gkd.terms.gkd.weight", "x", False, "methods.gkd.terms.gkd.weight", "expected a finite number"),
        ("methods.gkd.terms.gkd.weight", None, True, "methods.gkd.terms.gkd.weight", "missing required field"),
        ("methods.gkd.terms.gkd.kwargs", {"mask": "between"}, False, "methods.gkd.terms.gkd.kwargs", "mask"),
        ("methods.fitnet.terms.fitnet.kwargs", {"student_channels": 3}, False, "methods.fitnet.terms.fitnet.kwargs", "inferred"),
        ("methods.fitnet.pairs", [["stage2", "stage9"]], False, "methods.fitnet.pairs[0][1]", "'stage9' is not a module of the student"),
        ("pairs", [["stage1", "stage1"], ["block2", "stage2"]], False, "pairs[1][0]", "not a module of the teacher"),
        ("pairs", [["stage1"]], False, "pairs[0]", "expected [teacher_layer, student_layer]"),
        ("teacher.model", None, True, "teacher.model", "missing required field"),
        ("teacher.model", "resnet9", False, "teacher.model", "unknown model 'resnet9'"),
        ("student.kwargs", {"widht": 4}, False, "student.kwargs", "widht"),
        ("train.epoch", 3, False, "train.epoch", "unknown field"),
        ("train.epochs", 2.5, False, "train.epochs", "expected an integer"),
        ("train.seed", 1, False, "train.seed", "seeds"),
        ("teacher.train.lr", "fast", False, "teacher.train.lr", "expected a finite number"),
        ("train.milestones", [0.8, 0.3], False, "train", "milestones"),
        ("seeds", [], False, "seeds", "must not be empty"),
        ("seeds", [0, "1"], False, "seeds[1]", "expected int"),
        ("data.name", "imagenet", False, "data.name", "unknown value 'imagenet'"),
        ("methods.baseline.terms", {"gkd": {"loss": "gkd", "weight": 1.0}}, False, "methods.baseline.terms", "no distillation terms"),
        ("baseline", "student", False, "baseline", "not declared"),
        ("analysis.consistency", ["baseline", "rkd"], False, "analysis.consistency[1]", "unknown method 'rkd'"),
        ("analysis.k", 100, False, "analysis.k", "smaller than analysis.samples"),
        ("kind", "distil", False, "kind", "unknown value 'distil'"),
        ("methods.gkd.color", "red", False, "methods.gkd.color", "unknown field"),
        ("methods.gkd.terms.task", {"loss": "gkd", "weight": 1.0}, False, "methods.gkd.terms.task", "reserved"),
        ("comparisons", [["gkd", "hinton"], ["gkd", "kd"]], False, "comparisons[1]", "unknown method 'kd'"),
        ("comparisons", [["gkd"]], False, "comparisons[0]", "expected [method, reference]"),
        ("comparisons", [["gkd", "gkd"]], False, "comparisons[0]", "not compared with itself"),
        ("comparisons", "gkd", False, "comparisons", "expected an array"),
        ("teacher.per_seed", True, False, "teacher.per_seed", None),  # valid: checked below
    ],
)
def test_spec_errors_name_the_field(path, value, delete, field, message):
    spec = with_change(path, value, delete)
    if message is None:
        assert load_spec(spec, "quick")["teacher"]["per_seed"] is True
        return
    with pytest.raises(SpecError) as info:
        load_spec(spec, "quick")
    assert info.value.path == field
    assert str(info.value).startswith(f"{field}: ")
    assert message in str(info.value)


def test_shape_mismatch_caught_by_the_dry_run():
    # Hinton KD between a 10-class teacher and a 5-class student fails before training
    spec = with_change("student.kwargs", {"width": 4, "num_classes": 5})
    with pytest.raises(SpecError, match=r"^methods.hinton: the objective fails on a dummy batch"):
        load_spec(spec, "quick")


def test_unknown_profile_and_file(tmp_path):
    with pytest.raises(SpecError, match=r"profiles: unknown profile 'paper'.*\['quick'\]"):
        load_spec(tiny_spec(), "paper")
    with pytest.raises(FileNotFoundError, match="no study named 'nope'.*available.*gkd"):
        load_spec("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)


def test_bad_spec_trains_nothing(tmp_path):
    spec = with_change("methods.fitnet.pairs", [["stage2", "nope"]])
    with pytest.raises(SpecError, match=r"methods.fitnet.pairs\[0\]\[1\]"):
        run_study(spec, "quick", out_root=tmp_path, progress=False, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []  # not even a run folder


def test_gkd_spec_profiles():
    quick = load_spec("gkd", "quick")
    paper = load_spec("gkd", "paper")
    expected = {"baseline", "hinton", "fitnet", "rkd_d", "rkd_a", "sp", "gkd", "gkd_inter", "gkd_intra"}
    assert set(quick["methods"]) == set(paper["methods"]) == expected
    # METHOD.md weights and variants
    # (global_batch: under torchrun the graph of the whole batch (GlobalBatch); a no-op on one process)
    assert paper["methods"]["gkd"]["terms"]["gkd"] == {"loss": "gkd", "weight": 25.0, "kwargs": {"global_batch": True}}
    assert paper["methods"]["gkd_inter"]["terms"]["gkd"]["kwargs"] == {"mask": "inter", "global_batch": True}
    assert paper["methods"]["gkd_intra"]["terms"]["gkd"]["kwargs"] == {"mask": "intra", "global_batch": True}
    assert paper["methods"]["rkd_d"]["terms"]["rkd_d"]["weight"] == 25.0
    assert paper["methods"]["rkd_a"]["terms"]["rkd_a"]["weight"] == 50.0
    assert paper["methods"]["gkd"]["pairs"] == [("stage1", "stage1"), ("stage2", "stage2"), ("stage3", "stage3")]
    # the paper's recipe
    assert paper["data"]["name"] == "cifar10"
    t, s = paper["teacher"], paper["student"]
    assert (t["model"], t["kwargs"], s["model"], s["kwargs"]) == ("wrn", {"depth": 28, "width": 1.0}, "wrn", {"depth": 28, "width": 0.5})
    for entry in (t, s):
        assert {k: entry["train"][k] for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_gamma")} == \
            {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "lr_gamma": 0.2}
        assert [round(f * 200) for f in entry["train"]["milestones"]] == [60, 120, 160]
    n_t = sum(p.numel() for p in build_model("wrn", **t["kwargs"]).parameters())
    n_s = sum(p.numel() for p in build_model("wrn", **s["kwargs"]).parameters())
    assert 0.2 < n_s / n_t < 0.3  # about a quarter of the teacher, as in the paper
    assert quick["data"]["name"] in ("mnist1d", "digits") and quick["teacher"]["train"]["device"] == "cpu"


# ------------------------------------------------------------------ the study end to end
def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    logs: list[str] = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every test of this file: bitwise-equal reruns need the same thread count
    try:
        summary = run_study(tiny_spec(), "quick", out_root=out, progress=False, log=logs.append)
    finally:
        torch.set_num_threads(before)
    return out, summary, logs


def test_study_outputs_and_table_values(tiny_study):
    out, summary, logs = tiny_study
    res = out / "results" / "tiny"
    table = _rows(res / "table.csv")
    runs = _rows(res / "runs.csv")
    assert [r["method"] for r in table] == ["teacher", "baseline", "hinton", "fitnet", "rkd_d", "gkd", "gkd_inter", "gkd_intra"]
    assert len(runs) == 1 + 7 * 2
    # every number of the table re-derived from the per-run records
    err = {m: [float(r["test_error"]) for r in runs if r["method"] == m] for m in {r["method"] for r in runs}}
    base = float(np.median(err["baseline"]))
    for row in table:
        m = row["method"]
        assert float(row["test_error_median"]) == pytest.approx(np.median(err[m]))
        if m == "teacher":
            assert row["test_error_std"] == "" and row["gain_vs_baseline"] == "" and float(row["relative_size"]) == 1.0
        else:
            assert float(row["test_error_std"]) == pytest.approx(np.std(err[m], ddof=1))
            assert float(row["gain_vs_baseline"]) == pytest.approx(base - np.median(err[m]))
            # relative size: small_cnn(4) / small_cnn(8) parameters, counted independently
            n = lambda w: sum(p.numel() for p in build_model("small_cnn", width=w).parameters())
            assert float(row["relative_size"]) == pytest.approx(n(4) / n(8))
    # paired differences vs the baseline student, same seed: scipy's paired t-test and t interval
    paired = {r["method"]: r for r in _rows(res / "paired.csv")}
    assert set(paired) == {r["method"] for r in table} - {"teacher", "baseline"}
    by_seed = {(r["method"], int(r["seed"])): float(r["test_error"]) for r in runs}
    for m, row in paired.items():
        d = np.array([by_seed[(m, s)] - by_seed[("baseline", s)] for s in (0, 1)])
        assert float(row["mean"]) == pytest.approx(d.mean())
        if d.std() > 0:
            assert float(row["p"]) == pytest.approx(stats.ttest_rel(d, np.zeros(2)).pvalue)
    md = (res / "table.md").read_text()
    assert "| Method |" in md and "| baseline |" in md and "| gkd_inter |" in md  # labels default to the names
    assert "Paired error difference vs baseline" in md


def test_study_records_match_checkpoints(tiny_study):
    """Test error and agreement of one student recomputed from the saved weights."""
    out, _, _ = tiny_study
    runs_dir = out / "runs" / "tiny" / "quick"
    splits = load_dataset("digits", seed=0, train_size=200, test_size=100)
    teacher = load_trained_model(runs_dir / "teacher_s0", build_model("small_cnn", width=8)).eval()
    student = load_trained_model(runs_dir / "gkd_s1", build_model("small_cnn", width=4)).eval()
    y = splits.test.tensors[1]
    t_pred, s_pred = predict(teacher, splits.test), predict(student, splits.test)
    row = next(r for r in _rows(out / "results" / "tiny" / "runs.csv") if r["run"] == "gkd_s1")
    assert float(row["test_error"]) == pytest.approx(float((s_pred != y).double().mean()))
    assert float(row["agreement"]) == pytest.approx(float((s_pred == t_pred).double().mean()))
    assert float(row["test_error"]) == pytest.approx(read_json(runs_dir / "gkd_s1" / "final.json")["test_error"])
    # the distillation term was really trained (recorded per epoch), the teacher ran 3 epochs, the students 2
    final = read_json(runs_dir / "gkd_s1" / "final.json")
    assert final["gkd"] > 0 and final["epochs"] == 2
    assert read_json(runs_dir / "teacher_s0" / "final.json")["epochs"] == 3
    # same initialization for every method of a seed: the baseline and GKD students of seed 1 start equal
    config = read_json(runs_dir / "gkd_s1" / "config.json")
    assert config["method"] == "gkd" and config["teacher_run"] == "teacher_s0" and config["train"]["seed"] == 1


def test_study_analysis_and_figures(tiny_study):
    out, summary, _ = tiny_study
    rows = _rows(out / "results" / "tiny" / "analysis.csv")
    cons = [r for r in rows if r["analysis"] == "consistency"]
    lv = [r for r in rows if r["analysis"] == "label_variation"]
    # (a) baseline, rkd_d and gkd x 2 seeds x (3 blocks + output); (b) teacher + 3 methods x 2 seeds x 3 blocks
    assert len(cons) == 3 * 2 * 4 and len(lv) == (1 + 3 * 2) * 3
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)
    for name in ("consistency.png", "label_variation.png", "graph_variants.png"):
        with Image.open(out / "figures" / "tiny" / name) as img:
            assert img.format == "PNG" and img.size[0] >= 500 and img.size[1] >= 300


def test_rerun_skips_and_interrupted_study_resumes(tiny_study, tmp_path, monkeypatch):
    out, _, _ = tiny_study
    # 1) a rerun trains nothing and reproduces the table
    logs: list[str] = []
    run_study(tiny_spec(), "quick", out_root=out, progress=False, log=logs.append)
    run_lines = [line for line in logs if line.startswith("  ")]
    assert len(run_lines) == 15 and all(" done " in line for line in run_lines)
    # 2) an interrupted study (KeyboardInterrupt in the 4th training run) then rerun ends with the same table
    real_train = distill_run.train
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(distill_run, "train", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_study(tiny_spec(), "quick", out_root=tmp_path, progress=False, log=lambda s: None)
    monkeypatch.setattr(distill_run, "train", real_train)
    logs = []
    run_study(tiny_spec(), "quick", out_root=tmp_path, progress=False, log=logs.append)
    states = [line.split()[1] for line in logs if line.startswith("  ")]
    assert states[:3] == ["done"] * 3 and set(states[3:]) == {"training"}
    assert (tmp_path / "results" / "tiny" / "table.csv").read_text() == (out / "results" / "tiny" / "table.csv").read_text()
    assert (tmp_path / "results" / "tiny" / "analysis.csv").read_text() == (out / "results" / "tiny" / "analysis.csv").read_text()


def test_parallel_workers_give_identical_results(tiny_study, tmp_path):
    """Runs spread over 2 spawned worker processes end with the same numbers as in one process."""
    out, _, _ = tiny_study
    spec = tiny_spec()
    spec.update(workers=2, threads=1)
    logs: list[str] = []
    run_study(spec, "quick", out_root=tmp_path, progress=False, log=logs.append)
    assert "(2 workers)" in logs[0]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(_rows(tmp_path / "results" / "tiny" / "runs.csv")) == strip(_rows(out / "results" / "tiny" / "runs.csv"))
    assert (tmp_path / "results" / "tiny" / "analysis.csv").read_text() == (out / "results" / "tiny" / "analysis.csv").read_text()


def test_changed_spec_does_not_reuse_runs(tiny_study):
    out, _, _ = tiny_study
    spec = with_change("methods.gkd.terms.gkd.weight", 5.0)
    with pytest.raises(ValueError, match="different configuration"):
        run_study(spec, "quick", out_root=out, progress=False, log=lambda s: None)


def test_paper_profile_one_batch_on_tiny_cifar(tmp_path):
    """The real paper profile (WRN-28-1 teacher, WRN-28-0.5 student, all 9 methods) for one batch."""
    write_cifar_folder(tmp_path / "data" / "cifar-10-batches-py", n_train_per_batch=4, n_test=10)
    overrides = {"train": {"epochs": 1, "limit_batches": 1, "device": "cpu"}, "analysis": {"samples": 10, "k": 3}}
    summary = run_study("gkd", "paper", data_dir=str(tmp_path / "data"), out_root=tmp_path / "out", seeds=[0],
                        overrides=overrides, progress=False, log=lambda s: None)
    runs_dir = tmp_path / "out" / "runs" / "gkd" / "paper"
    assert sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) == sorted(
        ["teacher_s0"] + [f"{m}_s0" for m in ("baseline", "hinton", "fitnet", "rkd_d", "rkd_a", "sp", "gkd", "gkd_inter", "gkd_intra")])
    for run in runs_dir.iterdir():
        if run.is_dir():
            final = read_json(run / "final.json")
            assert final["steps"] == 1 and math.isfinite(final["loss"])
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["gkd"]["relative_size"] == pytest.approx(94042 / 369498, rel=1e-3)
    assert (tmp_path / "out" / "results" / "gkd" / "table.md").exists()
    assert load_checkpoint(runs_dir / "gkd_s0" / "checkpoint.pt")["epoch"] == 1


# ------------------------------------------------------------------ registry and helpers
def test_register_custom_study_kind(tmp_path):
    seen = {}

    @register_study_kind("echo_test")
    class Echo(StudyKind):
        def validate(self, spec, fields):
            return {"word": fields.str("word")}

        def run(self, spec, ctx):
            seen.update(spec=spec, ctx=ctx)
            return {"ok": True}

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_study_kind("echo_test")(Echo)
        spec = {"name": "echo", "kind": "echo_test", "seeds": [3], "word": "hi", "profiles": {"p": {"word": "ho"}}}
        summary = run_study(spec, "p", out_root=tmp_path, progress=False, log=lambda s: None)
        assert summary["ok"] and seen["spec"]["word"] == "ho" and seen["spec"]["seeds"] == [3]
        assert seen["ctx"].runs_dir == tmp_path / "runs" / "echo" / "p"
        assert read_json(tmp_path / "runs" / "echo" / "p" / "spec.json")["word"] == "ho"
        with pytest.raises(SpecError, match="^word: expected a string"):
            load_spec({**spec, "word": 3, "profiles": {"p": {}}}, "p")
    finally:
        STUDY_KINDS.pop("echo_test", None)


def test_median_std_and_tables():
    med, std, n = median_std([0.1, 0.3, None, float("nan"), 0.2])
    assert (med, n) == (pytest.approx(0.2), 3) and std == pytest.approx(np.std([0.1, 0.3, 0.2], ddof=1))
    med, std, n = median_std([0.5])
    assert med == 0.5 and math.isnan(std) and n == 1
    rows = [{"m": "a|b", "e": 0.0123, "g": -0.004}, {"m": "c", "e": None, "g": 0.01}]
    md = markdown_table(rows, [Column("m", "Method"), Column("e", "Error (%)", ".2f", 100), Column("g", "Gain", ".1f", 100, signed=True)])
    assert md.splitlines() == ["| Method | Error (%) | Gain |", "|:---|---:|---:|", "| a\\|b | 1.23 | -0.4 |", "| c | – | +1.0 |"]
    text = csv_text(rows, ["m", "e", "g"])
    assert text.splitlines() == ["m,e,g", "a|b,0.0123,-0.004", "c,,0.01"]


def test_paired_rows_match_scipy_and_pair_by_seed_and_group():
    gen = np.random.default_rng(0)
    per_run, truth = [], {}
    for seed in range(7):
        for c in ("knn", "ncm"):
            base = float(gen.uniform(0.05, 0.1))
            shift = {"knn": -0.02, "ncm": 0.0}[c] + float(gen.normal(0, 0.004))
            per_run += [{"method": "base", "seed": seed, "classifier": c, "err": base},
                        {"method": "new", "seed": seed, "classifier": c, "err": base + shift}]
            truth.setdefault(c, []).append(shift)
    per_run = per_run[::-1]                                  # order of the records does not matter
    per_run.append({"method": "new", "seed": 99, "classifier": "knn", "err": 0.5})   # no baseline on seed 99: unpaired
    per_run.append({"method": "new", "seed": 98, "classifier": "ncm", "err": float("nan")})
    rows = paired_rows(per_run, ["err"], [("new", "base"), ("base", "base"), ["new", "base"]], group=["classifier"])
    assert {r["classifier"] for r in rows} == {"knn", "ncm"} and all(r["method"] == "new" for r in rows)
    for r in rows:
        d = np.array(truth[r["classifier"]])
        assert r["n"] == 7 and r["mean"] == pytest.approx(d.mean())
        half = stats.t.ppf(0.975, 6) * d.std(ddof=1) / np.sqrt(7)
        assert (r["lo"], r["hi"]) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
        assert r["p"] == pytest.approx(stats.ttest_rel(d, np.zeros(7)).pvalue)
        assert r["reading"] == ("lower" if r["hi"] < 0 else "higher" if r["lo"] > 0 else "not resolved")
    assert next(r for r in rows if r["classifier"] == "knn")["reading"] == "lower"
    assert paired_text({"mean": -0.012, "lo": -0.02, "hi": -0.004}) == "-1.20 [-2.00, -0.40]"
    assert paired_text({"mean": -1e-9, "lo": -0.01, "hi": 0.01}) == "+0.00 [-1.00, +1.00]"   # no "-0.00"
    # numpy scalars pair like Python floats
    as_numpy = [{**r, "err": np.float32(r["err"])} for r in per_run if r["seed"] < 90]
    again = paired_rows(as_numpy, ["err"], [("new", "base")], group=["classifier"])
    assert [r["n"] for r in again] == [7, 7] and again[0]["mean"] == pytest.approx(rows[0]["mean"], abs=1e-6)
    with pytest.raises(ValueError, match=r"two records for method 'new', seed 6, \{'classifier': 'ncm'\}"):
        paired_rows(per_run + [per_run[0]], ["err"], [("new", "base")], group=["classifier"])
    with pytest.raises(ValueError, match="no record of method 'bsae'"):
        paired_rows(per_run, ["err"], [("new", "bsae")], group=["classifier"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_matches_its_definition(p):
    """Holm's adjusted p of the i-th smallest: max over j <= i of min(1, (m - j + 1) p_(j)) (1-based), any order."""
    adjusted = holm(p)
    order = sorted(range(len(p)), key=lambda i: p[i])
    m = len(p)
    for rank, i in enumerate(order):
        expected = max(min(1.0, (m - j) * p[order[j]]) for j in range(rank + 1))
        assert adjusted[i] == pytest.approx(expected)
    assert all(a >= q for a, q in zip(adjusted, p))   # never below the raw p-value


def test_gkd_toml_is_valid_toml_with_both_profiles():
    raw = read_spec_file(REPO / "studies" / "gkd.toml")
    assert set(raw["profiles"]) == {"quick", "paper"}
