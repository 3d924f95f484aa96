"""Knowledge-distillation losses (the :class:`geomlat.objectives.Distiller` objective combines them).

``L = L_task + sum_terms weight * L_term`` (LGG paper, Section 4.1; see ``shared/METHOD.md``).
Every loss is registered (:func:`geomlat.losses.register_loss`) and says what it consumes:
``consumes = "features"`` (:class:`GKD`, :class:`RKDDistance`, :class:`RKDAngle`,
:class:`SimilarityPreserving`, :class:`FitNet`): ``forward(teacher_feats, student_feats, y)``, lists of
(B, ...) features, one per (teacher layer, student layer) pair, depths and widths free;
``consumes = "logits"`` (:class:`HintonKD`): ``forward(teacher_logits, student_logits, y)``.

Token sequences: every feature loss takes a keyword-only ``attention_mask`` (B, T) in forward (Hugging
Face's convention, 1 = real token; the :class:`geomlat.objectives.Distiller` passes the batch's) and a
``reduce`` option: (B, T, H) features become one vector per sample by
:func:`geomlat.sequences.sample_vectors` (with a mask: the mean of the real tokens by default, ``"first"``
or ``"last"``), so padding never enters a loss. A 3-D input without mask or ``reduce`` is flattened with
the same warning as everywhere in geomlat.

Default kernel (GKD): ``"auto"``, geomlat's rule (:func:`geomlat.graphs.resolve_kernel`): cosine when the
features of a layer pair are non-negative (post-ReLU: the authors' setting, same values as before),
RBF with the estimated bandwidth when they are signed (transformer hidden states), the same kernel for the
teacher's and the student's graph.

Argument order: teacher first, then student, the teacher side always detached. torchdistill's losses
take ``(student, teacher)``, the reverse; geomlat keeps the teacher-first order of the authors' GKD code
and of the paper's ``L(A_T, A_S)`` (swap the arguments when porting from torchdistill).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..capture import LatentCapture
from ..graphs import GraphOptions, class_mask, graph_options, knn_mask, latent_adjacency, normalize_adjacency, similarity
from ..kernels import batch_scale, squared_distances
from ..sequences import check_attention_mask
from .._checks import check_choice, check_features, check_features_min, check_k, check_labels, full_precision, upcast_half
from .._checks import checks_deferred, value_check
from .pairwise import PairwiseDistillationLoss
from .registry import register_loss

GKD_ORDERS = ("authors", "paper")


@register_loss("gkd")
class GKD(PairwiseDistillationLoss):
    """Graph knowledge distillation (Lassance et al., "Deep geometric knowledge distillation with graphs",
    ICASSP 2020; LGG paper Section 4.1).

    ``L = (1 / P) sum_pairs || A_T - A_S ||_F^2``: the squared Frobenius norm is *summed* over the B x B
    entries and the sum over the P layer pairs is divided by P (authors' code). Multiply by
    ``lambda_KD`` (25 in the paper) outside, e.g. as the :class:`geomlat.objectives.Distiller` weight.

    Two orders of the graph construction, which agree for the full graph without mask at ``power=1``:

    - ``order="authors"`` (default; the authors' graph_kd code, ``representations_to_adj`` / ``do_gkd``):
      for each of teacher and student, the similarity of the *full* graph with a zero diagonal, then
      ``D^-1/2 A D^-1/2`` of that full graph (``normalize="sym"``), then times the class mask. With ``k``,
      the k-NN mask is picked on the *teacher's* normalized, class-masked adjacency (the ``k`` largest
      entries of each row, symmetrized with max) and multiplies both graphs, without renormalizing.
      Then ``A^p`` by plain matrix products, diagonal kept. The teacher's graph and its k-NN mask are
      computed once per layer pair.
    - ``order="paper"``: each graph is an LGG built as in Section 3.3 (k-NN, class mask, then
      normalization, then ``A^p`` with the diagonal removed), via :func:`geomlat.latent_adjacency`; with
      ``k`` and ``reuse_teacher_knn`` the student keeps the teacher's k-NN edges (picked on the teacher's
      similarity).

    Args:
        k: neighbors per vertex of the k-NN graph; ``None`` = full graph (authors' setting).
        kernel: similarity (see :func:`geomlat.similarity`); ``"auto"`` (default): cosine when both features
            of a pair are non-negative (the authors' cosine on post-ReLU features), else RBF for both;
            ``"cosine"`` needs non-negative features.
        mask: ``None``, ``"inter"`` (keep edges between distinct classes, the talk's best variant) or
            ``"intra"``; needs ``labels`` in forward.
        power: smoothed graphs ``A^p`` (``p >= 1``); diagonal kept (``"authors"``) or removed (``"paper"``).
        normalize: ``"sym"`` (``D^-1/2 A D^-1/2``, the paper) or ``None``.
        reuse_teacher_knn: ``order="paper"`` with ``k``: the student graph keeps the teacher's k-NN edges
            instead of its own. (``"authors"`` always uses the teacher's k-NN mask.)
        order: ``"authors"`` (default) or ``"paper"``, see above.
        reduce: token features (B, T, H) -> (B, H) (:func:`geomlat.sequences.sample_vectors`): ``None``
            (the masked mean when ``attention_mask`` is given), ``"mean"``, ``"first"``, ``"last"``, ``"flatten"``.
        options: ``k``, ``kernel``, ``mask``, ``power``, ``normalize`` and ``reduce`` as one
            :class:`geomlat.graphs.GraphOptions` instead of the keywords (which then keep their defaults;
            ``GraphOptions``' own default is ``normalize=None``: give ``normalize="sym"`` for the paper's).
            GKD does not use ``sigma``, ``symmetrize`` or ``self_loops``.

    Under torch.distributed, wrap it in :class:`geomlat.distributed.GlobalBatch` for the graphs of the
    whole batch (``k`` then refers to the global batch).

    Forward: ``teacher_feats``, ``student_feats``: lists (or single tensors) of (B, ...) features;
    ``labels`` (B,) for the class masks; keyword ``attention_mask`` (B, T) for (B, T, H) token features.
    Returns a scalar.
    """

    consumes = "features"

    def __init__(
        self,
        k: int | None = None,
        kernel: str = "auto",
        mask: str | None = None,
        power: int = 1,
        normalize: str | None = "sym",
        reuse_teacher_knn: bool = True,
        order: str = "authors",
        reduce: str | None = None,
        *,
        options: GraphOptions | None = None,
    ):
        check_choice(order, "order", GKD_ORDERS)
        graph = graph_options(options, GKD.__init__, k=k, kernel=kernel, mask=mask, power=power,
                              normalize=normalize, reduce=reduce)
        unused = [name for name in ("sigma", "symmetrize", "self_loops") if name in graph.non_default()]
        if unused:
            raise ValueError(f"GKD does not use the graph options {unused}: leave them at their defaults")
        super().__init__(graph.reduce)
        self.options = graph
        self.reuse_teacher_knn, self.order = reuse_teacher_knn, order

    # the graph keywords, read from the options
    k = property(lambda self: self.options.k)
    kernel = property(lambda self: self.options.kernel)
    mask = property(lambda self: self.options.mask)
    power = property(lambda self: self.options.power)
    normalize = property(lambda self: self.options.normalize)

    def graphs(self, teacher: Tensor, student: Tensor, labels: Tensor | None = None, *,
               attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The two (B, B) matrices compared by the loss for one layer pair, ``(A_T^p, A_S^p)`` (teacher detached)."""
        return self._graphs(*self.prepare(teacher.detach(), student, attention_mask, 0), labels)

    def pair_loss(self, t: Tensor, s: Tensor, labels: Tensor | None, index: int) -> Tensor:
        """``||A_T - A_S||_F^2`` (summed over the B x B entries) of one pair of (B, d) sample vectors."""
        a_t, a_s = self._graphs(t, s, labels)
        return ((a_t - a_s) ** 2).sum()

    def _graphs(self, t: Tensor, s: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """:meth:`graphs` of the (B, d) sample vectors of one pair."""
        t, lo_t = check_features_min(t, "teacher features")
        s, lo_s = check_features_min(s, "student features")
        # one kernel for both graphs of the pair under "auto", decided by the pair's minimum: on the host here,
        # on the device under deferred checks (the minima are then tensors; no host read in a step)
        kernel, auto_min = self.kernel, None
        if kernel == "auto":
            if torch.is_tensor(lo_t) or torch.is_tensor(lo_s):
                auto_min = torch.minimum(torch.as_tensor(lo_t), torch.as_tensor(lo_s))
            else:
                kernel = "cosine" if min(lo_t, lo_s) >= 0 else "rbf"
        b = t.shape[0]
        check_k(self.k, b)
        if self.mask is not None:
            if labels is None:
                raise ValueError(f"GKD(mask={self.mask!r}) needs the labels of the batch: forward(t, s, labels)")
            labels = check_labels(labels, b).to(t.device)
        if self.order == "authors":
            return self._authors(t, s, labels, kernel, auto_min)
        if self.k is None or not self.reuse_teacher_knn:
            kw = dict(k=self.k, kernel=kernel, normalize=self.normalize, mask=self.mask, labels=labels, power=self.power,
                      auto_min=auto_min)
            return latent_adjacency(t, **kw)[0], latent_adjacency(s, **kw)[0]
        # paper order, k-NN edges chosen on the teacher and reused for the student
        t_sim, s_sim = similarity(t, kernel, k=self.k, auto_min=auto_min), similarity(s, kernel, k=self.k, auto_min=auto_min)
        edges = knn_mask(t_sim, self.k)
        if self.mask is not None:
            edges = edges & class_mask(labels, self.mask)
        return self._finish(t_sim * edges), self._finish(s_sim * edges)

    def _finish(self, adj: Tensor) -> Tensor:
        """Paper order: normalization then power, no self-loops (steps 4 and smoothing of :func:`latent_adjacency`)."""
        if self.normalize == "sym":
            adj = normalize_adjacency(adj)
        if self.power > 1:
            adj = torch.linalg.matrix_power(adj, self.power)
            adj = adj * ~torch.eye(adj.shape[0], dtype=torch.bool, device=adj.device)
        return adj

    def _authors(self, t: Tensor, s: Tensor, labels: Tensor | None, kernel: str,
                 auto_min: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Authors' order for one pair of checked (B, d) features: ``(A_T^p, A_S^p)``, each (B, B)."""
        keep = None if self.mask is None else class_mask(labels, self.mask)
        a_t, a_s = self._authors_masked(t, keep, kernel, auto_min), self._authors_masked(s, keep, kernel, auto_min)
        if self.k is not None:
            # top-k of each row of the teacher's normalized, class-masked adjacency, symmetrized with max
            edges = knn_mask(a_t, self.k)
            a_t, a_s = a_t * edges, a_s * edges
        if self.power > 1:  # plain matrix powers, diagonal kept
            a_t, a_s = torch.linalg.matrix_power(a_t, self.power), torch.linalg.matrix_power(a_s, self.power)
        return a_t, a_s

    def _authors_masked(self, x: Tensor, keep: Tensor | None, kernel: str, auto_min: Tensor | None = None) -> Tensor:
        """(B, B) full graph without self-loops, normalized before any edge is removed, times the class mask."""
        adj = latent_adjacency(x, k=None, kernel=kernel, normalize=self.normalize, auto_min=auto_min)[0]
        return adj if keep is None else adj * keep



def _pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """(B, B) Euclidean distances with a zero diagonal; coincident samples get distance exactly 0.

    The squared distance is clamped *before* the square root (and the other branch of ``where`` is never
    differentiated), so the gradient stays finite when two samples coincide.
    """
    sq = squared_distances(x)
    apart = sq > eps
    apart = apart & ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.where(apart, sq.clamp_min(eps).sqrt(), torch.zeros_like(sq))


def _scaled_distances(x: Tensor) -> Tensor:
    d = _pairwise_distances(x)
    nonzero = d > 0
    # all samples coincide: nothing to scale, keep the zero matrix instead of 0/0
    # (no host read: a masked sum over the count, and 1 when nothing is apart)
    count = nonzero.sum()
    mean = torch.where(count > 0, (d * nonzero).sum() / count.clamp_min(1), torch.ones((), dtype=d.dtype, device=d.device))
    return d / mean


class _RelationalKD(PairwiseDistillationLoss):
    """Base of the losses that compare a relation between the samples of the teacher and of the student,
    layer pair by layer pair (:class:`PairwiseDistillationLoss`).

    Subclasses implement ``pair_loss(t (B, d_t) detached, s (B, d_s), labels, index) -> scalar``, which must
    not depend on a global scale of ``t`` or of ``s`` (RKD-D divides by the mean distance, RKD-A uses unit
    vectors, SP normalizes rows): :meth:`prepare` divides each side by its power-of-2
    :func:`geomlat.kernels.batch_scale` (exact; the gradient is unchanged), so features of any finite scale
    neither overflow nor vanish below the epsilons, and the geometry is in float32 for half features.

    Args:
        reduce: token features (B, T, H) -> (B, H) (:func:`geomlat.sequences.sample_vectors`; with the
            keyword ``attention_mask`` of forward, the mean of the real tokens by default).
    """

    def prepare(self, t: Tensor, s: Tensor, attention_mask: Tensor | None, index: int) -> tuple[Tensor, Tensor]:
        t, s = super().prepare(t, s, attention_mask, index)
        t, s = check_features(t, "teacher features"), check_features(s, "student features")
        return t / batch_scale(t), s / batch_scale(s)


@register_loss("rkd_d")
class RKDDistance(_RelationalKD):
    """Distance-wise relational KD, RKD-D (Park et al., "Relational knowledge distillation", CVPR 2019).

    ``d_ij = |x_i - x_j| / mu``, ``mu`` the mean of the non-zero distances of the batch (for teacher and
    student separately); ``L = mean_{i,j} smoothL1(d^S_ij, d^T_ij)``. Reduction as in Park et al.'s
    reference code: mean over all B^2 ordered pairs (the diagonal, zero in both, included), then mean over
    the layer pairs. Usual weight 25. Features of any widths; (B, ...) flattened.
    """

    def pair_loss(self, t: Tensor, s: Tensor, labels: Tensor | None = None, index: int = 0) -> Tensor:
        return F.smooth_l1_loss(_scaled_distances(s), _scaled_distances(t), reduction="mean")


def _angles(x: Tensor) -> Tensor:
    """(B, B, B) cosines ``<e_ij, e_ik>``, ``e_ij = (x_i - x_j) / |x_i - x_j|`` (zero when x_i = x_j)."""
    diff = x[:, None, :] - x[None, :, :]  # diff[i, j] = x_i - x_j
    sq = (diff * diff).sum(dim=2, keepdim=True)
    apart = sq > 1e-24
    # safe unit vectors: clamp before rsqrt so coincident samples give 0, with a finite gradient
    unit = torch.where(apart, diff * sq.clamp_min(1e-24).rsqrt(), torch.zeros_like(diff))
    return unit @ unit.transpose(1, 2)


@register_loss("rkd_a")
class RKDAngle(_RelationalKD):
    """Angle-wise relational KD, RKD-A (Park et al., "Relational knowledge distillation", CVPR 2019).

    ``L = mean_{i,j,k} smoothL1(<e^S_ij, e^S_ik>, <e^T_ij, e^T_ik>)`` with unit difference vectors ``e``.
    Reduction as in Park et al.'s code: mean over all B^3 triplets (degenerate ones are 0 in both), then
    mean over layer pairs. Memory O(B^3 + B^2 d). Usual weight 50.
    """

    def pair_loss(self, t: Tensor, s: Tensor, labels: Tensor | None = None, index: int = 0) -> Tensor:
        return F.smooth_l1_loss(_angles(s), _angles(t), reduction="mean")


@register_loss("hinton")
class HintonKD(nn.Module):
    """Soft-target distillation (Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network", 2015).

    ``L = T^2 * KL(softmax(z_T / T) || softmax(z_S / T))``, summed over classes and averaged over the
    batch (``batchmean``). Logit-based: forward(teacher_logits (B, C), student_logits (B, C)).
    """

    consumes = "logits"

    def __init__(self, T: float = 4.0):
        super().__init__()
        if not T > 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        self.T = float(T)

    @full_precision
    def forward(self, teacher_logits: Tensor, student_logits: Tensor, labels: Tensor | None = None) -> Tensor:
        if not isinstance(teacher_logits, Tensor) or not isinstance(student_logits, Tensor):
            raise TypeError("HintonKD expects logit tensors (B, C)")
        if teacher_logits.dim() != 2 or teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"HintonKD needs logits of the same shape (B, C), got teacher {tuple(teacher_logits.shape)} "
                f"and student {tuple(student_logits.shape)}"
            )
        for logits, name in ((teacher_logits, "teacher_logits"), (student_logits, "student_logits")):
            _check_finite_logits(logits, name)
        # half logits: softmax and KL divergence in float32 (as the geometry of the feature losses)
        log_t = F.log_softmax(upcast_half(teacher_logits.detach()) / self.T, dim=1)
        log_s = F.log_softmax(upcast_half(student_logits) / self.T, dim=1)
        return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * self.T**2


def _check_finite_logits(logits: Tensor, name: str) -> None:
    """``ValueError`` naming ``name`` and its NaN / Inf counts unless every logit is finite (recorded on the
    device inside :func:`geomlat.checks.deferred_value_checks`: no host read). Meta tensors hold no values."""
    if logits.is_meta:
        return
    finite = torch.isfinite(logits.detach()).all()
    if checks_deferred():
        value_check(finite, f"HintonKD: {name} contains NaN or Inf values: the soft targets would be NaN")
    elif not bool(finite):
        n_nan, n_inf = int(torch.isnan(logits).sum()), int(torch.isinf(logits).sum())
        raise ValueError(f"HintonKD: {name} contains non-finite values ({n_nan} NaN, {n_inf} Inf): "
                         "the soft targets would be NaN")


@register_loss("fitnet")
class FitNet(PairwiseDistillationLoss):
    """Hint regression (Romero et al., "FitNets: hints for thin deep nets", ICLR 2015).

    The student feature ``(B, C_s, *spatial)`` goes through a learned 1x1 projection (a linear map over the
    channel dimension: a 1x1 convolution for images, a linear layer for vectors) to the teacher's width
    C_t; when the spatial sizes differ, both are adaptively average-pooled to the smaller size per axis.
    ``L = mean over pairs of MSE`` (mean over every element).

    The projections are parameters of this module, trained together with the student (the
    :class:`geomlat.objectives.Distiller` registers them) and discarded after training: they are *not* part of the
    student's parameter count.

    Token sequences: with the keyword ``attention_mask`` (B, T) of forward, the features are (B, T, H) token
    features of the same T for teacher and student: the projection maps the last (hidden) dimension H_s ->
    H_t (``student_channels``, ``teacher_channels`` are then the hidden sizes) and the MSE is the mean over
    the real tokens' positions and the H_t channels only (padding never enters the loss nor the gradient
    of the projection). Without a mask, dimension 1 is the channel dimension ((B, C, L) Conv1d maps).

    Args:
        student_channels, teacher_channels: channel counts of each pair (int for one pair, or sequences).

    :meth:`from_models` infers them from the models (what :func:`geomlat.losses.build_loss` calls).
    """

    geometry_in_float32 = False  # the projection runs in the autocast dtype; the MSE in float32

    @classmethod
    def from_models(cls, teacher: nn.Module, student: nn.Module, pairs: Sequence[tuple[str, str]], *,
                    example: Tensor | None = None) -> "FitNet":
        """FitNet for the layer ``pairs`` ``[(teacher_layer, student_layer), ...]``, the channel counts (dim 1)
        read from the outputs of those layers on ``example`` (a small (b, ...) batch of inputs), in eval mode
        without gradients; each model's train/eval mode is restored afterwards."""
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            raise ValueError("FitNet needs at least one (teacher_layer, student_layer) pair")
        if not isinstance(example, Tensor):
            raise TypeError(f"FitNet.from_models needs example=, a small batch of inputs (Tensor), got {type(example).__name__}")
        t_ch = _feature_channels(teacher, [t for t, _ in pairs], example)
        s_ch = _feature_channels(student, [s for _, s in pairs], example)
        return cls(s_ch, t_ch)

    def __init__(self, student_channels: int | Sequence[int], teacher_channels: int | Sequence[int]):
        super().__init__()
        s_ch = [student_channels] if isinstance(student_channels, int) else list(student_channels)
        t_ch = [teacher_channels] if isinstance(teacher_channels, int) else list(teacher_channels)
        if len(s_ch) != len(t_ch) or not s_ch:
            raise ValueError(f"FitNet needs one teacher width per student width, got {s_ch} and {t_ch}")
        self.proj = nn.ModuleList(nn.Linear(s, t) for s, t in zip(s_ch, t_ch))

    def project(self, index: int, student: Tensor) -> Tensor:
        """Apply projection ``index`` over dimension 1 of a (B, C_s, ...) tensor -> (B, C_t, ...)."""
        proj = self.proj[index]
        if student.dim() < 2 or student.shape[1] != proj.in_features:
            raise ValueError(f"pair {index}: student features {tuple(student.shape)} need {proj.in_features} channels (dim 1)")
        # features of another precision than the projection (half features, float32 projection): in its dtype
        return proj(student.movedim(1, -1).to(proj.weight.dtype)).movedim(-1, 1)

    def _token_mse(self, index: int, t: Tensor, s: Tensor, attention_mask: Tensor) -> Tensor:
        """MSE over the real tokens of one pair of (B, T, H) token features (projection over H)."""
        keep = check_attention_mask(attention_mask, t, f"FitNet pair {index}: teacher features")
        check_attention_mask(attention_mask, s, f"FitNet pair {index}: student features")
        proj = self.proj[index]
        if s.shape[-1] != proj.in_features:
            raise ValueError(f"pair {index}: student token features {tuple(s.shape)} need {proj.in_features} hidden units (last dim)")
        if t.shape[-1] != proj.out_features:
            raise ValueError(f"pair {index}: teacher token features {tuple(t.shape)} need {proj.out_features} hidden units (last dim)")
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        s = torch.where(keep[:, :, None], s, zero)  # padding zeroed before the projection: no NaN in its gradient
        t = torch.where(keep[:, :, None], upcast_half(t), torch.zeros((), dtype=upcast_half(t).dtype, device=t.device))
        diff = torch.where(keep[:, :, None], upcast_half(proj(s.to(proj.weight.dtype))) - t, torch.zeros((), device=t.device))
        return (diff**2).sum() / (keep.sum().clamp(min=1) * t.shape[-1])

    def check_pairs(self, teacher_feats, student_feats) -> list[tuple[Tensor, Tensor]]:
        pairs = super().check_pairs(teacher_feats, student_feats)
        if len(pairs) != len(self.proj):
            raise ValueError(f"FitNet was built for {len(self.proj)} layer pairs, got {len(pairs)}")
        return pairs

    def prepare(self, t: Tensor, s: Tensor, attention_mask: Tensor | None, index: int) -> tuple[Tensor, Tensor]:
        """The features as they are: FitNet compares maps (B, C, ...), not sample vectors."""
        return t, s

    def pair_loss(self, t: Tensor, s: Tensor, labels: Tensor | None, index: int) -> Tensor:
        """MSE between the teacher's (B, C_t, ...) map and the projected student map, pooled to a common size."""
        s = self.project(index, s)
        if t.shape[1] != s.shape[1] or t.dim() != s.dim():
            raise ValueError(f"pair {index}: teacher features {tuple(t.shape)} do not match projected student {tuple(s.shape)}")
        if t.shape[2:] != s.shape[2:]:
            size = tuple(min(a, b) for a, b in zip(t.shape[2:], s.shape[2:]))
            pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}.get(len(size))
            if pool is None:
                raise ValueError(f"pair {index}: cannot pool {len(size)} spatial dimensions")
            t, s = pool(t, size), pool(s, size)
        return F.mse_loss(upcast_half(s), upcast_half(t))  # half: the mean in float32

    def forward(self, teacher_feats, student_feats, labels: Tensor | None = None, *,
                attention_mask: Tensor | None = None) -> Tensor:
        if attention_mask is None:
            return super().forward(teacher_feats, student_feats, labels)
        # token features: the MSE over the real tokens of each pair (the mask enters the mean, not only the vectors)
        pairs = self.check_pairs(teacher_feats, student_feats)
        return sum(self._token_mse(i, t.detach(), s, attention_mask) for i, (t, s) in enumerate(pairs)) / len(pairs)


def _feature_channels(model: nn.Module, layers: list[str], x: Tensor) -> list[int]:
    """Channel count (dim 1) of each named layer's output on the batch ``x`` (eval mode, no gradient; the
    model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), LatentCapture(model, list(dict.fromkeys(layers)), detach=True) as out:
            model(x)
    finally:
        model.train(was_training)
    return [int(out[name].shape[1]) for name in layers]


def _unit_rows(g: Tensor) -> Tensor:
    """Rows of ``g`` (B, B) divided by their L2 norm; a zero row stays zero, its gradient passed unscaled (``F.normalize``'s
    eps gives it a gradient of 1e12, inf in float16)."""
    norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
    return g / torch.where(norm > 0, norm, torch.ones_like(norm))


@register_loss("sp")
class SimilarityPreserving(_RelationalKD):
    """Similarity-preserving KD (Tung & Mori, "Similarity-preserving knowledge distillation", ICCV 2019).

    ``G = row_normalize(F F^T)`` (F the (B, d) flattened features), ``L = ||G_T - G_S||_F^2 / B^2`` per
    pair, averaged over the layer pairs (Tung & Mori sum them; divide the weight accordingly).
    """

    def pair_loss(self, t: Tensor, s: Tensor, labels: Tensor | None = None, index: int = 0) -> Tensor:
        g_t = _unit_rows(t @ t.T)
        g_s = _unit_rows(s @ s.T)
        return ((g_t - g_s) ** 2).sum() / t.shape[0] ** 2
