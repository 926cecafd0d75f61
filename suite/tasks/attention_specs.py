"""Attention specs checked once per version of the attention code, so that a plan reads them without torch.

``checked_spec(spec)`` answers what ``validate_spec`` answers (the canonical spec, after every check of the
registry and of the attention's constructor) and ``all_names()`` what ``available()`` answers. Answers are kept
in ``<cache>/attention-specs.json`` (``$EA_SUITE_CACHE``, else ``~/.cache/ea-suite``) under a fingerprint of
the attention package's source files, the installed torch and triton, and ``EA_SUITE_PLUGINS``; an answer not
kept there (a new spec, changed code) comes from the registry itself, which imports torch (seconds), and is
kept for next time. A bad spec is never kept: its ValueError comes from the registry every time. Once the
registry is loaded in this process (a run imports torch anyway), it answers directly.
"""
from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from suite.jsoncache import read_cached_json, write_cached_json

CACHE_FILE = "attention-specs.json"


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """sha256 over the attention package's .py files, the torch and triton versions and EA_SUITE_PLUGINS."""
    import suite.attention  # the package alone: it imports no attention until a name of it is used

    digest = hashlib.sha256()
    root = Path(suite.attention.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for dist in ("torch", "triton"):
        try:
            digest.update(f"{dist}={metadata.version(dist)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{dist}=none\0".encode())
    digest.update(os.environ.get("EA_SUITE_PLUGINS", "").encode())
    return digest.hexdigest()


def _load() -> dict[str, Any]:
    """This fingerprint's answers: {"specs": {spec: canonical}, "names": [...]}, what of it is well formed."""
    answers = read_cached_json(CACHE_FILE).get(fingerprint())
    if not isinstance(answers, dict):
        return {}
    specs, names = answers.get("specs"), answers.get("names")
    return {**({"specs": specs} if isinstance(specs, dict) else {}),
            **({"names": names} if isinstance(names, list) else {})}


def _keep(answers: dict[str, Any], key: str, value: Any) -> None:
    """Keep ``answers`` with ``key`` set to ``value`` (only this fingerprint's answers stay), unless it already
    holds that."""
    if answers.get(key) != value:
        write_cached_json(CACHE_FILE, {fingerprint(): {**answers, key: value}})


def _registry_loaded() -> bool:
    return "suite.attention.registry" in sys.modules


def checked_spec(spec: str) -> str:
    """The canonical form of ``spec`` after ``validate_spec``'s checks; ValueError (from the registry) if bad."""
    answers = _load()
    specs = answers.get("specs", {})
    if not _registry_loaded() and isinstance(specs.get(spec), str):
        return specs[spec]
    from suite.attention import validate_spec

    canonical = validate_spec(spec)
    _keep(answers, "specs", {**specs, spec: canonical})
    return canonical


def all_names() -> list[str]:
    """Every registered attention name, sorted (``available()``)."""
    answers = _load()
    if not _registry_loaded() and "names" in answers:
        return answers["names"]
    from suite.attention import available

    names = available()
    _keep(answers, "names", names)
    return names
