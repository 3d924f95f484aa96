"""Study specs: TOML files with profiles, merged and validated before any training.

A spec is a TOML table. Its ``[profiles.NAME]`` tables override fields of the base (deep merge: tables
merge key by key, any other value replaces). After the profile, caller overrides (a nested dict, e.g.
``{"train": {"epochs": 1}}``) are merged the same way. The study kind then validates every field and
fills defaults; any problem raises :class:`SpecError` whose message starts with the dotted path of the
field, e.g. ``methods.gkd.terms.gkd.weight: expected a number, got 'x'``.
"""
from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["SpecError", "Fields", "deep_merge", "find_spec_file", "read_spec_file", "apply_profile", "STUDIES_DIRS",
           "train_values", "check_train_tables", "comparisons"]

# where `load_spec("NAME")` looks for NAME.toml: ./studies, then the repository's studies/ folder
STUDIES_DIRS = (Path("studies"), Path(__file__).resolve().parents[2] / "studies")


class SpecError(ValueError):
    """A malformed study spec; ``path`` is the dotted field path (``""`` for the whole spec)."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``base`` with ``override`` merged in: nested tables merge, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def find_spec_file(name_or_path: str | Path) -> Path:
    """A path to an existing ``.toml`` file, or a study name looked up as ``studies/NAME.toml``."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.parent != Path("."):
        if not path.is_file():
            raise FileNotFoundError(f"study spec {path} does not exist")
        return path
    candidates = [d / f"{path.name}.toml" for d in STUDIES_DIRS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = sorted({p.stem for d in STUDIES_DIRS if d.is_dir() for p in d.glob("*.toml")})
    raise FileNotFoundError(f"no study named {str(name_or_path)!r} (looked for {[str(c) for c in candidates]}); available: {available}")


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; syntax errors become a SpecError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise SpecError("", f"{path} is not valid TOML: {err}") from err


def apply_profile(raw: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """Merge ``raw["profiles"][profile]`` into the base spec (the ``profiles`` table itself is dropped)."""
    profiles = raw.get("profiles", {})
    if not isinstance(profiles, Mapping):
        raise SpecError("profiles", f"expected a table of profiles, got {type(profiles).__name__}")
    if profile not in profiles:
        raise SpecError("profiles", f"unknown profile {profile!r}; this spec defines {sorted(profiles)}")
    if not isinstance(profiles[profile], Mapping):
        raise SpecError(f"profiles.{profile}", f"expected a table, got {type(profiles[profile]).__name__}")
    base = {k: v for k, v in raw.items() if k != "profiles"}
    merged = deep_merge(base, profiles[profile])
    merged["profile"] = profile
    return merged


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "table"}.get(type(value), type(value).__name__)


class Fields:
    """Typed access to a spec table that remembers its dotted path, for precise error messages.

    Example:
        >>> f = Fields({"epochs": 3}, "teacher.train")
        >>> f.int("epochs", minimum=1)
        3
        >>> f.finish()  # raises SpecError for any key not read

    Every getter takes ``default``; without one the field is required. :meth:`finish` rejects keys that
    were never read (typos such as ``epoch`` for ``epochs``).
    """

    _MISSING = object()

    def __init__(self, table: Any, path: str):
        if not isinstance(table, Mapping):
            raise SpecError(path, f"expected a table, got {_type_name(table)} {table!r}")
        self.table, self.path, self.used = dict(table), path, set()

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is Fields._MISSING:
                raise SpecError(self.sub(key), "missing required field")
            return copy.deepcopy(default)
        return self.table[key]

    def str(self, key: str, default: Any = _MISSING, choices: Iterable[str] | None = None) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise SpecError(self.sub(key), f"expected a string, got {_type_name(value)} {value!r}")
        if choices is not None and value not in choices:
            raise SpecError(self.sub(key), f"unknown value {value!r}; expected one of {sorted(choices)}")
        return value

    def int(self, key: str, default: Any = _MISSING, minimum: int | None = None) -> int:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self.sub(key), f"expected an integer, got {_type_name(value)} {value!r}")
        if minimum is not None and value < minimum:
            raise SpecError(self.sub(key), f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: Any = _MISSING, minimum: float | None = None) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(self.sub(key), f"expected a finite number, got {_type_name(value)} {value!r}")
        if minimum is not None and value < minimum:
            raise SpecError(self.sub(key), f"must be >= {minimum}, got {value}")
        return float(value)

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise SpecError(self.sub(key), f"expected true or false, got {_type_name(value)} {value!r}")
        return value

    def table_(self, key: str, default: Any = _MISSING) -> dict[str, Any]:
        value = self.raw(key, default)
        if not isinstance(value, Mapping):
            raise SpecError(self.sub(key), f"expected a table, got {_type_name(value)} {value!r}")
        return dict(value)

    def fields(self, key: str, default: Any = _MISSING) -> "Fields":
        return Fields(self.table_(key, default), self.sub(key))

    def list(self, key: str, default: Any = _MISSING, item: type | tuple | None = None, nonempty: bool = False) -> list:
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise SpecError(self.sub(key), f"expected an array, got {_type_name(value)} {value!r}")
        if nonempty and not value:
            raise SpecError(self.sub(key), "must not be empty")
        if item is not None:
            for i, v in enumerate(value):
                if isinstance(v, bool) and item is not bool or not isinstance(v, item):
                    names = item.__name__ if isinstance(item, type) else "/".join(t.__name__ for t in item)
                    raise SpecError(f"{self.sub(key)}[{i}]", f"expected {names}, got {_type_name(v)} {v!r}")
        return list(value)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise SpecError(self.sub(unknown[0]), f"unknown field; valid fields here: {sorted(self.used)}")


def comparisons(fields: Fields, methods: Mapping[str, Any]) -> list[list[str]]:
    """The spec's optional ``comparisons = [["method", "reference"], ...]``: pairs of declared methods whose
    paired differences over seeds the study reports beside each method's against the baseline
    (``results/NAME/paired.md``), e.g. ``["gkd", "hinton"]`` or ``["parseval_reg", "parseval"]``."""
    pairs = fields.list("comparisons", [], item=list)
    for i, pair in enumerate(pairs):
        where = f"{fields.sub('comparisons')}[{i}]"
        if len(pair) != 2 or not all(isinstance(m, str) for m in pair):
            raise SpecError(where, f"expected [method, reference] (two method names), got {pair!r}")
        for m in pair:
            if m not in methods:
                raise SpecError(where, f"unknown method {m!r}; declared methods: {sorted(methods)}")
        if pair[0] == pair[1]:
            raise SpecError(where, f"a method is not compared with itself ({pair[0]!r})")
    return [list(p) for p in pairs]


def train_values(table: Any, path: str) -> dict[str, Any]:
    """The TrainConfig fields of a spec's ``train`` table, each type-checked with its dotted path in errors
    (:data:`geomlat.engine.config.TRAIN_FIELDS`, read from TrainConfig's fields; no torch). ``seed`` is refused (it comes from the
    study's ``seeds``); the ranges TrainConfig checks itself are left to it."""
    from ..engine.config import TRAIN_FIELDS

    f = Fields(table, path)
    if f.has("seed"):
        raise SpecError(f.sub("seed"), "the seed of a run comes from the study's `seeds`; remove it here")
    values: dict[str, Any] = {}
    for key in [k for k in f.table if k in TRAIN_FIELDS]:
        kind, arg = TRAIN_FIELDS[key]
        if kind == "int":
            values[key] = f.int(key, minimum=arg)
        elif kind == "number":
            values[key] = f.number(key, minimum=arg)
        elif kind == "bool":
            values[key] = f.bool(key)
        elif kind == "str":
            values[key] = f.str(key)
        elif kind == "choice":
            values[key] = f.str(key, choices=arg)
        else:
            values[key] = tuple(float(v) for v in f.list(key, item=(int, float)))
    f.finish()
    return values


def check_train_tables(spec: Mapping[str, Any], path: str = "") -> None:
    """:func:`train_values` on every table named ``train`` of a merged spec, at any depth (``train``,
    ``methods.NAME.train``, ...; not inside ``tune``, whose keys are grids): a typo in a TrainConfig field is
    reported before the study kind, and torch, are imported."""
    for key, value in spec.items():
        sub = f"{path}.{key}" if path else str(key)
        if key == "tune" or not isinstance(value, Mapping):
            continue
        if key == "train":
            train_values(value, sub)
        else:
            check_train_tables(value, sub)
