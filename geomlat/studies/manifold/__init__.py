"""Study kind ``manifold``: the geometry of a network's layers over training (``papers/004``, LGG paper 3.3).

One network (model A) is trained; a weight snapshot is saved after every epoch. For each analyzed epoch
and each layer, on ``analysis.samples`` class-balanced samples of the *training* split (no validation
data is used, which is the point: Shekkizhar & Ortega, Asilomar 2021; Bonet et al., APSIPA 2021):

- manifold graph metrics of the NNK graph (:class:`geomlat.analysis.ManifoldGraphMetrics`): NNK
  neighbors per node, polytope diameter, local dimension (means over nodes);
- the label-signal spectrum on the cosine k-NN LGG (as :func:`geomlat.analysis.label_spectrum`, Laplacian
  ``D - A``, whose null space holds the indicators of the connected components): energy of the one-hot labels per graph frequency, its share in the ``C`` lowest
  frequencies (``C`` = number of classes; 1 when the connected components of the LGG are exactly the
  classes) and the normalized label variation;
- the leave-one-out NNK interpolation error (:func:`geomlat.nnk.nnk_interpolation`) and, as a plain
  baseline, the leave-one-out k-NN error on the LGG (:func:`geomlat.analysis.knn_decisions`);
- beside them the model's own error on the same training samples and its test error.

Model selection / early stopping: across epochs, the Spearman rank correlation of each signal with the
test error, and the test error at the first epoch where the signal is smallest (what early stopping on
that signal would keep). A second network of another width (model B) is trained with the same recipe,
and the two are compared layer by layer on test samples with LGG similarity, linear CKA and mutual
k-NN overlap (:func:`geomlat.analysis.compare_models`).

Per-epoch snapshots: :func:`geomlat.engine.train` has no epoch-end hook, so the snapshot is written from
its ``evaluate=`` hook, which ``train`` calls after every epoch when ``eval_every = 1`` (required here).
The hook computes the usual test error and saves the weights to ``RUN/snapshots/epoch_XXXX.pt``; the
epoch number is the number of lines already in ``RUN/metrics.jsonl`` plus one (``train`` writes that
file after each epoch, also when it resumes). Training itself (lr schedule, random streams) is unchanged.

Spec fields (see ``studies/manifold.toml``): ``data``, ``model`` / ``train`` (as in ``toy``; exactly one
seed), ``layers`` (module names, ``"input"`` for the raw inputs; default input, every stage and the pooled
features), ``analysis``: ``samples`` (500), ``nnk_k`` (15), ``graph_k`` (10), ``kernel`` ("cosine"),
``every`` (analyze every this many epochs; the last epoch always), ``spectrum_epochs`` (epochs whose
spectra are drawn; default first and last), ``comparison``: ``model`` (another width), ``samples``
(test samples, 500), ``knn_k`` (mutual k-NN overlap, 10), ``lgg_k`` (the LGG similarity is computed on full
graphs, as in the GKD code, and on ``lgg_k``-NN graphs; 10), ``layers_a`` / ``layers_b`` (default: the stages
and the pooled features of each model).
"""


from __future__ import annotations

from typing import Any

from ..runner import StudyContext, StudyKind, register_study_kind
from ..spec import Fields
from . import run as _run, spec as _spec
from .run import SnapshotHook, layer_geometry, selection_stats

__all__ = ["ManifoldStudy", "SnapshotHook", "layer_geometry", "selection_stats"]


@register_study_kind("manifold")
class ManifoldStudy(StudyKind):
    """Per-layer, per-epoch manifold geometry and NNK model selection (module docstring): validation in
    :mod:`.spec`, the run and its tables in :mod:`.run`, the figures in :mod:`.figures`."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        return _spec.validate(spec, fields)

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        return _run.run(spec, ctx)
