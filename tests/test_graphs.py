import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import geomlat
from geomlat import from_dense, latent_graph, to_dense
from geomlat.kernels import estimate_sigma, squared_distances

from reference import np_lgg, np_similarity



@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _data(b=12, d=7, signed=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, d, generator=gen)
    return x - 0.5 if signed else x


CASES = list(itertools.product(
    ["cosine", "rbf", "cosine_shifted"], [None, 3], ["max", "mutual"], [None, "sym"], [None, "inter", "intra"]
))


@pytest.mark.parametrize("kernel,k,symmetrize,normalize,mask", CASES)
def test_latent_graph_matches_dense_numpy(kernel, k, symmetrize, normalize, mask):
    x = _data(signed=kernel != "cosine")
    labels = torch.arange(12) % 3
    g = latent_graph(x, k=k, kernel=kernel, symmetrize=symmetrize, normalize=normalize, mask=mask, labels=labels)
    expected = np_lgg(x.numpy(), k=k, kernel=kernel, symmetrize=symmetrize, normalize=normalize,
                      mask=mask, labels=labels.numpy())
    np.testing.assert_allclose(to_dense(g).numpy(), expected, atol=1e-12)
    # the structural edge set is exactly the support of the reference (weights are > 0 here)
    assert g.edge_index.shape[1] == int((expected != 0).sum())
    assert g.num_nodes == 12


@pytest.mark.parametrize("power,self_loops", [(2, False), (3, False), (2, True)])
def test_power_and_self_loops(power, self_loops):
    x = _data()
    g = latent_graph(x, k=4, kernel="cosine", normalize="sym", power=power, self_loops=self_loops)
    expected = np_lgg(x.numpy(), k=4, kernel="cosine", normalize="sym", power=power, self_loops=self_loops)
    np.testing.assert_allclose(to_dense(g).numpy(), expected, atol=1e-12)


def test_no_self_loops_by_default_and_symmetric():
    g = latent_graph(_data(), k=3)
    src, dst = g.edge_index
    assert not bool((src == dst).any())
    dense = to_dense(g)
    torch.testing.assert_close(dense, dense.T)


def test_auto_kernel_picks_by_sign():
    x = _data()
    torch.testing.assert_close(to_dense(latent_graph(x)), to_dense(latent_graph(x, kernel="cosine")))
    xs = _data(signed=True)
    torch.testing.assert_close(to_dense(latent_graph(xs)), to_dense(latent_graph(xs, kernel="rbf")))


def test_sigma_rule_matches_reference():
    x = _data(signed=True)
    for k in (None, 2, 5):
        sigma = float(estimate_sigma(squared_distances(x), k))
        dist = np.sqrt(((x.numpy()[:, None] - x.numpy()[None]) ** 2).sum(-1))
        kk = min(10, 11) if k is None else k
        expected = np.mean([np.sort(np.delete(dist[i], i))[kk - 1] for i in range(12)]) / 3
        assert sigma == pytest.approx(expected, rel=1e-10)


def test_fixed_sigma_matches_reference():
    x = _data(signed=True)
    g = latent_graph(x, kernel="rbf", sigma=0.7, k=4)
    np.testing.assert_allclose(to_dense(g).numpy(), np_lgg(x.numpy(), k=4, kernel="rbf", sigma=0.7), atol=1e-12)


def test_dense_round_trip():
    g = latent_graph(_data(), k=3, normalize="sym")
    g2 = from_dense(to_dense(g))
    torch.testing.assert_close(to_dense(g2), to_dense(g))
    assert g2.edge_index.shape == g.edge_index.shape


def test_batch_of_layers():
    from torch_geometric.data import Batch

    graphs = [latent_graph(_data(seed=s), k=3) for s in range(3)]
    batch = Batch.from_data_list(graphs)
    assert batch.num_graphs == 3 and batch.num_nodes == 36
    assert batch.edge_weight.shape[0] == sum(g.edge_weight.shape[0] for g in graphs)


# ---------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([None, 2, 5]))
def test_cosine_graph_invariant_to_positive_rescaling(seed, k):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(10, 6, generator=gen)
    scale = torch.rand(10, 1, generator=gen) * 10 + 0.1
    a = to_dense(latent_graph(x, k=k, kernel="cosine", normalize="sym"))
    b = to_dense(latent_graph(x * scale, k=k, kernel="cosine", normalize="sym"))
    torch.testing.assert_close(a, b)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), extra=st.sampled_from([0, 5, 40]))
def test_rbf_graph_invariant_to_orthogonal_maps_into_wider_spaces(seed, extra):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(10, 6, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(6 + extra, 6 + extra, generator=gen))
    x_wide = torch.cat([x, torch.zeros(10, extra)], dim=1) @ q.T  # isometric embedding in a wider space
    a = to_dense(latent_graph(x, k=3, kernel="rbf", sigma=1.3))
    b = to_dense(latent_graph(x_wide, k=3, kernel="rbf", sigma=1.3))
    torch.testing.assert_close(a, b)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kernel=st.sampled_from(["cosine", "rbf", "cosine_shifted"]))
def test_permuting_the_batch_permutes_the_graph(seed, kernel):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(9, 5, generator=gen)
    perm = torch.randperm(9, generator=gen)
    a = to_dense(latent_graph(x, k=3, kernel=kernel, normalize="sym"))
    b = to_dense(latent_graph(x[perm], k=3, kernel=kernel, normalize="sym"))
    torch.testing.assert_close(b, a[perm][:, perm])


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("kernel,k,normalize", [("cosine", None, "sym"), ("rbf", 3, "sym"), ("rbf", None, None),
                                                 ("cosine_shifted", 4, None)])
def test_gradcheck_edge_weight(kernel, k, normalize):
    x = _data(b=6, d=4, signed=kernel != "cosine").requires_grad_(True)
    edges = latent_graph(x.detach(), k=k, kernel=kernel, normalize=normalize).edge_index

    def weights(inp):
        g = latent_graph(inp, k=k, kernel=kernel, normalize=normalize)
        assert torch.equal(g.edge_index, edges)  # selection is fixed around x
        return g.edge_weight

    assert torch.autograd.gradcheck(weights, (x,))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad,msg", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_non_finite_features_rejected(bad, msg):
    x = _data()
    x[3, 2] = bad
    with pytest.raises(ValueError, match=msg):
        latent_graph(x, k=3)


@pytest.mark.parametrize("k", [12, 20, 0])
def test_bad_k_rejected(k):
    with pytest.raises(ValueError, match="k="):
        latent_graph(_data(), k=k)


def test_single_sample_rejected():
    with pytest.raises(ValueError, match="at least 2 samples"):
        latent_graph(torch.rand(1, 4))


def test_labels_of_wrong_length_rejected():
    with pytest.raises(ValueError, match="labels has shape"):
        latent_graph(_data(), mask="inter", labels=torch.arange(5))


def test_mask_needs_labels():
    with pytest.raises(ValueError, match="needs the labels"):
        latent_graph(_data(), mask="intra")


def test_negative_data_with_cosine_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        latent_graph(_data(signed=True), kernel="cosine")


def test_unknown_options_rejected():
    with pytest.raises(ValueError, match="unknown kernel"):
        latent_graph(_data(), kernel="laplace")
    with pytest.raises(ValueError, match="unknown symmetrize"):
        latent_graph(_data(), k=2, symmetrize="min")
    with pytest.raises(ValueError, match="power"):
        latent_graph(_data(), power=0)


def test_all_zero_rows_give_finite_weights_and_gradients():
    x = _data()
    x[[0, 5]] = 0.0
    x.requires_grad_(True)
    g = latent_graph(x, kernel="cosine", normalize="sym")
    assert torch.isfinite(g.edge_weight).all()
    g.edge_weight.sum().backward()
    assert torch.isfinite(x.grad).all()
    dense = to_dense(g)
    assert dense[0].abs().sum() == 0  # a zero vector has cosine 0 with everything
    np.testing.assert_allclose(dense.detach().numpy(), np_lgg(x.detach().numpy(), normalize="sym"), atol=1e-12)


def test_isolated_vertices_under_normalization_are_finite():
    # inter-class mask with a class that has every sample: all vertices isolated
    g = latent_graph(_data(), k=3, normalize="sym", mask="inter", labels=torch.zeros(12, dtype=torch.long))
    assert g.edge_index.shape[1] == 0
    x = _data()
    x[2] = 0.0  # vertex 2 has only zero-weight edges: degree 0
    g = latent_graph(x, kernel="cosine", k=3, normalize="sym")
    assert torch.isfinite(g.edge_weight).all()
    assert to_dense(g)[2].abs().sum() == 0


def test_similarity_reference_consistency():
    x = _data()
    np.testing.assert_allclose(geomlat.similarity(x, "cosine").numpy(), np_similarity(x.numpy(), "cosine"), atol=1e-12)


def test_gram_one_product_backward_passes_gradcheck():
    """The custom backward ``(dG + dG^T) x`` against finite differences, to first and second order."""
    from geomlat.kernels import gram

    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(gram, (x,))
    assert torch.autograd.gradgradcheck(gram, (x,))
    torch.testing.assert_close(gram(x), x @ x.T)
