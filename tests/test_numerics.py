"""Numerics of the geometry core and the losses (issue 11): degenerate batches, half precision and
autocast, inputs whose squared norms overflow or vanish, zero-width features, Distiller weights.

References are independent: float64 NumPy (``tests/reference.py``) for the graphs, and the same loss on
the same values in float32 / float64 for the precision checks (the half path must be the float32 one).
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from geomlat import latent_graph, to_dense
from geomlat.graphs import similarity
from geomlat.kernels import estimate_sigma, squared_distances
from geomlat.losses import (
    GKD,
    FitNet,
    HintonKD,
    LabelVariationLoss,
    RKDAngle,
    RKDDistance,
    SimilarityPreserving,
    SmoothnessRegularizer,
    label_variation_power,
)
from geomlat.objectives import Distiller
from geomlat.signals import label_variation

from reference import np_label_variation, np_lgg

HALF = [torch.float16, torch.bfloat16]
B, D = 12, 16
LABELS = torch.arange(B) % 3


def _features(seed=0, signed=False, scale=1.0, b=B, d=D):
    """(b, d) features with a zero row (0) and two coincident rows (2 and 3)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, d, generator=gen) * scale
    if signed:
        x = x - 0.5 * scale
    x[0] = 0.0
    x[3] = x[2]
    return x


# ------------------------------------------------------------------------------ every loss, one table
def _losses():
    """(name, fn(teacher_feats, student_feats) -> scalar, signed features?) for every loss of geomlat."""
    torch.manual_seed(3)
    fit = FitNet(D, D)
    return [
        ("gkd", lambda t, s: GKD()([t], [s]), False),
        ("gkd_k", lambda t, s: GKD(k=3)([t], [s]), False),
        ("rkd_d", lambda t, s: RKDDistance()([t], [s]), True),
        ("rkd_a", lambda t, s: RKDAngle()([t], [s]), True),
        ("sp", lambda t, s: SimilarityPreserving()([t], [s]), True),
        ("hinton", lambda t, s: HintonKD(T=4)(t, s), True),
        ("fitnet", lambda t, s: fit([t], [s]), True),
        ("label_variation", lambda t, s: LabelVariationLoss(normalized=True)(s, LABELS), True),
        ("label_variation_k", lambda t, s: LabelVariationLoss(k=3)(s, LABELS), True),
        ("regularizer", lambda t, s: SmoothnessRegularizer()([t.relu(), s], LABELS), False),
        ("regularizer_k", lambda t, s: SmoothnessRegularizer(k=3, normalized=True)([t.relu(), s], LABELS), False),
        ("lv_power", lambda t, s: label_variation_power(s, LABELS, m=2, normalized=True), False),
    ]


LOSS_NAMES = [name for name, _, _ in _losses()]


def _loss(name):
    return {n: (fn, signed) for n, fn, signed in _losses()}[name]


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_samples_give_finite_small_gradients(name, dtype):
    """Every sample of the student coincides: the loss and its gradients stay finite and O(1) (the RBF
    bandwidth used to be 3.3e-13 there, and the label-variation gradient 1.8e16)."""
    fn, signed = _loss(name)
    teacher = _features(seed=1, signed=signed).to(dtype)
    row = _features(seed=2, signed=signed)[5].to(dtype)
    student = row.repeat(B, 1).requires_grad_()
    value = fn(teacher, student)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().max() < 10.0, student.grad.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_estimate_sigma_of_coincident_samples_is_one(dtype):
    x = torch.ones(6, 3, dtype=dtype)
    sigma = estimate_sigma(squared_distances(x))
    assert sigma.item() == 1.0
    # one sample apart: its 1st-neighbor distance is sqrt(3), the five others' is 0 (they coincide)
    x[0] = 2.0
    sq = squared_distances(x).requires_grad_()
    sigma = estimate_sigma(sq, k=1)
    assert sigma.item() == pytest.approx(math.sqrt(3.0) / 6 / 3.0, rel=1e-6)
    sigma.backward()
    assert torch.isfinite(sq.grad).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_losses_on_half_inputs_equal_float32(name, dtype, scale):
    """Half features with a zero row and coincident rows (and fp16 values whose squared norms overflow
    float16, scale 300): the value equals the float32 loss of the same values (the geometry is computed
    in float32), and the gradients are finite."""
    fn, signed = _loss(name)
    teacher = _features(seed=1, signed=signed, scale=scale).to(dtype)
    student = _features(seed=2, signed=signed, scale=scale).to(dtype).requires_grad_()
    value = fn(teacher, student)
    value.backward()
    s32 = student.detach().float().requires_grad_()
    ref = fn(teacher.float(), s32)
    ref.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    assert value.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    # the gradient is the float32 one rounded to the input's dtype
    assert torch.allclose(student.grad.float(), s32.grad.to(dtype).float(), rtol=1e-2, atol=1e-6 * s32.grad.abs().max().item())


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("kernel", ["cosine", "rbf", "cosine_shifted"])
@pytest.mark.parametrize("k", [None, 3])
def test_latent_graph_on_half_inputs_matches_float64_reference(dtype, kernel, k):
    """Full graph: with the zero row and coincident rows; k-NN: ties (coincident rows, the zero row's equal
    similarities) would make the selection arbitrary, so there the rows are distinct."""
    x = _features(signed=kernel != "cosine")
    if k is not None:
        x[[0, 3]] = torch.rand(2, D, generator=torch.Generator().manual_seed(9)) - (0.5 if kernel != "cosine" else 0.0)
    x = x.to(dtype)
    g = latent_graph(x, k=k, kernel=kernel, normalize="sym", labels=LABELS)
    assert g.edge_weight.dtype == torch.float32 and torch.isfinite(g.edge_weight).all()
    ref = np_lgg(x.double().numpy(), k=k, kernel=kernel, normalize="sym")
    np.testing.assert_allclose(to_dense(g).double().numpy(), ref, rtol=1e-5, atol=1e-6)
    lv = label_variation(g, normalized=True)
    assert lv.item() == pytest.approx(np_label_variation(ref, LABELS.numpy()) / ref.sum(), rel=1e-5)


def test_fp16_cosine_keeps_its_label_variation():
    """``relu(randn(20, 512)).half() * 20``: float16 Gram entries overflow, the variation was 0.0."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(20, 512)).half() * 20
    y = torch.arange(20) % 3
    lv = label_variation(latent_graph(x, kernel="cosine", labels=y), normalized=True)
    ref = np_lgg(x.double().numpy(), kernel="cosine")
    assert lv.item() == pytest.approx(np_label_variation(ref, y.numpy()) / ref.sum(), rel=1e-5)
    assert lv.item() > 0.5


# ------------------------------------------------------------------------------ autocast
class _Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D, width), nn.Linear(width, D)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = torch.cat([torch.zeros_like(h[:1]), h[1:]])  # a zero row, as a dead sample gives
        return h, self.fc2(h)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_losses_under_cpu_autocast(name):
    """Features produced under ``torch.autocast("cpu", bfloat16)`` and the loss computed inside it: the
    loss equals the float32 loss of the same bf16 features (no bf16 product inside), is within a few
    percent of the all-float32 run, and its gradients reach the parameters finite."""
    fn, signed = _loss(name)
    torch.manual_seed(5)
    teacher_net, student_net = _Net(D), _Net(D)
    x = torch.rand(B, D)
    x[3] = x[2]
    pick = (lambda out: out[1]) if signed else (lambda out: out[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t, s = pick(teacher_net(x)), pick(student_net(x))
        assert s.dtype == torch.bfloat16
        value = fn(t.detach(), s)
    value.backward()
    grads = [p.grad for p in student_net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(value)
    if name != "fitnet":  # FitNet's projection is a network layer: autocast runs it in bf16, as it should
        same = fn(t.detach().float(), s.detach().float())
        assert value.item() == pytest.approx(same.item(), rel=1e-5, abs=1e-7)
    full = fn(pick(teacher_net(x)).detach(), pick(student_net(x)))
    assert value.item() == pytest.approx(full.item(), rel=0.05, abs=1e-4)


def test_latent_graph_under_autocast_is_float32():
    x = _features()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adj = to_dense(latent_graph(x, kernel="cosine"))
    assert adj.dtype == torch.float32
    np.testing.assert_allclose(adj.double().numpy(), np_lgg(x.double().numpy()), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------ overflow / underflow
def _dense64(x, **kw):
    return to_dense(latent_graph(x, **kw)).double().numpy()


@pytest.mark.parametrize("kernel", ["cosine", "rbf", "cosine_shifted"])
@pytest.mark.parametrize("exponent", [-25, -19, 19])
def test_extreme_scales_match_the_float64_reference(kernel, exponent):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(20, 8, generator=gen)
    x = x.abs() if kernel == "cosine" else x
    scaled = x * 10.0**exponent
    adj = _dense64(scaled, k=5, kernel=kernel, normalize="sym")
    ref = np_lgg(scaled.double().numpy(), k=5, kernel=kernel, normalize="sym")
    assert np.isfinite(adj).all()
    np.testing.assert_allclose(adj, ref, rtol=1e-4, atol=1e-6)


def test_issue_cases_randn_1e19():
    """``latent_graph(torch.randn(20, 8) * 1e19, k=5)``: 170 NaN weights and a NaN label variation."""
    torch.manual_seed(0)
    x = torch.randn(20, 8)
    y = torch.arange(20) % 3
    big = latent_graph(x * 1e19, k=5, labels=y)
    unit = latent_graph(x, k=5, labels=y)
    assert torch.isfinite(big.edge_weight).all()
    assert torch.equal(big.edge_index, unit.edge_index)
    torch.testing.assert_close(big.edge_weight, unit.edge_weight, rtol=1e-4, atol=1e-6)
    assert label_variation(big).item() == pytest.approx(label_variation(unit).item(), rel=1e-4)


@pytest.mark.parametrize("scale", [1e-19, 1e-25])
def test_cosine_of_tiny_activations_does_not_drift(scale):
    """Scale 1e-19 drifted (0.714 -> 0.735) and 1e-25 gave all weights 0."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(20, 64))
    y = torch.arange(20) % 3
    ref = label_variation(latent_graph(x, kernel="cosine", labels=y), normalized=True)
    tiny = latent_graph(x * scale, kernel="cosine", labels=y)
    assert tiny.edge_weight.abs().max() > 0
    assert label_variation(tiny, normalized=True).item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("scale", [1e-25, 1e19])
def test_fixed_sigma_is_rescaled_with_the_batch(scale):
    """A fixed RBF bandwidth is in the units of x: (x * s, sigma * s) gives the graph of (x, sigma)."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(15, 6, generator=gen)
    adj = _dense64(x * scale, kernel="rbf", sigma=1.5 * scale)
    np.testing.assert_allclose(adj, _dense64(x, kernel="rbf", sigma=1.5), rtol=1e-4, atol=1e-6)
    sim = similarity(x * scale, "rbf", sigma=torch.tensor(1.5 * scale))
    torch.testing.assert_close(sim, similarity(x, "rbf", sigma=1.5), rtol=1e-4, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    exponent=st.floats(min_value=-25.0, max_value=19.0),
    kernel=st.sampled_from(["cosine", "rbf", "cosine_shifted"]),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_graph_is_scale_invariant(exponent, kernel, seed, dtype):
    """Property: the full graph of ``s * x`` is the graph of ``x`` for any s in [1e-25, 1e19]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(10, 5, generator=gen, dtype=dtype)
    x = x.abs() if kernel == "cosine" else x
    scaled = x * 10.0**exponent
    assert torch.isfinite(scaled).all() and (scaled != 0).any(dim=1).all()
    adj, unit = _dense64(scaled, kernel=kernel), _dense64(x, kernel=kernel)
    assert np.isfinite(adj).all()
    np.testing.assert_allclose(adj, unit, rtol=1e-4, atol=1e-5)


def test_ordinary_inputs_are_unchanged():
    """Ordinary float32 inputs never take the rescaling path: the weights are exactly those of the plain
    Gram formula (cos = G_ij / (n_i n_j); RBF with the estimated bandwidth)."""
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(16, 32, generator=gen)
    g = x @ x.T
    inv = g.diagonal().clamp_min(1e-24).rsqrt()
    assert torch.equal(similarity(x, "cosine"), g * inv[:, None] * inv[None, :])
    sq = (g.diagonal()[:, None] + g.diagonal()[None, :] - 2.0 * g).clamp_min(0.0)
    assert torch.equal(similarity(x, "rbf"), torch.exp(-sq / (2.0 * estimate_sigma(sq) ** 2)))


# ------------------------------------------------------------------------------ bad input
ZERO_WIDTH = {
    "latent_graph": lambda z: latent_graph(z, k=5),
    "similarity": lambda z: similarity(z, "rbf"),
    "gkd": lambda z: GKD()([torch.rand(20, 4)], [z]),
    "rkd_d": lambda z: RKDDistance()([z], [torch.rand(20, 4)]),
    "rkd_a": lambda z: RKDAngle()([torch.rand(20, 4)], [z]),
    "sp": lambda z: SimilarityPreserving()([torch.rand(20, 4)], [z]),
    "fitnet": lambda z: FitNet(4, 4)([torch.rand(20, 4, 0)], [torch.rand(20, 4, 0)]),
    "label_variation": lambda z: LabelVariationLoss()(z, torch.arange(20) % 2),
    "regularizer": lambda z: SmoothnessRegularizer()([torch.rand(20, 4), z], torch.arange(20) % 2),
}


@pytest.mark.parametrize("name", list(ZERO_WIDTH))
def test_zero_width_features_are_rejected(name):
    with pytest.raises(ValueError, match="zero.width"):
        ZERO_WIDTH[name](torch.empty(20, 0))


def _distiller(**weights):
    torch.manual_seed(0)
    teacher, student = nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 3))
    terms = {"kd": (HintonKD(), weights.pop("kd", 1.0))}
    return Distiller(student, teacher, terms, **weights)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, -1e-9])
@pytest.mark.parametrize("term", ["kd", "task"])
def test_distiller_rejects_bad_weights(bad, term):
    kw = {"kd": bad} if term == "kd" else {"task_weight": bad}
    with pytest.raises(ValueError, match=f"'{term}'"):
        _distiller(**kw)


def test_distiller_accepts_good_weights():
    d = _distiller(kd=0, task_weight=np.float32(0.5))
    assert d.weights["kd"] == 0.0 and d.task_weight == 0.5
    with pytest.raises(TypeError, match="'kd'"):
        _distiller(kd="heavy")


# ------------------------------------------------------------------------------ NNK and the analyses
@pytest.mark.parametrize("dtype", HALF)
def test_nnk_on_half_inputs_and_under_autocast(dtype):
    """NNK of half features (zero row included) is the NNK of the same values in float32, also when
    called under autocast."""
    from geomlat.nnk import nnk_graph

    x = _features(seed=11)
    x[3] = torch.rand(D, generator=torch.Generator().manual_seed(12))  # distinct rows: no k-NN ties
    half = x.to(dtype)
    ref = to_dense(nnk_graph(half.float(), k=4, kernel="cosine"))
    got = to_dense(nnk_graph(half, k=4, kernel="cosine"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = to_dense(nnk_graph(half, k=4, kernel="cosine"))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(auto.double(), ref.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", HALF)
def test_layer_label_variation_on_half_inputs(dtype):
    from geomlat.analysis.layerwise import layer_label_variation

    x = _features(seed=13).to(dtype)
    got = layer_label_variation({"a": x}, LABELS, k=None, kernel="cosine", normalized=True)["a"]
    ref = np_lgg(x.double().numpy())
    assert got == pytest.approx(np_label_variation(ref, LABELS.numpy()) / ref.sum(), rel=1e-5)


@pytest.mark.parametrize("scale", [1e-25, 1e-19, 1e19])
@pytest.mark.parametrize("k", [None, 3])
def test_regularizer_is_scale_invariant(scale, k):
    """The label variation of a cosine LGG depends only on the rows' directions: the fast path (k=None)
    and the dense one give at scale s the value and the gradient (times 1/s) of scale 1."""
    gen = torch.Generator().manual_seed(14)
    x = torch.rand(B, D, generator=gen)
    x[0] = 0.0
    ref_x = x.clone().requires_grad_()
    ref = label_variation_power(ref_x, LABELS, m=2, k=k)
    ref.backward()
    big = (x * scale).requires_grad_()
    got = label_variation_power(big, LABELS, m=2, k=k)
    got.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-4)
    torch.testing.assert_close(big.grad * scale, ref_x.grad, rtol=1e-3, atol=1e-5 * ref_x.grad.abs().max().item())


@pytest.mark.parametrize("name", ["rkd_d", "rkd_a", "sp"])
@pytest.mark.parametrize("scale", [1e-25, 1e-7, 1e19])
def test_relational_losses_are_scale_invariant(name, scale):
    """RKD-D (distances / their mean), RKD-A (unit vectors) and SP (row-normalized Gram) do not depend on a
    global scale of either side; at scale 1e-7 RKD-D's distances fell under its 1e-12 eps (loss 0)."""
    fn, _ = _loss(name)
    teacher, student = torch.randn(B, D, generator=torch.Generator().manual_seed(15)), torch.randn(B, 8)
    ref = fn(teacher, student)
    assert fn(teacher * scale, student).item() == pytest.approx(ref.item(), rel=1e-4)
    assert fn(teacher, student * scale).item() == pytest.approx(ref.item(), rel=1e-4)
