"""What ``load_lra`` would use for a task, without loading it: the release data when it is under the data
root, else the generated data (ListOps, Pathfinder, Path-X) or the marked substitute (Text, Retrieval, Image)."""
from __future__ import annotations

import os

from suite.data.lra import aan, image, imdb, pathfinder
from suite.data.lra.release import find_release_dir
from suite.settings import data_root as resolve_data_root

_SUBSTITUTES = {"text": "KJV chapters, Old vs New Testament (embedded)",
                "retrieval": "KJV chapter pairs, same book or not (embedded)",
                "image": "Fashion-MNIST or scikit-learn digits, gray 32x32"}


def lra_data_status(task: str, data_root: str | os.PathLike | None = None) -> tuple[str, str]:
    """("real" | "generated" | "substitute", detail) of one LRA task."""
    root = resolve_data_root(data_root)
    if task == "listops":
        found = find_release_dir(root, "listops-1000")
        return ("real", str(found)) if found else ("generated", "ListOps with LRA's algorithm, into the cache")
    if task in ("pathfinder", "pathx"):
        resolution = 32 if task == "pathfinder" else 128
        found = pathfinder.find_pathfinder_dir(root, resolution, pathfinder.DIFFICULTIES["hard"])
        return ("real", str(found)) if found else ("generated", f"Pathfinder{resolution}, into the cache")
    if task == "text":
        imdb_found = imdb.find_imdb(root)
        return ("real", str(imdb_found[1])) if imdb_found else ("substitute", _SUBSTITUTES["text"])
    if task == "retrieval":
        found = find_release_dir(root, "tsv_data")
        if found is not None and aan.aan_path(found, "train").is_file():
            return "real", str(found)
        return "substitute", _SUBSTITUTES["retrieval"]
    if task == "image":
        found = image.find_cifar10(root)
        return ("real", str(found)) if found else ("substitute", _SUBSTITUTES["image"])
    raise ValueError(f"unknown LRA task {task!r}")
