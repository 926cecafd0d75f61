"""Data loaders and generators. Real data sets load from a local data root; nothing is downloaded here.

The data root is the ``data_root`` argument (the CLI's ``--data-root``) or, when that is None, the
environment variable ``EA_SUITE_DATA``. Generated data (ListOps, Pathfinder) is cached under
``$EA_SUITE_CACHE`` (default ``~/.cache/ea-suite``).
"""
from __future__ import annotations

import os
from pathlib import Path

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
