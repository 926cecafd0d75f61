"""Locate the LRA release tree (``lra_release.gz``) under a data root.

The archive extracts to a nested tree (google-research/long-range-arena, GitHub issue 38)::

    lra_release/{listops-1000/, pathfinder128/,
                 lra_release/{listops-1000/, tsv_data/, pathfinder32/, pathfinder64/, pathfinder128/, pathfinder256/}}

A member such as ``listops-1000`` is looked up, in this order, as ``ROOT/lra_release/lra_release/MEMBER``,
``ROOT/lra_release/MEMBER`` and ``ROOT/MEMBER``, so ROOT may be the folder holding the archive's top
``lra_release/``, that outer folder itself, or the inner one. The innermost copy wins: S4 and later work use
the inner copies, and the outer ``pathfinder128`` is the one suspected of being broken (the same upstream issue).
"""
from __future__ import annotations

from pathlib import Path

from suite.data import DataMissingError
from suite.settings import DATA_ROOT_ENV

RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
RELEASE_SIZE = "about 8.2 GB compressed, 18.6 GB extracted"

_LAYOUT_PREFIXES = (("lra_release", "lra_release"), ("lra_release",), ())


def candidate_dirs(data_root: Path, member: str) -> list[Path]:
    """Where ``member`` (e.g. ``listops-1000``, ``tsv_data``, ``pathfinder32``) may sit under data_root, innermost
    first."""
    return [Path(data_root, *prefix, member) for prefix in _LAYOUT_PREFIXES]


def find_release_dir(data_root: Path | None, member: str) -> Path | None:
    """The first existing directory among ``candidate_dirs``, or None (also when data_root is None)."""
    if data_root is None:
        return None
    for path in candidate_dirs(data_root, member):
        if path.is_dir():
            return path
    return None


def missing_release_message(data_root: Path | None, member: str, what: str) -> str:
    """One line: what is missing, where it was looked for, what to download and where to extract it."""
    if data_root is None:
        where = f"no data root is set (pass --data-root DIR or set {DATA_ROOT_ENV})"
    else:
        looked = ", ".join(str(p) for p in candidate_dirs(data_root, member))
        where = f"looked in {looked}"
    target = "DIR" if data_root is None else str(data_root)
    return (f"{what} not found: {where}. Download {RELEASE_URL} ({RELEASE_SIZE}) and extract it with "
            f"`tar xzf lra_release.gz -C {target}` so that {target}/lra_release/lra_release/{member} exists.")


def require_release_dir(data_root: Path | None, member: str, what: str) -> Path:
    """Like ``find_release_dir`` but raises DataMissingError with download instructions."""
    found = find_release_dir(data_root, member)
    if found is None:
        raise DataMissingError(missing_release_message(data_root, member, what))
    return found
