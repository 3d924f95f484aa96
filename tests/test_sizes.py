"""Small functions: no function or method in geomlat/ is longer than 80 lines (issue 20).

A function's length is ``end_lineno - lineno + 1`` of its ``def`` node (ast): the signature, the docstring and
the body, decorators not counted. Nested functions count inside their parent as well."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 80


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[int, str, int]]:
    """``(line, name, length)`` of every function of ``source`` longer than ``limit`` lines (docstring included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.lineno, node.name, length))
    return found


def test_the_scan_measures_def_to_last_line_with_the_docstring():
    body = "\n".join(f"    x{i} = {i}" for i in range(77))
    exactly = f'def f():\n    """doc"""\n{body}\n    return 1\n'  # 1 + 1 + 77 + 1 = 80 lines
    assert long_functions(exactly) == []
    one_more = f'@decorator\ndef g():\n    """doc\n    more"""\n{body}\n    return 1\n'  # 81 lines from `def`
    assert long_functions(one_more) == [(2, "g", 81)]
    nested = "class A:\n    def m(self):\n        def inner():\n" + "\n".join(f"            y{i} = {i}" for i in range(90))
    assert [name for _, name, _ in long_functions(nested)] == ["m", "inner"]


def test_no_function_in_geomlat_is_longer_than_80_lines():
    long = [f"{path.relative_to(ROOT)}:{line}: {name} has {length} lines"
            for path in sorted((ROOT / "geomlat").rglob("*.py"))
            for line, name, length in long_functions(path.read_text())]
    assert not long, "functions over 80 lines (split them):\n" + "\n".join(long)
