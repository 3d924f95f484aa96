"""Worker processes and output folders (issue 12): the workers of a study never outlive their parent
(SIGKILL, SIGTERM, SIGINT), and a second run into an output folder in use stops at once, naming the
folder and the PID that holds it, while a crashed run leaves nothing locked."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals")

# A study-like parent: run_in_processes with 2 workers, each job writes a marker and then trains "forever".
PARENT = textwrap.dedent(
    """
    import sys
    from geomlat.studies.processes import run_in_processes
    import jobs

    if __name__ == "__main__":
        for args, result in run_in_processes(jobs.job, [(sys.argv[2], i) for i in range(4)], workers=2, threads=1):
            print("finished", args, flush=True)
    """
)
JOBS = textwrap.dedent(
    """
    import os, time
    from pathlib import Path

    def job(folder, i):
        Path(folder, f"started_{i}_{os.getpid()}").touch()
        time.sleep(120)  # a long training run
        return i
    """
)


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]), OMP_NUM_THREADS="1")
    return env


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """The parent, once both workers run a job; returns it and its children (workers, resource tracker)."""
    (tmp_path / "jobs.py").write_text(JOBS)
    (tmp_path / "parent.py").write_text(PARENT)
    marks = tmp_path / "marks"
    marks.mkdir()
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(tmp_path), str(marks)], env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(marks.iterdir())) < 2:
        if parent.poll() is not None or time.monotonic() > deadline:
            parent.kill()
            raise AssertionError(f"the workers did not start: {parent.communicate()[1].decode()[-2000:]}")
        time.sleep(0.2)
    children = psutil.Process(parent.pid).children(recursive=True)
    workers = {int(p.name.split("_")[2]) for p in marks.iterdir()}
    assert workers <= {c.pid for c in children}
    return parent, children


def _assert_all_end(children: list[psutil.Process], timeout: float = 10.0) -> None:
    gone, alive = psutil.wait_procs(children, timeout=timeout)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert not alive, f"processes outlived their parent: {[(p.pid, p.cmdline()[-3:]) for p in alive]}"


def test_workers_end_when_the_parent_is_killed(tmp_path):
    parent, children = _start_parent(tmp_path)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    _assert_all_end(children)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_parent_terminates_its_workers_on_sigterm_and_sigint(tmp_path, sig):
    parent, children = _start_parent(tmp_path)
    os.kill(parent.pid, sig)
    try:
        parent.wait(timeout=15)  # the jobs would sleep 120 s: the parent must not wait for them
    except subprocess.TimeoutExpired:
        parent.kill()
        raise AssertionError("the parent waited for its workers' jobs")
    _assert_all_end(children)
    assert b"finished" not in parent.stdout.read()


def test_watchdog_ends_a_worker_without_pdeathsig(tmp_path):
    """The portable fallback alone (as on macOS/Windows): a child whose parent dies ends within a second."""
    script = textwrap.dedent(
        """
        import multiprocessing, os, sys, time
        sys.path.insert(0, sys.argv[1])
        from geomlat.studies import processes

        def child(parent_pid):
            processes.sys.platform = "other"  # no prctl: only the watchdog thread
            processes._die_with_parent(parent_pid)
            print(os.getpid(), flush=True)
            time.sleep(120)

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            p = ctx.Process(target=child, args=(os.getpid(),))
            p.start()
            time.sleep(120)
        """
    )
    (tmp_path / "watch.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "watch.py"), str(ROOT)], env=_env(tmp_path), stdout=subprocess.PIPE)
    child_pid = int(parent.stdout.readline())
    child = psutil.Process(child_pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    _assert_all_end([child], timeout=5)
