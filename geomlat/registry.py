"""One registry convention for every name -> object table of geomlat (kernels, losses, distances, models,
datasets, corruptions, generalization measures, similarity measures, ...).

A :class:`Registry` is a read-only mapping with a ``register`` decorator: an unknown name raises
:class:`UnknownNameError` (a ``KeyError`` and a ``ValueError``, so either ``except`` catches it) listing the
registered names, and a name registered twice is refused unless ``replace=True``.

Example:
    >>> MEASURES = Registry("measure")
    >>> @MEASURES.register("double")
    ... def double(x):
    ...     return 2 * x
    >>> MEASURES["double"](3), list(MEASURES)
    (6, ['double'])
    >>> MEASURES["triple"]
    Traceback (most recent call last):
    ...
    geomlat.registry.UnknownNameError: unknown measure 'triple'; registered: ['double']
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a :class:`Registry`; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError's str() quotes the message
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """Name -> object table with a decorator to add entries.

    Args:
        kind: what an entry is, for messages (``"kernel"``, ``"loss"``, ...).
        check: optional ``check(name, obj)`` run before an entry is added (raises on a bad entry).
    """

    def __init__(self, kind: str, check: Callable[[str, T], None] | None = None):
        self.kind = kind
        self._check = check
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """``@registry.register("name")`` as a decorator, or ``registry.register("name", obj)``; returns ``obj``.

        Raises ``ValueError`` for an empty or non-string name and for a name already registered (unless
        ``replace=True``)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def add(entry: T) -> T:
            if name in self._entries and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to override it)")
            if self._check is not None:
                self._check(name, entry)
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry (tests and notebooks that register temporary entries)."""
        self[name]
        return self._entries.pop(name)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown {self.kind} {name!r}; registered: {sorted(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"
