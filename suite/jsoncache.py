"""Small JSON objects kept in the cache folder (``settings.cache_dir``): answers worth keeping between runs
(attention-spec checks, the device speed, generated data's manifests). A value that cannot be read is treated
as absent; one that cannot be written is only slower next time."""
from __future__ import annotations

import json
import os
from typing import Any

from suite.settings import cache_dir


def read_cached_json(name: str) -> dict[str, Any]:
    """The JSON object kept as ``name`` in the cache folder; {} when it is absent, unreadable or not an object."""
    try:
        value = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_cached_json(name: str, value: dict[str, Any]) -> None:
    """Keep ``value`` as ``name`` in the cache folder, written whole or not at all."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
