"""Label variation of the output LGG as a training objective (LGG paper Section 4.2, Appendix E)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graphs import GraphOptions, feature_vectors, graph_options
from .._checks import check_features, check_labels, full_precision
from .registry import register_loss


@register_loss("label_variation")
class LabelVariationLoss(nn.Module):
    """Label variation ``tr(V^T L V)`` of the LGG of a network's output, as a loss.

    Bontonou, Lassance, Hacene, Gripon, Tang & Ortega, "Introducing graph smoothness loss for training
    deep learning architectures" (2019); LGG paper (Lassance et al. 2021) Section 4.2. Minimizing it
    pushes apart outputs of distinct classes; the output dimension D is free (D = 2 works; no need for
    D = number of classes). Classify afterwards with k-NN / nearest class mean / logistic regression on
    the embedding. Usable alone or beside cross-entropy (then the output must also serve as logits).

    Reduction: the sum over ordered pairs (i, j) with ``y_i != y_j`` of ``A_ij`` (not averaged; it grows
    like B^2 for a full graph). ``normalized=True`` divides by the total edge weight (Appendix C), giving
    a value in [0, 1] independent of the batch size.

    Kernel choice (default ``"rbf"`` with the bandwidth estimated from the batch): an output embedding is
    signed, so plain cosine does not apply. The RBF with ``sigma`` = mean distance to the k-th neighbor / 3
    (the authors' rule, :func:`geomlat.kernels.estimate_sigma`) is the paper's choice for signed data and
    makes the loss invariant to a global rescaling of the output (distances and sigma scale together),
    so it cannot be decreased trivially by inflating the outputs; inter-class weights can reach ~0 for
    any number of classes, also in 2-D. ``"cosine_shifted"`` (0.5 + 0.5 cos) also works for signed data
    and is scale-invariant, but only antipodal directions get weight 0: with C > 2 classes in few
    dimensions the minimum stays far above 0 and the loss only spreads class directions, not clusters.

    Args:
        k: k-NN graph (``None``: full graph). With ``"rbf"``, ``k`` is also the neighbor used for sigma.
        kernel: any kernel of :func:`geomlat.similarity` (``"cosine"`` only for non-negative outputs).
        normalized: divide by the total edge weight.
        sigma: fixed RBF bandwidth instead of the estimate.
        reduce: token outputs (B, T, D) -> (B, D) (:func:`geomlat.sequences.sample_vectors`; with the keyword
            ``attention_mask`` of forward, the mean of the real tokens by default).
        options: the graph as a :class:`geomlat.graphs.GraphOptions` instead of the keywords ``k``,
            ``kernel``, ``sigma``, ``reduce`` (which then keep their defaults); every graph option applies
            (e.g. ``normalize``, ``mask``, ``power``).

    Forward (``consumes = "output"``): ``output`` (B, D) (or (B, ...), flattened), ``y`` (B,) int labels,
    keyword ``attention_mask`` (B, T) for (B, T, D) token outputs (padding never enters the graph) -> scalar. Under torch.distributed, :class:`geomlat.distributed.GlobalBatch` gives the graph of the
    whole batch (``k`` and the RBF bandwidth then refer to the global batch).
    """

    consumes = "output"

    def __init__(
        self,
        k: int | None = None,
        kernel: str = "rbf",
        normalized: bool = False,
        sigma: float | None = None,
        reduce: str | None = None,
        *,
        options: GraphOptions | None = None,
    ):
        super().__init__()
        self.options = graph_options(options, LabelVariationLoss.__init__, k=k, kernel=kernel, sigma=sigma, reduce=reduce)
        self._vector_options = self.options.replace(reduce=None)  # the graph of the (B, D) vectors
        self.normalized = bool(normalized)

    # the graph keywords, read from the options (lv_diagnosis and users read them)
    k = property(lambda self: self.options.k)
    kernel = property(lambda self: self.options.kernel)
    sigma = property(lambda self: self.options.sigma)
    reduce = property(lambda self: self.options.reduce)

    @full_precision  # float32 geometry also under autocast (half outputs are upcast by check_features)
    def forward(self, output: Tensor, y: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        flat = check_features(feature_vectors(output, attention_mask, self.reduce, "LabelVariationLoss: output"), "output")
        labels = check_labels(y, flat.shape[0], "y").to(flat.device)
        # the dense (B, B) LGG, not its edge list: the same sum, and no host read for the number of edges
        adj, _ = self._vector_options.adjacency(flat, labels)
        between = labels[:, None] != labels[None, :]
        variation = (adj * between).sum()  # tr(V^T L V): weight of the ordered pairs of distinct classes
        if not self.normalized:
            return variation
        total = adj.sum()  # no self-loops: sum_{i != j} A_ij
        # no edge at all: nothing varies (0, not 0/0), as label_variation does
        return torch.where(total != 0, variation / torch.where(total != 0, total, torch.ones_like(total)), torch.zeros_like(total))
