"""Study kind ``selection``: does the geometry predict generalization? (issue 15; ``papers/004``; Jiang et al. 2020).

A population of models (``model``, e.g. ``conv1d``) is trained on one data set, varying width, depth, weight decay,
label noise, training-set size and seed (:func:`.run.population`: every center and its one-axis-at-a-time
variations, plus a random sample of the grid, each trained with every seed of ``seeds``). Weights are kept at the
``analysis.snapshots`` epochs. At each snapshot every candidate measure is computed on training data only
(:func:`.run.snapshot_measures`; the stability between seeds compares the models of one configuration),
and :mod:`.report` (and :mod:`.figures`) writes Kendall's tau with the test error and the gap, the granulated Kendall
coefficient per axis, model-selection and early-stopping regret (bootstrap CIs) and the figures.

Spec fields (see ``studies/selection.toml``): ``data`` (``options.val_size`` required: the held-out validation split
of the reference baseline, never used by the candidates), ``model`` (a model name taking ``width`` and ``depth``),
``train`` (:class:`~geomlat.engine.TrainConfig` fields except ``weight_decay`` and ``seed``; ``eval_every`` must be 1),
``population``: ``centers`` (list of tables of axis values), ``axes`` (``{axis: [values]}``, >= 2 values each,
axes among width, depth, weight_decay, label_noise, train_size), ``fixed`` (values of the axes not varied),
``random`` (extra configurations, 0), ``sample_seed`` (0); ``analysis``: ``samples`` (500), ``snapshots`` (epochs),
``nnk_k`` (15), ``graph_k`` (10), ``channel_k`` (10), ``sharpness_sigma`` (0.05), ``sharpness_samples`` (3),
``patience`` (1), ``n_boot`` (1000). At least 2 seeds (stability and the seed axis need them).
"""
from __future__ import annotations

from typing import Any

from ..runner import StudyContext, StudyKind, register_study_kind
from ..spec import Fields
from . import run as _run, spec as _spec

__all__ = ["SelectionStudy"]


@register_study_kind("selection")
class SelectionStudy(StudyKind):
    """A population of trained models; how well each measure predicts their test error (module docstring):
    validation in :mod:`.spec`, the runs in :mod:`.run`, statistics and tables in :mod:`.report`, figures in
    :mod:`.figures`."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        return _spec.validate(spec, fields)

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        return _run.run(spec, ctx)
