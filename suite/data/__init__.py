"""Data loaders and generators. Real data sets load from a local data root; nothing is downloaded here.

The data root is the ``data_root`` argument (the CLI's ``--data-root``) or, when that is None, the
environment variable ``EA_SUITE_DATA`` (``suite.settings.data_root``). Generated data (ListOps, Pathfinder) is
cached under ``$EA_SUITE_CACHE`` (default ``~/.cache/ea-suite``; ``suite.settings.cache_dir``).
"""
from __future__ import annotations

from suite.errors import UsageError

SPLITS = ("train", "val", "test")  # every data set's splits, in this order


class DataMissingError(UsageError):
    """A data set is not where it should be; the message says what to download, from where, and where to put it."""
