"""Tests of the ``toy`` study (LGG paper Figure 2): spec errors name the field, the eigenmap layout
against a NumPy eigendecomposition (connected and disconnected graphs), the class-balanced draws, and
a tiny end-to-end run whose label variations are re-derived with NumPy from the trained checkpoint."""
from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch

from geomlat import latent_graph
from geomlat.data import load_dataset
from geomlat.engine import load_trained_model
from geomlat.models import build_model
from geomlat.studies import SpecError, load_spec, run_study
from geomlat.studies.toy import draw_class_samples, eigenmap_layout


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_spec() -> dict:
    return {
        "name": "tinytoy",
        "kind": "toy",
        "seeds": [0],
        "data": {"name": "digits", "options": {"train_size": 200, "test_size": 100}},
        "model": {"model": "small_cnn", "kwargs": {"width": 4}},
        "train": {"epochs": 1, "batch_size": 50, "lr": 0.05},
        "graph": {"k": 5, "classes": [0, 1, 2, 3], "per_class": 5, "draws": 3},
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
def test_defaults_fill_in_input_middle_penultimate():
    spec = load_spec(tiny_spec(), "quick")
    assert spec["layers"] == [["input", "input"], ["middle (stage2)", "stage2"], ["penultimate (pool)", "pool"]]
    assert spec["graph"]["kernel"] == "auto" and spec["graph"]["split"] == "train"


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("graph.k", 20, "graph.k"),  # k must be < 20 samples
        ("graph.classes", [1, 1, 2], "graph.classes"),
        ("graph.classes", [3], "graph.classes"),
        ("graph.split", "val", "graph.split"),
        ("graph.kk", 3, "graph.kk"),  # typo: unknown field
        ("layers", [["input", "input"], ["x", "stage9"]], "layers[1][1]"),
        ("layers", [["input"]], "layers[0]"),
        ("model.model", "nope", "model.model"),
        ("model.kwargs", {"width": -1}, "model.kwargs"),
        ("train.epochs", 0, "train"),
        ("data.name", "mnist", "data.name"),
    ],
)
def test_spec_errors_name_the_field(path, value, field):
    with pytest.raises(SpecError) as err:
        load_spec(changed(path, value), "quick")
    assert err.value.path.startswith(field), (err.value.path, str(err.value))


# ------------------------------------------------------------------------------ layout and draws
def _numpy_eigenmap(W: np.ndarray) -> np.ndarray:
    L = np.diag(W.sum(1)) - W
    _, U = np.linalg.eigh(L)
    return U[:, 1:3]


def test_eigenmap_matches_numpy_on_a_connected_graph():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(30, 6, generator=gen)
    g = latent_graph(x, k=5, kernel="cosine")
    W = np.zeros((30, 30))
    src, dst = g.edge_index.numpy()
    W[src, dst] = g.edge_weight.double().numpy()
    ref = _numpy_eigenmap(W)
    coords = eigenmap_layout(g)
    assert coords.shape == (30, 2)
    for j in range(2):  # same eigenvectors up to sign (distinct eigenvalues on a random graph)
        assert min(np.abs(coords[:, j] - ref[:, j]).max(), np.abs(coords[:, j] + ref[:, j]).max()) < 1e-6
        assert coords[np.abs(coords[:, j]).argmax(), j] > 0  # the sign convention


def test_eigenmap_of_a_disconnected_graph_does_not_collapse_components():
    # two far-apart clusters: the k-NN graph has 2 components
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(8, 5, generator=gen) * 0.1 + torch.tensor([1.0, 0, 0, 0, 0])
    b = torch.rand(8, 5, generator=gen) * 0.1 + torch.tensor([0, 0, 0, 0, 1.0])
    g = latent_graph(torch.cat([a, b]), k=3, kernel="cosine")
    W = np.zeros((16, 16))
    src, dst = g.edge_index.numpy()
    W[src, dst] = g.edge_weight.double().numpy()
    assert not W[:8, 8:].any()  # really disconnected
    coords = eigenmap_layout(g)
    # the regularized graph of the docstring, by hand
    eps = 1e-3 * W[W > 0].mean()
    ref = _numpy_eigenmap(W + eps * (1 - np.eye(16)))
    for j in range(2):
        assert min(np.abs(coords[:, j] - ref[:, j]).max(), np.abs(coords[:, j] + ref[:, j]).max()) < 1e-6
    # components separated along the first coordinate, and points inside a component not all identical
    assert len(set(np.sign(coords[:8, 0]))) == 1 and len(set(np.sign(coords[8:, 0]))) == 1
    assert np.sign(coords[0, 0]) != np.sign(coords[8, 0])
    assert np.ptp(coords[:8, 1]) > 1e-6


def test_draw_class_samples_is_balanced_and_distinct():
    y = np.repeat(np.arange(5), 7)
    idx = draw_class_samples(y, [4, 0, 2], 5, np.random.default_rng(0))
    assert list(y[idx]) == [4] * 5 + [0] * 5 + [2] * 5
    assert len(set(idx.tolist())) == 15
    with pytest.raises(ValueError, match="class 1 has 7 samples"):
        draw_class_samples(y, [1], 8, np.random.default_rng(0))


# ------------------------------------------------------------------------------ end to end
def _numpy_label_variation(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Normalized label variation of the cosine k-NN graph, max-symmetrized, no self-loops (METHOD.md)."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    S = u @ u.T
    np.fill_diagonal(S, -np.inf)
    nn_idx = np.argsort(-S, axis=1)[:, :k]
    M = np.zeros_like(S, dtype=bool)
    M[np.repeat(np.arange(len(x)), k), nn_idx.ravel()] = True
    M = M | M.T
    A = np.where(M, u @ u.T, 0.0)
    return float(A[y[:, None] != y[None, :]].sum() / A.sum())


def test_tiny_run_writes_figure_and_table_matching_numpy(tmp_path):
    summary = run_study(tiny_spec(), "quick", out_root=tmp_path, progress=False, log=lambda s: None)
    fig = tmp_path / "figures/tinytoy/toy_graphs.png"
    assert fig.exists() and fig.stat().st_size > 10_000
    with open(tmp_path / "results/tinytoy/label_variation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["module"] for r in rows] == ["input", "stage2", "pool"]
    # re-derive the figure's draw (draw 0 of seed 0) from the checkpoint, with NumPy graphs
    splits = load_dataset("digits", seed=0, train_size=200, test_size=100)
    model = build_model("small_cnn", width=4, num_classes=10)
    load_trained_model(tmp_path / "runs/tinytoy/quick/small_cnn_s0", model).eval()
    x, y = splits.train.tensors
    idx = draw_class_samples(y.numpy(), [0, 1, 2, 3], 5, np.random.default_rng(0))
    feats = {"input": x[idx].flatten(1)}
    with torch.no_grad():
        h2 = model.stage2(model.stage1(x[idx]))
        feats["stage2"] = h2.flatten(1)
        feats["pool"] = model.stage3(h2).mean(dim=(2, 3))
    for row in rows:
        ref = _numpy_label_variation(feats[row["module"]].double().numpy(), y[idx].numpy(), 5)
        assert abs(float(row["figure"]) - ref) < 1e-6, (row["module"], row["figure"], ref)
        assert 0 <= float(row["mean"]) <= 1 and int(row["dim"]) == feats[row["module"]].shape[1]
    assert summary["rows"][0]["figure"] == pytest.approx(float(rows[0]["figure"]))
