"""Distances between two LGGs on the same vertices, as a registry users extend by decorator.

Example:
    >>> from geomlat.graphs import latent_graph, to_dense
    >>> @register_distance("l1_example")
    ... def l1(g1, g2):
    ...     return (to_dense(g1) - to_dense(g2)).abs().sum()
    >>> x = torch.rand(12, 4)
    >>> g1, g2 = latent_graph(x, k=3), latent_graph(x.flip(0), k=3)
    >>> float(graph_distance(g1, g1, metric="l1_example")), float(graph_distance(g1, g2, metric="l1_example")) > 0
    (0.0, True)
    >>> _ = DISTANCES.unregister("l1_example")  # leave the registry as it was
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import coalesce

from .registry import Registry
from .signals import edge_weights, laplacian

#: name -> ``fn(g1, g2) -> scalar tensor`` (:func:`register_distance` adds to it).
DISTANCES: Registry[Callable[[Data, Data], Tensor]] = Registry("graph distance")


def register_distance(name: str):
    """Decorator registering ``fn(g1, g2) -> scalar tensor`` under ``name`` (``ValueError`` for a name taken)."""
    return DISTANCES.register(name)


def graph_distance(g1: Data, g2: Data, metric: str = "frobenius") -> Tensor:
    """Distance between two graphs with the same number of vertices (see :data:`DISTANCES`); an unknown
    ``metric`` raises :class:`geomlat.registry.UnknownNameError` (a ``ValueError``) listing the registered ones."""
    distance = DISTANCES[metric]
    if g1.num_nodes != g2.num_nodes:
        raise ValueError(f"graphs have different numbers of vertices ({g1.num_nodes} vs {g2.num_nodes})")
    return distance(g1, g2)


@register_distance("frobenius")
def frobenius_distance(g1: Data, g2: Data) -> Tensor:
    """``|A1 - A2|_F`` over the union of both edge sets (an edge absent from one graph has weight 0 there)."""
    index = torch.cat([g1.edge_index, g2.edge_index], dim=1)
    weight = torch.cat([edge_weights(g1), -edge_weights(g2)])
    _, diff = coalesce(index, weight, num_nodes=g1.num_nodes, reduce="sum")
    return diff.pow(2).sum().sqrt()


def normalized_laplacian_spectrum(g: Data) -> Tensor:
    """Sorted eigenvalues (B,) of ``I - D^-1/2 A D^-1/2`` (dense eigendecomposition, O(B^3))."""
    lap = laplacian(g, "sym").to_dense()
    return torch.linalg.eigvalsh(0.5 * (lap + lap.T))


@register_distance("spectral")
def spectral_distance(g1: Data, g2: Data) -> Tensor:
    """L2 distance between the sorted eigenvalues of the two normalized Laplacians."""
    return (normalized_laplacian_spectrum(g1) - normalized_laplacian_spectrum(g2)).norm()
