"""Tests of the ``selection`` study: spec errors name the field, the population design gives the one-axis groups of
the granulated Kendall coefficient, the training data (nested sets, exact label noise), the depth of Conv1dNet, and a
tiny end-to-end run whose table values are recomputed independently from the run records."""
from __future__ import annotations

import copy
import csv
import itertools
import json
import math

import numpy as np
import pytest
import torch

from geomlat.engine import load_checkpoint
from geomlat.models import Conv1dNet, build_model
from geomlat.nnk import nnk_interpolation
from geomlat.studies import SpecError, load_spec, run_study
from geomlat.studies.selection.report import GRAN_AXES, MEASURES
from geomlat.studies.selection.run import model_data, population, run_name
from geomlat.studies.common import layer_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_spec() -> dict:
    return {
        "name": "tinyselection",
        "kind": "selection",
        "seeds": [0, 1],
        "model": "conv1d",
        "data": {"name": "mnist1d", "options": {"val_size": 100, "num_samples": 1000}},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.05},
        "population": {"centers": [{"width": 4}], "axes": {"width": [4, 6]}, "fixed": {"train_size": 300, "depth": 2}},
        "analysis": {"samples": 100, "snapshots": [1, 2], "nnk_k": 8, "graph_k": 5, "channel_k": 5, "n_boot": 50},
        "profiles": {"quick": {}},
    }


def changed(path: str, value) -> dict:
    spec = copy.deepcopy(tiny_spec())
    *head, last = path.split(".")
    table = spec
    for key in head:
        table = table[key]
    table[last] = value
    return spec


# ------------------------------------------------------------------------------ spec validation
@pytest.mark.parametrize(
    "path, value, field",
    [
        ("seeds", [0], "seeds"),
        ("model", "resnet50", "model"),
        ("data.options", {"num_samples": 1000}, "data.options.val_size"),
        ("train.weight_decay", 0.1, "train.weight_decay"),
        ("train.eval_every", 2, "train.eval_every"),
        ("population.axes", {"width": [4]}, "population.axes.width"),
        ("population.axes", {"height": [1, 2]}, "population.axes.height"),
        ("population.axes", {"label_noise": [0.0, 1.0]}, "population.axes.label_noise[1]"),
        ("population.axes", {"width": [4, 0]}, "population.axes.width[1]"),
        ("population.centers", [{"depth": 2}], "population.centers[0]"),
        ("population.fixed", {"width": 4}, "population.fixed.width"),
        ("population.fixed", {"train_size": 50, "depth": 2}, "population"),
        ("analysis.snapshots", [2, 1], "analysis.snapshots"),
        ("analysis.snapshots", [1], "analysis.snapshots"),
        ("analysis.nnk_k", 100, "analysis.nnk_k"),
        ("analysis.color", 1, "analysis.color"),
    ],
)
def test_spec_errors_name_the_field(path, value, field):
    with pytest.raises(SpecError) as err:
        load_spec(changed(path, value), "quick")
    assert err.value.path == field, (err.value.path, str(err.value))


def test_quick_spec_population_has_one_axis_groups():
    """The committed spec: >= 48 models, >= 2 values per axis, and for every center, seed and axis a group of models
    that differ only along that axis (what the granulated Kendall coefficient needs)."""
    spec = load_spec("selection", "quick")
    pop = spec["population"]
    configs = population(pop["centers"], pop["axes"], pop["fixed"], pop["random"], pop["sample_seed"])
    assert len(configs) * len(spec["seeds"]) >= 48
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == len(configs)
    for axis, values in pop["axes"].items():
        assert len(values) >= 2 and {c[axis] for c in configs} == set(values)
        for center in pop["centers"]:
            group = [c for c in configs if all(c[a] == center[a] for a in pop["axes"] if a != axis)]
            assert sorted({c[axis] for c in group}, key=float) == sorted(values, key=float)
    # the random sample is drawn from the grid and is reproducible
    assert configs == population(pop["centers"], pop["axes"], pop["fixed"], pop["random"], pop["sample_seed"])
    assert len(configs) == len(pop["centers"]) * (1 + sum(len(v) - 1 for v in pop["axes"].values())) + pop["random"]


def test_model_data_nested_sets_and_exact_label_noise():
    data = {"name": "mnist1d", "seed": 0, "options": {"val_size": 100, "num_samples": 1000}}
    base = {"width": 4, "depth": 2, "weight_decay": 0.0, "label_noise": 0.0}
    small, _ = model_data(data, {**base, "train_size": 300}, 100)
    large, idx = model_data(data, {**base, "train_size": 600}, 100)
    noisy, _ = model_data(data, {**base, "train_size": 600, "label_noise": 0.25}, 100)
    xs, ys = small.train.tensors
    xl, yl = large.train.tensors
    assert torch.equal(xl[:300], xs) and torch.equal(yl[:300], ys)  # nested training sets
    assert np.array_equal(idx, np.arange(100)) and np.bincount(yl[:100].numpy()).min() >= 9  # balanced analysis samples
    xn, yn = noisy.train.tensors
    assert torch.equal(xn, xl) and int((yn != yl).sum()) == 150  # exactly 25% wrong labels
    xv = large.val.tensors[0].flatten(1)
    assert not bool((torch.cdist(xv, xl.flatten(1)) == 0).any())  # the validation split is not trained on
    with pytest.raises(ValueError, match="train_size"):
        model_data(data, {**base, "train_size": 5000}, 100)


def test_conv1d_depth():
    assert list(Conv1dNet(8).state_dict()) == list(Conv1dNet(8, depth=3).state_dict())
    for depth in (1, 2, 4):
        net = Conv1dNet(4, depth=depth)
        assert net.stage_names == [f"stage{i + 1}" for i in range(depth)]
        feats = layer_features(net, torch.randn(3, 1, 40), net.stage_names)
        lengths = [40, 20, 10, 10][:depth]
        channels = [4, 8, 16, 16][:depth]
        assert [tuple(feats[n].shape[1:]) for n in net.stage_names] == list(zip(channels, lengths))
        assert net(torch.randn(3, 1, 40)).shape == (3, 10)
    with pytest.raises(ValueError, match="depth"):
        Conv1dNet(4, depth=0)


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    summary = run_study(tiny_spec(), "quick", out_root=root, progress=False, log=lambda m: None)
    return root, summary


def _tau(a, b) -> float:
    """Jiang et al.'s tau by an explicit double loop over ordered pairs."""
    m, s = len(a), 0.0
    for i, j in itertools.permutations(range(m), 2):
        s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return s / (m * (m - 1))


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_end_to_end_tables_equal_recomputation_from_records(tiny_run):
    root, summary = tiny_run
    runs = root / "runs" / "tinyselection" / "quick"
    names = [run_name({"width": w, "depth": 2, "weight_decay": 5e-4, "label_noise": 0.0, "train_size": 300}, s)
             for w in (4, 6) for s in (0, 1)]
    records = [json.loads((runs / n / "measures.json").read_text()) for n in names]
    for width in (0, 2):  # the stability between the two seeds of each configuration (one file per configuration)
        stab = json.loads((runs / "stability" / f"{names[width]}.json").read_text())
        for r in records[width : width + 2]:
            for snap in r["snapshots"]:
                snap["stability"] = stab[r["run"]][str(snap["epoch"])]
    assert [r["run"] for r in summary["records"]] == names
    results = root / "results" / "tinyselection"
    kendall = {r["key"]: r for r in _read_csv(results / "kendall.csv")}
    assert list(_read_csv(results / "kendall.csv")[0]) == ["measure", "key", "family", "sign", "tau_test", "tau_test_lo",
                                                        "tau_test_hi", "tau_vs_train", "tau_vs_train_lo", "tau_vs_train_hi",
                                                        "tau_gap", "tau_gap_lo", "tau_gap_hi", "psi"]
    regret = {r["key"]: r for r in _read_csv(results / "regret.csv")}
    gran = {r["key"]: r for r in _read_csv(results / "granulated.csv")}
    test = np.array([r["snapshots"][-1]["test_error"] for r in records])
    gap = test - np.array([r["snapshots"][-1]["train_error"] for r in records])
    for key, _, sign, _ in MEASURES:
        m = sign * np.array([r["snapshots"][-1][key] for r in records])
        assert float(kendall[key]["tau_test"]) == pytest.approx(_tau(m, test))
        assert float(kendall[key]["tau_gap"]) == pytest.approx(_tau(m, gap))
        train = np.array([r["snapshots"][-1]["train_error"] for r in records])
        assert float(kendall[key]["tau_vs_train"]) == pytest.approx(_tau(m, test) - _tau(train, test))
        lo, hi = float(kendall[key]["tau_test_lo"]), float(kendall[key]["tau_test_hi"])
        assert -1 <= lo <= hi <= 1
        best = np.flatnonzero(m == m.min())
        assert float(regret[key]["sel_regret"]) == pytest.approx(test[best].mean() - test.min())
        # width groups: the two widths at each seed; seed groups: the two seeds of each width
        width_taus = [_tau(m[[s, 2 + s]], test[[s, 2 + s]]) for s in (0, 1)]
        seed_taus = [_tau(m[[2 * w, 2 * w + 1]], test[[2 * w, 2 * w + 1]]) for w in (0, 1)]
        assert float(gran[key]["gk_width"]) == pytest.approx(np.mean(width_taus))
        assert float(gran[key]["gk_seed"]) == pytest.approx(np.mean(seed_taus))
        assert gran[key]["gk_depth"] == "" and int(gran[key]["groups_width"]) == 2
        if key != "channel_nnk":  # single curve: stop after `patience` evaluations without a strict improvement
            regrets = []
            for r in records:
                curve = [sign * s[key] for s in r["snapshots"]]
                tests = [s["test_error"] for s in r["snapshots"]]
                best_i, best_v, left = 0, curve[0], 1
                for t in range(1, len(curve)):
                    if curve[t] < best_v:
                        best_i, best_v, left = t, curve[t], 1
                    else:
                        left -= 1
                        if left == 0:
                            break
                regrets.append(tests[best_i] - min(tests))
            assert float(regret[key]["es_regret"]) == pytest.approx(np.mean(regrets))
    for path in ("kendall.md", "granulated.md", "regret.md", "models.csv"):
        assert (results / path).stat().st_size > 0
    for path in ("measures_vs_test.png", "tau_per_axis.png"):
        assert (root / "figures" / "tinyselection" / path).read_bytes()[:4] == b"\x89PNG"


def test_records_match_the_snapshots(tiny_run):
    """The recorded test error and NNK LOO error of the pooled features are recomputed from the saved weights; the
    stability is shared by the two seeds of a configuration and lies in [0, 1]."""
    root, summary = tiny_run
    runs = root / "runs" / "tinyselection" / "quick"
    spec = load_spec(tiny_spec(), "quick")
    rec = summary["records"][1]
    config = {a: rec[a] for a in ("width", "depth", "weight_decay", "label_noise", "train_size")}
    splits, idx = model_data(spec["data"], config, 100)
    model = build_model("conv1d", width=config["width"], depth=config["depth"])
    for snap in rec["snapshots"]:
        model.load_state_dict(load_checkpoint(runs / rec["run"] / "snapshots" / f"epoch_{snap['epoch']:04d}.pt"))
        model.eval()
        x_te, y_te = splits.test.tensors
        with torch.no_grad():
            assert snap["test_error"] == pytest.approx(float((model(x_te).argmax(1) != y_te).double().mean()))
        xs, ys = (t[torch.from_numpy(idx)] for t in splits.train.tensors)
        pool = layer_features(model, xs, ["pool"])["pool"].double()
        assert snap["nnk_loo_pool"] == pytest.approx(nnk_interpolation(pool, ys, 8, kernel="cosine")[1])
        assert snap["channel_nnk"] == pytest.approx(np.mean(snap["channel_errors"]))
        assert len(snap["channel_errors"]) == 8  # last stage of depth 2: 2 * width channels
    a, b = summary["records"][0], summary["records"][1]
    for sa, sb in zip(a["snapshots"], b["snapshots"]):
        assert sa["stability"] == sb["stability"] and 0 <= sa["stability"] <= 1


def test_rerun_is_resumed_from_the_records(tiny_run):
    root, summary = tiny_run
    again = run_study(tiny_spec(), "quick", out_root=root, progress=False, log=lambda m: None)
    assert again["records"] == summary["records"]
    assert [r["tau_test"] for r in again["rows"] if "tau_test" in r] == [r["tau_test"] for r in summary["rows"] if "tau_test" in r]
