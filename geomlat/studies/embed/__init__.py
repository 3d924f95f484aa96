"""Study kind ``embed``: cross-entropy vs the label-variation objective (LGG paper Section 4.2, Table 2,
Appendix E / Figure A1), each network's output embedding classified by simple classifiers.

Spec fields (see ``studies/embed.toml``):

- ``data``, ``model``, ``train``, ``corruptions``: as in the ``robust`` kind.
- ``methods.NAME``: ``label``; ``loss`` = ``"cross_entropy"`` or ``"label_variation"``; ``out_dim``: width of
  the embedding (default: the number of classes). Cross-entropy with ``out_dim`` != classes trains through
  a linear head on the ``out_dim``-wide bottleneck (:class:`geomlat.losses.objectives.BottleneckCrossEntropy`,
  as the paper did for its 2-D embeddings); the embedding is the bottleneck. ``kwargs``: arguments of
  :class:`geomlat.losses.LabelVariationLoss` (label variation only); ``train``: per-method overrides.
- ``classifiers``: any of ``"argmax"`` (the network's own class scores; cross-entropy methods only),
  ``"knn"``, ``"ncm"`` (nearest class mean), ``"logreg"``, all fitted on the training-set embedding.
  ``knn_k`` (default 5).
- ``baseline``: reference method of mCE / relative mCE (a cross-entropy method; each row is compared
  with the baseline's row of the same classifier and seed, ``argmax`` rows with its argmax).
- ``figure``: ``methods`` (2-D methods drawn, Figure A1), ``epochs`` (0 = before training), ``samples``
  (class-balanced training points drawn). The embeddings are recorded by the engine's ``evaluate`` hook
  after each listed epoch (``RUN/embeddings/epoch_E.pt``) for the first seed.

During training, the per-epoch ``test_error`` recorded by the engine is the nearest-class-mean error of the
embedding (the same for every method, since label-variation outputs are not class scores).
"""


from __future__ import annotations

from typing import Any, Mapping

from ..common import build
from ..runner import RunPlan, StudyContext, StudyKind, register_study_kind
from ..spec import Fields
from . import run as _run, spec as _spec
from .spec import CLASSIFIERS, LOSSES, make_objective

__all__ = ["EmbedStudy", "LOSSES", "CLASSIFIERS", "build", "make_objective"]


@register_study_kind("embed")
class EmbedStudy(StudyKind):
    """Embedding study (see the module docstring for the spec): validation and objectives in :mod:`.spec`,
    training, evaluation and tables in :mod:`.run`, the figure in :mod:`.figures`."""

    validation_metrics = ("knn", "ncm", "logreg")
    validation_extras = ("loss",)  # the final training loss

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        return _spec.validate(spec, fields)

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        return _run.run(spec, ctx)

    def build_run(self, spec, method, seed, splits, runs_dir=None) -> RunPlan:
        return _run.build_run(spec, method, seed, splits)

    def validation_errors(self, spec, plan: RunPlan, splits, final: Mapping[str, Any]) -> dict[str, float]:
        return {**_run.validation_errors(spec, plan.objective, splits), "loss": final["loss"]}

    def tuning_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """No figure (it lists the study's methods); a ``baseline`` naming no method of the grid names a
        cross-entropy method added for it."""
        spec = {k: v for k, v in spec.items() if k != "figure"}
        if spec.get("baseline") is not None and spec["baseline"] not in spec["methods"]:
            spec.pop("baseline")
            spec["methods"] = {**spec["methods"], "ce": {"loss": "cross_entropy"}}
        return spec
