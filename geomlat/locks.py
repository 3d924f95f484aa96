"""Output-folder locks (torch-free: a study checks its folder before the heavy imports).

The lock is an OS lock on an open lock file (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), so the
OS releases it when the holder ends, also on SIGKILL or a crash: a dead run never leaves the folder locked.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["FolderInUseError", "folder_lock", "check_folder_free"]


class FolderInUseError(RuntimeError):
    """Another live process holds the lock of an output folder; ``folder`` and ``pid`` (None if unknown)."""

    def __init__(self, folder: str | Path, pid: int | None, message: str):
        self.folder, self.pid = Path(folder), pid
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.folder, self.pid, self.args[0])


@contextlib.contextmanager
def folder_lock(folder: str | Path, name: str = ".lock", what: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created) while inside; yields the lock file ``folder/name``.

    The lock is an OS lock on the open lock file (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows),
    so the OS releases it when the holder ends, also on SIGKILL or a crash: a dead run never leaves the
    folder locked. The holder's PID is written in the file, for the message of the next process.

    Raises:
        FolderInUseError: another process holds the lock (the message names ``what`` or the folder, and the PID).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_fd(fd)
    except OSError:
        pid = _read_pid(fd)
        os.close(fd)
        raise _in_use_error(folder, path, pid, what) from None
    try:
        os.ftruncate(fd, _PID_OFFSET)
        os.lseek(fd, _PID_OFFSET, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            _unlock_fd(fd)
        os.close(fd)


if os.name == "nt":  # pragma: no cover - Windows: lock byte 0, the PID is written after it (readable while locked)
    import msvcrt

    _PID_OFFSET = 1

    def _lock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    _PID_OFFSET = 0

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, _PID_OFFSET, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _in_use_error(folder: Path, path: Path, pid: int | None, what: str | None) -> FolderInUseError:
    holder = f"process {pid}" if pid is not None else "another process"
    return FolderInUseError(folder, pid, f"{what or f'folder {folder}'} is in use by {holder} (lock file {path}); "
                            "wait for it to end, or stop it, or choose another output folder")


def check_folder_free(folder: str | Path, name: str = ".lock", what: str | None = None) -> None:
    """Raise :class:`FolderInUseError` (as :func:`folder_lock` would) if another process holds the lock of
    ``folder``; creates and holds nothing (a free folder is locked later by :func:`folder_lock`)."""
    folder = Path(folder)
    path = folder / name
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:  # no lock file: nobody ever held it
        return
    try:
        try:
            _lock_fd(fd)
        except OSError:
            raise _in_use_error(folder, path, _read_pid(fd), what) from None
        with contextlib.suppress(OSError):
            _unlock_fd(fd)
    finally:
        os.close(fd)
