"""Atomic file writes, safe checkpoint loading and output-folder locks for run records.

Every writer puts the data in a temporary file in the destination folder, flushes it to disk and then
``os.replace``-s it onto the destination, so a reader (or a resumed run after a kill) sees either the
old file or the new one, never a truncated one. A file damaged anyway (disk full, copied half, edited)
is reported by :func:`load_checkpoint` as a :class:`CheckpointError` naming it.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .distributed import writes_skipped
from .locks import FolderInUseError, folder_lock

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_save", "load_checkpoint", "write_json", "read_json", "to_jsonable",
           "CheckpointError", "CheckpointRefused", "FolderInUseError", "UnreadableFileError", "folder_lock"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (truncated, corrupt, not a torch file); ``path`` names it."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        super().__init__(message)

    def __reduce__(self):  # picklable (raised in worker processes)
        return type(self), (self.path, self.args[0])


class CheckpointRefused(CheckpointError):
    """A checkpoint that the weights-only loader refused: it references code (classes, functions) that a
    file written by geomlat never holds. It was not loaded."""


class UnreadableFileError(ValueError):
    """A JSON run record that cannot be parsed (truncated, corrupt); ``path`` names it."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.path, self.args[0])


def _atomic_write(path: str | Path, write) -> Path:
    """Call ``write(fileobj)`` on a temporary binary file next to ``path``, then rename it onto ``path``.

    Inside :func:`geomlat.distributed.main_process_writes` (the study runner under torchrun) only rank 0
    writes; the other ranks return ``path`` without writing.
    """
    path = Path(path)
    if writes_skipped():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # also on KeyboardInterrupt: never leave the temporary file behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` atomically. Keep ``obj`` to tensors, dicts, lists and plain Python scalars
    and strings so that :func:`load_checkpoint` (``weights_only=True``) can read it back."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> Any:
    """Load a file written by :func:`atomic_save` with ``torch.load(..., weights_only=True)`` (no arbitrary unpickling).

    Raises:
        FileNotFoundError: no such file.
        CheckpointRefused: the file references a global the weights-only loader does not allow (it is not
            loaded; retrying with ``weights_only=False`` would run code from the file).
        CheckpointError: the file is unreadable (truncated, corrupt, not written by ``torch.save``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "weights only load failed" in text.lower() or "weights_only" in text:
            found = re.search(r"(?:GLOBAL|global) ([\w.]+)", text)
            what = f"it references {found.group(1)}, " if found else "it references "
            raise CheckpointRefused(path, f"checkpoint {path} was refused and not loaded: {what}which a checkpoint written by "
                                    "geomlat never holds (only tensors, numbers, strings, lists and dicts); delete it if you "
                                    "did not write it") from None
        raise CheckpointError(path, f"checkpoint {path} is unreadable (corrupt): {_first_line(err)}") from err
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        # a truncated zip: "PytorchStreamReader failed reading zip archive", "[Errno 22] Invalid argument", ...
        raise CheckpointError(path, f"checkpoint {path} is unreadable (truncated or corrupt, {path.stat().st_size} bytes): "
                              f"{type(err).__name__}: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, NumPy scalars/arrays, tuples and paths to JSON types; non-finite floats become None
    (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return to_jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (keys kept in insertion order)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing file raises FileNotFoundError, an unparsable one UnreadableFileError
    (a ValueError), both naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UnreadableFileError(path, f"JSON file {path} is unreadable (truncated or corrupt): {err}") from err
