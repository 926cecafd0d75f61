"""How the suite speaks: the rich console every command prints through, and its warnings.

- ``make_console()``: the terminal's width, or 200 columns when the output is a pipe or a file (rich would
  otherwise wrap tables at 80 columns there). What a user follows (progress, a job's result, a run's lock taken
  over, a job's warnings beside its result) goes to the console.
- ``warn(message)``: what went wrong on the side without stopping anything (a record line skipped, a curve not
  saved or unreadable) goes through ``logging`` (logger ``suite``), which by default writes it to stderr as one line
  ``warning: <message>``; a program that embeds the suite configures that logger as it likes.
- A library caller who should be able to filter a condition as Python warnings are filtered gets a ``warnings``
  warning instead: only EA's fused CPU kernel falling back to the op-by-op path (``RuntimeWarning``).
"""
from __future__ import annotations

import logging
import sys

from rich.console import Console

LOGGER = logging.getLogger("suite")


class _StderrLine(logging.Handler):
    """One ``warning: ...`` line on the stderr of the moment (not the one at import: tests capture it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"{record.levelname.lower()}: {self.format(record)}", file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging's own rule: a failing handler reports, never raises)
            self.handleError(record)


if not LOGGER.handlers:
    LOGGER.addHandler(_StderrLine())
    LOGGER.propagate = False


def warn(message: str) -> None:
    """A warning of the suite (module docstring)."""
    LOGGER.warning(message)


def make_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200)
