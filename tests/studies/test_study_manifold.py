"""Tests of the ``manifold`` study: spec errors name the field, per-epoch snapshots equal separately
trained shorter runs, the selection statistics against NumPy/hand computations, the layer geometry on
separated clusters and against a NumPy spectrum, and a tiny end-to-end run whose recorded values are
re-derived from the run records and snapshots."""
from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch

from geomlat.data import balanced_order, load_dataset
from geomlat.engine import TrainConfig, load_checkpoint, train
from geomlat.objectives import Supervised
from geomlat.graphs import latent_adjacency
from geomlat.models import build_model
from geomlat.nnk import nnk_interpolation
from geomlat.studies import SpecError, load_spec, run_study
from geomlat.studies.manifold import SnapshotHook, layer_geometry, selection_stats


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_spec() -> dict:
    return {
        "name": "tinymanifold",
        "kind": "manifold",
        "seeds": [0],
        "layers": ["input", "stage2", "pool"],
        "data": {"name": "digits", "options": {"train_size": 150, "test_size": 100}},
        "model": {"model": "small_cnn", "kwargs": {"width": 4}},
        "train": {"epochs": 3, "batch_size": 50, "lr": 0.05},
        "analysis": {"samples": 60, "nnk_k": 8, "graph_k": 5},
        "comparison": {"model": {"model": "small_cnn", "kwargs": {"width": 2}}, "samples": 40, "knn_k": 5, "lgg_k": 5},
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
def test_defaults():
    spec = load_spec({k: v for k, v in tiny_spec().items() if k != "layers"}, "quick")
    assert spec["layers"] == ["input", "stage1", "stage2", "stage3", "pool"]
    assert spec["analysis"]["spectrum_epochs"] == [1, 3]
    assert spec["comparison"]["layers_b"] == ["stage1", "stage2", "stage3", "pool"]


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("seeds", [0, 1], "seeds"),
        ("train.eval_every", 2, "train.eval_every"),
        ("analysis.nnk_k", 60, "analysis.nnk_k"),
        ("analysis.kernel", "laplace", "analysis.kernel"),
        ("analysis.spectrum_epochs", [4], "analysis.spectrum_epochs[0]"),
        ("analysis.sample", 10, "analysis.sample"),
        ("layers", ["input", "stage7"], "layers[1]"),
        ("layers", ["pool", "pool"], "layers"),
        ("comparison.layers_a", ["input"], "comparison.layers_a[0]"),
        ("comparison.lgg_k", 40, "comparison.lgg_k"),
        ("comparison.model", {"model": "small_cnn", "kwargs": {"depth": 3}}, "comparison.model.kwargs"),
    ],
)
def test_spec_errors_name_the_field(path, value, field):
    with pytest.raises(SpecError) as err:
        load_spec(changed(path, value), "quick")
    assert err.value.path == field, (err.value.path, str(err.value))


def test_missing_comparison_is_an_error():
    spec = tiny_spec()
    del spec["comparison"]
    with pytest.raises(SpecError, match="comparison"):
        load_spec(spec, "quick")


# ------------------------------------------------------------------------------ snapshots
def test_snapshots_equal_separately_trained_shorter_runs(tmp_path):
    """With lr_gamma = 1 the schedule does not depend on ``epochs`` and train() seeds every epoch, so the
    snapshot after epoch e must equal the weights of an independent e-epoch run."""
    splits = load_dataset("digits", seed=0, train_size=100, test_size=50)
    base = dict(batch_size=50, lr=0.05, lr_gamma=1.0, seed=3)

    def fresh():
        torch.manual_seed(0)
        return build_model("small_cnn", width=2, num_classes=10)

    hook = SnapshotHook(tmp_path / "long")
    final = train(Supervised(fresh()), splits, TrainConfig(epochs=3, **base), tmp_path / "long", evaluate=hook, progress=False)
    assert [hook.path(e).exists() for e in (1, 2, 3, 4)] == [True, True, True, False]
    history = [json.loads(line) for line in (tmp_path / "long/metrics.jsonl").read_text().splitlines()]
    assert final["test_error"] == history[-1]["test_error"]
    for epochs in (1, 2):
        short = fresh()
        train(Supervised(short), splits, TrainConfig(epochs=epochs, **base), tmp_path / f"short{epochs}", progress=False)
        snap = load_checkpoint(hook.path(epochs))
        for name, value in short.state_dict().items():
            torch.testing.assert_close(snap[name], value, rtol=0, atol=0, msg=f"epoch {epochs}, {name}")
    last = load_checkpoint(tmp_path / "long/checkpoint.pt")["objective"]
    for name, value in load_checkpoint(hook.path(3)).items():
        torch.testing.assert_close(last[f"model.{name}"], value, rtol=0, atol=0)


# ------------------------------------------------------------------------------ selection statistics
def test_selection_stats_against_numpy():
    rng = np.random.default_rng(0)
    test = rng.random(12)
    signal = test + 0.3 * rng.random(12)
    epochs = np.arange(1, 13)
    out = selection_stats(signal, test, epochs)
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)  # no ties in continuous data
    assert out["spearman"] == pytest.approx(np.corrcoef(ranks(signal), ranks(test))[0, 1])
    i = int(np.argmin(signal))
    assert out["chosen_epoch"] == i + 1 and out["test_error_at_chosen"] == test[i]
    assert out["regret"] == pytest.approx(test[i] - test.min())


def test_selection_stats_ties_pick_the_first_epoch_and_constant_signal_has_no_correlation():
    test = np.array([0.5, 0.3, 0.2, 0.25])
    out = selection_stats(np.array([3.0, 1.0, 1.0, 2.0]), test, np.array([2, 4, 6, 8]))
    assert out["chosen_epoch"] == 4 and out["regret"] == pytest.approx(0.1)
    const = selection_stats(np.ones(4), test, np.array([1, 2, 3, 4]))
    assert np.isnan(const["spearman"]) and const["chosen_epoch"] == 1


# ------------------------------------------------------------------------------ layer geometry
def test_layer_geometry_of_separated_clusters():
    """Three tight clusters on orthogonal axes: the LGG's connected components are the classes, so the labels
    live in the null space of the Laplacian (low-frequency share 1, label variation 0) and every LOO
    prediction is right."""
    from scipy.sparse.csgraph import connected_components

    gen = torch.Generator().manual_seed(0)
    centers = torch.eye(3, 6) * 5
    y = torch.arange(3).repeat_interleave(20)
    x = centers[y] + 0.05 * torch.rand(60, 6, generator=gen)
    A, _ = latent_adjacency(x, k=10, kernel="cosine")
    assert connected_components(A.numpy() > 0)[0] == 3  # the premise
    geo = layer_geometry(x, y, num_classes=3, nnk_k=6, graph_k=10)
    assert geo["nnk_loo_error"] == 0 and geo["knn_loo_error"] == 0
    assert geo["label_variation"] == pytest.approx(0.0, abs=1e-12)
    assert geo["low_freq_share"] == pytest.approx(1.0, abs=1e-9)
    assert geo["spectrum"].sum() == pytest.approx(60.0)  # Parseval: |V|_F^2 = N


def test_layer_geometry_spectrum_against_numpy():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(40, 8, generator=gen)
    y = torch.arange(4).repeat(10)
    geo = layer_geometry(x, y, num_classes=4, nnk_k=6, graph_k=5)
    A, _ = latent_adjacency(x.double(), k=5, kernel="cosine")
    A = A.numpy()
    L = np.diag(A.sum(1)) - A
    evals, U = np.linalg.eigh(L)
    V = np.eye(4)[y.numpy()]
    energy = ((U.T @ V) ** 2).sum(1)
    np.testing.assert_allclose(geo["eigenvalues"], evals, atol=1e-8)
    assert geo["low_freq_share"] == pytest.approx(energy[:4].sum() / 40, abs=1e-8)
    assert geo["nnk_loo_error"] == nnk_interpolation(x.double(), y, 6, kernel="cosine")[1]


def test_layer_geometry_solves_nnk_once(monkeypatch):
    """One NNK solve per layer, shared by the interpolation error and the manifold metrics; every value equal
    to the two separate solves (the interpolation and ManifoldGraphMetrics computed on their own)."""
    import geomlat.analysis.manifold as am
    import geomlat.nnk as nnk_module
    from geomlat.analysis import ManifoldGraphMetrics

    gen = torch.Generator().manual_seed(2)
    y = torch.arange(3).repeat(15)
    x = torch.rand(45, 10, generator=gen) + 0.6 * torch.eye(3, 10)[y]
    for kernel in ("cosine", "rbf"):
        _, err = nnk_interpolation(x.double(), y, 7, kernel=kernel)
        mgm = ManifoldGraphMetrics(k=7, kernel=kernel).fit(x.double())
        calls = []
        real = nnk_module.nnk_weights

        def counting(*a, **kw):
            calls.append(1)
            return real(*a, **kw)

        monkeypatch.setattr(am, "nnk_weights", counting)
        monkeypatch.setattr(nnk_module, "nnk_weights", counting)
        geo = layer_geometry(x, y, num_classes=3, nnk_k=7, graph_k=5, kernel=kernel)
        monkeypatch.undo()
        assert len(calls) == 1
        assert geo["nnk_loo_error"] == err
        assert geo["nnk_neighbors"] == mgm.summary_["n_neighbors_mean"]
        assert geo["diameter"] == mgm.summary_["diameter_mean"] and geo["local_dim"] == mgm.summary_["local_dim_mean"]
    with pytest.raises(ValueError, match="NNK solution of x"):
        nnk_interpolation(x, y, 5, result=mgm.nnk_)


# ------------------------------------------------------------------------------ end to end
def test_tiny_run_records_match_the_snapshots(tmp_path):
    summary = run_study(tiny_spec(), "quick", out_root=tmp_path, progress=False, log=lambda s: None)
    results, figures = tmp_path / "results/tinymanifold", tmp_path / "figures/tinymanifold"
    for name in ("nnk_loo_vs_test.png", "manifold_metrics.png", "label_spectra.png", "comparison.png"):
        assert (figures / name).stat().st_size > 10_000, name
    for name in ("per_epoch.md", "per_epoch.csv", "selection.md", "selection.csv", "comparison.csv", "widths.md"):
        assert (results / name).exists(), name
    with open(results / "per_epoch.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["epoch"]), r["layer"]) for r in rows] == [(e, n) for e in (1, 2, 3) for n in ("input", "stage2", "pool")]
    run = tmp_path / "runs/tinymanifold/quick/small_cnn_w4_s0"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert float(r["test_error"]) == pytest.approx(metrics[int(r["epoch"]) - 1]["test_error"])
    # NNK LOO error of the pooled features at epoch 2, recomputed from the snapshot on the same samples
    splits = load_dataset("digits", seed=0, train_size=150, test_size=100)
    x, y = splits.train.tensors
    idx = torch.from_numpy(np.sort(balanced_order(y.numpy(), np.random.default_rng(0))[:60]))
    model = build_model("small_cnn", width=4, num_classes=10)
    model.load_state_dict(load_checkpoint(run / "snapshots/epoch_0002.pt"))
    model.eval()
    with torch.no_grad():
        pooled = model.stage3(model.stage2(model.stage1(x[idx]))).mean(dim=(2, 3))
    expected = nnk_interpolation(pooled.double(), y[idx], 8, kernel="cosine")[1]
    got = next(float(r["nnk_loo_error"]) for r in rows if r["epoch"] == "2" and r["layer"] == "pool")
    assert got == pytest.approx(expected)
    # input rows do not change with training
    assert len({r["nnk_loo_error"] for r in rows if r["layer"] == "input"}) == 1
    sel = {(s["signal"], s["layer"]): s for s in summary["selection"]}
    assert sel[("test error (oracle)", "")]["regret"] == 0
    with open(results / "comparison.csv") as f:
        comp = list(csv.DictReader(f))
    assert {c["method"] for c in comp} == {"lgg", "lgg_knn", "cka", "knn_overlap"}
    assert all(-1e-9 <= float(c["similarity"]) <= 1 + 1e-9 for c in comp)
