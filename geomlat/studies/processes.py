"""The process pool of the study kinds: independent runs in fresh worker processes that never outlive
the study (:func:`run_in_processes`), and the torch thread count of a block (:func:`torch_threads`).

The workers end when the parent dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)`` on Linux and a
watchdog thread everywhere); SIGINT/SIGTERM of the parent, or an exception in it, terminate them.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Sequence

__all__ = ["run_in_processes", "torch_threads"]


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker end when the process that started it dies, however it dies (SIGKILL included).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``. Everywhere (also as a fallback): a daemon thread waits
    on multiprocessing's parent sentinel (closed by the OS when the parent dies) and checks that the
    parent pid did not change (re-parenting), then ends the process at once.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: the watchdog below still works
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="geomlat-parent-watchdog", daemon=True).start()


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    parent = multiprocessing.parent_process()
    while True:
        if parent is not None:
            parent.join(interval)  # returns at once when the parent's sentinel closes (parent gone)
            if not parent.is_alive():
                os._exit(1)
        else:  # pragma: no cover - not started by multiprocessing
            time.sleep(interval)
        if os.name == "posix" and os.getppid() != parent_pid:
            os._exit(1)


def _init_worker(threads: int | None, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


_ACTIVE_POOLS: set[ProcessPoolExecutor] = set()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the worker processes of ``pool`` now (their running jobs are lost; finished runs are on disk)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            if process.is_alive():
                process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def _workers_end_on_signals() -> Iterator[None]:
    """While inside (main thread only): SIGINT and SIGTERM first terminate the workers of every active pool,
    then raise KeyboardInterrupt (SIGINT) or SystemExit(143) (SIGTERM) here, so that no worker outlives an
    interrupted study (without this, the pool's exit would wait for the running jobs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for pool in list(_ACTIVE_POOLS):
            _kill_workers(pool)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_in_processes(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int = 1, threads: int | None = None) -> Iterator[tuple[tuple, Any]]:
    """Run ``fn(*args)`` for every ``args`` in ``jobs``; yield ``(args, result)`` as each finishes.

    ``workers == 1`` (or a single job): in this process, in order. Otherwise in ``workers`` fresh
    processes (``spawn``: no state inherited from this process, so results do not depend on ``workers``),
    each using ``threads`` torch threads. ``fn`` and its arguments must be picklable (a module-level
    function). An exception in a job is re-raised here after the other running jobs are cancelled.

    The workers never outlive this process: they end when it dies, even by SIGKILL (see
    :func:`_die_with_parent`), and SIGINT/SIGTERM of this process or an exception here terminate them.
    """
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for args in jobs:
            yield args, fn(*args)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
                               initargs=(threads, os.getpid()))
    _ACTIVE_POOLS.add(pool)
    try:
        with _workers_end_on_signals():
            futures = {pool.submit(fn, *args): args for args in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()
    except BaseException:
        # an error, an interrupt, or the caller stopped iterating (GeneratorExit): no worker keeps training
        _kill_workers(pool)
        raise
    finally:
        _ACTIVE_POOLS.discard(pool)
        pool.shutdown(wait=True)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Context manager running its body with ``torch.set_num_threads(n)`` (``None``: unchanged)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
