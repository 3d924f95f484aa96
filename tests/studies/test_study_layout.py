"""The layout of ``geomlat/studies`` (issues 13 and 20): a study kind is one subpackage that registers it, found
by that rule (no hand-kept list); no module outside a kind's package imports it (kinds share helpers through
the shared modules; the tools over kinds and ``benchmarks/gpu_check.py`` go through the kinds' per-run hooks);
no private module and no import of another module's private name; no class longer than about 150 lines; the
runner finds every kind by name."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import geomlat.studies
from geomlat.studies.runner import kind_packages

STUDIES = Path(geomlat.studies.__file__).parent
ROOT = STUDIES.parents[1]
PACKAGE = "geomlat.studies"
KIND_PACKAGES = set(kind_packages().values())
MAX_CLASS_LINES = 150


def module_name(path: Path) -> str:
    """Dotted name of a source file of the repository (a package's ``__init__.py`` -> the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """``(line, absolute dotted name)`` of every module imported by ``path`` (``from X import a`` yields
    ``X`` and ``X.a``: ``a`` may be a submodule); relative imports are resolved against ``name`` (default: the
    file's place in the repository)."""
    name = name or module_name(path)
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
    return top if top in KIND_PACKAGES else None


def sources() -> list[Path]:
    return sorted(p for p in STUDIES.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_kinds_are_the_subpackages_that_register_one():
    assert kind_packages() == {k: k for k in ("distill", "embed", "manifold", "robust", "selection", "toy")}
    packages = {p.parent.name for p in STUDIES.glob("*/__init__.py")}
    assert packages - KIND_PACKAGES == {"tools"}  # tools over kinds register none
    assert not [p.name for p in STUDIES.glob("*.py") if p.stem in KIND_PACKAGES]  # a kind is a package, not a module
    # the resolver, on a kind's own files: relative imports land in the right package
    run = STUDIES / "toy" / "run.py"
    targets = {t for _, t in imported_modules(run)}
    assert {"geomlat.studies.common", "geomlat.studies.toy.figures", "geomlat.graphs"} <= targets
    assert kind_of("geomlat.studies.toy.figures") == "toy" and kind_of("geomlat.studies.common") is None
    assert kind_of("geomlat.studies.figures") is None and kind_of("geomlat.studies.tools.tuning") is None


def outside_sources() -> list[Path]:
    """Python files that may not import a kind: every file of ``geomlat/`` outside the kinds' packages, and
    the benchmarks."""
    files = [p for p in (ROOT / "geomlat").rglob("*.py") if "__pycache__" not in p.parts]
    files += sorted((ROOT / "benchmarks").glob("*.py"))
    return [p for p in files if not (p.is_relative_to(STUDIES) and p.relative_to(STUDIES).parts[0] in KIND_PACKAGES)]


def test_no_study_kind_imports_another_and_nothing_outside_a_kind_imports_it():
    bad = []
    for path in sources():
        own = kind_of(module_name(path))
        for line, target in imported_modules(path):
            other = kind_of(target)
            if own is not None and other is not None and other != own:
                bad.append(f"{path.relative_to(STUDIES)}:{line}: kind {own!r} imports from kind {other!r}")
    for path in outside_sources():
        for line, target in imported_modules(path):
            if kind_of(target) is not None:
                bad.append(f"{path}:{line}: imports from kind {kind_of(target)!r} (use load_study_kind and its hooks)")
    assert not bad, "a kind is reached through its StudyKind only:\n" + "\n".join(sorted(set(bad)))


def test_the_layout_check_catches_a_tool_importing_a_kind(tmp_path):
    """The rule above on constructed files: a tool importing a kind (relatively) is caught, a shared import is not."""
    tool = STUDIES / "tools" / "tuning.py"
    imports = [t for _, t in imported_modules(tool)]
    assert "geomlat.studies.runner" in imports and not any(kind_of(t) for t in imports)
    fake = tmp_path / "fake.py"
    fake.write_text("from geomlat.studies.robust.run import build_run\nfrom geomlat.studies import spec\n")
    assert [kind_of(t) for _, t in imported_modules(fake, name="fake")] == ["robust", "robust", None, None]


def test_no_private_module_and_no_private_cross_module_import():
    """No ``_name.py`` module in the studies (a kind's helpers are modules of its package), and no import of
    a private name (``from .x import _y``) from another module of ``geomlat/``."""
    private = [str(p.relative_to(STUDIES)) for p in sources() if p.stem.startswith("_") and p.name != "__init__.py"]
    assert not private, f"private modules: {private}"
    bad = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                bad += [f"{path.relative_to(STUDIES)}:{node.lineno}: {a.name}" for a in node.names
                        if a.name.startswith("_") and a.name != "__future__"]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


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
    """In a fresh interpreter, no kind is imported with the package; every kind is registered by importing
    ``geomlat.studies.<kind>`` when asked for by name."""
    code = (
        "from geomlat.studies.runner import STUDY_KINDS, load_study_kind\n"
        "import geomlat.studies\n"
        "assert not STUDY_KINDS, sorted(STUDY_KINDS)\n"
        "for kind in ('toy', 'manifold', 'robust', 'embed', 'distill', 'selection'):\n"
        "    k = load_study_kind(kind)\n"
        "    assert k.name == kind and type(k).__module__ == f'geomlat.studies.{kind}', (kind, type(k).__module__)\n"
        "print(sorted(STUDY_KINDS))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(STUDIES.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert {"distill", "embed", "manifold", "robust", "selection", "toy"} <= set(eval(out.stdout.strip()))
