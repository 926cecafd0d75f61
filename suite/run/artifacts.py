"""What a job saves beside its record (checkpoints, curves), written all or nothing.

``atomic_folder(path)`` yields a temporary sibling folder to write into; when the block finishes, the folder
(and its files, fsynced) replaces ``path`` in one rename; when it fails (a full or read-only disk), the
temporary folder is removed and ``path`` is left as it was. A half-written checkpoint never sits where a
later evaluation would load it.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """Write ``path`` (a folder) all or nothing: yields the temporary folder to fill (module docstring)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
