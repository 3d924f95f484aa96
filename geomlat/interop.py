"""Conversions between LGGs and other graph libraries."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from torch_geometric.data import Data

from .signals import edge_weights


def _check_lgg(g, func: str) -> None:
    """``g`` must be an LGG: a ``torch_geometric.data.Data`` with ``edge_index`` (2, E) and ``num_nodes``.

    Raises:
        TypeError: naming what was given instead (a tensor gets its shape, with the call that builds a graph).
    """
    if isinstance(g, Data) and getattr(g, "edge_index", None) is not None and g.num_nodes is not None:
        return
    if isinstance(g, Data):
        given = f"a Data without {'edge_index' if getattr(g, 'edge_index', None) is None else 'num_nodes'}"
    elif hasattr(g, "shape"):
        given = f"a {type(g).__module__}.{type(g).__name__} of shape {tuple(g.shape)}"
    else:
        given = f"a {type(g).__name__}"
    raise TypeError(
        f"{func} expects an LGG: a torch_geometric.data.Data with edge_index (2, E), edge_weight (E,) and "
        f"num_nodes, as returned by geomlat.latent_graph; got {given}. Build one from features (B, ...) "
        "with latent_graph(x) or from a dense (B, B) adjacency with from_dense(adj)"
    )


def to_scipy(g: Data) -> sp.csr_matrix:
    """(B, B) ``scipy.sparse.csr_matrix`` (float64, detached) of an LGG.

    Raises:
        TypeError: ``g`` is not an LGG (e.g. a feature tensor or a dense adjacency).
    """
    _check_lgg(g, "to_scipy")
    src, dst = g.edge_index.detach().cpu().numpy()
    weight = edge_weights(g).detach().cpu().double().numpy()
    return sp.csr_matrix((weight, (src, dst)), shape=(g.num_nodes, g.num_nodes))


def to_pygsp(g: Data, coords: np.ndarray | None = None):
    """``pygsp.graphs.Graph`` of an LGG (weights detached, float64); ``coords`` (B, 2|3) for plotting.

    Raises:
        TypeError: ``g`` is not an LGG (e.g. a feature tensor or a dense adjacency).
    """
    _check_lgg(g, "to_pygsp")
    from pygsp import graphs

    return graphs.Graph(to_scipy(g), coords=coords)
