"""Studies: declarative TOML specs (``studies/NAME.toml``) run by one generic runner.

``run_study("gkd", profile="quick")`` validates the spec (before any training), trains what it declares
under ``runs/NAME/PROFILE/``, and writes ``results/NAME/`` tables and ``figures/NAME/`` figures.
New kinds of studies register with :func:`register_study_kind` in a package ``geomlat/studies/<kind>/``
(``spec.py`` validation, ``run.py`` training and tables, ``figures.py``) or a module
``geomlat/studies/<kind>.py``, imported on demand when a spec names the kind. Helpers shared by several
kinds live in :mod:`geomlat.studies.common`; a kind never imports another kind.
"""
from .._lazy import lazy_dir, lazy_getattr

# Imported on first use of a public name (PEP 562): `geomlat.cli` reads specs through
# `geomlat.studies.runner` / `.spec` without importing torch, the study kinds or plotting.
_LAZY = {
    **dict.fromkeys(["STUDY_KINDS", "StudyContext", "StudyKind", "load_spec", "load_study_kind", "register_study_kind",
                     "run_study"], ".runner"),
    **dict.fromkeys(["Fields", "SpecError", "deep_merge"], ".spec"),
    **dict.fromkeys(["Column", "median_std", "write_table"], ".tables"),
    **dict.fromkeys(["new_figure", "save_figure"], ".figures"),
}


def _register_distill() -> None:
    from . import distill  # noqa: F401  (registers the "distill" kind, as the eager import did)


__getattr__ = lazy_getattr(__name__, _LAZY, globals(), before=_register_distill)
__dir__ = lazy_dir(_LAZY, globals())


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
