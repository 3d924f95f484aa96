"""Study kind ``robust``: robustness of a classifier trained with cross-entropy alone, with the label-variation
smoothness regularizer, with Parseval retraction, with both, and with PGD adversarial training (LGG paper
Section 4.3, Tables 3 and A1; Lassance, Gripon & Ortega, "Laplacian networks", 2021).

Spec fields (see ``studies/robust.toml`` for a commented example):

- ``data``: ``name`` (an image data set of ``geomlat.data``: corruptions need (C, H, W) images), ``seed``
  (the split, default 0), ``options`` (passed to ``load_dataset``).
- ``model``: ``model``, ``kwargs`` (a ``geomlat.models`` classifier with ``relu_names``).
- ``train``: :class:`geomlat.engine.TrainConfig` fields shared by every method (the seed comes from
  ``seeds``); ``methods.NAME.train`` overrides them.
- ``methods.NAME``: ``label``; ``objective`` = ``"supervised"`` (cross-entropy), ``"smoothness"``
  (cross-entropy + :class:`geomlat.losses.SmoothnessRegularizer`; ``kwargs`` are its arguments, ``layers``
  the captured modules, default every ReLU of the model) or ``"pgd"`` (:class:`geomlat.robustness.PGDTraining`;
  ``kwargs`` eps / alpha / steps); ``parseval`` = ``{beta = 0.01}`` to apply the Parseval retraction after
  every optimizer step (any objective).
- ``baseline``: the reference method of mCE and of the time ratio (default ``"baseline"``; a plain
  ``supervised`` method).
- ``attacks``: ``samples`` (test images attacked, class-balanced, default 500), ``fgsm_snr_db`` (per-image
  FGSM budget from an SNR in dB, default 33 as the authors), ``fgsm_eps`` (extra fixed L-inf budgets, a
  list), ``pgd_eps`` / ``pgd_alpha`` / ``pgd_steps`` (default 8/255, 2/255, 10), ``batch_size``.
- ``corruptions``: ``names`` (default all 15), ``severities`` (default 1..5), ``samples`` (test images
  corrupted, class-balanced; default all), ``seed``.

Every run of seed ``s`` starts from the same initialization (``torch.manual_seed(s)`` before building
the model), so methods are compared paired. Each run's evaluation is cached in ``RUN/eval.json``.
Corrupted test sets are computed once per study (``runs/.../corrupted/*.pt``, 8-bit like CIFAR-10-C).
"""


from __future__ import annotations

from typing import Any, Mapping

from ..common import build
from ..runner import RunPlan, StudyContext, StudyKind, register_study_kind
from ..spec import Fields
from . import figures as _figures, run as _run, spec as _spec
from .spec import OBJECTIVES, make_objective

__all__ = ["RobustStudy", "OBJECTIVES", "build", "make_objective"]


@register_study_kind("robust")
class RobustStudy(StudyKind):
    """Robustness study (see the module docstring for the spec): validation and objectives in :mod:`.spec`,
    training, evaluation and tables in :mod:`.run`, the figures in :mod:`.figures`."""

    validation_metrics = ("clean", "fgsm", "pgd")

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        return _spec.validate(spec, fields)

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        return _run.run(spec, ctx)

    def build_run(self, spec, method, seed, splits, runs_dir=None) -> RunPlan:
        return _run.build_run(spec, method, seed)

    def validation_errors(self, spec, plan: RunPlan, splits, final: Mapping[str, Any]) -> dict[str, float]:
        return _run.validation_errors(spec, plan.objective, splits.test)

    def tuning_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A ``baseline`` field naming no method of the grid names a plain cross-entropy method added for it."""
        if spec.get("baseline") is not None and spec["baseline"] not in spec["methods"]:
            spec = {k: v for k, v in spec.items() if k != "baseline"}
            spec["methods"] = {**spec["methods"], "baseline": {"objective": "supervised"}}
        return spec

    def tuning_figure(self, tune, spec, rows):
        return _figures.tuning_figure(tune, spec, rows)
