"""Every analysis and loss keeps its tensors on the device of its inputs.

Without a GPU, a device mismatch is provoked on purpose: the inputs are CPU tensors and the computation runs
under ``with torch.device("meta")``, which makes every tensor created WITHOUT an explicit ``device=`` a meta
tensor. Code that builds an index or a buffer on the default device instead of the input's (the bug of
``augmentation_invariance``: ``offsets`` / ``cand`` built on the CPU while the features sit on a GPU) then
fails or returns meta tensors. Each case must give CPU tensors equal to the plain CPU run, gradients included.
Where every op supports it, functions also run on meta inputs directly.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from geomlat import analysis as A
from geomlat import graphs, kernels, signals
from geomlat import losses as L
from geomlat import nnk as N
from geomlat.knn import knn, knn_graph


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    if isinstance(obj, N.NNKResult):
        return [obj.neighbors, obj.weights, obj.residual]
    if isinstance(obj, A.ManifoldGraphMetrics):
        return [obj.diameter_, obj.local_dim_, obj.participation_ratio_, obj.tangent_, obj.n_neighbors_]
    if hasattr(obj, "edge_index"):  # torch_geometric Data
        return [obj.edge_index, obj.edge_weight]
    return []


def _inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(24, 6, generator=gen)
    x2 = torch.rand(24, 5, generator=gen)
    y = torch.arange(3).repeat(8)
    logits = torch.randn(24, 3, generator=gen)
    g = graphs.latent_graph(x, k=5)
    g2 = graphs.latent_graph(x2, k=5)
    sig = torch.rand(24, generator=gen)
    return x, x2, y, logits, g, g2, sig


def _augment(t, gen):
    return t + 0.1 * torch.rand(t.shape, generator=gen, device=t.device)


ANALYSES = {
    "latent_graph": lambda x, x2, y, lo, g, g2, s: graphs.latent_graph(x, k=5),
    "latent_graph_rbf": lambda x, x2, y, lo, g, g2, s: graphs.latent_graph(x, k=5, kernel="rbf"),
    "latent_adjacency_mask_power": lambda x, x2, y, lo, g, g2, s: graphs.latent_adjacency(x, k=5, labels=y, mask="inter"),
    "from_dense": lambda x, x2, y, lo, g, g2, s: graphs.from_dense(graphs.to_dense(g)),
    "knn_cosine": lambda x, x2, y, lo, g, g2, s: knn(x, 5),
    "knn_euclidean": lambda x, x2, y, lo, g, g2, s: knn(x, 5, metric="euclidean", chunk_size=7),
    "knn_graph": lambda x, x2, y, lo, g, g2, s: knn_graph(x, 5),
    "laplacian_sym": lambda x, x2, y, lo, g, g2, s: signals.laplacian(g, "sym"),
    "label_variation": lambda x, x2, y, lo, g, g2, s: signals.label_variation(g, y, normalized=True),
    "signal_variation": lambda x, x2, y, lo, g, g2, s: signals.signal_variation(g, s),
    "nnk_weights": lambda x, x2, y, lo, g, g2, s: N.nnk_weights(x, 5),
    "nnk_weights_rbf_approx": lambda x, x2, y, lo, g, g2, s: N.nnk_weights(x, 5, kernel="rbf", solver="approx"),
    "nnk_graph": lambda x, x2, y, lo, g, g2, s: N.nnk_graph(x, 5),
    "nnk_interpolation": lambda x, x2, y, lo, g, g2, s: N.nnk_interpolation(x, y, 5),
    "manifold_graph_metrics": lambda x, x2, y, lo, g, g2, s: A.ManifoldGraphMetrics(k=5, node_chunk=10).fit(x),
    "geometric_stability": lambda x, x2, y, lo, g, g2, s: A.geometric_stability(x, x2, k=5),
    "augmentation_invariance": lambda x, x2, y, lo, g, g2, s: A.augmentation_invariance(lambda t: 2 * t, x, _augment, n_aug=3),
    "layer_similarity_lgg": lambda x, x2, y, lo, g, g2, s: A.layer_similarity({"a": x}, {"b": x2}, method="lgg"),
    "layer_similarity_cka": lambda x, x2, y, lo, g, g2, s: A.layer_similarity({"a": x}, {"b": x2}, method="cka"),
    "layer_similarity_knn": lambda x, x2, y, lo, g, g2, s: A.layer_similarity({"a": x}, {"b": x2}, method="knn_overlap", k=5),
    "knn_decisions": lambda x, x2, y, lo, g, g2, s: A.knn_decisions(x, y, 5),
    "decision_consistency": lambda x, x2, y, lo, g, g2, s: A.decision_consistency({"a": x}, {"b": x2}, [("a", "b")], y, 5),
    "layer_label_variation": lambda x, x2, y, lo, g, g2, s: A.layer_label_variation({"a": x, "b": x2}, y, k=5),
    "fourier_basis": lambda x, x2, y, lo, g, g2, s: A.fourier_basis(g),
    "label_spectrum": lambda x, x2, y, lo, g, g2, s: A.label_spectrum(g, y),
    "lowpass": lambda x, x2, y, lo, g, g2, s: A.lowpass(g, s, cutoff=0.5),
    "spectral_distance": lambda x, x2, y, lo, g, g2, s: A.spectral_distance_between_layers([g, g2]),
}

LOSSES = {
    "gkd": lambda: L.GKD(),
    "gkd_knn_inter_p2": lambda: L.GKD(k=5, mask="inter", power=2),
    "gkd_paper_intra_p2": lambda: L.GKD(k=5, mask="intra", power=2, order="paper"),
    "rkd_distance": lambda: L.RKDDistance(),
    "rkd_angle": lambda: L.RKDAngle(),
    "similarity_preserving": lambda: L.SimilarityPreserving(),
    "fitnet": lambda: L.FitNet(5, 6),
}


def _check_same(ref, out):
    ref_t, out_t = _tensors(ref), _tensors(out)
    assert len(ref_t) == len(out_t)
    for a, b in zip(ref_t, out_t):
        assert b.device.type == "cpu", f"a returned tensor is on {b.device}"
        if a.dtype.is_floating_point:
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, equal_nan=True)
        else:
            assert torch.equal(a, b)
    if not ref_t:  # plain Python results (floats, dicts of floats)
        assert out == ref


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_analysis_creates_tensors_on_the_input_device(name):
    args = _inputs()
    ref = ANALYSES[name](*args)
    with torch.device("meta"):
        out = ANALYSES[name](*args)
    _check_same(ref, out)


def _loss_and_grads(loss_fn, x, x2, y):
    s = x2.clone().requires_grad_(True)
    val = loss_fn([x], [s], y)
    val.backward()
    return val.detach(), s.grad


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_distillation_loss_creates_tensors_on_the_input_device(name):
    x, x2, y, logits, *_ = _inputs()
    loss_fn = LOSSES[name]()  # built outside the context: its parameters are CPU tensors
    ref = _loss_and_grads(loss_fn, x, x2, y)
    with torch.device("meta"):
        out = _loss_and_grads(loss_fn, x, x2, y)
    _check_same(ref, out)


def test_other_losses_create_tensors_on_the_input_device():
    x, x2, y, logits, *_ = _inputs()

    cases = [  # (loss of an output o, the input that plays o)
        (lambda o: L.LabelVariationLoss()(o, y), x2),
        (lambda o: L.LabelVariationLoss(normalized=True, k=5)(o, y), x2),
        (lambda o: L.HintonKD()(logits, o, y), logits.flip(0)),
        (lambda o: L.SmoothnessRegularizer(k=5)([x, o], y), x2),
        (lambda o: L.label_variation_power(o, y, m=2, k=5), x2),
        (lambda o: L.label_variation_power_dense(o, y, m=3), x2),
    ]

    def run():
        out = []
        for fn, src in cases:
            o = src.clone().requires_grad_(True)
            val = fn(o)
            val.backward()
            out += [val.detach(), o.grad]
        return out

    ref = run()
    with torch.device("meta"):
        out = run()
    _check_same(ref, out)


def test_objectives_create_tensors_on_the_input_device():
    from geomlat.objectives import BottleneckCrossEntropy, LabelVariationObjective, SmoothnessObjective

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    x, _, y, *_ = _inputs()
    objectives = [LabelVariationObjective(model), BottleneckCrossEntropy(model, num_classes=3, embed_dim=3),
                  SmoothnessObjective(model, layers=["1", "3"])]

    def run():
        out = []
        for obj in objectives:
            obj.zero_grad()
            _, terms = obj(x, y)
            sum(terms.values()).backward()
            out += [t.detach() for t in terms.values()] + [p.grad.clone() for p in obj.parameters()]
        return out

    ref = run()
    with torch.device("meta"):
        out = run()
    _check_same(ref, out)


def test_functions_run_on_meta_inputs():
    # no data-dependent checks on these paths: they run on meta tensors end to end and stay there
    x = torch.empty(24, 6, device="meta")
    logits = torch.empty(24, 3, device="meta")
    y = torch.empty(24, dtype=torch.long, device="meta")
    K = torch.empty(5, 4, 4, device="meta")
    b = torch.empty(5, 4, device="meta")
    assert L.HintonKD()(logits, logits, y).device.type == "meta"
    assert N.solve_nnk_approx(K, b).device.type == "meta"
    assert kernels.gram(x).device.type == "meta" and kernels.squared_distances(x).device.type == "meta"
    assert graphs.normalize_adjacency(torch.empty(6, 6, device="meta")).device.type == "meta"
