"""Study kind ``distill``: a teacher, students trained with each distillation method over seeds, the
comparison table and the layer-wise analyses of the GKD talk (``shared/papers/003``, LGG paper 4.1).

Spec fields (see ``studies/gkd.toml`` for a commented example):

- ``data``: ``name`` (a ``geomlat.data`` data set), ``seed`` (the train/test split, shared by every
  run; default 0), ``options`` (passed to ``load_dataset``).
- ``train``: defaults of :class:`geomlat.engine.TrainConfig` for both networks (not ``seed``: each run
  takes its seed from ``seeds``); ``teacher.train`` / ``student.train`` override them field by field.
- ``teacher``: ``model``, ``kwargs``, ``train``, and either ``seed`` (one teacher, default the first
  seed) or ``per_seed = true`` (one teacher per seed, each student distilled from its seed's teacher).
- ``student``: ``model``, ``kwargs``, ``train``. Every student of seed ``s`` starts from the same
  initialization (``torch.manual_seed(s)`` before building it), so methods are compared paired.
- ``pairs``: default ``[[teacher_layer, student_layer], ...]`` for feature-based terms.
- ``baseline``: name of the method without distillation terms (default ``"baseline"``), the reference
  of the "gain" column.
- ``methods.NAME``: ``label``, ``task_weight`` (cross-entropy weight, default 1), ``pairs`` (overrides the
  default), ``terms.TERM`` = ``{loss, weight, kwargs}`` with ``loss`` one of :func:`distill_losses`
  (the registry :data:`geomlat.losses.LOSSES`). FitNet's projection widths are inferred from the models.
- ``analysis``: ``samples`` (test samples used, default 1000), ``k`` (LGG neighbors, default 10),
  ``blocks`` (teacher/student layer pairs compared, default ``pairs``), ``consistency``, ``variation``,
  ``graph_variants``: method names shown in figures (a), (b), (c).

Validation builds the models and runs every method's objective on a dummy batch, so wrong layer names,
shape mismatches or bad loss options are reported (``SpecError`` with the field path) before training.
"""


from __future__ import annotations

from typing import Any

from ..common import train_config_from_fields
from ..runner import RunPlan, StudyContext, StudyKind, register_study_kind
from ..spec import Fields
from . import run as _run, spec as _spec
from .spec import build_term, distill_losses, make_objective

__all__ = ["DistillStudy", "distill_losses", "build_term", "make_objective", "train_config_from_fields"]


@register_study_kind("distill")
class DistillStudy(StudyKind):
    """Knowledge-distillation study (see the module docstring for the spec): validation, the losses of the
    terms and the objectives in :mod:`.spec`, training, evaluation, analyses and tables in :mod:`.run`,
    the figures in :mod:`.figures`."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        return _spec.validate(spec, fields)

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        return _run.run(spec, ctx)

    def build_run(self, spec, method, seed, splits, runs_dir=None) -> RunPlan:
        return _run.build_run(spec, method, seed, splits, runs_dir)
