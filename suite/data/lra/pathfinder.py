"""Pathfinder / Path-X: the release-layout loader (the generator is ``pathfinder_gen.py``).

Layout (generated and downloaded alike)::

    ROOT/pathfinder{32,128}/{curv_baseline, curv_contour_length_9, curv_contour_length_14}/
        imgs/<batch>/sample_<k>.png      grayscale PNG, resolution x resolution
        metadata/<batch>.npy             plain text despite the name, one line per image:
            imgs/<batch> sample_<k>.png <k> <label> <continuity> <contour_length> <distractor_length>
            <paddle_length> <paddle_thickness> <margin> <n_contrasts>

Loader: metadata files sorted by integer stem, label from column 3, the known empty image of the release
(``pathfinder32/curv_baseline/imgs/0/sample_172.png``; kept in generated trees, where it is a normal image)
and any zero-length file skipped, then a seeded
80/10/10 split decided per image by a hash of (split_seed, relative path), which stays the same when more
images are added. Tokens are the pixel intensities 0..255 (sequence length resolution**2) and the mask is
all True: black pixels are real tokens, not padding (the LRA code's ``inputs > 0`` mask is not copied).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from suite.data import DataMissingError
from suite.data.lra.progress import progress_bar
from suite.data.lra.release import find_release_dir, missing_release_message

if TYPE_CHECKING:
    import torch

CONTOUR_DIRS = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}
DIFFICULTIES = {"easy": 6, "intermediate": 9, "hard": 14}
RESOLUTIONS = (32, 128)
EMPTY_IMAGES = {"pathfinder32/curv_baseline/imgs/0/sample_172.png"}
SPLIT_FRACTIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
GENERATOR_RECORD = "generator.json"  # written beside imgs/ and metadata/ of every generated curv dir



def contour_dir_name(contour_length: int) -> str:
    if contour_length not in CONTOUR_DIRS:
        raise ValueError(f"contour_length must be one of {sorted(CONTOUR_DIRS)}, got {contour_length}")
    return CONTOUR_DIRS[contour_length]


def read_metadata_file(path: Path) -> list[list[str]]:
    """Rows (lists of columns) of one metadata file: plain text, or a NumPy string array if really .npy."""
    raw = path.read_bytes()
    if raw.startswith(b"\x93NUMPY"):
        array = np.load(path, allow_pickle=False)
        return [[str(c) for c in row] for row in np.atleast_2d(array)]
    return [line.split() for line in raw.decode("utf-8").splitlines() if line.strip()]


def split_of(relative_path: str, split_seed: int = 42) -> str:
    """'train' | 'val' | 'test' for an image path relative to its curv dir: 80/10/10 by a seeded hash."""
    digest = hashlib.blake2b(f"{split_seed}/{relative_path}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    return "train" if u < 0.8 else "val" if u < 0.9 else "test"


def find_pathfinder_dir(root: Path | None, resolution: int, contour_length: int) -> Path | None:
    """``<release>/pathfinder{res}/<curv dir>`` under root (any release layout) if its metadata folder exists."""
    base = find_release_dir(root, f"pathfinder{resolution}")
    if base is None:
        return None
    curv = base / contour_dir_name(contour_length)
    return curv if (curv / "metadata").is_dir() else None


def is_generated(curv_dir: Path) -> bool:
    """Whether curv_dir was written by ``generate_pathfinder`` (it holds the generator record), not the release."""
    return (curv_dir / GENERATOR_RECORD).is_file()


def list_pathfinder(curv_dir: Path, split: str, split_seed: int = 42) -> tuple[list[tuple[Path, int]], int]:
    """([(image path, label)] of one split ('all' for every image) in metadata order, number skipped as empty)."""
    if split not in SPLIT_FRACTIONS and split != "all":
        raise ValueError(f"unknown split {split!r}; expected one of {(*SPLIT_FRACTIONS, 'all')}")
    metas = [p for p in (curv_dir / "metadata").glob("*.npy") if p.stem.isdigit()]
    if not metas:
        raise DataMissingError(f"no metadata/<batch>.npy files in {curv_dir}")
    prefix = f"{curv_dir.parent.name}/{curv_dir.name}"
    # The blacklist names files of the real release; images this module generated are never empty, and one of
    # them has the blacklisted name.
    known_empty = set() if is_generated(curv_dir) else EMPTY_IMAGES
    samples, skipped = [], 0
    for meta in sorted(metas, key=lambda p: int(p.stem)):
        for line_no, cols in enumerate(read_metadata_file(meta), start=1):
            if len(cols) < 4:
                raise ValueError(f"{meta}:{line_no}: expected at least 4 space-separated columns, got {cols}")
            relative = f"{cols[0]}/{cols[1]}"
            if split != "all" and split_of(relative, split_seed) != split:
                continue
            path = curv_dir / relative
            if f"{prefix}/{relative}" in known_empty or (path.exists() and path.stat().st_size == 0):
                skipped += 1
                continue
            label = int(cols[3])
            if label not in (0, 1):
                raise ValueError(f"{meta}:{line_no}: label (column 3) must be 0 or 1, got {cols[3]}")
            samples.append((path, label))
    return samples, skipped


def read_images(paths: list[Path], resolution: int, progress: bool = False) -> np.ndarray:
    """uint8 [N, resolution**2]: each PNG as 8-bit grayscale, row-major."""
    out = np.empty((len(paths), resolution * resolution), dtype=np.uint8)
    with progress_bar("reading Pathfinder PNGs", len(paths), enabled=progress) as advance:
        for i, path in enumerate(paths):
            if not path.exists():
                raise DataMissingError(f"Pathfinder image listed in the metadata is missing: {path}")
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("L"))
            if pixels.shape != (resolution, resolution):
                raise ValueError(f"{path}: expected {resolution}x{resolution} pixels, got {pixels.shape}")
            out[i] = pixels.reshape(-1)
            advance()
    return out


def load_pathfinder(root: str | os.PathLike | None, resolution: int = 32, difficulty: str | int = "hard",
                    split: str = "train", *, split_seed: int = 42, num_examples: int | None = None,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load one split of a Pathfinder difficulty from a release tree (or a generated one) under root.

    difficulty: 'easy' | 'intermediate' | 'hard' or a contour length 6 | 9 | 14. split: 'train' | 'val' | 'test',
    or 'all' for every image (no split).
    Returns (tokens uint8 [N, resolution**2] pixel intensities 0..255, mask bool [N, resolution**2] all True,
    labels int64 [N]); N is the split's size, or its first num_examples images in metadata order.
    """
    import torch

    contour_length = DIFFICULTIES.get(difficulty, difficulty) if isinstance(difficulty, str) else difficulty
    if contour_length not in CONTOUR_DIRS:
        raise ValueError(f"difficulty must be one of {list(DIFFICULTIES)} or {sorted(CONTOUR_DIRS)}, "
                         f"got {difficulty!r}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    root_path = None if root is None else Path(root)
    curv_dir = find_pathfinder_dir(root_path, resolution, contour_length)
    if curv_dir is None:
        raise DataMissingError(missing_release_message(
            root_path, f"pathfinder{resolution}/{CONTOUR_DIRS[contour_length]}", f"Pathfinder{resolution} data"))
    samples, _ = list_pathfinder(curv_dir, split, split_seed)
    if num_examples is not None:
        samples = samples[:num_examples]
    tokens = torch.from_numpy(read_images([p for p, _ in samples], resolution, progress))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return tokens, torch.ones(tokens.shape, dtype=torch.bool), labels
