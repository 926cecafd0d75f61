"""Image (LRA): CIFAR-10 as 8-bit grayscale sequences of 1024 pixel tokens, and real grayscale substitutes.

CIFAR-10 is read from torchvision's layout, ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch}``
(pickles whose ``data`` is uint8 [N, 3072], red plane then green then blue, and ``labels``), without
torchvision's md5 checks. Grayscale follows ``tf.image.rgb_to_grayscale``, which LRA uses: luma weights
(0.2989, 0.5870, 0.1140) (ITU-R BT.601) on the [0, 1] floats, then back to uint8 as TensorFlow's
``convert_image_dtype`` does, truncating ``gray * 255.5``. Splits as LRA: train = the first 45,000 of the
50,000 training images, val = the last 5,000, test = test_batch. Every pixel is a token 0..255, and none is
padding (black pixels are real tokens).

Substitutes when CIFAR-10 is absent (always marked ``substitute``), real labelled grayscale images:
1. Fashion-MNIST (60,000 + 10,000 images, 28x28, 10 classes): torchvision's ``FashionMNIST/raw`` layout or
   the IDX files (``.gz`` or not) in ``fashion-mnist/`` under the data root, or Debian's
   ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``); splits train[:54,000],
   train[54,000:], t10k.
2. scikit-learn's bundled ``load_digits`` (1,797 images, 8x8, values 0..16, 10 classes), which needs no
   download; a seeded 80/10/10 split.
Substitute images are resized (bilinear) to 32x32 so the sequence length is LRA's 1024.
"""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from suite.data import SPLITS, DataMissingError

if TYPE_CHECKING:
    import torch

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_TRAIN_SIZE = 54_000
SUBSTITUTE_SIZE = 32


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def rgb_to_gray_tf(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> uint8 [...], bit for bit what tf.image.rgb_to_grayscale does on uint8 input."""
    floats = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    gray = floats @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return (gray * np.float32(255.5)).astype(np.uint8)


def find_cifar10(root: Path | None) -> Path | None:
    if root is None:
        return None
    for base in (root / CIFAR_DIR, root / "cifar10" / CIFAR_DIR, root / "CIFAR10" / CIFAR_DIR, root):
        if base.name == CIFAR_DIR and (base / CIFAR_TEST_FILE).is_file():
            return base
    return None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: expected 'data' uint8 [N, 3072] and N 'labels', got {data.shape}, {len(labels)}")
    return data, labels


def load_cifar10_gray(root: str | os.PathLike | None, split: str, *, num_examples: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens uint8 [N, 1024] grayscale pixels row-major, labels int64 [N]) of one LRA split of CIFAR-10."""
    import torch

    _check_split(split)
    root_path = None if root is None else Path(root)
    base = find_cifar10(root_path)
    if base is None:
        target = "DIR" if root_path is None else str(root_path)
        raise DataMissingError(f"CIFAR-10 not found under {target}: download {CIFAR_URL} and run "
                               f"`tar xzf cifar-10-python.tar.gz -C {target}` (giving "
                               f"{target}/{CIFAR_DIR}/data_batch_1 ...)")
    files = [CIFAR_TEST_FILE] if split == "test" else list(CIFAR_TRAIN_FILES)
    missing = [name for name in files if not (base / name).is_file()]
    if missing:
        raise DataMissingError(f"CIFAR-10 at {base} is incomplete: missing {', '.join(missing)}")
    parts = [_read_cifar_batch(base / name) for name in files]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    if split != "test":
        cut = int(round(len(data) * 0.9))  # 45,000 of the 50,000 real training images
        data, labels = (data[:cut], labels[:cut]) if split == "train" else (data[cut:], labels[cut:])
    data, labels = data[:num_examples], labels[:num_examples]
    rgb = data.reshape(-1, 3, 1024).transpose(0, 2, 1)
    return torch.from_numpy(rgb_to_gray_tf(rgb)), torch.from_numpy(labels)


# ----------------------------------------------------------------------------------------------- substitutes
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or not) of unsigned bytes: images [N, rows, cols] or labels [N]."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_fashion_mnist(root: Path | None) -> Path | None:
    """A directory holding the four Fashion-MNIST IDX files, under root or Debian's system location."""
    candidates = [] if root is None else [root / "FashionMNIST" / "raw", root / "fashion-mnist", root / "fashion_mnist"]
    for directory in [*candidates, FASHION_SYSTEM_DIR]:
        if all(_idx_file(directory, stem) for pair in FASHION_FILES.values() for stem in pair):
            return directory
    return None


def read_fashion_mnist(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The IDX pair of one Fashion-MNIST file split (``train`` or ``test``) in ``directory``:
    (images uint8 [N, 28, 28], labels int64 [N])."""
    files = []
    for stem in FASHION_FILES[split]:
        path = _idx_file(directory, stem)
        if path is None:
            raise FileNotFoundError(f"{directory}: no {stem} (or {stem}.gz)")
        files.append(path)
    images, labels = read_idx(files[0]), read_idx(files[1]).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{directory}: {split} images {images.shape} do not match {len(labels)} labels")
    return images, labels


def resize_gray(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, h, w] -> uint8 [N, size, size], bilinear (no antialiasing), rounded."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(images, dtype=np.uint8)).float().unsqueeze(1)
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return y.squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy()


def load_fashion_mnist(directory: Path, split: str, size: int = SUBSTITUTE_SIZE,
                       num_examples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens uint8 [N, size*size], labels int64 [N]); train = train[:54000], val = train[54000:], test = t10k."""
    import torch

    _check_split(split)
    images, labels = read_fashion_mnist(directory, "test" if split == "test" else "train")
    if split != "test":
        cut = FASHION_TRAIN_SIZE if len(images) == 60_000 else int(round(len(images) * 0.9))
        images, labels = (images[:cut], labels[:cut]) if split == "train" else (images[cut:], labels[cut:])
    images, labels = images[:num_examples], labels[:num_examples]
    return torch.from_numpy(resize_gray(images, size).reshape(len(images), -1)), torch.from_numpy(labels)


def load_digits_substitute(split: str, size: int = SUBSTITUTE_SIZE, num_examples: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits scaled from 0..16 to 0..255 and resized to size x size; a seeded
    (seed 0) 80/10/10 split. Returns (tokens uint8 [N, size*size], labels int64 [N])."""
    import torch

    _check_split(split)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    n_train, n_val = int(len(images) * 0.8), int(len(images) * 0.1)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(images))}
    chosen = order[slice(*bounds[split])][:num_examples]
    tokens = resize_gray(images[chosen], size).reshape(len(chosen), -1)
    return torch.from_numpy(tokens), torch.from_numpy(digits.target[chosen].astype(np.int64))


def load_image_task(root: str | os.PathLike | None, split: str, *, num_examples: int | None = None,
                    allow_substitute: bool = True) -> tuple[torch.Tensor, torch.Tensor, str, bool]:
    """CIFAR-10 grayscale if present under root, else a substitute (when allowed).

    Returns (tokens uint8 [N, L], labels int64 [N], source description, substitute flag); L = 1024.
    """
    root_path = None if root is None else Path(root)
    if find_cifar10(root_path) is not None or not allow_substitute:
        tokens, labels = load_cifar10_gray(root_path, split, num_examples=num_examples)
        return tokens, labels, f"cifar10 grayscale ({find_cifar10(root_path)})", False
    fashion = find_fashion_mnist(root_path)
    if fashion is not None:
        tokens, labels = load_fashion_mnist(fashion, split, num_examples=num_examples)
        return tokens, labels, f"fashion-mnist 28x28 resized to 32x32 ({fashion}), substitute for CIFAR-10", True
    tokens, labels = load_digits_substitute(split, num_examples=num_examples)
    return tokens, labels, "sklearn digits 8x8 resized to 32x32, substitute for CIFAR-10", True
