"""The import structure of ``geomlat/``: every module imports only from its own layer or the layers below it.

Layers, bottom to top (a component is ``geomlat.<name>``: a module or a subpackage with all its modules):

0. ``registry``, ``_lazy``, ``_checks``, ``_params``, ``checks``, ``options``, ``sequences``, ``batch``: helpers every layer uses.
1. ``data``, ``models``, ``capture``, ``distributed``, ``io``, ``locks``: datasets, networks, reading a layer's output,
   process groups, atomic files.
2. ``kernels``, ``knn``, ``signals``, ``distances``: similarity, neighbors, graph signals, graph distances.
3. ``graphs``, ``nnk``, ``interop``: latent geometry graphs, NNK graphs, conversions.
4. ``losses``, ``robustness``: differentiable losses on graphs; attacks, corruptions, Parseval.
5. ``engine``: the training loop, run records, resume; it trains any objective and imports none (nor the losses
   and attacks they are made of).
6. ``objectives``: what the engine trains (a model plus losses and attacks).
7. ``analysis``, ``classifiers``, ``integrations``: measures on trained models, graph classifiers,
   Lightning / torchdistill.
8. ``studies``: the studies (spec, runs, tables, figures).
9. ``cli``, ``demo``: entry points.

The package ``geomlat/__init__.py`` (and each subpackage's ``__init__``) is a facade that imports its public
names lazily (:mod:`geomlat._lazy`); ``from geomlat import name`` is resolved through that lazy table to the
module that defines ``name``. Both module-level and function-level (deferred) imports count; a deferred
import that goes upward must be listed in ``JUSTIFIED_UPWARD`` with its reason (none is needed today).
The components must also form no import circle (within a layer, two components may not import each other,
directly or through others).
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import geomlat

LAYERS = [
    ["registry", "_lazy", "_checks", "_params", "checks", "options", "sequences", "batch"],
    ["data", "models", "capture", "distributed", "io", "locks"],
    ["kernels", "knn", "signals", "distances"],
    ["graphs", "nnk", "interop"],
    ["losses", "robustness"],
    ["engine"],
    ["objectives"],
    ["analysis", "classifiers", "integrations"],
    ["studies"],
    ["cli", "demo"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

#: (importing module, imported component): why a deferred upward import is right. Empty: none is.
JUSTIFIED_UPWARD: dict[tuple[str, str], str] = {}

ROOT = Path(geomlat.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(package: str, name: str) -> str:
    """The module that ``from <package> import <name>`` reads: a submodule, or the one the package's lazy table
    (``_LAZY``) names, or the package itself."""
    if (ROOT.parent / package.replace(".", "/") / f"{name}.py").exists() or \
            (ROOT.parent / package.replace(".", "/") / name / "__init__.py").exists():
        return f"{package}.{name}"
    lazy = getattr(importlib.import_module(package), "_LAZY", {})
    if name in lazy:
        return importlib.util.resolve_name(lazy[name], package)
    return package


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(imported geomlat module, line) for every import statement of ``source`` (the text of ``module``), at
    any depth (module level, in functions, in ``if TYPE_CHECKING:``)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "geomlat"]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module
            if base.split(".")[0] != "geomlat":
                continue
            found += [(_resolve(base, alias.name), node.lineno) for alias in node.names]
    return found


def _component(module: str) -> str | None:
    """``geomlat.losses.distill`` -> ``losses``; the package root -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _edges() -> list[tuple[str, str, str, int]]:
    """(importing component, imported component, importing module, line) across components."""
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        source = _component(module)
        if source is None:  # the root facade
            continue
        for target_module, line in imports_of(path.read_text(), module, path.name == "__init__.py"):
            target = _component(target_module)
            if target is not None and target != source:
                edges.append((source, target, module, line))
    return edges


def test_every_component_has_a_layer():
    components = {_component(_module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert components <= set(LAYER), f"components without a layer (add them to LAYERS): {sorted(components - set(LAYER))}"


def test_no_import_goes_up_a_layer():
    upward = [f"{module}:{line} imports geomlat.{target} (layer {LAYER[target]} > {LAYER[source]})"
              for source, target, module, line in _edges()
              if LAYER[target] > LAYER[source] and (module, target) not in JUSTIFIED_UPWARD]
    assert not upward, "\n".join(upward)


def test_components_form_no_import_circle():
    graph: dict[str, set[str]] = {}
    for source, target, _, _ in _edges():
        graph.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    circles = sorted(a for a in graph if reaches(a, a, set()))
    assert not circles, f"components on an import circle: {circles}"


def test_the_checker_sees_deferred_relative_and_lazy_imports():
    """An upward import inside a function, written relative or through the lazy root table, is found."""
    source = "import torch\n\ndef f():\n    from .objectives import Supervised\n    from . import nnk\n" \
             "    from geomlat import latent_graph\n    import geomlat.studies.runner\n"
    assert imports_of(source, "geomlat.kernels") == [("geomlat.objectives", 4), ("geomlat.nnk", 5),
                                                     ("geomlat.graphs", 6), ("geomlat.studies.runner", 7)]
    assert imports_of("from ..engine import train\n", "geomlat.studies.common") == [("geomlat.engine.loop", 1)]
    assert imports_of("from .step import train_step\n", "geomlat.engine", is_package=True) == [("geomlat.engine.step", 1)]
