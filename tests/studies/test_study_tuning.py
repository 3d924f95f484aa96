"""Validation grids of the robust and embed studies (geomlat.studies.tools.tuning): the selection rule on constructed
grids (against an independent brute-force statement of the rule), spec validation of the `tune` fields, and
tiny end-to-end runs whose grid.csv is checked against a recomputation from the saved checkpoints."""
from __future__ import annotations

import copy
import csv
import itertools
import json
import math

import numpy as np
import pytest
import torch

from geomlat.data import load_dataset
from geomlat.engine.io import load_checkpoint
from geomlat.studies import SpecError, load_spec
from geomlat.studies.spec import find_spec_file, read_spec_file
from geomlat.studies.tools.tuning import run_tuning, select_setting, tune_fields


def _raw(name):
    return read_spec_file(find_spec_file(name))


# ------------------------------------------------------------------------------------ selection rule
def test_rule_picks_robustness_among_ties_only():
    rows = [{"clean": 0.030, "pgd": 0.10}, {"clean": 0.021, "pgd": 0.20},
            {"clean": 0.025, "pgd": 0.05}, {"clean": 0.020, "pgd": 0.30}]
    assert select_setting(rows, "clean", 0.0, "pgd") == 3            # no tolerance: lowest clean error
    assert select_setting(rows, "clean", 0.5, "pgd") == 2            # ties <= 2.5%: the lowest PGD error
    assert select_setting(rows, "clean", 1.0, "pgd") == 2            # 3.0% is tied too, but its PGD error is higher
    assert select_setting(rows, "clean", 1.0, "none") == 3           # without a tiebreak: the lowest clean
    assert select_setting(rows, "clean", 100.0, "pgd") == 2
    equal = [{"clean": 0.02, "pgd": 0.1}, {"clean": 0.02, "pgd": 0.1}]
    assert select_setting(equal, "clean", 1.0, "pgd") == 0           # full tie: the first in grid order


def test_rule_ignores_nan_and_rejects_empty():
    rows = [{"clean": math.nan, "pgd": 0.0}, {"clean": 0.5, "pgd": 0.9}, {"clean": 0.6, "pgd": math.nan}]
    assert select_setting(rows, "clean", 20.0, "pgd") == 1
    with pytest.raises(ValueError):
        select_setting([], "clean", 1.0)
    with pytest.raises(ValueError):
        select_setting([{"clean": math.nan}], "clean", 1.0)


@pytest.mark.parametrize("seed", range(20))
def test_rule_matches_brute_force(seed):
    """Random grids on a coarse value lattice (many exact ties): the chosen setting satisfies every clause of
    the rule, checked clause by clause against all others."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    rows = [{"clean": float(rng.integers(0, 8)) / 100, "pgd": float(rng.integers(0, 4)) / 10} for _ in range(n)]
    tol = float(rng.choice([0.0, 1.0, 2.5]))
    i = select_setting(rows, "clean", tol, "pgd")
    best = min(r["clean"] for r in rows)
    ties = [j for j, r in enumerate(rows) if r["clean"] - best <= tol / 100 + 1e-9]
    assert i in ties
    for j in ties:  # no tie is strictly better on (pgd, clean, order)
        assert (rows[i]["pgd"], rows[i]["clean"], i) <= (rows[j]["pgd"], rows[j]["clean"], j)


# ---------------------------------------------------------------------------------------- spec fields
def _with_tune(name, **changes):
    raw = copy.deepcopy(_raw(name))
    tune = raw["profiles"]["quick"]["tune"]
    for key, value in changes.items():
        if value is None:
            tune.pop(key)
        else:
            tune[key] = value
    return raw


@pytest.mark.parametrize(
    "name, changes, path",
    [
        ("robust", {"val_size": 0}, "tune.val_size"),
        ("robust", {"seeds": []}, "tune.seeds"),
        ("robust", {"seeds": [-1]}, "tune.seeds[0]"),
        ("robust", {"select": "accuracy"}, "tune.select"),
        ("robust", {"select": "knn"}, "tune.select"),                     # an embed metric in a robust spec
        ("robust", {"tiebreak": "fgsm_eps"}, "tune.tiebreak"),
        ("robust", {"tolerance": -1.0}, "tune.tolerance"),
        ("robust", {"tolernce": 1.0}, "tune.tolernce"),                   # typo
        ("robust", {"grid": None}, "tune.grid"),
        ("robust", {"grid": {}}, "tune.grid"),
        ("robust", {"grid": {"nope": {"kwargs.gamma": [0.1]}}}, "tune.grid.nope"),
        ("robust", {"grid": {"regularizer": {"kwargs.gamma": 0.1}}}, "tune.grid.regularizer.kwargs.gamma"),
        ("robust", {"grid": {"regularizer": {"kwargs.gamma": []}}}, "tune.grid.regularizer.kwargs.gamma"),
        ("robust", {"grid": {"regularizer": {}}}, "tune.grid.regularizer"),
        ("robust", {"grid": {"regularizer": [{"kwargs.gamma": 0.1}, 3]}}, "tune.grid.regularizer[1]"),
        ("robust", {"grid": {"regularizer": {"kwargs.power": [2, 0]}}}, "tune.grid.regularizer"),  # fails the dry run
        ("robust", {"grid": {"parseval": {"parseval.beta": [-1.0]}}}, "tune.grid.parseval.parseval.beta"),
        ("robust", {"grid": {"baseline": {"train.weight_decay": ["x"]}}}, "tune.grid.baseline.train.weight_decay"),
        ("robust", {"grid": {"baseline": {"train..lr": [0.1]}}}, "tune.grid.baseline.train..lr"),
        ("embed", {"select": "pgd"}, "tune.select"),
        ("embed", {"grid": {"lv_2d": {"kwargs.kernel": ["rbf", "gaussian"]}}}, "tune.grid.lv_2d"),
        ("embed", {"grid": {"lv_2d": {"kwargs.k": [50]}}}, "tune.grid.lv_2d"),
        ("embed", {"grid": {"ce": {"kwargs.k": [5]}}}, "tune.grid.ce.kwargs"),           # CE takes no kwargs
    ],
)
def test_tune_spec_errors_name_the_field(name, changes, path):
    with pytest.raises(SpecError) as err:
        tune_fields(_with_tune(name, **changes), "quick")
    assert err.value.path == path, str(err.value)
    assert str(err.value).startswith(path)


def test_no_tune_table_is_an_error_and_paper_profiles_have_none():
    with pytest.raises(SpecError) as err:
        tune_fields(_raw("robust"), "paper")
    assert err.value.path == "tune"


@pytest.mark.parametrize("name", ["robust", "embed"])
def test_committed_grids_validate_and_contain_the_chosen_values(name):
    """Every committed grid validates, and the value the quick profile runs with is one of its settings
    (the chosen values are copied from the tuning results)."""
    tune = tune_fields(_raw(name), "quick")
    spec = load_spec(name, "quick")
    for method, entries in tune["grid"].items():
        assert any(e["spec_method"] == spec["methods"][method] for e in entries), \
            f"{method}: the quick profile's values are not a grid setting"
    # the study itself still loads with the tune table present, and the paper profile keeps the papers' settings
    paper = load_spec(name, "paper")
    assert paper["methods"].keys() == spec["methods"].keys()


# ----------------------------------------------------------------------------------- end to end (tiny)
def _tiny(name, grid, select, tiebreak):
    raw = copy.deepcopy(_raw(name))
    quick = raw["profiles"]["quick"]
    quick["train"] = {**quick["train"], "epochs": 1, "limit_batches": 3, "batch_size": 32}
    quick["tune"] = {"val_size": 60, "seeds": [0], "select": select, "tolerance": 1.0, "tiebreak": tiebreak, "grid": grid}
    if name == "robust":
        quick["attacks"] = {**quick["attacks"], "samples": 20}
        raw["attacks"] = {**raw["attacks"], "pgd_steps": 2}
    else:
        quick["figure"] = {"epochs": [0, 1]}
    return raw


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_robust_tuning_writes_the_grid(tmp_path):
    raw = _tiny("robust", {"baseline": {"train.weight_decay": [5e-4]},
                           "regularizer": {"kwargs.gamma": [0.01, 0.1], "kwargs.power": [1]}}, "clean", "pgd")
    out = run_tuning(raw, "quick", tmp_path, progress=False, log=lambda m: None)
    rows = _read_csv(tmp_path / "results" / "tune-robust" / "grid.csv")
    assert [(r["method"], r["setting"]) for r in rows] == [
        ("baseline", "weight_decay=0.0005"), ("regularizer", "gamma=0.01,power=1"), ("regularizer", "gamma=0.1,power=1")]
    for method in ("baseline", "regularizer"):
        mine = [r for r in rows if r["method"] == method]
        assert sum(r["chosen"] == "True" for r in mine) == 1
        scored = [{k: float(r[k]) for k in ("clean", "pgd")} for r in mine]
        assert mine[select_setting(scored, "clean", 1.0, "pgd")]["chosen"] == "True"
    assert (tmp_path / "figures" / "tune-robust" / "tradeoff.png").stat().st_size > 0
    assert "[profiles.quick.methods.regularizer]" in (tmp_path / "results" / "tune-robust" / "chosen.toml").read_text()
    # independent recomputation: the regularizer's first run, reloaded, scored on a fresh validation split;
    # and that split is held out of the data it trained on (60 fewer training samples)
    splits = load_dataset("digits", seed=0, val_size=60)
    full = load_dataset("digits", seed=0)
    assert len(splits.train) + 60 == len(full.train)
    run = tmp_path / "runs" / "tune-robust" / "quick" / "regularizer" / "00_s0"
    from geomlat.studies import robust

    spec = load_spec("robust", "quick")
    model = robust.build(spec["model"])
    state = load_checkpoint(run / "checkpoint.pt")["objective"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    with torch.no_grad():
        err = int((model(splits.val.tensors[0]).argmax(1) != splits.val.tensors[1]).sum()) / len(splits.val.tensors[1])
    assert float(rows[1]["clean"]) == pytest.approx(err, abs=1e-9)
    config = json.loads((run / "config.json").read_text())
    assert config["kwargs"]["gamma"] == 0.01 and config["kwargs"]["power"] == 1
    assert out["chosen"]["baseline"] == {"train.weight_decay": 5e-4}


def test_tiny_embed_tuning_writes_the_grid(tmp_path):
    raw = _tiny("embed", {"lv_2d": [{"kwargs.kernel": "cosine_shifted"}, {"kwargs.kernel": "rbf", "kwargs.k": 5}]}, "knn", "none")
    run_tuning(raw, "quick", tmp_path, progress=False, log=lambda m: None)
    rows = _read_csv(tmp_path / "results" / "tune-embed" / "grid.csv")
    assert [r["setting"] for r in rows] == ["kernel=cosine_shifted", "kernel=rbf,k=5"]
    for r in rows:
        assert 0.0 <= float(r["knn"]) <= 1.0 and 0.0 <= float(r["ncm"]) <= 1.0
    scored = [{"knn": float(r["knn"])} for r in rows]
    assert rows[select_setting(scored, "knn", 1.0)]["chosen"] == "True"
    # fields outside the grid keep the profile's values; a grid path a setting leaves out takes the base value
    profile = load_spec("embed", "quick")["methods"]["lv_2d"]["kwargs"]
    runs = tmp_path / "runs" / "tune-embed" / "quick" / "lv_2d"
    config = json.loads((runs / "01_s0" / "config.json").read_text())
    assert config["kwargs"] == {**profile, "kernel": "rbf", "k": 5} and config["out_dim"] == 2
    config = json.loads((runs / "00_s0" / "config.json").read_text())
    assert config["kwargs"] == {**profile, "kernel": "cosine_shifted"} and "k" not in config["kwargs"]


def test_settings_keep_their_meaning_once_values_are_chosen():
    """A path a setting leaves out takes the base spec's value, not the profile's chosen one: the quick profile
    of embed sets lv_2d's sigma = 1, yet the grid's plain `kernel=rbf` setting is the paper's batch bandwidth."""
    raw = _raw("embed")
    assert raw["profiles"]["quick"]["methods"]["lv_2d"]["kwargs"]["sigma"] == 1.0
    entries = {e["id"]: e["spec_method"] for e in tune_fields(raw, "quick")["grid"]["lv_2d"]}
    assert "sigma" not in entries["kernel=rbf"]["kwargs"] and "k" not in entries["kernel=rbf"]["kwargs"]
    assert entries["kernel=rbf,sigma=1"]["kwargs"]["sigma"] == 1.0
    # and the robust baseline's weight decay setting overrides the profile's chosen 2e-3
    robust = {e["id"]: e["spec_method"] for e in tune_fields(_raw("robust"), "quick")["grid"]["baseline"]}
    assert robust["weight_decay=0.0005"]["train"]["weight_decay"] == 5e-4


def test_paper_profiles_keep_the_papers_settings():
    robust, embed = load_spec("robust", "paper")["methods"], load_spec("embed", "paper")["methods"]
    assert robust["regularizer"]["kwargs"] == {"power": 2, "gamma": 0.01}
    assert robust["parseval"]["parseval"] == {"beta": 0.01} and robust["baseline"]["train"]["weight_decay"] == 5e-4
    assert robust["pgd"]["kwargs"]["eps"] == pytest.approx(8 / 255)
    assert embed["lv_2d"]["kwargs"] == {"normalized": True} and embed["ce_2d"]["train"]["weight_decay"] == 5e-4


def test_lv_diagnostics_match_dense_formulas():
    """geomlat.studies.tools.lv_diagnosis.batch_diagnostics against numpy: normalized inter-class RBF weight share,
    same-class pairs with weight > 0.01, class spread and leave-one-out k-NN error."""
    from geomlat.losses.embedding import LabelVariationLoss
    from geomlat.studies.tools.lv_diagnosis import batch_diagnostics

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    emb = rng.normal(size=(24, 2)) * 0.7 + np.array([[0, 0], [3, 0], [0, 3]])[y]
    d = batch_diagnostics(torch.tensor(emb, dtype=torch.float32), torch.tensor(y), LabelVariationLoss(sigma=1.0, normalized=True),
                          batch=24, knn_k=3)
    sq = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    w = np.exp(-sq / 2.0)
    off = ~np.eye(24, dtype=bool)
    inter, same = (y[:, None] != y[None]), (y[:, None] == y[None]) & off
    assert d["loss"] == pytest.approx(w[inter].sum() / w[off].sum(), rel=1e-4)
    assert d["reach"] == pytest.approx((w[same] > 0.01).mean(), abs=1e-9)
    means = np.stack([emb[y == c].mean(0) for c in range(3)])
    within = np.mean([np.linalg.norm(emb[y == c] - means[c], axis=1).mean() for c in range(3)])
    between = np.mean([np.linalg.norm(means[a] - means[b]) for a, b in itertools.combinations(range(3), 2)])
    assert d["spread"] == pytest.approx(within / between, rel=1e-4)
    dist = np.sqrt(sq) + np.diag(np.full(24, np.inf))
    votes = y[np.argsort(dist, axis=1)[:, :3]]
    pred = np.array([np.bincount(v, minlength=3).argmax() for v in votes])  # k = 3 of 3 classes: ties only 1-1-1
    tie = np.array([np.bincount(v, minlength=3).max() == 1 for v in votes])
    assert not tie.any()
    assert d["train_loo_knn"] == pytest.approx((pred != y).mean(), abs=1e-9)


class _ReachedModel(Exception):
    """Raised by :class:`_DeviceCheckingNet` once a batch arrived on the network's device."""


class _DeviceCheckingNet(torch.nn.Module):
    """A network on the ``meta`` device (standing for a GPU) that fails on a batch left on another device."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3, 2, device="meta"))

    def forward(self, x):
        if x.device != self.weight.device:
            raise AssertionError(f"batch on {x.device}, network on {self.weight.device}")
        raise _ReachedModel


@pytest.mark.parametrize("kind_name", ["robust", "embed"])
def test_validation_errors_send_the_batches_to_the_networks_device(kind_name):
    """The tuner's validation errors on a network on another device than the CPU-held validation split (as a
    GPU run): every batch reaches the network on its device (the tuner kept them on the CPU before)."""
    from types import SimpleNamespace

    from geomlat.studies.runner import RunPlan, load_study_kind

    objective = SimpleNamespace(model=_DeviceCheckingNet())
    objective.parameters = objective.model.parameters
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    split = torch.utils.data.TensorDataset(x, y)
    splits = SimpleNamespace(train=split, test=split)
    spec = {"attacks": {"batch_size": 4, "fgsm_snr_db": 33.0}, "knn_k": 1}
    with pytest.raises(_ReachedModel):
        load_study_kind(kind_name).validation_errors(spec, RunPlan(objective, None), splits, {"loss": 0.0})
