"""The figure of a ``toy`` study: LGGs drawn with a Laplacian-eigenmap layout."""
from __future__ import annotations

import numpy as np

from ...graphs import resolve_kernel
from ...interop import to_scipy
from ..figures import new_figure, save_figure, series_styles

__all__ = ["eigenmap_layout", "graphs_figure"]


def eigenmap_layout(g) -> np.ndarray:
    """(B, 2) Laplacian-eigenmap coordinates of an LGG (Belkin & Niyogi 2003) with PyGSP.

    ``pygsp.graphs.Graph.set_coordinates("laplacian_eigenmap2D")`` takes the eigenvectors of the 2nd and
    3rd smallest eigenvalues of ``L = D - A``. A disconnected graph has several zero eigenvalues whose
    eigenvectors are constant on each component (all of a component's vertices would land on one
    point), so a complete graph of weight ``1e-3 x`` the mean edge weight is added first in that case.
    Each coordinate's sign is fixed so that its largest-magnitude entry is positive (deterministic plots).
    """
    import scipy.sparse as sp
    from pygsp import graphs
    from scipy.sparse.csgraph import connected_components

    W = to_scipy(g)
    n = W.shape[0]
    if n < 3:
        raise ValueError(f"a 2-D eigenmap needs at least 3 vertices, got {n}")
    if connected_components(W, directed=False)[0] > 1:
        eps = 1e-3 * (W.data.mean() if W.nnz else 1.0)
        W = (W + sp.csr_matrix(eps * (np.ones((n, n)) - np.eye(n)))).tocsr()
    G = graphs.Graph(W)
    G.set_coordinates("laplacian_eigenmap2D")
    coords = np.asarray(G.coords, dtype=float).copy()
    pivot = np.abs(coords).argmax(axis=0)
    coords *= np.sign(coords[pivot, np.arange(2)])
    return coords


def _draw_panel(ax, coords: np.ndarray, g, y: np.ndarray, classes: list[int], styles) -> int:
    """Inter-class edges and vertices on ``ax``, one ``(color, marker)`` of ``styles`` per class; returns the
    number of inter-class edges."""
    src, dst = g.edge_index.numpy()
    keep = (src < dst) & (y[src] != y[dst])
    for s, d in zip(src[keep], dst[keep]):
        ax.plot(coords[[s, d], 0], coords[[s, d], 1], color="0.4", lw=1.0, alpha=0.8, zorder=1)
    for i, c in enumerate(classes):
        sel = y == c
        ax.scatter(coords[sel, 0], coords[sel, 1], s=60, color=styles[i][0], marker=styles[i][1], edgecolor="black", linewidth=0.6,
                   alpha=0.9, zorder=2, label=f"class {c}")
    ax.set_xticks([])
    ax.set_yticks([])
    return int(keep.sum())


def graphs_figure(spec, ctx, feats, graphs_, y, values, final):
    graph = spec["graph"]
    styles = series_styles(len(graph["classes"]))
    fig, axes = new_figure(ncols=len(graphs_), width=4.0, height=4.3)
    axes = np.atleast_1d(axes)
    for ax, (title, name), g, v in zip(axes, spec["layers"], graphs_, values):
        coords = eigenmap_layout(g)
        dim = int(np.prod(feats[name].shape[1:]))
        n_edges = _draw_panel(ax, coords, g, y, graph["classes"], styles)
        ax.set_title(f"{title}, {dim}-d\nnormalized label variation {v:.3f}\n{n_edges} inter-class edges "
                     f"of {g.edge_index.shape[1] // 2}", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9, frameon=False)
    kernels = sorted({resolve_kernel(feats[name], graph["kernel"]) for _, name in spec["layers"]})
    fig.suptitle(
        f"LGGs of {len(y)} {graph['split']} samples of {spec['data']['name']} ({graph['per_class']} per class), "
        f"{spec['model']['model']} (test error {100 * final['test_error']:.1f}%)\n{'/'.join(kernels)} k-NN graphs, k = {graph['k']}, "
        "Laplacian-eigenmap layout; only inter-class edges drawn",
        fontsize=10,
    )
    return save_figure(fig, ctx.figures_dir / "toy_graphs.png")
