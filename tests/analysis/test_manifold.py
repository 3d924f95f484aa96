"""NNK manifold graph metrics on point clouds with known geometry."""

import pytest
import torch

from geomlat.analysis import ManifoldGraphMetrics, augmentation_invariance, geometric_stability


def line(n=40, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(n, generator=g, dtype=torch.float64) * 5).values
    return torch.randn(1, d, generator=g, dtype=torch.float64) + t[:, None] * torch.randn(1, d, generator=g, dtype=torch.float64)


def test_line_has_dimension_one_and_two_neighbors():
    m = ManifoldGraphMetrics(k=8, kernel="rbf").fit(line())
    assert torch.equal(m.local_dim_, torch.ones(40, dtype=torch.long))
    assert m.n_neighbors_.tolist() == [1] + [2] * 38 + [1]
    assert torch.allclose(m.participation_ratio_, torch.ones(40, dtype=torch.float64), atol=1e-8)
    # the tangent direction is the line's direction (up to sign)
    x = line()
    direction = (x[-1] - x[0]) / (x[-1] - x[0]).norm()
    assert torch.allclose((m.tangent_[:, 0] @ direction).abs(), torch.ones(40, dtype=torch.float64), atol=1e-8)


def test_plane_in_r10_has_dimension_two():
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(10, 2, generator=g, dtype=torch.float64))
    x = torch.rand(300, 2, generator=g, dtype=torch.float64) @ basis.T + 1.0
    m = ManifoldGraphMetrics(k=15, kernel="rbf").fit(x)
    assert int(m.local_dim_.max()) == 2 and m.summary_["local_dim_median"] == 2
    assert float((m.local_dim_ == 2).double().mean()) > 0.8
    # tangent directions lie in the plane
    proj = m.tangent_ @ basis  # (N, 2, 2)
    norms = m.tangent_.norm(dim=2)
    assert torch.allclose(proj.norm(dim=2), norms, atol=1e-8)


def test_diameter_range_and_brute_force():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(80, 12, generator=g)
    m = ManifoldGraphMetrics(k=10).fit(x)
    assert float(m.diameter_.min()) >= 0 and float(m.diameter_.max()) <= 2
    u = x.double() / x.double().norm(dim=1, keepdim=True)
    for i in range(0, 80, 7):
        nb = m.nnk_.neighbors[i][m.nnk_.weights[i] > 0]
        expected = max((float((u[a] - u[b]).norm()) for a in nb for b in nb), default=0.0)
        assert float(m.diameter_[i]) == pytest.approx(expected, abs=1e-9)
    # opposite points on a sphere: diameter 2 when both are NNK neighbors of a point between them
    pts = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    mm = ManifoldGraphMetrics(k=2, kernel="cosine_shifted").fit(pts)  # 0.5 + 0.5 cos: K_SS = I, theta = (1/2, 1/2)
    assert float(mm.diameter_[2]) == pytest.approx(2.0)


def test_geometric_stability():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(60, 16, generator=g, dtype=torch.float64)
    same = geometric_stability(x, x, k=8)
    assert same["jaccard"] == 1.0 and same["weight_correlation"] == pytest.approx(1.0)
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    rot = geometric_stability(x, 2.5 * x @ Q, k=8)  # cosine kernel: invariant to rotation and scale
    assert rot["jaccard"] == 1.0 and rot["weight_correlation"] == pytest.approx(1.0, abs=1e-9)
    other = geometric_stability(x, torch.rand(60, 16, generator=g, dtype=torch.float64), k=8)
    assert other["jaccard"] < 0.5
    # brute force Jaccard for one node
    from geomlat.nnk import nnk_weights
    y = torch.rand(60, 16, generator=g, dtype=torch.float64)
    res = geometric_stability(x, y, k=8)
    ra, rb = nnk_weights(x, 8), nnk_weights(y, 8)
    sa, sb = set(ra.neighbors[0][ra.mask[0]].tolist()), set(rb.neighbors[0][rb.mask[0]].tolist())
    assert float(res["jaccard_per_node"][0]) == pytest.approx(len(sa & sb) / len(sa | sb))


def test_augmentation_invariance():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(20, 8, generator=g) + 0.5

    def jitter(z, gen):
        return z + 0.3 * torch.randn(z.shape, generator=gen)

    ident = augmentation_invariance(lambda z: z, x, jitter, n_aug=6)
    invariant = augmentation_invariance(lambda z: z.sum(1, keepdim=True).expand(-1, 3).clamp_min(0), x, jitter, n_aug=6)
    assert ident.shape == (20,) and float(ident.min()) >= 0 and float(ident.max()) <= 2
    assert float(invariant.max()) < 1e-6 < float(ident.mean())  # a collapsing model is perfectly invariant
    # weaker augmentations move the representation less
    small = augmentation_invariance(lambda z: z, x, lambda z: z + 0.01 * torch.randn_like(z), n_aug=6)
    assert float(small.mean()) < float(ident.mean())
    with pytest.raises(ValueError, match="n_aug"):
        augmentation_invariance(lambda z: z, x, jitter, n_aug=1)
