"""Studies: declarative TOML specs (``studies/NAME.toml``) run by one generic runner.

``run_study("gkd", profile="quick")`` validates the spec (before any training), trains what it declares
under ``runs/NAME/PROFILE/``, and writes ``results/NAME/`` tables and ``figures/NAME/`` figures.
A study kind is one package ``geomlat/studies/<kind>/`` (``spec.py`` validation, ``run.py`` training and
tables, ``figures.py``) whose ``__init__.py`` registers a :class:`StudyKind` with :func:`register_study_kind`;
it is found by that rule and imported on demand when a spec names it. Its per-run hooks
(:meth:`StudyKind.build_run`, :meth:`StudyKind.validation_errors`) serve the tools over kinds
(:mod:`geomlat.studies.tools`: validation grids, diagnoses) and ``benchmarks/gpu_check.py``, which name no
kind. Helpers shared by several kinds live in :mod:`geomlat.studies.common`; the process pool in
:mod:`geomlat.studies.processes`; a kind never imports another kind.
"""
from .._lazy import lazy_dir, lazy_getattr

# Imported on first use of a public name (PEP 562): `geomlat.cli` reads specs through
# `geomlat.studies.runner` / `.spec` without importing torch, the study kinds or plotting.
_LAZY = {
    **dict.fromkeys(["STUDY_KINDS", "RunPlan", "StudyContext", "StudyKind", "load_spec", "load_study_kind",
                     "register_study_kind", "run_study"], ".runner"),
    **dict.fromkeys(["Fields", "SpecError", "comparisons", "deep_merge"], ".spec"),
    **dict.fromkeys(["Column", "median_std", "paired_rows", "write_paired_table", "write_table"], ".tables"),
    **dict.fromkeys(["new_figure", "save_figure"], ".figures"),
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__dir__ = lazy_dir(_LAZY, globals())


__all__ = [
    "Column",
    "Fields",
    "RunPlan",
    "STUDY_KINDS",
    "SpecError",
    "StudyContext",
    "StudyKind",
    "comparisons",
    "deep_merge",
    "load_spec",
    "load_study_kind",
    "median_std",
    "new_figure",
    "paired_rows",
    "register_study_kind",
    "run_study",
    "save_figure",
    "write_paired_table",
    "write_table",
]
