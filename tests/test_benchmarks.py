"""Benchmarks: the code runs at tiny sizes, and the authors'-approach baselines compute what geomlat computes.

Nothing here is timed: timings live in ``benchmarks/`` (``python -m benchmarks``).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_amp, bench_gkd, bench_knn, bench_lgg, bench_nnk, bench_nnk_knn, bench_regularizer, run  # noqa: E402
from benchmarks.common import Result, interleaved  # noqa: E402
from benchmarks.reference import (  # noqa: E402
    authors_label_variation,
    authors_lgg,
    authors_nnk_weights,
    authors_regularizer,
    loop_knn_mask,
    scipy_nnk_weights,
)
from geomlat import knn, latent_graph  # noqa: E402
from geomlat.graphs import knn_mask, similarity  # noqa: E402
from geomlat.losses import SmoothnessRegularizer, label_variation_power  # noqa: E402
from geomlat.nnk import nnk_graph, nnk_weights  # noqa: E402


def relu_feats(b, d, seed):
    """Positive features without tied similarities (ties would make the k-NN sets ambiguous)."""
    return torch.rand(b, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.01


@pytest.mark.parametrize("k", [None, 4])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_authors_label_variation_equals_fast_path(k, m):
    x = relu_feats(20, 12, m)
    y = torch.randint(0, 4, (20,), generator=torch.Generator().manual_seed(1))
    want = label_variation_power(x, y, m, k)
    assert want.item() > 0
    assert authors_label_variation(x, y, m, k).item() == pytest.approx(want.item(), rel=1e-10)


@pytest.mark.parametrize("k", [None, 3])
def test_authors_regularizer_equals_smoothness_regularizer_with_gradients(k):
    feats = [relu_feats(16, d, d).requires_grad_(True) for d in (6, 9, 5)]
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    ours = SmoothnessRegularizer(k=k)(feats, y)
    ref = authors_regularizer(feats, y, k=k)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10) and ours.item() > 0
    g_ours = torch.autograd.grad(ours, feats)
    g_ref = torch.autograd.grad(ref, feats)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_loop_knn_mask_equals_knn_mask():
    x = relu_feats(30, 8, 3)
    sim = similarity(x, "cosine")
    assert torch.equal(loop_knn_mask(sim, 5), knn_mask(sim, 5))


def test_authors_lgg_equals_latent_graph():
    x = relu_feats(40, 16, 4)
    edge_index, weight = authors_lgg(x, 5)
    g = latent_graph(x, k=5, kernel="cosine", normalize="sym")
    assert torch.equal(edge_index, g.edge_index)
    torch.testing.assert_close(weight, g.edge_weight, rtol=1e-12, atol=1e-14)


def test_scipy_nnk_loop_equals_batched_exact():
    x = bench_nnk.points(120, 16, seed=5).double()
    nbrs = knn(x, 12)
    ours = nnk_weights(x, 12, neighbors=nbrs).weights.numpy()
    ref = scipy_nnk_weights(x.numpy(), nbrs.numpy())
    assert (ref > 0).sum(1).mean() < 12  # NNK prunes: a real comparison, not k-NN weights
    np.testing.assert_allclose(ours, ref, atol=1e-8)


def _node_systems(x: np.ndarray, nbrs: np.ndarray):
    """Per-node cosine K_SS (n, k, k) and K_Si (n, k) in NumPy."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    xs = unit[nbrs]
    return xs @ xs.transpose(0, 2, 1), np.einsum("nkd,nd->nk", xs, unit)


def test_authors_nnk_loop_exact_where_the_unconstrained_solution_is_nonnegative():
    # the authors' pruning solves K_SS t = b on the candidates with b > tol; if that solution is already >= 0
    # it is the NNLS optimum and the heuristic must return it
    x = bench_nnk.points(200, 16, seed=7).double().numpy()
    nbrs = knn(torch.from_numpy(x), 4).numpy()
    K, b = _node_systems(x, nbrs)
    free = np.linalg.solve(K, b[:, :, None])[:, :, 0]
    easy = (free > 1e-8).all(1)
    assert easy.sum() >= 20  # enough such nodes for a real check
    ours, exact = authors_nnk_weights(x, nbrs), scipy_nnk_weights(x, nbrs)
    np.testing.assert_allclose(ours[easy], exact[easy], atol=1e-10)
    np.testing.assert_allclose(ours[easy], free[easy], atol=1e-10)


def test_authors_nnk_loop_is_a_pruning_heuristic():
    x = bench_nnk.points(150, 16, seed=8).double().numpy()
    nbrs = knn(torch.from_numpy(x), 12).numpy()
    auth, exact = authors_nnk_weights(x, nbrs), scipy_nnk_weights(x, nbrs)
    assert (auth >= 0).all() and ((auth > 0).sum(1) >= 1).all()
    K, b = _node_systems(x, nbrs)
    # its last step solves K_PP t_P = b_P on the kept set P: stationarity on its own support
    for i in range(len(x)):
        P = auth[i] > 0
        np.testing.assert_allclose(K[i][np.ix_(P, P)] @ auth[i, P], b[i, P], atol=1e-8)
    # where it differs from the exact NNLS weights, its objective 1/2 t'Kt - b't is higher (it stopped early)
    obj = lambda t: 0.5 * np.einsum("nk,nkl,nl->n", t, K, t) - (b * t).sum(1)  # noqa: E731
    differ = np.abs(auth - exact).max(1) > 1e-5
    assert differ.sum() >= 10
    assert (obj(auth)[differ] > obj(exact)[differ] + 1e-9).all()
    np.testing.assert_allclose(bench_nnk.objective(x, nbrs, auth), obj(auth), atol=1e-12)


def test_authors_nnk_loop_duplicate_of_the_center_takes_all_the_weight():
    x = bench_nnk.points(30, 8, seed=9).double().numpy()
    x = np.concatenate([x, x[:1]])  # point 30 duplicates point 0
    nbrs = knn(torch.from_numpy(x), 5).numpy()
    w = authors_nnk_weights(x, nbrs)
    assert 30 in nbrs[0]
    np.testing.assert_allclose(w[0], np.where(nbrs[0] == 30, 1.0, 0.0), atol=1e-12)


def test_nnk_vs_knn_bench_runs_and_explains_a_miss():
    cfg = dict(run.PROFILES["smoke"], threads=1)
    (result,) = bench_nnk_knn.run(cfg)
    assert result.name == "nnk_vs_knn" and result.goal == "<= 2"
    assert math.isfinite(result.value) and result.value > 0
    assert "mean NNK degree" in result.detail
    # the timed NNK side builds a pruned sub-graph of the symmetrized k-NN graph (dense k-NN as the reference)
    n, d, k = cfg["nnk_knn_size"]
    fns, x, box = bench_nnk_knn.sides(n, d, k)
    fns["nnk"]()
    g = nnk_graph(x, k, knn_backend="chunked")
    nb = knn(x, k)
    knn_pairs = {(i, int(j)) for i in range(n) for j in nb[i]}
    knn_pairs |= {(j, i) for i, j in knn_pairs}
    edges = set(map(tuple, g.edge_index.T.tolist()))
    assert edges <= knn_pairs and len(edges) < len(knn_pairs)
    assert box["degree"] == pytest.approx(len(edges) / n)
    if result.met() is False:
        assert result.why and any(ch.isdigit() for ch in result.why)


def test_faiss_knn_equals_chunked():
    pytest.importorskip("faiss")
    x = torch.randn(400, 24, generator=torch.Generator().manual_seed(6))
    ours = knn(x, 7, backend="chunked", chunk_size=64)
    theirs = bench_knn.faiss_knn(x, 7)
    assert torch.equal(ours.sort(1).values, theirs.sort(1).values)


def test_interleaved_and_result():
    calls = []
    t = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1)
    assert calls == ["a", "b"] * 4 and len(t.times["a"]) == 3
    assert Result("x", 1.2, "<= 1.3", "x").met() and not Result("x", 1.4, "<= 1.3", "x").met()
    assert Result("x", 25, ">= 20", "x").met() and Result("x", 1, "info", "x").met() is None
    assert Result("x", float("nan"), "<= 1.5", "x").met() is None  # not measured (optional competitor missing)
    with pytest.raises(ValueError, match="reps"):
        interleaved({"a": lambda: None}, reps=0)


def test_benchmarks_run_at_tiny_sizes(tmp_path):
    cfg = dict(run.PROFILES["smoke"], threads=1)
    batches = {12: {"reps": 1, "warmup": 0}, 16: {"reps": 1, "warmup": 0, "authors_in_step": False}}
    results = bench_regularizer.bench_model("tiny", "small_cnn", (1, 8, 8), batches, {"width": 4})
    results += bench_gkd.run(cfg) + bench_lgg.run(cfg) + bench_nnk.run(cfg) + bench_knn.run(cfg) + bench_amp.run(cfg)
    names = {r.name for r in results}
    for name in ("gkd_overhead", "lgg_build", "nnk_speedup", "knn_vs_faiss", "regularizer_overhead_full_tiny_b12",
                 "regularizer_overhead_knn_tiny_b16", "amp_gkd_step", "amp_regularizer_step"):
        assert name in names
    for r in results:
        if r.name != "knn_cluster_vs_chunked" and not (r.name == "knn_vs_faiss" and "skipped" in r.detail):
            assert math.isfinite(r.value) and r.value >= 0, r
    assert next(r for r in results if r.name == "nnk_max_weight_difference").value < 1e-8
    text = run.markdown(results, "# t", {"lgg": bench_lgg.scaling(cfg), "nnk": bench_nnk.scaling(cfg)})
    assert "| lgg_build |" in text
    for r in results:  # a missed goal is explained under the table, with numbers measured in the run
        if r.met() is False:
            assert r.why and any(ch.isdigit() for ch in r.why), r.name
            assert f"- **{r.name}** ({run._fmt(r.value)}, goal {r.goal}): {r.why}" in text
    record = json.loads(json.dumps([r.as_json() for r in results]))
    assert set(record[0]) == {"name", "value", "goal", "unit"}


def test_platonic_baselines_equal_geomlat_and_similarity_bench_runs():
    from benchmarks import bench_similarity
    from benchmarks.reference import platonic_lcs_knn, platonic_linear_cka, platonic_mutual_knn
    from geomlat.analysis import representation_similarity

    x, y = bench_similarity.features(120, 12, seed=3)
    x, y = x.double(), y.double()
    assert platonic_mutual_knn(x, y, 5) == pytest.approx(representation_similarity(x, y, "mutual_knn", topk=5))
    assert platonic_lcs_knn(x, y, 5) == pytest.approx(representation_similarity(x, y, "lcs_knn", topk=5))
    assert platonic_linear_cka(x, y) == pytest.approx(representation_similarity(x, y, "linear_cka"), abs=1e-12)
    results = bench_similarity.run(dict(run.PROFILES["smoke"], threads=1))
    assert {r.name for r in results} == {f"similarity_{m}_speedup_vs_platonic" for m in ("mutual_knn", "lcs_knn", "linear_cka")}
    assert all(math.isfinite(r.value) and r.value > 0 for r in results)
