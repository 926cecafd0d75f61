"""The suite's environment variables, read here and nowhere else.

- ``EA_SUITE_DATA``: where real data sets live (the default of ``--data-root``); unset: embedded data only
- ``EA_SUITE_CACHE``: the cache folder (generated data, the fused CPU kernel, attention-spec answers, the device
  speed); default ``~/.cache/ea-suite``
- ``EA_SUITE_TASKS``: more task-file roots, separated by ``os.pathsep``
- ``EA_SUITE_PLUGINS``: modules that register more builders, comma-separated
- ``EA_SUITE_CPU_FUSED``: ``0`` (or false, no, off) runs EA's op-by-op torch path on a CPU instead of the fused kernel
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "EA_SUITE_DATA"
CACHE_ENV = "EA_SUITE_CACHE"
TASKS_ENV = "EA_SUITE_TASKS"
PLUGINS_ENV = "EA_SUITE_PLUGINS"
CPU_FUSED_ENV = "EA_SUITE_CPU_FUSED"


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The explicit data root, else ``$EA_SUITE_DATA``, else None (no real data configured)."""
    value = explicit if explicit is not None else (os.environ.get(DATA_ROOT_ENV) or None)
    return None if value is None else Path(value).expanduser()


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The explicit cache folder, else ``$EA_SUITE_CACHE``, else ``~/.cache/ea-suite``."""
    value = explicit if explicit is not None else (os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ea-suite")
    return Path(value).expanduser()


def task_roots() -> list[Path]:
    """The extra task-file roots of ``$EA_SUITE_TASKS``."""
    return [Path(p) for p in os.environ.get(TASKS_ENV, "").split(os.pathsep) if p.strip()]


def plugins() -> list[str]:
    """The modules named in ``$EA_SUITE_PLUGINS``."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def cpu_fused_disabled() -> str | None:
    """Why the fused CPU kernel is off by ``$EA_SUITE_CPU_FUSED`` (None when it is not)."""
    value = os.environ.get(CPU_FUSED_ENV, "1")
    if value.strip().lower() in ("0", "false", "no", "off"):
        return f"disabled by {CPU_FUSED_ENV}={value}"
    return None
