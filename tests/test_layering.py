"""The package's layers: every import (at the top of a file or inside a function) points down or sideways.

    cli > tasks > families, gpu_check > analysis > run > models, data > attention > console, errors, settings, jsoncache

``models`` hold nn.Modules and import nothing above ``attention``; ``data`` imports nothing above itself; ``run``
(running the night) imports no family, no task loader (jobs carry their builder) and nothing of ``analysis``;
``analysis`` (reading it in the morning) imports from ``run`` only its records reader, so tables read records and
nothing else; no package imports itself in a circle.
"""
import ast
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "suite"

#: package -> the packages it may import (besides itself)
BOTTOM = {"console", "errors", "settings", "jsoncache"}
ALLOWED = {
    "errors": set(),
    "console": set(),
    "settings": set(),
    "jsoncache": {"settings"},
    "attention": BOTTOM,
    "data": BOTTOM,
    "models": {"attention"} | BOTTOM,
    "run": {"attention", "data", "models"} | BOTTOM,
    "analysis": {"run"} | BOTTOM,
    "families": {"run", "models", "data", "attention"} | BOTTOM,
    "gpu_check": {"analysis", "run", "attention"} | BOTTOM,
    "tasks": {"families", "run", "data", "attention"} | BOTTOM,
    "cli": {"tasks", "families", "gpu_check", "analysis", "run", "models", "data", "attention"} | BOTTOM,
}
#: the only modules of ``run`` that ``analysis`` may import: the records reader
ANALYSIS_READS = {"suite.run.records"}


def _package(path: Path) -> str:
    relative = path.relative_to(SUITE)
    return relative.parts[0].removesuffix(".py")


def _suite_modules(path: Path) -> set[str]:
    """The ``suite`` modules (or names of modules) a file imports, anywhere in it, as dotted names."""
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
            if name.startswith("suite."):
                found.add(name)
    return found


def _suite_imports(path: Path) -> set[str]:
    """The top-level ``suite`` packages a file imports, anywhere in it."""
    return {name.split(".")[1] for name in _suite_modules(path)}


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


@pytest.mark.parametrize("path", [p for p in FILES if _package(p) == "analysis"], ids=lambda p: p.name)
def test_analysis_reads_records_and_nothing_else_of_run(path):
    """Tables read records and nothing else: of ``suite.run`` an analysis module imports the records reader only."""
    from_run = {name for name in _suite_modules(path) if name.startswith("suite.run")}
    other = sorted(name for name in from_run
                   if not any(name == allowed or name.startswith(allowed + ".") for allowed in ANALYSIS_READS))
    assert not other, f"{path.relative_to(SUITE)} imports {', '.join(other)} of run (only its records reader allowed)"
