"""Option sets: one frozen dataclass per family of options (:class:`geomlat.graphs.GraphOptions`,
:class:`geomlat.nnk.NNKOptions`), validated in one place (``__post_init__``).

The functions of a family keep their keyword arguments (``latent_graph(x, k=5)``) and build the options
object from them with :meth:`Options.pick`; code that holds options passes them along whole
(``options.graph(x)``, ``latent_graph(x, **options.kwargs())``). Adding an option is adding a field (and its
check) to the dataclass and the keyword to the functions' signatures (``tests/test_options.py`` checks that
every field is a parameter of every function of its family).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

__all__ = ["Options", "keep_defaults", "option_set"]

O = TypeVar("O", bound="Options")


class Options:
    """Base of the option dataclasses (declare one with :func:`option_set`).

    An unknown option name is a ``TypeError`` listing the valid ones (checked in ``__new__``, before the
    dataclass's own ``__init__``, so ``GraphOptions(kk=3)`` says which names exist). Everything here reads
    the field names from ``_names`` (set by :func:`option_set`): ``dataclasses.fields`` does not trace
    under ``torch.compile``, a tuple does.
    """

    _names: tuple[str, ...] = ()

    def __new__(cls, *args, **kwargs):
        unknown = [name for name in kwargs if name not in cls._names]
        if unknown:
            raise TypeError(f"unknown {cls.__name__} option(s) {unknown}; valid options: {list(cls._names)}")
        return super().__new__(cls)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return cls._names

    @classmethod
    def pick(cls: type[O], namespace: Mapping[str, Any]) -> O:
        """The options whose names are keys of ``namespace`` (a function's ``locals()``: every field must be
        one of its parameters), validated."""
        return cls(**{name: namespace[name] for name in cls._names})

    def kwargs(self) -> dict[str, Any]:
        """``{name: value}`` of every option (``latent_graph(x, **options.kwargs())``)."""
        return {name: getattr(self, name) for name in self._names}

    def replace(self: O, **changes) -> O:
        """A copy with ``changes`` (validated; an unknown name is a ``TypeError`` listing the valid ones)."""
        return type(self)(**{**self.kwargs(), **changes})

    def non_default(self) -> list[str]:
        """Names of the options that differ from their defaults."""
        return [f.name for f in dataclasses.fields(self)
                if f.default is dataclasses.MISSING or _differs(getattr(self, f.name), f.default)]


def _differs(value, default) -> bool:
    """Whether an option value differs from its default (a tensor is never a default)."""
    plain = (str, int, float, bool, type(None))
    if value is default:
        return False
    if isinstance(value, plain) and isinstance(default, plain):
        return type(value) is not type(default) or value != default
    return True


def option_set(cls: type[O]) -> type[O]:
    """Class decorator: ``cls`` (a subclass of :class:`Options`) as a frozen dataclass with its field names."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    cls._names = tuple(f.name for f in dataclasses.fields(cls))
    return cls


def keep_defaults(owner, what: str, **keywords) -> None:
    """``ValueError`` unless every keyword keeps the default of ``owner``'s signature: a consumer given an
    options object as ``what`` (e.g. ``options=GraphOptions(...)``) must not also get the keywords it
    replaces (which of the two would hold is ambiguous)."""
    import inspect

    params = inspect.signature(owner).parameters
    given = [name for name, value in keywords.items() if _differs(value, params[name].default)]
    if given:
        raise ValueError(f"{owner.__qualname__}: give {what} or the keywords {given}, not both")
