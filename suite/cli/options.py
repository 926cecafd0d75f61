"""The command line's parser class and option types: every bad value is a one-line usage error (exit 2)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NoReturn

from suite.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse with its own usage errors raised as UsageError (one line, exit 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
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


def out_dir(text: str) -> Path:
    """A run directory path (created later, when everything else has been checked); not an empty string."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty string")
    return Path(text)


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


def split_specs(text: str) -> list[str]:
    """Attention specs of a list: ';' always separates specs; within a part, ',' separates specs too, except that
    a bare ``key=value`` continues the spec before it (``ea:order=2,qk_norm=false,softmax`` is two specs)."""
    specs: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        start = len(specs)
        for item in filter(None, (s.strip() for s in part.split(","))):
            if "=" in item and ":" not in item and len(specs) > start:
                specs[-1] += "," + item
            else:
                specs.append(item)
    return specs


def attention_specs(text: str, option: str = "--attn") -> list[str]:
    """Canonical specs, each checked completely (names, option types, the constructor's checks); UsageError
    naming a bad one. Duplicates appear once. (``suite.tasks.attention_specs``: answers cached per code version.)"""
    from suite.tasks.attention_specs import checked_spec

    out = []
    for spec in split_specs(text):
        try:
            out.append(checked_spec(spec))
        except ValueError as err:
            raise UsageError(f"{option} {spec}: {err}") from None
    if not out:
        raise UsageError(f"{option}: no attention spec in {text!r}")
    return list(dict.fromkeys(out))


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML reads it (numbers, true/false, null, [lists]), with 3e-4 read as a number."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"not a valid value: {text!r}") from None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if abs(number) < float("inf") else value
    return value


def key_value(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, parsed value)."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), parse_value(value.strip())
