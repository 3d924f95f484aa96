"""Graph Fourier analysis of LGGs with PyGSP: Fourier basis, label spectrum, low-pass filtering.

The graph Fourier basis is the eigendecomposition ``L = U diag(e) U^T`` of the Laplacian (combinatorial
``D - A`` by default, or ``I - D^-1/2 A D^-1/2``); a signal's spectrum is ``U^T s``. Smooth signals (small
``tr(S^T L S)``, the label variation of METHOD.md) concentrate their energy on small eigenvalues.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from .._checks import check_labels
from ..interop import to_pygsp


def _pygsp_graph(g: Data, normalized: bool):
    G = to_pygsp(g)
    if normalized:
        G.compute_laplacian("normalized")
    return G


def fourier_basis(g: Data, normalized: bool = False) -> tuple[Tensor, Tensor]:
    """Graph Fourier basis of an LGG via ``pygsp.graphs.Graph.compute_fourier_basis``.

    Args:
        g: symmetric graph with B vertices.
        normalized: use ``I - D^-1/2 A D^-1/2`` instead of ``D - A``.

    Returns:
        ``(eigenvalues (B,) ascending, eigenvectors (B, B) as columns)``, float64.
    """
    G = _pygsp_graph(g, normalized)
    G.compute_fourier_basis()
    return torch.from_numpy(np.asarray(G.e).copy()), torch.from_numpy(np.asarray(G.U).copy())


def label_spectrum(g: Data, y: Tensor, normalized: bool = False) -> Tensor:
    """Energy of the one-hot label signals per graph frequency: ``sum_c |U^T V|_{l,c}^2`` -> (B,).

    By Parseval the total is ``|V|_F^2 = B``. Energy at low frequencies means the labels are smooth
    on the graph.
    """
    _, U = fourier_basis(g, normalized)
    y = check_labels(y, g.num_nodes, "y")
    V = F.one_hot(y.cpu(), int(y.max()) + 1).double()
    return ((U.T @ V) ** 2).sum(dim=1)


def lowpass(g: Data, signal: Tensor, tau: float | None = None, cutoff: float | None = None, normalized: bool = False) -> Tensor:
    """Low-pass filter a (B,) or (B, C) signal on ``g``.

    Args:
        g: the graph.
        signal: (B,) or (B, C) signal on its vertices.
        tau: heat kernel ``exp(-tau e)`` (``pygsp.filters.Heat(G, scale=tau)``, exact filtering; note PyGSP
            normalizes the scale by ``lambda_max``: the response is ``exp(-tau e / lambda_max)``).
            Exactly one of ``tau`` and ``cutoff`` is given.
        cutoff: ideal low-pass keeping the frequencies ``e <= cutoff``.
        normalized: use ``I - D^-1/2 A D^-1/2`` instead of ``D - A``.

    Returns:
        filtered signal, same shape, float64.
    """
    if (tau is None) == (cutoff is None):
        raise ValueError("lowpass needs exactly one of tau (heat kernel) or cutoff (ideal low-pass)")
    if signal.shape[0] != g.num_nodes:
        raise ValueError(f"signal has {signal.shape[0]} rows but the graph has {g.num_nodes} vertices")
    s = signal.detach().cpu().double().numpy()
    G = _pygsp_graph(g, normalized)
    G.compute_fourier_basis()
    if tau is not None:
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        from pygsp import filters

        out = filters.Heat(G, scale=tau).filter(s, method="exact")
        return torch.from_numpy(np.asarray(out).reshape(s.shape).copy())
    keep = (G.e <= cutoff).astype(np.float64)
    return torch.from_numpy(G.U @ (keep[:, None] * (G.U.T @ s.reshape(len(s), -1))).reshape(s.shape))


def spectral_distance_between_layers(graphs: Sequence[Data] | Mapping[str, Data], normalized: bool = True) -> Tensor:
    """(L, L) Euclidean distances between the sorted Laplacian spectra of graphs on the same B vertices.

    ``normalized=True`` (default) uses ``I - D^-1/2 A D^-1/2`` whose spectrum lies in [0, 2] whatever the
    weight scale of each layer, so layers compare; a dict keeps its order.
    """
    items = list(graphs.values()) if isinstance(graphs, Mapping) else list(graphs)
    if not items:
        raise ValueError("graphs is empty")
    sizes = {g.num_nodes for g in items}
    if len(sizes) != 1:
        raise ValueError(f"all graphs must have the same number of vertices, got {sorted(sizes)}")
    spectra = torch.stack([fourier_basis(g, normalized)[0] for g in items])
    return torch.cdist(spectra, spectra)
