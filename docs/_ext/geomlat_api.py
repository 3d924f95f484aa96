"""``.. geomlat-api:: module [module ...]``: the public names of geomlat modules, each documented once.

The reference adapts to the package instead of listing signatures by hand: for every module named, the public
names are its ``__all__`` (or, without one, the functions and classes it defines), grouped by the module that
defines them (``obj.__module__``). Each group gets the defining module's docstring, a summary table and the
autodoc entries. An object already documented on another page (a re-export) is linked, not repeated.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
import typing

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def assigns(module, name: str) -> bool:
    """Whether the module's source assigns ``name`` at top level (where a constant is defined)."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return False
    return re.search(rf"^{re.escape(name)}\s*(:[^=]*)?=", source, flags=re.M) is not None


def public_names(module) -> list[str]:
    """``__all__``, or the public functions, classes and UPPERCASE constants the module defines itself."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    out = []
    for n, obj in vars(module).items():
        if n.startswith("_") or isinstance(obj, typing.TypeVar):
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if obj.__module__ == module.__name__:
                out.append(n)
        elif n.isupper() and not inspect.ismodule(obj) and assigns(module, n):
            out.append(n)
    return out


def defining_module(module, name: str, obj) -> str:
    """The module that defines ``obj``: functions and classes say so; a constant is looked up in the sources."""
    if inspect.isfunction(obj) or inspect.isclass(obj):
        owner = getattr(obj, "__module__", "")
        return owner if owner.startswith("geomlat") else module.__name__
    if assigns(module, name):
        return module.__name__
    for modname in sorted(m for m in list(sys.modules) if m.startswith(module.__name__ + ".")):
        sub = sys.modules[modname]
        if sub is not None and getattr(sub, name, None) is obj and assigns(sub, name):
            return modname
    return module.__name__


def directive_for(obj) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    return "autodata"


class GeomlatAPI(SphinxDirective):
    required_arguments = 1
    optional_arguments = 30
    option_spec = {"summary": lambda arg: None}

    def run(self) -> list[nodes.Node]:
        documented = self.env.domaindata.setdefault("geomlat_api", {})  # "mod.name" -> docname
        # what this page documents already (several directives on one page share it)
        self.seen: set[str] = self.env.temp_data.setdefault("geomlat_api_seen", set())
        # one group per defining module, merged over the modules named (a package and its parts: one heading
        # each), placed after the first module named that exports from it
        groups: dict[str, list[tuple[str, object]]] = {}
        order: list[tuple[str, bool, list[str]]] = []  # (module, is a package of re-exports, owners it opens)
        for modname in self.arguments:
            module = importlib.import_module(modname)
            owners: list[str] = []
            for name in public_names(module):
                obj = getattr(module, name)
                owner = defining_module(module, name, obj)
                if owner not in groups:
                    groups[owner] = []
                    owners.append(owner)
                if all(n != name or other is not obj for n, other in groups[owner]):
                    groups[owner].append((name, obj))
            package = modname not in groups
            order.append((modname, package, owners))
        lines: list[str] = []
        for modname, package, owners in order:
            if package and "summary" not in self.options:  # the package's own docstring
                lines += self.heading(modname, documented)
            for owner in owners:
                if "summary" in self.options:  # tables only, linking to the pages that document them
                    lines += [f".. currentmodule:: {owner}", "", ".. autosummary::", ""]
                    lines += [f"   {name}" for name, _ in groups[owner]] + [""]
                else:
                    lines += self.group(owner, groups[owner], documented)
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=self.env.docname), container)
        return container.children

    def heading(self, owner: str, documented: dict) -> list[str]:
        title = f"``{owner}``"
        seen_module = documented.get(owner, self.env.docname) != self.env.docname or owner in self.seen
        documented.setdefault(owner, self.env.docname)
        self.seen.add(owner)
        lines = [title, "-" * len(title), "", f".. automodule:: {owner}", "   :no-members:"]
        return lines + (["   :no-index:", ""] if seen_module else [""])

    def group(self, owner: str, members, documented: dict) -> list[str]:
        lines = self.heading(owner, documented) + [
                 f".. currentmodule:: {owner}", "", ".. autosummary::", ""]
        lines += [f"   {name}" for name, _ in members] + [""]
        for name, obj in members:
            key = f"{owner}.{name}"
            if documented.get(key, self.env.docname) != self.env.docname or key in self.seen:
                continue  # documented on another page (or above); the summary table links there
            self.seen.add(key)
            documented[key] = self.env.docname
            lines += [f".. {directive_for(obj)}:: {name}", ""]
            if inspect.isclass(obj):
                lines[-1:-1] = ["   :members:", "   :show-inheritance:"]
        return lines


def purge(app, env, docname):
    data = env.domaindata.get("geomlat_api", {})
    for key in [k for k, v in data.items() if v == docname]:
        del data[key]


IDENTIFIER = re.compile(r"^~?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def resolve_geomlat(app, env, node, contnode):
    """Resolve the Python references the nitpicky build would otherwise report, by these rules only:

    * a re-exported name (``geomlat.latent_graph``) or an unqualified one (``Distiller``) links to the one
      documented object whose dotted name ends with it (inside geomlat; those of the module where the name is
      written first); ambiguous names stay unresolved;
    * a private geomlat name (``_RelationalKD``), a type variable or alias of geomlat, and free text that
      napoleon took for a type (``a ValueError``, a shape letter such as ``N``) are rendered as plain text.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    if not IDENTIFIER.match(target) or len(target) == 1:
        return contnode
    last = target.rsplit(".", 1)[-1]
    if last.startswith("_") and (target.startswith("geomlat") or "." not in target or target.startswith("_")):
        return contnode
    domain = env.get_domain("py")
    objects = domain.objects
    owner = ".".join(p for p in (node.get("py:module"), node.get("py:class")) if p)
    if owner.startswith("geomlat") and "." not in target:  # a method named inside its class's docstring
        if f"{owner}.{target}" in objects:
            return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", f"{owner}.{target}", node, contnode)
        if node.get("py:class") and _import(f"{owner}.{target}") is not None:
            return contnode  # a member autodoc does not show (no docstring): named as text
    candidates = sorted(name for name in objects if name.startswith("geomlat.") and
                        (name == target or name.endswith("." + last)) and not name.endswith("." + last + "." + last))
    # a dotted name (``DeferredChecks.verify``) prefers the objects it names in full; a bare one named inside a
    # geomlat module (an autosummary line) prefers that module's objects
    exact = [c for c in candidates if "." in target and c.endswith("." + target)]
    local = [c for c in candidates if owner.startswith("geomlat") and c.startswith(owner + ".")]
    candidates = exact or local or candidates
    if target.startswith("geomlat."):
        obj = _import(target)
        if obj is not None and (inspect.isfunction(obj) or inspect.isclass(obj)):
            canonical = f"{obj.__module__}.{obj.__qualname__}"
            candidates = [canonical] if canonical in objects else candidates
        elif obj is not None and (isinstance(obj, typing.TypeVar) or type(obj).__module__ == "typing"):
            return contnode
        package = target.rsplit(".", 1)[0]
        scoped = [c for c in candidates if c.startswith(package + ".")]
        candidates = scoped or candidates
    members = [c for c in candidates if c.count(".") == candidates[0].count(".")] if candidates else []
    if len(members) != 1:
        return contnode if not members and _undocumented_geomlat_name(target) else None
    return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", members[0], node, contnode)


def _undocumented_geomlat_name(target: str) -> bool:
    """Whether ``target`` names something geomlat defines but keeps out of every ``__all__`` (a module
    constant, a helper class): it is named as text. A name that exists nowhere stays an error."""
    if target.startswith("geomlat"):
        return _import(target) is not None
    name = target.rsplit(".", 1)[-1]
    return any(name in vars(m) for k, m in list(sys.modules.items()) if k.startswith("geomlat") and m is not None)


def drop_type_docstring(app, what, name, obj, options, lines):
    """A constant without its own doc comment would show its type's docstring (``dict``'s): drop it."""
    if what in ("data", "attribute") and lines and not inspect.isclass(obj) and not callable(obj):
        doc = inspect.cleandoc(type(obj).__doc__ or "")
        if doc and "\n".join(lines).strip() == doc.strip():
            lines.clear()


def _import(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj
    return None


def drop_foreign_viewcode(app):
    """viewcode lists every module an object names, ``builtins`` included (for which it writes no page):
    keep only geomlat's modules in its source index, so that the index has no dead link."""
    modules = getattr(app.env, "_viewcode_modules", {})
    for name in [m for m in modules if not m.startswith("geomlat")]:
        del modules[name]
    return []


def setup(app):
    app.connect("html-collect-pages", drop_foreign_viewcode, priority=100)
    app.setup_extension("sphinx.ext.autodoc")
    app.add_directive("geomlat-api", GeomlatAPI)
    app.connect("env-purge-doc", purge)
    app.connect("missing-reference", resolve_geomlat)
    app.connect("autodoc-process-docstring", drop_type_docstring)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
