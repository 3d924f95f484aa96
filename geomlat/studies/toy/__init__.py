"""Study kind ``toy``: the LGG paper's Figure 2 (Section 3.3.1, Appendix C).

A network is trained on the data set; 20 training samples (5 per class of 4 classes) are drawn; the
LGGs (``k = 5``) of the input, a middle layer and the penultimate layer are drawn with a Laplacian-eigenmap
layout (PyGSP ``set_coordinates("laplacian_eigenmap2D")``), vertices colored by class and only the
inter-class edges drawn (the ones the label variation counts); each panel's title gives the normalized
label variation (Appendix C: 0 = no edge between classes, 1 = every edge joins two classes).

A single draw of 20 samples is noisy, so the table also reports the label variation over ``draws``
independent draws (mean and standard deviation) and how often it decreases from each layer to the next.

Spec fields (see ``studies/toy.toml``):

- ``data``: ``name``, ``seed`` (split, default 0), ``options`` (passed to ``load_dataset``).
- ``model``: ``model`` (a ``geomlat.models`` name), ``kwargs``; ``train``: :class:`~geomlat.engine.TrainConfig`
  fields (not ``seed``: one model per entry of ``seeds``; the figure shows the first seed).
- ``graph``: ``k`` (5), ``kernel`` ("auto": cosine for non-negative data, RBF otherwise), ``classes``
  (class indices shown, default [0, 1, 2, 3]), ``per_class`` (5), ``split`` ("train" as in the paper, or
  "test"), ``draws`` (random draws for the table, default 50; the figure shows draw 0).
- ``layers``: ``[[title, module], ...]``, module ``"input"`` for the raw inputs; default input, the
  middle stage and the pooled penultimate features of the model.
"""


from __future__ import annotations

from typing import Any

from ..runner import StudyContext, StudyKind, register_study_kind
from ..spec import Fields
from .figures import eigenmap_layout
from . import run as _run, spec as _spec
from .run import draw_class_samples

__all__ = ["ToyStudy", "eigenmap_layout", "draw_class_samples"]


@register_study_kind("toy")
class ToyStudy(StudyKind):
    """The paper's Figure 2 on any model and data set (module docstring): validation in :mod:`.spec`, the
    run and its table in :mod:`.run`, the figure in :mod:`.figures`."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        return _spec.validate(spec, fields)

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        return _run.run(spec, ctx)
