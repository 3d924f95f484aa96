"""Studies: declarative TOML specs (``studies/NAME.toml``) run by one generic runner.

``run_study("gkd", profile="quick")`` validates the spec (before any training), trains what it declares
under ``runs/NAME/PROFILE/``, and writes ``results/NAME/`` tables and ``figures/NAME/`` figures.
New kinds of studies register with :func:`register_study_kind` in a package ``geomlat/studies/<kind>/``
(``spec.py`` validation, ``run.py`` training and tables, ``figures.py``) or a module
``geomlat/studies/<kind>.py``, imported on demand when a spec names the kind. Helpers shared by several
kinds live in :mod:`geomlat.studies.common`; a kind never imports another kind.
"""
from .runner import STUDY_KINDS, StudyContext, StudyKind, load_spec, load_study_kind, register_study_kind, run_study
from .spec import Fields, SpecError, deep_merge
from .tables import Column, median_std, write_table
from .figures import new_figure, save_figure
from . import distill  # noqa: F401  (registers the "distill" kind)

__all__ = [
    "Column",
    "Fields",
    "STUDY_KINDS",
    "SpecError",
    "StudyContext",
    "StudyKind",
    "deep_merge",
    "load_spec",
    "load_study_kind",
    "median_std",
    "new_figure",
    "register_study_kind",
    "run_study",
    "save_figure",
    "write_table",
]
