"""Graph Fourier tools vs numpy eigh and PyGSP's own computations."""
import numpy as np
import pytest
import torch

from geomlat import latent_graph, to_dense, to_pygsp
from geomlat.analysis import fourier_basis, label_spectrum, lowpass, spectral_distance_between_layers
from geomlat.signals import signal_variation


def graph(seed=0, n=24, k=5):
    g = torch.Generator().manual_seed(seed)
    return latent_graph(torch.rand(n, 6, generator=g, dtype=torch.float64), k=k)


@pytest.mark.parametrize("normalized", [False, True])
def test_fourier_basis_matches_numpy_eigh(normalized):
    g = graph()
    A = to_dense(g).numpy()
    deg = A.sum(1)
    L = np.diag(deg) - A
    if normalized:
        L = L / np.sqrt(np.outer(deg, deg))
    e, U = fourier_basis(g, normalized)
    np.testing.assert_allclose(e.numpy(), np.linalg.eigvalsh(L), atol=1e-10)
    np.testing.assert_allclose(U.numpy() @ np.diag(e.numpy()) @ U.numpy().T, L, atol=1e-10)
    np.testing.assert_allclose(U.numpy().T @ U.numpy(), np.eye(len(A)), atol=1e-10)


def test_label_spectrum_parseval_and_gft():
    g = graph(1)
    y = torch.randint(0, 4, (24,), generator=torch.Generator().manual_seed(2))
    spec = label_spectrum(g, y)
    V = np.eye(int(y.max()) + 1)[y.numpy()]
    assert float(spec.sum()) == pytest.approx(np.sum(V**2))  # Parseval: |V|_F^2 = B
    G = to_pygsp(g)
    G.compute_fourier_basis()
    np.testing.assert_allclose(spec.numpy(), (G.gft(V) ** 2).sum(1), atol=1e-10)
    # energy weighted by frequency is the label variation tr(V^T L V)
    e, _ = fourier_basis(g)
    lv = float(signal_variation(g, torch.tensor(V)))
    assert float((e * spec).sum()) == pytest.approx(lv, rel=1e-9)


def test_lowpass_matches_pygsp_and_reduces_variation():
    from pygsp import filters

    g = graph(3)
    s = torch.randn(24, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = lowpass(g, s, tau=2.0)
    G = to_pygsp(g)
    G.compute_fourier_basis()
    e, U = G.e, G.U
    expected = U @ (np.exp(-2.0 * e / G.lmax)[:, None] * (U.T @ s.numpy()))  # heat response in PyGSP's scaling
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-8)
    np.testing.assert_allclose(out.numpy(), filters.Heat(G, scale=2.0).filter(s.numpy(), method="exact"), atol=1e-10)
    assert float(signal_variation(g, out)) < float(signal_variation(g, s))
    ideal = lowpass(g, s, cutoff=float(np.median(e)))
    assert float(signal_variation(g, ideal)) < float(signal_variation(g, s))
    np.testing.assert_allclose(lowpass(g, s, cutoff=1e9).numpy(), s.numpy(), atol=1e-10)  # all-pass
    with pytest.raises(ValueError, match="exactly one"):
        lowpass(g, s)


def test_spectral_distance_matrix():
    gs = {"a": graph(0), "b": graph(5), "c": graph(0)}
    D = spectral_distance_between_layers(gs)
    assert D.shape == (3, 3)
    assert torch.allclose(D, D.T) and float(D.diagonal().abs().max()) == 0.0
    assert float(D[0, 2]) == pytest.approx(0.0, abs=1e-12) and float(D[0, 1]) > 0
    ea, eb = fourier_basis(gs["a"], True)[0], fourier_basis(gs["b"], True)[0]
    assert float(D[0, 1]) == pytest.approx(float((ea - eb).norm()))
    with pytest.raises(ValueError, match="same number"):
        spectral_distance_between_layers([graph(0), graph(0, n=10)])
