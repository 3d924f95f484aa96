"""The ``geomlat`` console script.

    geomlat study NAME [--profile quick|paper] [--data-dir DIR] [--seeds 0 1 2] [--out .]
                       [--set FIELD=VALUE ...] [--no-progress]
    geomlat demo [ARGS ...]

``NAME`` is a study in ``studies/NAME.toml`` or a path to a TOML spec. ``--set`` overrides one spec
field after the profile, with a dotted path and a TOML value, e.g. ``--set train.epochs=1`` or
``--set 'methods.gkd.terms.gkd.weight=10.0'``. A malformed spec stops before any training with exit
status 2 and a message naming the field.
"""
from __future__ import annotations

import argparse
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
    study.add_argument("--no-progress", action="store_true", help="no progress bars")

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

    from .studies import run_study

    overrides: dict[str, Any] = {}
    for item in args.overrides:
        overrides = deep_merge(overrides, item)
    try:
        run_study(args.name, profile=args.profile, data_dir=args.data_dir, out_root=args.out, seeds=args.seeds,
                  overrides=overrides or None, progress=not args.no_progress)
    except SpecError as err:
        print(f"geomlat: invalid study spec: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"geomlat: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geomlat: interrupted; run the same command again to resume from the last checkpoints", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
