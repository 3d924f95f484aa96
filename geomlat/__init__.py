"""geomlat: latent geometry graphs of deep networks.

Build a graph over a batch from any layer's representations (:func:`latent_graph`), measure it
(:func:`label_variation`, :func:`graph_distance`), and use it to train or analyse models.
The math is defined in ``shared/METHOD.md``; the API mirrors PyTorch Geometric (LGGs are ``Data``).
"""
from .capture import LatentCapture, pool_sequence, select_logits, select_output
from .distances import DISTANCES, graph_distance, register_distance
from .graphs import from_dense, latent_adjacency, latent_graph, similarity, to_dense
from .interop import to_pygsp, to_scipy
from .knn import WITH_TORCH_CLUSTER, knn, knn_graph
from .signals import label_variation, laplacian, signal_variation

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
    "pool_sequence",
    "register_distance",
    "select_logits",
    "select_output",
    "signal_variation",
    "similarity",
    "to_dense",
    "to_pygsp",
    "to_scipy",
]
