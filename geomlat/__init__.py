"""geomlat: latent geometry graphs of deep networks.

Build a graph over a batch from any layer's representations (:func:`latent_graph`), measure it
(:func:`label_variation`, :func:`graph_distance`), and use it to train or analyse models.
The math is defined in ``shared/METHOD.md``; the API mirrors PyTorch Geometric (LGGs are ``Data``).
"""
# The public names are imported on first use (PEP 562), so that `import geomlat.cli` (the console
# script) answers `--help` and spec errors without importing torch.
_LAZY = {
    "LatentCapture": ".capture",
    "DISTANCES": ".distances", "graph_distance": ".distances", "register_distance": ".distances",
    "from_dense": ".graphs", "latent_adjacency": ".graphs", "latent_graph": ".graphs", "similarity": ".graphs",
    "to_dense": ".graphs",
    "to_pygsp": ".interop", "to_scipy": ".interop",
    "WITH_TORCH_CLUSTER": ".knn", "knn": ".knn", "knn_graph": ".knn",
    "label_variation": ".signals", "laplacian": ".signals", "signal_variation": ".signals",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "DISTANCES",
    "LatentCapture",
    "WITH_TORCH_CLUSTER",
    "from_dense",
    "graph_distance",
    "knn",
    "knn_graph",
    "label_variation",
    "laplacian",
    "latent_adjacency",
    "latent_graph",
    "register_distance",
    "signal_variation",
    "similarity",
    "to_dense",
    "to_pygsp",
    "to_scipy",
]
