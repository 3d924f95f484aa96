"""The public API stays clean: no module of geomlat/ or benchmarks/ uses another module's private names,
NNK is exported at the top level, public names spell ``neighbors``."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import geomlat

ROOT = Path(__file__).resolve().parents[1]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, own_package: str) -> list[str]:
    """``"line: what"`` for every private name that ``source`` takes from another module of ``own_package``
    (relative imports, ``geomlat.*`` or ``benchmarks.*``): ``from m import _x``, and ``m._x`` for a module ``m``
    it imported. Private modules (``from ._checks import check_k``) are fine: their public names are shared."""
    tree = ast.parse(source)
    modules: set[str] = set()  # local names bound to imported project modules
    found = []

    def ours(module: str | None, level: int) -> bool:
        return level > 0 or (module or "").split(".")[0] in ("geomlat", "benchmarks", own_package)

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and ours(node.module, node.level):
            for alias in node.names:
                if _private(alias.name) and not _is_module(node, alias.name):
                    found.append(f"{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
                elif _is_module(node, alias.name):
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name, 0):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):  # geomlat.nnk._x: the root name is the module
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _is_module(node: ast.ImportFrom, name: str) -> bool:
    """Whether ``from <node.module> import name`` names a module of the project (e.g. ``from . import nnk``)."""
    base = ROOT
    if node.level:
        return False if node.module else name in _SIBLING_MODULES
    for part in (node.module or "").split("."):
        base = base / part
    return (base / f"{name}.py").exists() or (base / name / "__init__.py").exists()


_SIBLING_MODULES = {p.stem for d in ("geomlat", "benchmarks") for p in (ROOT / d).rglob("*.py")} | {
    p.name for d in ("geomlat",) for p in (ROOT / d).rglob("*") if p.is_dir()}


def test_the_scanner_finds_private_imports():
    src = ("from geomlat.nnk import _augmented_kernel, nnk_weights\nfrom ..nnk import _kernel_blocks\n"
           "from ._checks import check_k\nimport geomlat.nnk as nnk\nfrom geomlat import graphs\n"
           "nnk._prepare_points(x)\ngraphs._similarity(x)\nself._own()\nfrom . import _checks\n")
    assert sorted(private_uses(src, "geomlat")) == [
        "1: from geomlat.nnk import _augmented_kernel", "2: from ..nnk import _kernel_blocks",
        "6: nnk._prepare_points", "7: graphs._similarity"]


@pytest.mark.parametrize("folder", ["geomlat", "benchmarks"])
def test_no_module_uses_another_modules_private_names(folder):
    bad = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        uses = private_uses(path.read_text(), folder)
        if uses:
            bad[str(path.relative_to(ROOT))] = uses
    assert not bad, f"private names used across modules (make them public, with a docstring): {bad}"


def test_nnk_is_exported_at_the_top_level():
    from geomlat import nnk

    for name in ("nnk_graph", "nnk_weights", "nnk_interpolation", "nnk_symmetrize", "NNKResult",
                 "nnk_loo_predictions", "nnk_layer_errors"):
        assert getattr(geomlat, name) is getattr(nnk, name)
        assert name in geomlat.__all__
    for name in ("register_kernel", "get_kernel", "Kernel", "KERNELS"):
        assert name in geomlat.__all__ and getattr(geomlat, name) is not None


def test_public_names_spell_american_english():
    """Every public function, class, constant and argument of geomlat spells American English (``neighbors``)."""
    bad = []
    for info in pkgutil.walk_packages(geomlat.__path__, "geomlat."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional dependency (lightning, ...)
            continue
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not _private(node.name):
                names.append(node.name)
                if not isinstance(node, ast.ClassDef):
                    names += [a.arg for a in node.args.args + node.args.kwonlyargs]
            elif isinstance(node, ast.Assign) and node.col_offset == 0:
                names += [t.id for t in node.targets if isinstance(t, ast.Name) and not _private(t.id)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.append(node.target.id)  # dataclass fields
            studies = info.name.startswith("geomlat.studies")  # left to the rewrite of the study kinds (issue 20)
            bad += [f"{info.name}: {n}" for n in names if (NEIGHBOUR if studies else BRITISH).search(n)]
    assert not bad, bad


NEIGHBOUR = re.compile("neighbou" "r", re.I)
#: British spellings that have an American twin in geomlat (neighbors, centers, colors, normalize, ...).
BRITISH = re.compile(r"neighbou" r"r|cent" r"re|cent" r"red|colou" r"r|behaviou" r"r|normalis|label" r"led|label" r"ling|"
                     r"analys(e|ed|ing)\b", re.I)  # split so that this file passes its own check


def test_one_english_in_the_source():
    """Names, messages, docstrings and comments of geomlat (the study kinds included) spell American English."""
    root = Path(geomlat.__file__).parent
    bad = [f"{path.relative_to(root)}:{i}: {line.strip()}"
           for path in sorted(root.rglob("*.py"))
           for i, line in enumerate(path.read_text().splitlines(), 1) if BRITISH.search(line)]
    assert not bad, "\n".join(bad)
