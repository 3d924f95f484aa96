"""Graph signal processing on LGGs: Laplacians, signal variation and label variation.

Definitions 5 and 6 of the LGG paper (see ``shared/METHOD.md``):
``sigma(S) = tr(S^T L S)`` with ``L = D - A``; for a symmetric A this is
``1/2 sum_{i,j} A_ij |s_i - s_j|^2``. Label variation is ``sigma(V)`` for the one-hot (B, C) label
matrix V, i.e. the total weight of the ordered pairs (i, j) with ``y_i != y_j``. Everything here works
on the edge list in O(E); no dense B x B Laplacian is formed.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import get_laplacian

from ._checks import check_choice, check_labels

LAPLACIANS = ("combinatorial", "sym", "rw")


def edge_weights(g: Data) -> Tensor:
    """(E,) weights of ``g``; an unweighted graph has weight 1 on every edge."""
    weight = getattr(g, "edge_weight", None)
    if weight is None:
        return torch.ones(g.edge_index.shape[1], device=g.edge_index.device)
    return weight


def laplacian(g: Data, kind: str = "combinatorial") -> Tensor:
    """Sparse (B, B) Laplacian of an LGG.

    Args:
        kind: ``"combinatorial"`` ``D - A``, ``"sym"`` ``I - D^-1/2 A D^-1/2`` or ``"rw"`` ``I - D^-1 A``
            (an isolated vertex gets ``L_ii = 1`` in the normalized forms, as in PyG).

    Returns:
        sparse COO tensor (coalesced).
    """
    check_choice(kind, "kind", LAPLACIANS)
    normalization = None if kind == "combinatorial" else kind
    index, weight = get_laplacian(g.edge_index, edge_weights(g), normalization=normalization, num_nodes=g.num_nodes)
    return torch.sparse_coo_tensor(index, weight, (g.num_nodes, g.num_nodes), check_invariants=False,
                                   device=weight.device).coalesce()


def signal_variation(g: Data, signal: Tensor) -> Tensor:
    """``tr(S^T L S) = 1/2 sum_(i,j) in E w_ij |s_i - s_j|^2`` of a signal on a symmetric graph.

    Args:
        g: LGG with B vertices (both directions of every edge stored, as :func:`latent_graph` does).
        signal: (B,) or (B, C) signal.

    Returns:
        scalar tensor, differentiable w.r.t. the weights and the signal.
    """
    s = signal if signal.dim() > 1 else signal[:, None]
    if s.shape[0] != g.num_nodes:
        raise ValueError(f"signal has {s.shape[0]} rows but the graph has {g.num_nodes} vertices")
    src, dst = g.edge_index
    diff = s[src] - s[dst]
    return 0.5 * (edge_weights(g) * (diff * diff).sum(dim=1)).sum()


def label_variation(g: Data, y: Tensor | None = None, normalized: bool = False) -> Tensor:
    """Label variation ``tr(V^T L V)`` of a graph, V the one-hot matrix of ``y``, in O(E).

    Equals the total weight of the ordered pairs (i, j) joined by an edge with ``y_i != y_j``; it is 0
    iff no edge joins two classes and does not depend on how the classes are numbered.

    Args:
        g: LGG with B vertices.
        y: (B,) integer labels; defaults to ``g.y``.
        normalized: divide by the total edge weight ``sum_{i != j} A_ij`` (Appendix C), so that 1 means
            every edge joins distinct classes. A graph without edges has normalized variation 0.

    Returns:
        scalar tensor, differentiable w.r.t. ``g.edge_weight``.
    """
    if y is None:
        y = getattr(g, "y", None)
        if y is None:
            raise ValueError("label_variation needs labels: pass y or build the graph with labels=...")
    y = check_labels(y, g.num_nodes, "y").to(g.edge_index.device)
    src, dst = g.edge_index
    weight = edge_weights(g)
    variation = (weight * (y[src] != y[dst])).sum()
    if not normalized:
        return variation
    total = (weight * (src != dst)).sum()
    # no edge at all: nothing varies; guard the division instead of returning 0/0 = NaN
    return torch.where(total != 0, variation / torch.where(total != 0, total, torch.ones_like(total)), torch.zeros_like(total))
