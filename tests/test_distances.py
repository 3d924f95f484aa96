import numpy as np
import pytest
import torch

from geomlat import DISTANCES, from_dense, graph_distance, latent_graph, register_distance, to_dense
from geomlat.distances import spectral_distance


def _pair(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(10, 5, generator=gen, dtype=torch.float64)
    return latent_graph(x, k=3, normalize="sym"), latent_graph(x * torch.rand(10, 5, generator=gen, dtype=torch.float64), k=4, normalize="sym")


def test_frobenius_over_union_of_edges_equals_dense():
    g1, g2 = _pair()
    expected = np.linalg.norm(to_dense(g1).numpy() - to_dense(g2).numpy())
    assert float(graph_distance(g1, g2)) == pytest.approx(expected, rel=1e-12)
    assert float(graph_distance(g1, g1)) == 0.0


def test_spectral_distance_against_numpy():
    g1, g2 = _pair(1)

    def spectrum(g):
        a = to_dense(g).numpy()
        d = a.sum(1)
        return np.linalg.eigvalsh(np.eye(10) - a / np.sqrt(np.outer(d, d)))

    expected = np.linalg.norm(spectrum(g1) - spectrum(g2))
    assert float(graph_distance(g1, g2, "spectral")) == pytest.approx(expected, rel=1e-9)
    # spectra are invariant to relabeling the vertices
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    permuted = from_dense(to_dense(g1)[perm][:, perm])
    assert float(spectral_distance(g1, permuted)) == pytest.approx(0.0, abs=1e-10)


def test_registry_is_extensible_and_checked():
    @register_distance("test_l1")
    def l1(a, b):
        return (to_dense(a) - to_dense(b)).abs().sum()

    try:
        g1, g2 = _pair()
        assert float(graph_distance(g1, g2, "test_l1")) == pytest.approx(float((to_dense(g1) - to_dense(g2)).abs().sum()))
        with pytest.raises(ValueError, match="already registered"):
            register_distance("test_l1")(l1)
    finally:
        DISTANCES.unregister("test_l1")
    with pytest.raises(ValueError, match="unknown graph distance"):
        graph_distance(g1, g2, "nope")
    with pytest.raises(ValueError, match="different numbers of vertices"):
        graph_distance(g1, latent_graph(torch.rand(8, 3)))
