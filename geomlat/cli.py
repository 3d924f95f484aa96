"""The ``geomlat`` console script.

    geomlat study NAME [--profile quick|paper] [--data-dir DIR] [--seeds 0 1 2] [--out .]
                       [--set FIELD=VALUE ...] [--no-progress] [--nproc N]
    geomlat demo [ARGS ...]

``NAME`` is a study in ``studies/NAME.toml`` or a path to a TOML spec. ``--set`` overrides one spec
field after the profile, with a dotted path and a TOML value, e.g. ``--set train.epochs=1`` or
``--set 'methods.gkd.terms.gkd.weight=10.0'``. A malformed spec, a device this machine does not have, a
missing or malformed data file, or an output folder in use by another run of the study stop before
anything is written, with exit status 2 and a one-line message naming the field, file or folder (and PID).

``--tune`` runs the spec's validation grid (its ``[tune]`` table, :mod:`geomlat.studies.tools.tuning`) instead
of the study: ``results/tune-NAME/grid.csv`` and the chosen values (``make tune-robust``, ``make tune-embed``).

``--nproc N`` (N > 1) runs the study data parallel on N processes of this machine: the command starts
``python -m torch.distributed.run --standalone --nproc_per_node N -m geomlat.cli study ...`` (gloo on CPU,
NCCL for GPU tensors, one GPU per process). Started by ``torchrun``/``srun`` yourself (``WORLD_SIZE`` set,
several nodes), ``geomlat study`` joins the process group from the environment and ``--nproc`` is not needed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any, Sequence

from .studies.spec import SpecError, deep_merge, tomllib

__all__ = ["main", "parse_set"]


def parse_set(item: str) -> dict[str, Any]:
    """``"a.b.c=VALUE"`` -> ``{"a": {"b": {"c": value}}}``; VALUE is parsed as TOML (``1``, ``0.5``,
    ``true``, ``[1, 2]``, ``"text"``), and taken as a plain string when it is not valid TOML."""
    if "=" not in item:
        raise argparse.ArgumentTypeError(f"--set expects FIELD=VALUE, got {item!r}")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise argparse.ArgumentTypeError(f"--set: bad field path {key!r}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    out: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        out = {part: out}
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--nproc N`` / ``--nproc=N`` removed (the relaunched processes are the N processes)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def _launch_torchrun(argv: Sequence[str], nproc: int) -> int:
    """Run ``geomlat`` with ``argv`` under ``torch.distributed.run --standalone`` on ``nproc`` local processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "geomlat.cli", *_without_nproc(argv)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; the spec's `threads` still applies
    if sys.platform.startswith("linux") and os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo over loopback, whatever the host name resolves to
    return subprocess.call(cmd, env=env)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geomlat", description="Latent geometry graphs of deep networks: studies and demo.")
    sub = parser.add_subparsers(dest="command", required=True)

    study = sub.add_parser("study", help="run a study declared in studies/NAME.toml", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    study.add_argument("name", help="study name (studies/NAME.toml) or path to a .toml spec")
    study.add_argument("--profile", default="quick", help="profile of the spec: quick (CPU, minutes) or paper (GPU); default quick")
    study.add_argument("--data-dir", default=None, help="folder of file-based data sets (CIFAR-10: DIR/cifar-10-batches-py)")
    study.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the spec's seeds")
    study.add_argument("--out", default=".", help="root of runs/, results/ and figures/ (default: current folder)")
    study.add_argument("--set", dest="overrides", type=parse_set, action="append", default=[], metavar="FIELD=VALUE",
                       help="override a spec field (dotted path, TOML value); repeatable")
    study.add_argument("--tune", action="store_true",
                       help="run the spec's validation grid ([tune] table, geomlat.studies.tuning) instead of the study")
    study.add_argument("--no-progress", action="store_true", help="no progress bars")
    study.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                       help="data-parallel processes on this machine (torchrun --standalone); default 1")

    demo = sub.add_parser("demo", help="a short demonstration of the library")
    demo.add_argument("args", nargs="*", help="arguments passed to geomlat.demo.main (all of them, options included)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geomlat`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        # everything after `demo` belongs to the demo (argparse would claim options such as --help)
        from . import demo  # lazy: the demo pulls in what it needs only when asked

        return int(demo.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)

    # imported here, and torch only when needed: `--help` and early spec errors answer without torch
    from .studies.runner import InputError, check_data, load_spec, run_study

    overrides: dict[str, Any] = {}
    for item in args.overrides:
        overrides = deep_merge(overrides, item)
    launched = args.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1
    initialized = False
    try:
        if launched:
            # a malformed spec or data file stops here, before any process is started
            spec = load_spec(args.name, args.profile, overrides=overrides or None, seeds=args.seeds)
            check_data(spec, args.data_dir)
            return _launch_torchrun(argv, args.nproc)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from .distributed import init_from_env

            initialized = init_from_env()  # under torchrun/srun: join the process group
        if args.tune:
            from .studies.tools.tuning import run_tuning

            run_tuning(args.name, profile=args.profile, out_root=args.out, progress=not args.no_progress)
            return 0
        run_study(args.name, profile=args.profile, data_dir=args.data_dir, out_root=args.out, seeds=args.seeds,
                  overrides=overrides or None, progress=not args.no_progress)
    except SpecError as err:
        if _is_main_process():
            print(f"geomlat: invalid study spec: {_one_line(err)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, InputError) as err:
        if _is_main_process():
            print(f"geomlat: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _is_main_process():
            print("geomlat: interrupted; run the same command again to resume from the last checkpoints", file=sys.stderr)
        return 130
    except Exception as err:
        status = _known_error_status(err)
        if status is None:
            raise
        if _is_main_process():
            print(f"geomlat: {_one_line(err)}", file=sys.stderr)
        return status
    finally:
        if initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _is_main_process() -> bool:
    """Rank 0 (or no torchrun): the process that prints (``RANK`` is set by torchrun/srun launches)."""
    return int(os.environ.get("RANK", "0")) == 0


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _known_error_status(err: Exception) -> int | None:
    """Exit status of errors reported in one line without a traceback, None for the others: an output folder
    in use or a run folder made by another spec (2: nothing was done to it) and a refused or unreadable checkpoint or run record (1). Their module is imported only
    when a study ran, so it is looked up in ``sys.modules`` (not imported here)."""
    locks, folders = sys.modules.get("geomlat.engine.locks"), sys.modules.get("geomlat.engine.run_folder")
    if locks is not None and isinstance(err, locks.FolderInUseError):
        return 2
    if folders is not None and isinstance(err, folders.RunFolderMismatch):
        return 2  # a run folder made by another spec: refused before it was trained or read
    io = sys.modules.get("geomlat.engine.io")
    if io is None:
        return None
    if isinstance(err, (io.CheckpointError, io.UnreadableFileError)):
        return 1
    return None


if __name__ == "__main__":
    sys.exit(main())
