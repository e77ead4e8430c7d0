"""No module reads, writes or imports a private name of another (issue 18).

A name with a leading underscore belongs to the object or module that defines it; another
module reaching into it (`actor._handles`, `from x import _helper`) is a seam the design hides.
Only `self`, `cls` and `super()` may use private names; this walks the code's syntax trees.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("supervisor", "actors", "tests")
# The reaches that are allowed, by file and code. Each needs its reason.
ALLOWED = {
    # Third-party privates: fsup overrides these two methods of Hypercorn's HTTP/2 protocol
    # (supervisor/http/h2_guard.py), so the test pins them to the versions it was written for.
    ("tests/test_dependency_pins.py", "H2Protocol._flush"),
    ("tests/test_dependency_pins.py", "H2Protocol._create_stream"),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _owner_may_use(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def _by_name(node: ast.AST) -> bool:
    """`setattr(x, "_name", ...)`, `getattr(x, "_name")`, `monkeypatch.setattr(m, "_name", ...)`:
    the same reach, spelled as a string."""
    if not isinstance(node, ast.Call) or len(node.args) < 2:
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    target, attr = node.args[0], node.args[1]
    return (
        name in ("setattr", "getattr", "delattr", "hasattr")
        and isinstance(attr, ast.Constant)
        and isinstance(attr.value, str)
        and _private(attr.value)
        and not _owner_may_use(target)
    )


def reaches_into(source: str) -> list[str]:
    """Every use of another's private name in `source`, as `line: code`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [
                (node.lineno, f"from {node.module} import {alias.name}")
                for alias in node.names
                if _private(alias.name)
            ]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if not _owner_may_use(node.value):
                found.append((node.lineno, ast.unparse(node)))
        elif _by_name(node):
            found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {code}" for line, code in sorted(found)]


def test_no_module_reaches_into_another() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{where}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for where in reaches_into(path.read_text())
        if (str(path.relative_to(ROOT)), where.split(": ", 1)[1]) not in ALLOWED
    ]
    assert offences == []


def test_every_allowed_reach_is_still_there() -> None:
    """An allowance whose reach is gone is removed with it, not left to excuse a new one."""
    found = {
        (name, where.split(": ", 1)[1])
        for name in {name for name, _ in ALLOWED}
        for where in reaches_into((ROOT / name).read_text())
    }
    assert ALLOWED <= found


def test_the_walk_sees_each_kind_of_reach() -> None:
    source = (
        "from m import _helper\n"
        "actor._handles[1] = 2\n"
        "self.runner._replaced = None\n"
        "self._own = super()._base()\n"
        "monkeypatch.setattr(listener, '_diag', fake)\n"
        "setattr(self, '_mine', 1)\n"
    )
    assert reaches_into(source) == [
        "1: from m import _helper",
        "2: actor._handles",
        "3: self.runner._replaced",
        "5: monkeypatch.setattr(listener, '_diag', fake)",
    ]
