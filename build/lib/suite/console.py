"""The rich console every command prints through: the terminal's width, or 200 columns when the output is
a pipe or a file (rich would otherwise wrap tables at 80 columns there)."""
from __future__ import annotations

import sys

from rich.console import Console


def make_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200)
