"""Image pipelines for the ViT family: tensors in memory resized and normalised per batch, or PIL images through
timm's transforms (RandAugment, random erasing, ...) in a DataLoader.

- ``array_batches(arrays, ...)``: a ``SeededBatches`` of (images float [B, C, S, S], labels int64 [B]) from
  ``ImageArrays`` (``prepare_images`` per batch: scale to [0, 1], resize, normalise);
- ``PILArrays`` / ``Transformed``: datasets of (transformed image, label) from ImageArrays or a (PIL, label)
  dataset such as ImageFolder; ``EpochLoader``: a re-iterable DataLoader that reshuffles every pass;
- ``timm_transforms(...)``: the (train, eval) transforms from ``timm.data.create_transform``.
"""
from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F

from suite.data.batching import SeededBatches
from suite.data.sampling import seeded_permutation
from suite.data.vision import DEFAULT_RANDAUGMENT, ImageArrays


def prepare_images(images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                   channels: int) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32 [B, channels, size, size]: scaled to [0, 1], resized (bilinear,
    antialiased), normalised per channel; a single grey channel is repeated when ``channels`` is 3."""
    x = images.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] != channels:
        if x.shape[1] != 1:
            raise ValueError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")
        x = x.expand(-1, channels, -1, -1)
        mean, std = mean * channels, std * channels
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def array_batches(arrays: ImageArrays, batch_size: int, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                  channels: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> SeededBatches:
    """Batches (images float [B, channels, size, size], labels int64 [B]) prepared per batch from ``arrays``.

    Training (``shuffle``): a fresh seeded order per pass, sharded by rank, full batches only. Evaluation: every
    image once, in order.
    """
    mean, std = tuple(mean), tuple(std)

    def take(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prepare_images(arrays.images[idx], size, mean, std, channels), arrays.labels[idx]

    return SeededBatches(take, len(arrays), batch_size, shuffle, seed, rank, world_size, drop_last=shuffle)


class PILArrays(torch.utils.data.Dataset):
    """ImageArrays as RGB PIL images through ``transform``: item -> (transformed image, label)."""

    def __init__(self, arrays: ImageArrays, transform) -> None:
        self.arrays, self.transform = arrays, transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int):
        from PIL import Image

        image = self.arrays.images[index].permute(1, 2, 0).numpy()
        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).convert("RGB")
        return self.transform(pil), int(self.arrays.labels[index])


class Transformed(torch.utils.data.Dataset):
    """A (PIL image, label) dataset, or a subset of one, through ``transform``."""

    def __init__(self, dataset, transform, indices: list[int] | None = None) -> None:
        self.dataset, self.transform, self.indices = dataset, transform, indices

    def __len__(self) -> int:
        return len(self.dataset) if self.indices is None else len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.dataset[index if self.indices is None else self.indices[index]]
        return self.transform(image.convert("RGB")), label


class EpochLoader:
    """A re-iterable DataLoader that reshuffles every pass (DistributedSampler epochs included)."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int, pin_memory: bool,
                 rank: int = 0, world_size: int = 1) -> None:
        from torch.utils.data import DataLoader, DistributedSampler

        self.sampler: DistributedSampler[Any] | None = (
            DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                               drop_last=shuffle) if world_size > 1 else None)
        generator = torch.Generator().manual_seed(seed) if shuffle and self.sampler is None else None
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and self.sampler is None,
                                 sampler=self.sampler, generator=generator, num_workers=num_workers,
                                 pin_memory=pin_memory, drop_last=shuffle, persistent_workers=num_workers > 0)
        self.epoch = 0

    @property
    def num_examples(self) -> int:
        return len(self.loader.dataset)  # type: ignore[arg-type]  # torch's Dataset stub has no __len__; ours do

    def __iter__(self):
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


#: the seed of the validation hold-out (apart from the subsets' seed 0 and every job's seed)
HOLDOUT_SEED = 1


def holdout(total: int, count: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices) of a training split of ``total`` images: ``count`` of them held out by a
    fixed seeded permutation (``HOLDOUT_SEED``, the same for every job), the rest left for training, in order."""
    if not 0 < count < total:
        raise ValueError(f"cannot hold out {count} of {total} training images for validation")
    order = seeded_permutation(total, HOLDOUT_SEED)
    held = order[:count].sort().values.tolist()
    rest = order[count:].sort().values.tolist()
    return rest, held


def seeded_indices(total: int, count: int | None) -> list[int] | None:
    """A fixed seeded subset of ``count`` of ``total`` indices (None: all of them)."""
    if count is None or count >= total:
        return None
    return seeded_permutation(total, 0)[:count].tolist()


def timm_transforms(image_size: int, mean: tuple[float, ...], std: tuple[float, ...], *, augment: bool,
                    interpolation: str = "bicubic", crop_pct: float = 1.0, crop_scale: tuple[float, float] = (0.08,
                                                                                                              1.0),
                    hflip: float = 0.5, color_jitter: float = 0.4, randaugment: str | None = DEFAULT_RANDAUGMENT,
                    reprob: float = 0.25) -> tuple[Any, Any]:
    """(train, eval) transforms from ``timm.data.create_transform`` on RGB PIL images -> float [3, S, S].

    Without ``augment`` both are the evaluation transform (resize, centre crop of ``crop_pct``, normalise);
    with it, training uses DeiT's recipe: random resized crop (``crop_scale``), flips, colour jitter,
    RandAugment (``randaugment``, e.g. rand-m9-mstd0.5-inc1; None for none) and random erasing (``reprob``).
    Grey statistics (one channel) are repeated for the three RGB channels.
    """
    from timm.data import create_transform

    if len(mean) == 1:
        mean, std = tuple(mean) * 3, tuple(std) * 3
    eval_tf = create_transform(image_size, is_training=False, interpolation=interpolation, mean=mean, std=std,
                               crop_pct=crop_pct)
    if not augment:
        return eval_tf, eval_tf
    train_tf = create_transform(image_size, is_training=True, interpolation=interpolation, mean=mean, std=std,
                                scale=cast(tuple[float, float], tuple(crop_scale)), hflip=hflip,
                                color_jitter=color_jitter,
                                auto_augment=randaugment or None, re_prob=reprob, re_mode="pixel", re_count=1)
    guard_posterize(train_tf)
    return train_tf, eval_tf


def posterize_any_bits(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize for every bit count it asks for: keeping 0 bits gives a black image, as Pillow did before
    version 13 (Pillow 13 raises "bits must be between or equal to 1 and 8")."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def guard_posterize(transform: Any) -> int:
    """Give every posterize op of the RandAugment/AutoAugment policies inside ``transform`` (a timm Compose)
    ``posterize_any_bits``: timm's ``rand-m9-mstd0.5-inc1`` can draw 0 bits (about 0.2% of images), which
    Pillow 13 refuses, ending the whole DataLoader. Only these transform objects change; timm's module does
    not. Returns how many ops were guarded."""
    guarded = 0
    for step in getattr(transform, "transforms", []):
        for op in getattr(step, "ops", []) or [o for sub in getattr(step, "policy", []) for o in sub]:
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = posterize_any_bits
                guarded += 1
    return guarded
