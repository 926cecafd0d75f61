"""The command line's parser class and option types: every bad value is a one-line usage error (exit 2)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from suite.errors import UsageError

PROFILES = ("smoke", "cpu", "full")


class Parser(argparse.ArgumentParser):
    """argparse with its own usage errors raised as UsageError (one line, exit 2) instead of exiting."""

    def error(self, message: str) -> None:
        raise UsageError(f"{self.prog}: {message}")


def comma_list(text: str) -> list[str]:
    """``a,b`` -> [a, b]; ArgumentTypeError for an empty list."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def lengths(text: str) -> list[int]:
    """``256,512`` -> [256, 512]: positive integers."""
    try:
        values = [int(t) for t in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers like 256,512,1024, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"sequence lengths must be positive, got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str, what: str = "a positive number") -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def seconds(text: str) -> float:
    return positive_float(text, "a positive number of seconds")


def output_file(text: str) -> Path:
    """A file path whose folder exists and is writable (checked now, before any work is done)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    path = Path(text)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file path")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: the folder {folder} is not writable")
    return path
