"""Studies: declarative TOML specs (``studies/NAME.toml``) run by one generic runner.

``run_study("gkd", profile="quick")`` validates the spec (before any training), trains what it declares
under ``runs/NAME/PROFILE/``, and writes ``results/NAME/`` tables and ``figures/NAME/`` figures.
New kinds of studies register with :func:`register_study_kind` in a module ``geomlat/studies/<kind>.py``
(imported on demand when a spec names the kind).
"""
# Imported on first use of a public name (PEP 562): `geomlat.cli` reads specs through
# `geomlat.studies.runner` / `.spec` without importing torch, the study kinds or plotting.
_LAZY = {
    **dict.fromkeys(["STUDY_KINDS", "StudyContext", "StudyKind", "load_spec", "load_study_kind", "register_study_kind",
                     "run_study"], ".runner"),
    **dict.fromkeys(["Fields", "SpecError", "deep_merge"], ".spec"),
    **dict.fromkeys(["Column", "median_std", "write_table"], ".tables"),
    **dict.fromkeys(["new_figure", "save_figure"], ".figures"),
}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY:
        try:  # a submodule (`geomlat.studies.toy`), as when the package imported them eagerly
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

    from . import distill  # noqa: F401  (registers the "distill" kind, as the eager import did)

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
