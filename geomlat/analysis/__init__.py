"""Analysis tools: graph spectra, NNK manifold graph metrics, layer comparison, layer-wise decisions."""
from .comparison import compare_models, layer_similarity, linear_cka, plot_similarity_heatmaps
from .layerwise import decision_consistency, knn_decisions, layer_label_variation
from .manifold import ManifoldGraphMetrics, augmentation_invariance, geometric_stability
from .spectral import fourier_basis, label_spectrum, lowpass, spectral_distance_between_layers

__all__ = [
    "ManifoldGraphMetrics",
    "augmentation_invariance",
    "compare_models",
    "decision_consistency",
    "fourier_basis",
    "geometric_stability",
    "knn_decisions",
    "label_spectrum",
    "layer_label_variation",
    "layer_similarity",
    "linear_cka",
    "lowpass",
    "plot_similarity_heatmaps",
    "spectral_distance_between_layers",
]
