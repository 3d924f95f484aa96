"""Analysis tools: graph spectra, NNK manifold graph metrics, representation similarity and layer comparison, layer-wise decisions,
channel-wise NNK and streaming analyses of whole datasets."""
from .channelwise import (
    ChannelNNK,
    ChannelwiseEarlyStopping,
    channel_maps,
    channel_overlap,
    channelwise_early_stopping,
    channelwise_loo_errors,
    channelwise_nnk,
)
from .comparison import compare_models, layer_similarity, linear_cka, plot_similarity_heatmaps, similarity_tables
from .generalization import (
    bootstrap_ci,
    early_stopping_regret,
    granulated_kendall,
    kendall_tau,
    output_margin,
    parameter_norm,
    selection_regret,
    sharpness_proxy,
)
from .layerwise import decision_consistency, knn_decisions, layer_label_variation
from .manifold import ManifoldGraphMetrics, augmentation_invariance, geometric_stability
from .similarity import (
    SIMILARITIES,
    SimilarityMeasure,
    SimilarityNull,
    register_similarity,
    representation_similarity,
    similarity_null,
)
from .statistics import conditional_mutual_information, paired_difference, pgdl_cmi
from .spectral import fourier_basis, label_spectrum, lowpass, spectral_distance_between_layers
from .streaming import capture_dataset, stream_nnk_analysis, streaming_nnk_metrics

__all__ = [
    "SIMILARITIES",
    "SimilarityMeasure",
    "SimilarityNull",
    "ChannelNNK",
    "ChannelwiseEarlyStopping",
    "ManifoldGraphMetrics",
    "augmentation_invariance",
    "bootstrap_ci",
    "capture_dataset",
    "channel_maps",
    "channel_overlap",
    "channelwise_early_stopping",
    "channelwise_loo_errors",
    "channelwise_nnk",
    "compare_models",
    "conditional_mutual_information",
    "decision_consistency",
    "early_stopping_regret",
    "fourier_basis",
    "geometric_stability",
    "granulated_kendall",
    "kendall_tau",
    "knn_decisions",
    "label_spectrum",
    "layer_label_variation",
    "layer_similarity",
    "linear_cka",
    "lowpass",
    "output_margin",
    "paired_difference",
    "parameter_norm",
    "pgdl_cmi",
    "plot_similarity_heatmaps",
    "register_similarity",
    "representation_similarity",
    "selection_regret",
    "sharpness_proxy",
    "similarity_null",
    "similarity_tables",
    "spectral_distance_between_layers",
    "stream_nnk_analysis",
    "streaming_nnk_metrics",
]
