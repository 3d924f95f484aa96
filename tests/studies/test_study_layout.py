"""The layout of ``geomlat/studies`` (issue 13, point 6): study kinds share helpers through the shared
modules only (no kind imports another kind), no class is longer than about 150 lines (each kind is split
into spec validation, run and figures), and the runner still finds every kind by name."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import geomlat.studies
from geomlat.studies.runner import NOT_KINDS, SHARED_MODULES, _study_modules

STUDIES = Path(geomlat.studies.__file__).parent
PACKAGE = "geomlat.studies"
MAX_CLASS_LINES = 150


def module_name(path: Path) -> str:
    """Dotted name of a source file under ``geomlat/studies`` (a package's ``__init__.py`` -> the package)."""
    parts = list(path.relative_to(STUDIES).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute dotted name)`` of every module imported by ``path`` (``from X import a`` yields
    ``X`` and ``X.a``: ``a`` may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return out


def kind_of(dotted: str) -> str | None:
    """The study kind a module of ``geomlat.studies`` belongs to (None: a shared module or outside)."""
    if not dotted.startswith(PACKAGE + "."):
        return None
    top = dotted[len(PACKAGE) + 1 :].split(".")[0]
    return None if top in NOT_KINDS or top.startswith("_") else top


def sources() -> list[Path]:
    return sorted(p for p in STUDIES.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_scan_sees_the_kinds_and_resolves_relative_imports():
    kinds = set(_study_modules())
    assert {"distill", "embed", "manifold", "robust", "toy"} <= kinds
    assert not kinds & NOT_KINDS and SHARED_MODULES <= NOT_KINDS
    # the resolver, on a kind's own files: relative imports land in the right package
    run = STUDIES / "toy" / "run.py"
    targets = {t for _, t in imported_modules(run)}
    assert {"geomlat.studies.common", "geomlat.studies.toy.figures", "geomlat.graphs"} <= targets
    assert kind_of("geomlat.studies.toy.figures") == "toy" and kind_of("geomlat.studies.common") is None
    assert kind_of("geomlat.studies.figures") is None and kind_of("geomlat.graphs") is None


def test_no_study_kind_imports_another_and_shared_modules_import_no_kind():
    bad = []
    for path in sources():
        name = module_name(path)
        own = kind_of(name)
        top = name[len(PACKAGE) + 1 :].split(".")[0]
        if own is None and top not in SHARED_MODULES:
            continue  # the package itself (registers its built-in kind) and tools over kinds (tuning, lv_diagnosis)
        for line, target in imported_modules(path):
            other = kind_of(target)
            if other is not None and other != own:
                who = f"kind {own!r}" if own else f"shared module {top!r}"
                entry = f"{path.relative_to(STUDIES)}:{line}: {who} imports from kind {other!r}"
                if entry not in bad:
                    bad.append(entry)
    assert not bad, "study kinds must share helpers through geomlat/studies/common.py:\n" + "\n".join(bad)


def test_no_class_in_the_studies_is_longer_than_150_lines():
    long = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                if length > MAX_CLASS_LINES:
                    long.append(f"{path.relative_to(STUDIES)}:{node.lineno}: class {node.name} has {length} lines")
    assert not long, "split the class (spec validation, run, figures):\n" + "\n".join(long)


def test_the_runner_imports_each_kind_by_name_on_demand():
    """In a fresh interpreter, every kind is registered by importing ``geomlat.studies.<kind>`` when asked
    for by name (only ``distill`` is imported with the package)."""
    code = (
        "from geomlat.studies.runner import STUDY_KINDS, load_study_kind\n"
        "import geomlat.studies\n"
        "for kind in ('toy', 'manifold', 'robust', 'embed', 'distill'):\n"
        "    k = load_study_kind(kind)\n"
        "    assert k.name == kind and type(k).__module__ == f'geomlat.studies.{kind}', (kind, type(k).__module__)\n"
        "print(sorted(STUDY_KINDS))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(STUDIES.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert {"distill", "embed", "manifold", "robust", "toy"} <= set(eval(out.stdout.strip()))
