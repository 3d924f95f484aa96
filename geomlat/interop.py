"""Conversions between LGGs and other graph libraries."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from torch_geometric.data import Data

from .signals import edge_weights


def to_scipy(g: Data) -> sp.csr_matrix:
    """(B, B) ``scipy.sparse.csr_matrix`` (float64, detached) of an LGG."""
    src, dst = g.edge_index.detach().cpu().numpy()
    weight = edge_weights(g).detach().cpu().double().numpy()
    return sp.csr_matrix((weight, (src, dst)), shape=(g.num_nodes, g.num_nodes))


def to_pygsp(g: Data, coords: np.ndarray | None = None):
    """``pygsp.graphs.Graph`` of an LGG (weights detached, float64); ``coords`` (B, 2|3) for plotting."""
    from pygsp import graphs

    return graphs.Graph(to_scipy(g), coords=coords)
