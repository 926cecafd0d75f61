"""Data loaders and generators. Real data sets load from a local data root; nothing is downloaded here.

The data root is the ``data_root`` argument (the CLI's ``--data-root``) or, when that is None, the
environment variable ``EA_SUITE_DATA``. Generated data (ListOps, Pathfinder) is cached under
``$EA_SUITE_CACHE`` (default ``~/.cache/ea-suite``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from suite.errors import UsageError

DATA_ROOT_ENV = "EA_SUITE_DATA"
CACHE_ENV = "EA_SUITE_CACHE"
SPLITS = ("train", "val", "test")  # every data set's splits, in this order


class DataMissingError(UsageError):
    """A data set is not where it should be; the message says what to download, from where, and where to put it."""


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path | None:
    """The explicit data root, else ``$EA_SUITE_DATA``, else None (no real data configured)."""
    if data_root is None:
        data_root = os.environ.get(DATA_ROOT_ENV) or None
    return None if data_root is None else Path(data_root).expanduser()


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The explicit cache dir, else ``$EA_SUITE_CACHE``, else ``~/.cache/ea-suite``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ea-suite"
    return Path(cache_dir).expanduser()


def read_cached_json(name: str) -> dict[str, Any]:
    """The JSON object kept as ``name`` in the cache folder (``resolve_cache_dir``); {} when it is absent,
    unreadable or not an object."""
    try:
        value = json.loads((resolve_cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_cached_json(name: str, value: dict[str, Any]) -> None:
    """Keep ``value`` as ``name`` in the cache folder, written whole or not at all; a cache that cannot be
    written (read-only or full disk) is only slower next time."""
    path = resolve_cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
