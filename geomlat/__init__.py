"""geomlat: latent geometry graphs of deep networks.

Build a graph over a batch from any layer's representations (:func:`latent_graph`), measure it
(:func:`label_variation`, :func:`graph_distance`), and use it to train or analyze models.
The math is defined in ``shared/METHOD.md``; the API mirrors PyTorch Geometric (LGGs are ``Data``).
"""
import sys
import types

from ._lazy import lazy_dir, lazy_getattr

# The public names are imported on first use (PEP 562), so that `import geomlat.cli` (the console
# script) answers `--help` and spec errors without importing torch.
_LAZY = {
    "LatentCapture": ".capture", "pool_sequence": ".capture", "select_logits": ".capture", "select_output": ".capture",
    "DISTANCES": ".distances", "graph_distance": ".distances", "register_distance": ".distances",
    "from_dense": ".graphs", "latent_adjacency": ".graphs", "latent_graph": ".graphs", "similarity": ".graphs",
    "to_dense": ".graphs",
    "to_pygsp": ".interop", "to_scipy": ".interop",
    "KERNELS": ".kernels", "Kernel": ".kernels", "get_kernel": ".kernels", "register_kernel": ".kernels",
    "WITH_TORCH_CLUSTER": ".knn", "knn": ".knn", "knn_graph": ".knn",
    "NNKResult": ".nnk", "nnk_graph": ".nnk", "nnk_interpolation": ".nnk", "nnk_layer_errors": ".nnk",
    "nnk_loo_predictions": ".nnk", "nnk_symmetrize": ".nnk", "nnk_weights": ".nnk",
    "label_variation": ".signals", "laplacian": ".signals", "signal_variation": ".signals",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__dir__ = lazy_dir(_LAZY, globals())


class _Package(types.ModuleType):
    """The import system binds a submodule on its package (``geomlat.knn = <module geomlat.knn>``) when it is
    first imported; a public name that is also a submodule's name (``knn``) stays the function of that
    submodule."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"

__all__ = [
    "DISTANCES",
    "KERNELS",
    "Kernel",
    "LatentCapture",
    "NNKResult",
    "WITH_TORCH_CLUSTER",
    "from_dense",
    "get_kernel",
    "graph_distance",
    "knn",
    "knn_graph",
    "label_variation",
    "laplacian",
    "latent_adjacency",
    "latent_graph",
    "nnk_graph",
    "nnk_interpolation",
    "nnk_layer_errors",
    "nnk_loo_predictions",
    "nnk_symmetrize",
    "nnk_weights",
    "pool_sequence",
    "register_distance",
    "register_kernel",
    "select_logits",
    "select_output",
    "signal_variation",
    "similarity",
    "to_dense",
    "to_pygsp",
    "to_scipy",
]
