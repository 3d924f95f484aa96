"""Lazy public names of a package (PEP 562), shared by ``geomlat`` and ``geomlat.studies``.

Their ``__init__`` maps each public name to the submodule that defines it; the name is imported on first
use, so ``geomlat.cli`` answers ``--help`` and spec errors without importing torch. Imports nothing heavy.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_getattr(package: str, lazy: dict[str, str], namespace: dict[str, Any],
                 before: Callable[[], None] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``lazy`` maps a public name to its relative submodule.

    A public name is imported from its submodule (``before()`` runs first, e.g. to register a default) and
    cached in ``namespace`` (the package's ``globals()``); any other name is tried as a submodule, as when the
    package imported its submodules eagerly; else ``AttributeError``.
    """

    def __getattr__(name: str) -> Any:
        if name not in lazy:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        if before is not None:
            before()
        value = getattr(importlib.import_module(lazy[name], package), name)
        namespace[name] = value
        return value

    return __getattr__


def lazy_dir(lazy: dict[str, str], namespace: dict[str, Any]) -> Callable[[], list[str]]:
    """A module ``__dir__`` listing the loaded and the lazy names."""
    return lambda: sorted(set(namespace) | set(lazy))
