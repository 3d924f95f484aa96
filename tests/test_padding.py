"""Padding never enters the geometry (issue 19): appending padding positions to (B, T, H) token features,
with any values (NaN and huge ones included) and 0 in the attention_mask, changes no graph, loss or metric;
and masked mean pooling is the per-sample mean of the real tokens."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlat import latent_graph
from geomlat.analysis import layer_label_variation
from geomlat.graphs import latent_adjacency
from geomlat.losses import GKD, FitNet, LabelVariationLoss, RKDAngle, RKDDistance, SimilarityPreserving, SmoothnessRegularizer
from geomlat.nnk import nnk_layer_errors

B, H = 8, 5


def tokens(seed: int, b: int = B, t: int = 4, h: int = H, nonneg: bool = False):
    """(b, t, h) features and a right-padded (b, t) mask with 1..t real tokens per row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, generator=g, dtype=torch.float64)
    if nonneg:
        x = x.relu()
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return x, mask


pad_values = st.sampled_from([0.0, 1e30, -1e30, float("nan"), float("inf"), 3.5])


def pad(x: torch.Tensor, mask: torch.Tensor, extra: int, value: float, seed: int):
    """``x`` and ``mask`` with ``extra`` more positions: mask 0 there, and padding everywhere the mask is 0
    set to ``value`` plus noise (NaN stays NaN)."""
    g = torch.Generator().manual_seed(seed)
    b, t, h = x.shape
    noise = torch.randn(b, t + extra, h, generator=g, dtype=x.dtype)
    bigger = torch.cat([x, torch.zeros(b, extra, h, dtype=x.dtype)], 1)
    bigger_mask = torch.cat([mask, torch.zeros(b, extra, dtype=mask.dtype)], 1)
    filler = value + noise
    return torch.where(bigger_mask[:, :, None].bool(), bigger, filler), bigger_mask


def test_masked_mean_is_the_mean_of_the_real_tokens():
    x, mask = tokens(0)
    g = latent_graph(x, k=3, attention_mask=mask)
    # independent: a Python mean over each row's real tokens
    pooled = torch.stack([x[i, : int(mask[i].sum())].mean(0) for i in range(B)])
    want = latent_graph(pooled, k=3)
    assert torch.equal(g.edge_index, want.edge_index)
    assert torch.allclose(g.edge_weight, want.edge_weight, atol=1e-12)
    # the unmasked mean (padding included) gives another graph here
    adj_mask = latent_adjacency(x, attention_mask=mask)[0]
    adj_all = latent_adjacency(x, reduce="mean")[0]
    assert not torch.allclose(adj_mask, adj_all)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 1000), extra=st.integers(1, 3), value=pad_values,
       reduce=st.sampled_from([None, "mean", "first", "last"]), k=st.sampled_from([None, 3]))
def test_padding_changes_no_graph(seed, extra, value, reduce, k):
    x, mask = tokens(seed)
    xp, mp = pad(x, mask, extra, value, seed + 1)
    g, gp = (latent_graph(a, k=k, attention_mask=m, reduce=reduce) for a, m in ((x, mask), (xp, mp)))
    assert torch.equal(g.edge_index, gp.edge_index)
    assert torch.allclose(g.edge_weight, gp.edge_weight, rtol=1e-12, atol=1e-12)


def _losses():
    return {
        "gkd": GKD(), "gkd_knn_inter": GKD(k=3, mask="inter"), "gkd_paper": GKD(k=3, order="paper"),
        "rkd_d": RKDDistance(), "rkd_a": RKDAngle(), "sp": SimilarityPreserving(),
    }


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), extra=st.integers(1, 3), value=pad_values, nonneg=st.booleans())
def test_padding_changes_no_loss(seed, extra, value, nonneg):
    t, mask = tokens(seed, nonneg=nonneg)
    s = tokens(seed + 7, h=3, nonneg=nonneg)[0].requires_grad_()
    y = torch.arange(B) % 3
    tp, mp = pad(t, mask, extra, value, seed + 1)
    sp_, _ = pad(s.detach(), mask, extra, value, seed + 2)
    sp_.requires_grad_()
    for name, loss in _losses().items():
        a = loss([t], [s], y, attention_mask=mask)
        b = loss([tp], [sp_], y, attention_mask=mp)
        assert torch.isfinite(a) and torch.allclose(a, b, rtol=1e-10, atol=1e-12), name
        ga, = torch.autograd.grad(a, s)
        gb, = torch.autograd.grad(b, sp_)
        assert torch.allclose(ga, gb[:, : s.shape[1]], atol=1e-10), name
        assert torch.all(gb[:, s.shape[1]:] == 0), name  # no gradient reaches the padding
    torch.manual_seed(0)
    fit = FitNet(3, H).double()
    a, b = fit([t], [s], attention_mask=mask), fit([tp], [sp_], attention_mask=mp)
    assert torch.isfinite(a) and torch.allclose(a, b, rtol=1e-10)
    a.backward(), b.backward()
    # FitNet, independently: the MSE over the real positions only
    keep = mask.bool()
    want = ((fit.proj[0](s[keep]) - t[keep]) ** 2).mean()
    assert torch.allclose(a, want, rtol=1e-10)
    assert all(torch.isfinite(p.grad).all() for p in fit.parameters())
    lv = LabelVariationLoss(k=3, normalized=True)
    assert torch.allclose(lv(t, y, attention_mask=mask), lv(tp, y, attention_mask=mp), rtol=1e-10)
    if nonneg:
        reg = SmoothnessRegularizer(gamma=1.0)
        assert torch.allclose(reg([t, s], y, attention_mask=mask), reg([tp, sp_], y, attention_mask=mp), rtol=1e-10)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), extra=st.integers(1, 3), value=pad_values)
def test_padding_changes_no_metric(seed, extra, value):
    x, mask = tokens(seed, b=20)
    y = torch.arange(20) % 2
    xp, mp = pad(x, mask, extra, value, seed + 1)
    assert layer_label_variation({"a": x}, y, k=4, attention_mask=mask) == layer_label_variation({"a": xp}, y, k=4, attention_mask=mp)
    assert nnk_layer_errors({"a": x}, y, 5, attention_mask=mask) == nnk_layer_errors({"a": xp}, y, 5, attention_mask=mp)


def test_one_rule_for_3d_input_without_reduction():
    x, _ = tokens(3)
    y = torch.arange(B) % 2
    calls = {
        "latent_graph": lambda: latent_graph(x, k=3),
        "latent_adjacency": lambda: latent_adjacency(x, k=3),
        "GKD": lambda: GKD()(x, x),
        "RKDDistance": lambda: RKDDistance()(x, x),
        "SimilarityPreserving": lambda: SimilarityPreserving()(x, x),
        "LabelVariationLoss": lambda: LabelVariationLoss(k=3)(x, y),
        "layer_label_variation": lambda: layer_label_variation({"a": x}, y, k=3),
        "nnk_layer_errors": lambda: nnk_layer_errors({"a": x}, y, 3),
    }
    for name, call in calls.items():
        with pytest.warns(UserWarning, match=r"the 3-D input of shape \(8, 4, 5\) is flattened to \(8, 20\).*reduce='flatten'"):
            call()
    # the flattening asked for: no warning, the same values as a flattened input
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(latent_adjacency(x, k=3, reduce="flatten")[0], latent_adjacency(x.flatten(1), k=3)[0])
        assert layer_label_variation({"a": x}, y, reduce="flatten") == layer_label_variation({"a": x.flatten(1)}, y)


def test_mask_errors():
    x, mask = tokens(1)
    with pytest.raises(ValueError, match="reduce='flatten' with an attention_mask"):
        latent_graph(x, attention_mask=mask, reduce="flatten")
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, T\) = \(8, 4\)"):
        GKD()(x, x, attention_mask=mask[:, :3])
    empty = mask.clone()
    empty[2] = 0
    with pytest.raises(ValueError, match="GKD: teacher features: a row of attention_mask has no real token"):
        GKD()(x, x, attention_mask=empty)


def test_empty_features_raise_in_both():
    y = torch.arange(4)
    with pytest.raises(ValueError, match="layer_label_variation: features is empty"):
        layer_label_variation({}, y)
    with pytest.raises(ValueError, match="nnk_layer_errors: features is empty"):
        nnk_layer_errors({}, y, 2)


def test_gkd_default_kernel_rule():
    g = torch.Generator().manual_seed(4)
    t, s = torch.randn(10, 6, generator=g, dtype=torch.float64), torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.arange(10) % 3
    # post-ReLU features: the authors' cosine, the same value as before the default changed
    for kw in (dict(), dict(k=3, mask="inter"), dict(order="paper", k=3)):
        assert GKD(**kw)(t.relu(), s.relu(), y) == GKD(kernel="cosine", **kw)(t.relu(), s.relu(), y)
        # signed features (transformer states): RBF, where cosine is refused
        assert GKD(**kw)(t, s, y) == GKD(kernel="rbf", **kw)(t, s, y)
        with pytest.raises(ValueError, match="non-negative"):
            GKD(kernel="cosine", **kw)(t, s, y)
        # one signed side: both graphs RBF (one kernel per layer pair)
        assert GKD(**kw)(t.relu(), s, y) == GKD(kernel="rbf", **kw)(t.relu(), s, y)
    # NNK: cosine on data of any sign by default (a PSD kernel is all it needs); "auto" applies the LGG rule
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    lab = torch.arange(30) % 2
    assert nnk_layer_errors({"a": x}, lab, 4) == nnk_layer_errors({"a": x}, lab, 4, kernel="cosine")
    assert nnk_layer_errors({"a": x}, lab, 4, kernel="auto") == nnk_layer_errors({"a": x}, lab, 4, kernel="rbf")
    assert nnk_layer_errors({"a": x.relu()}, lab, 4, kernel="auto") == nnk_layer_errors({"a": x.relu()}, lab, 4, kernel="cosine")


def test_latent_graph_does_not_import_torch_geometric():
    code = ("import sys, geomlat\n"
            "geomlat.latent_graph\n"
            "from geomlat.losses import GKD, LabelVariationLoss, SmoothnessRegularizer\n"
            "import torch\n"
            "geomlat.latent_adjacency(torch.rand(6, 3), k=2)\n"
            "heavy = sorted(m for m in sys.modules if m.startswith('torch_geometric'))\n"
            "assert not heavy, heavy\n"
            "geomlat.latent_graph(torch.rand(6, 3), k=2)  # a Data object is built: now it is imported\n"
            "assert 'torch_geometric.data' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_padding_changes_no_streaming_or_manifold_metric():
    from geomlat.analysis.manifold import ManifoldGraphMetrics, geometric_stability
    from geomlat.analysis.streaming import streaming_nnk_metrics

    x, mask = tokens(11, b=30)
    xp, mp = pad(x, mask, 2, float("nan"), 12)
    y = torch.arange(30) % 3
    a = streaming_nnk_metrics({"a": x}, y, k=5, attention_mask=mask)["a"]
    b = streaming_nnk_metrics({"a": xp}, y, k=5, attention_mask=mp)["a"]
    assert a == b
    fa = ManifoldGraphMetrics(k=5, kernel="rbf").fit(x, attention_mask=mask).nnk_
    fb = ManifoldGraphMetrics(k=5, kernel="rbf").fit(xp, attention_mask=mp).nnk_
    assert torch.equal(fa.neighbors, fb.neighbors) and torch.allclose(fa.weights, fb.weights)
    assert geometric_stability(x, xp[:, :, :], k=5, attention_mask=None, reduce="first")["jaccard"] == 1.0


def test_gkd_auto_kernel_pair_rule_holds_under_deferred_checks():
    """Under the engine's deferred checks the pair's kernel is chosen on the device (no host read): the same
    values as the immediate choice, also for a pair with one signed side (both graphs RBF)."""
    from geomlat.checks import deferred_value_checks

    g = torch.Generator().manual_seed(5)
    t, s = torch.randn(10, 6, generator=g, dtype=torch.float64), torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.arange(10) % 3
    for kw in (dict(), dict(k=3, mask="inter"), dict(order="paper", k=3), dict(order="paper", k=3, reuse_teacher_knn=False)):
        for pair, kernel in (((t.relu(), s.relu()), "cosine"), ((t, s), "rbf"), ((t.relu(), s), "rbf")):
            expected = GKD(kernel=kernel, **kw)(*pair, y)
            with deferred_value_checks() as checks:
                value = GKD(**kw)(*pair, y)
            checks.verify()
            torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
