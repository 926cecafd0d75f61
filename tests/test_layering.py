"""The package's layers: every import (at the top of a file or inside a function) points down or sideways.

    cli  >  tasks  >  families  >  harness  >  models, data  >  attention  >  console, errors

``models`` hold nn.Modules and import nothing above ``attention``; ``data`` imports nothing above itself; the
harness imports no family and no task loader (jobs carry their builder); no package imports itself in a circle.
"""
import ast
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "suite"

#: package -> the packages it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "console": set(),
    "attention": {"errors"},
    "data": {"errors", "console"},
    "models": {"attention", "errors"},
    "harness": {"attention", "data", "models", "console", "errors"},
    "families": {"harness", "models", "data", "attention", "console", "errors"},
    "tasks": {"families", "harness", "data", "attention", "console", "errors"},
    "cli": {"tasks", "families", "harness", "models", "data", "attention", "console", "errors"},
}


def _package(path: Path) -> str:
    relative = path.relative_to(SUITE)
    return relative.parts[0].removesuffix(".py")


def _suite_imports(path: Path) -> set[str]:
    """The top-level ``suite`` packages a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            if node.module == "suite":
                names = [f"suite.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "suite" and len(parts) > 1:
                found.add(parts[1])
    return found


FILES = sorted(p for p in SUITE.rglob("*.py") if p.name != "__main__.py")


def test_every_package_is_declared_in_the_layering():
    assert {_package(p) for p in FILES} - {"__init__"} <= set(ALLOWED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SUITE)))
def test_imports_point_down_the_layers(path):
    package = _package(path)
    if package == "__init__":
        return
    upward = sorted(_suite_imports(path) - ALLOWED[package] - {package})
    assert not upward, f"{path.relative_to(SUITE)} ({package}) imports {', '.join(upward)}, which sit above it"
