import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlat import from_dense, label_variation, laplacian, latent_graph, signal_variation, to_dense, to_pygsp

from reference import np_label_variation


def _graph(seed=0, b=12, k=4, normalize="sym"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 6, generator=gen, dtype=torch.float64)
    return latent_graph(x, k=k, normalize=normalize)


@pytest.mark.parametrize("k,normalize", [(None, None), (3, None), (4, "sym")])
def test_label_variation_equals_dense_trace_and_pygsp(k, normalize):
    g = _graph(k=k, normalize=normalize)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 3, 3, 2])
    lv = float(label_variation(g, y))
    adj = to_dense(g).numpy()
    assert lv == pytest.approx(np_label_variation(adj, y.numpy()), rel=1e-12)
    pg = to_pygsp(g)
    onehot = np.eye(4)[y.numpy()]
    assert lv == pytest.approx(sum(pg.dirichlet_energy(onehot[:, c]) for c in range(4)), rel=1e-10)


def test_signal_variation_is_trace_with_sparse_laplacian():
    g = _graph()
    s = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lap = laplacian(g).to_dense()
    assert float(signal_variation(g, s)) == pytest.approx(float(torch.trace(s.T @ lap @ s)), rel=1e-12)
    assert float(signal_variation(g, s[:, 0])) == pytest.approx(float(s[:, 0] @ lap @ s[:, 0]), rel=1e-12)


@pytest.mark.parametrize("kind", ["combinatorial", "sym", "rw"])
def test_laplacians_against_dense_formulas_and_pygsp(kind):
    g = _graph(normalize=None)
    adj = to_dense(g).numpy()
    deg = adj.sum(1)
    expected = {
        "combinatorial": np.diag(deg) - adj,
        "sym": np.eye(12) - adj / np.sqrt(np.outer(deg, deg)),
        "rw": np.eye(12) - adj / deg[:, None],
    }[kind]
    np.testing.assert_allclose(laplacian(g, kind).to_dense().numpy(), expected, atol=1e-12)
    if kind != "rw":
        pg = to_pygsp(g)
        pg.compute_laplacian("combinatorial" if kind == "combinatorial" else "normalized")
        np.testing.assert_allclose(pg.L.toarray(), expected, atol=1e-12)


def test_normalized_label_variation_bounds():
    g = _graph(k=None, normalize=None)
    # every vertex its own class: every edge joins two classes -> 1
    assert float(label_variation(g, torch.arange(12), normalized=True)) == pytest.approx(1.0)
    # one class: no edge joins two classes -> 0
    assert float(label_variation(g, torch.zeros(12, dtype=torch.long), normalized=True)) == 0.0
    y = torch.arange(12) % 3
    value = float(label_variation(g, y, normalized=True))
    assert 0.0 < value < 1.0


def test_label_variation_zero_iff_no_inter_class_edge():
    adj = torch.zeros(6, 6, dtype=torch.float64)
    adj[0, 1] = adj[1, 0] = 0.5  # class 0 block
    adj[2, 3] = adj[3, 2] = 0.7  # class 1 block
    adj[4, 5] = adj[5, 4] = 0.2  # class 2 block
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    g = from_dense(adj)
    assert float(label_variation(g, y)) == 0.0
    adj[1, 2] = adj[2, 1] = 0.3  # one inter-class edge
    g = from_dense(adj)
    assert float(label_variation(g, y)) == pytest.approx(0.6)
    assert float(label_variation(g, y, normalized=True)) == pytest.approx(0.6 / 3.4)


def test_graph_without_edges_has_zero_normalized_variation():
    g = from_dense(torch.zeros(4, 4))
    assert float(label_variation(g, torch.arange(4), normalized=True)) == 0.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.integers(2, 5))
def test_label_variation_invariant_to_relabeling(seed, classes):
    gen = torch.Generator().manual_seed(seed)
    g = _graph(seed=seed % 50)
    y = torch.randint(0, classes, (12,), generator=gen)
    perm = torch.randperm(classes, generator=gen)
    for normalized in (False, True):
        torch.testing.assert_close(label_variation(g, y, normalized), label_variation(g, perm[y], normalized))


def test_label_variation_uses_graph_labels():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(10, 4, generator=gen)
    y = torch.arange(10) % 2
    g = latent_graph(x, k=3, labels=y)
    torch.testing.assert_close(label_variation(g), label_variation(g, y))
    with pytest.raises(ValueError, match="needs labels"):
        label_variation(latent_graph(x, k=3))


def test_label_variation_bad_labels():
    g = _graph()
    with pytest.raises(ValueError, match="12 vertices"):
        label_variation(g, torch.arange(5))
    with pytest.raises(TypeError, match="integer"):
        label_variation(g, torch.rand(12))


def test_gradcheck_label_variation_through_graph():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 2, 1, 2, 0])

    def fn(inp):
        g = latent_graph(inp, kernel="cosine", normalize="sym")
        return label_variation(g, y, normalized=True)

    assert torch.autograd.gradcheck(fn, (x,))
