"""SmoothnessRegularizer: fast path vs dense reference vs NumPy, no B x B matrix, zero rows, gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from geomlat.losses import SmoothnessRegularizer, label_variation_power, label_variation_power_dense
from reference import np_lgg


def np_sigma(x, y, m, k=None, normalized=False):
    """tr(V^T L^m V) with a dense NumPy Laplacian (np.linalg.matrix_power)."""
    adj = np_lgg(x, k=k, kernel="cosine")
    lap = np.diag(adj.sum(1)) - adj
    v = np.eye(y.max() + 1)[y]
    sigma = np.trace(v.T @ np.linalg.matrix_power(lap, m) @ v)
    if normalized:
        total = adj.sum()
        sigma = sigma / total**m if total else 0.0
    return sigma


def layers(b=10, seed=0, zero_rows=()):
    gen = torch.Generator().manual_seed(seed)
    # the third layer is sparse like a ReLU output, yet with no tied similarities (ties make k-NN ambiguous)
    sparse = torch.rand(b, 5, generator=gen, dtype=torch.float64) * (torch.rand(b, 5, generator=gen) < 0.5)
    sparse[:, 0] = 0.1 + torch.rand(b, generator=gen, dtype=torch.float64)
    feats = [torch.rand(b, 4, 2, generator=gen, dtype=torch.float64) + 0.01, torch.rand(b, 6, generator=gen, dtype=torch.float64) + 0.01, sparse]
    for f in feats:
        f[list(zero_rows)] = 0.0
    return feats, torch.randint(0, 3, (b,), generator=gen)


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("zero_rows", [(), (0, 4)])
def test_fast_equals_dense_equals_numpy(m, k, normalized, zero_rows):
    feats, y = layers(seed=m, zero_rows=zero_rows)
    for f in feats:
        fast = label_variation_power(f, y, m, k, normalized)
        dense = label_variation_power_dense(f, y, m, k, normalized)
        want = np_sigma(f.numpy(), y.numpy(), m, k, normalized)
        assert torch.isfinite(fast) and torch.isfinite(dense)
        assert fast.item() == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert dense.item() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_m1_is_the_label_variation_of_the_lgg():
    from geomlat import label_variation, latent_graph

    feats, y = layers(seed=5)
    for f in feats:
        for normalized in (False, True):
            want = label_variation(latent_graph(f, kernel="cosine", labels=y), normalized=normalized)
            assert label_variation_power(f, y, 1, normalized=normalized).item() == pytest.approx(want.item(), rel=1e-10)


@pytest.mark.parametrize("power,gamma,k", [(2, 0.01, None), (1, 0.5, None), (2, 0.1, 4)])
def test_regularizer_matches_numpy(power, gamma, k):
    feats, y = layers(seed=6)
    got = SmoothnessRegularizer(power=power, gamma=gamma, k=k)(feats, y).item()
    sig = [np_sigma(f.numpy(), y.numpy(), power, k) for f in feats]
    want = gamma**power * sum(abs(b - a) for a, b in zip(sig, sig[1:])) / (len(sig) - 1)
    assert got == pytest.approx(want, rel=1e-9)


class ShapeRecorder(TorchDispatchMode):
    """Records the number of elements of every tensor produced by any operator (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_fast_path_never_builds_a_batch_by_batch_matrix():
    b = 256
    gen = torch.Generator().manual_seed(7)
    feats = [torch.rand(b, 8, generator=gen).requires_grad_() for _ in range(3)]
    y = torch.randint(0, 10, (b,), generator=gen)
    with ShapeRecorder() as rec:
        SmoothnessRegularizer()(feats, y).backward()
    assert rec.largest <= b * 2 * 10  # O(B d + B C) (the backward stacks [dY, M]: B x 2C), far below B^2 = 65536
    with ShapeRecorder() as rec:
        SmoothnessRegularizer(k=5)(feats, y)
    assert rec.largest >= b * b  # the k-NN path is dense (sanity check of the recorder)


def test_zero_rows_give_finite_gradients():
    feats, y = layers(seed=8, zero_rows=(1, 2))
    feats = [f.requires_grad_() for f in feats]
    value = SmoothnessRegularizer(power=2, gamma=1.0)(feats, y)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert all(torch.isfinite(f.grad).all() for f in feats)


def test_invariant_to_class_relabeling():
    feats, y = layers(seed=9)
    perm = torch.tensor([1, 2, 0])
    reg = SmoothnessRegularizer(gamma=1.0)
    assert reg(feats, perm[y]).item() == pytest.approx(reg(feats, y).item(), rel=1e-12)


@pytest.mark.parametrize("kwargs", [dict(power=2), dict(power=1, normalized=True), dict(power=2, k=3)])
def test_gradcheck(kwargs):
    feats, y = layers(b=6, seed=10)
    # entries >= 0.01 so that the finite differences never step into negative values
    feats = [f.reshape(6, -1)[:, :3].clamp_min(0.01).clone().requires_grad_() for f in feats]
    reg = SmoothnessRegularizer(gamma=1.0, **kwargs)
    assert torch.autograd.gradcheck(lambda *fs: reg(list(fs), y), tuple(feats))


def test_errors():
    feats, y = layers()
    with pytest.raises(ValueError, match=">= 2"):
        SmoothnessRegularizer()(feats[:1], y)
    with pytest.raises(ValueError, match="non-negative"):
        SmoothnessRegularizer()([feats[0] - 0.5, feats[1]], y)
    with pytest.raises(ValueError, match="vertices"):
        SmoothnessRegularizer()(feats, y[:4])
    with pytest.raises(ValueError, match=r"features\[1\] has batch size 9 but there are 10 labels"):
        SmoothnessRegularizer()([feats[0], feats[1][:9]], y)
    with pytest.raises(ValueError, match="non-finite"):
        SmoothnessRegularizer()([feats[0], feats[1] * float("nan")], y)
    with pytest.raises(ValueError, match="power"):
        SmoothnessRegularizer(power=0)
    # the global batch is the GlobalBatch wrapper's (tests/test_distributed.py), no per-loss flag
    with pytest.raises(TypeError, match="gather"):
        SmoothnessRegularizer(gather="global")


def test_split_products_equal_plain_products():
    """The CPU kernel behind the fast path (batched over slices of the feature axis) computes the same sums."""
    from geomlat.losses.regularizers import _SPLITS, mt_x

    gen = torch.Generator().manual_seed(11)
    d = 256 * _SPLITS  # the smallest feature size that takes the split path
    x, m = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in ((9, d), (9, 4)))
    torch.testing.assert_close(mt_x(m, x), m.T @ x, rtol=1e-12, atol=1e-10)
    odd = x[:, : d - 1]  # not divisible: plain product
    torch.testing.assert_close(mt_x(m, odd), m.T @ odd, rtol=0, atol=0)


@pytest.mark.parametrize("m,normalized", [(1, True), (2, False), (3, False)])
def test_wide_layers_fast_path_values_and_gradients(m, normalized):
    """d = 4,096 takes the split kernels: value against the dense reference (sparse rows and a zero row),
    gradient against finite differences (gradcheck's fast mode: random directions; entries >= 0.01 so
    that the differences stay non-negative)."""
    gen = torch.Generator().manual_seed(12)
    x = (torch.rand(7, 4096, generator=gen, dtype=torch.float64) + 0.01) * (torch.rand(7, 4096, generator=gen) < 0.3)
    x[3] = 0.0
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    fast = label_variation_power(x, y, m, None, normalized)
    dense = label_variation_power_dense(x, y, m, None, normalized)
    assert fast.item() == pytest.approx(dense.item(), rel=1e-10)
    x = (torch.rand(7, 4096, generator=gen, dtype=torch.float64) + 0.01).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: label_variation_power(f, y, m, None, normalized), (x,), fast_mode=True)


def test_adjacency_product_gradient_wrt_both_inputs():
    from geomlat.losses.regularizers import _CosineAdjacencyTimes

    gen = torch.Generator().manual_seed(13)
    x = (torch.rand(6, 5, generator=gen, dtype=torch.float64) + 0.05).requires_grad_()
    mat = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_CosineAdjacencyTimes.apply, (x, mat))
    adj = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    torch.testing.assert_close(_CosineAdjacencyTimes.apply(x, mat), (adj - torch.eye(6, dtype=torch.float64)) @ mat)


# ----------------------------------------------------------------------------- the authors' k (k_counts_self)
def np_sigma_authors(x, y, m, k):
    """laplacian_networks ``gsp.laplacian``, dense float64: W = cosine Gram with the self-similarity 1 on its
    diagonal; for k < B each row is sorted (diagonal included), its k largest entries marked, the marks
    symmetrized with ``min(1, A + A^T)`` and multiplied into W; ``L = D - W``; ``tr(V^T L^m V)``."""
    x = x.reshape(len(x), -1).astype(np.float64)
    b = len(x)
    unit = np.array([row / np.linalg.norm(row) for row in x])
    w = unit @ unit.T
    if k != b:
        marks = np.zeros((b, b))
        for i in range(b):
            for j in np.argsort(w[i], kind="stable")[-k:]:
                marks[i, j] = 1.0
        w = w * np.minimum(1.0, marks + marks.T)
    lap = np.diag(w.sum(1)) - w
    lap_m = lap
    for _ in range(m - 1):
        lap_m = lap_m @ lap
    v = np.eye(y.max() + 1)[y]
    return np.trace(v.T @ lap_m @ v)


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("k", [2, 4, 7, 10])
def test_k_counts_self_is_the_authors_convention(m, k):
    feats, y = layers(seed=14)  # B = 10, no zero rows, no tied similarities
    for f in feats:
        want = np_sigma_authors(f.numpy(), y.numpy(), m, k)
        authors = label_variation_power(f, y, m, k, k_counts_self=True)
        assert authors.item() == pytest.approx(want, rel=1e-10, abs=1e-12)
        assert label_variation_power_dense(f, y, m, k, k_counts_self=True).item() == pytest.approx(want, rel=1e-10, abs=1e-12)
        # the authors' k is geomlat's k - 1 (k = B: every other vertex, the full graph)
        ours = label_variation_power(f, y, m, k - 1)
        assert ours.item() == pytest.approx(authors.item(), rel=1e-12, abs=1e-14)
        if k < 10:  # the conventions differ: geomlat's default with the same k keeps one more neighbor
            assert label_variation_power(f, y, m, k).item() != pytest.approx(want, rel=1e-6)
    reg_authors = SmoothnessRegularizer(power=m, gamma=1.0, k=k, k_counts_self=True)
    sig = [np_sigma_authors(f.numpy(), y.numpy(), m, k) for f in feats]
    want = sum(abs(b - a) for a, b in zip(sig, sig[1:])) / (len(sig) - 1)
    assert reg_authors(feats, y).item() == pytest.approx(want, rel=1e-10)
    assert reg_authors(feats, y).item() == pytest.approx(SmoothnessRegularizer(power=m, gamma=1.0, k=k - 1)(feats, y).item(), rel=1e-12)


def test_k_counts_self_errors():
    feats, y = layers()  # B = 10
    with pytest.raises(ValueError, match="k must be >= 2"):
        SmoothnessRegularizer(k=1, k_counts_self=True)
    with pytest.raises(ValueError, match="at most the batch size 10"):
        SmoothnessRegularizer(k=11, k_counts_self=True)(feats, y)
    with pytest.raises(ValueError, match="at most the batch size 10"):
        label_variation_power(feats[0], y, 2, 11, k_counts_self=True)
    with pytest.raises(ValueError, match="at most the batch size 10"):
        label_variation_power_dense(feats[0], y, 2, 11, k_counts_self=True)
    with pytest.raises(ValueError, match="smaller than the batch size"):
        SmoothnessRegularizer(k=10)(feats, y)  # geomlat's default convention: k < B
    with pytest.raises(TypeError, match="k_counts_self"):
        SmoothnessRegularizer(k=3, k_counts_self="yes")
    assert SmoothnessRegularizer(k=3).k_counts_self is False  # geomlat's convention stays the default
