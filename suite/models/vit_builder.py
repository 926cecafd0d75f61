"""The ``vit`` builder: an image data set (suite.data.vision) + a timm ViT with the job's attention -> a job.

The job's L picks the geometry: among the task's ``image_sizes`` x ``patch_sizes`` (patch tiling the
image), the one whose token count ``(image/patch)^2 + 1`` is nearest L (suite.models.vit.nearest_geometry).
The record's ``seq_len`` is the requested L; the L that ran is ``actual_seq_len`` in ``data`` and in
``metrics`` (with ``image_size`` and ``patch_size``), and tokens/s counts the actual L. A request further
than ``max_seq_len_mismatch`` (relative, default 0.5) from every valid L is an error listing the valid ones.

Hyperparameters the builder reads (beyond the harness's own):

- model: ``model`` (preset vit_tiny | vit_small) or ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``;
  ``drop_path`` (stochastic depth rate), ``dropout``, ``pool`` (token: the class token, as DeiT; avg: the
  mean of the patch tokens; the class token is one of the L tokens either way);
- geometry: ``image_sizes`` (default: the data's native size), ``patch_sizes``, ``max_seq_len_mismatch``,
  ``image_size`` (the size preferred when two geometries give the same L; default: the native size);
- data: ``batch_size`` (images per training batch), or ``batch_tokens`` instead (a fixed token budget per
  batch: ``batch_tokens / L`` images rounded to an even number >= 2, so that a sweep over L spends the same
  compute per step on the token-wise layers; the batch used is ``batch_size`` in ``data`` and ``metrics``),
  ``num_train`` / ``num_eval`` (fixed seeded subsets; default all), ``eval_batch_size``, ``num_workers``
  (image-file and ``deit`` pipelines);
- recipe: ``augment`` (``none``: resize and normalise only, from tensors in memory; ``deit``: timm's
  ``create_transform`` training pipeline with ``randaugment`` (default rand-m9-mstd0.5-inc1),
  ``crop_scale`` (0.08, 1), horizontal flip ``hflip`` (0.5), random erasing ``reprob`` (0.25), ``interpolation``
  (bicubic)), ``mixup`` / ``cutmix`` alphas (timm.data.Mixup, with SoftTargetCrossEntropy),
  ``label_smoothing`` (LabelSmoothingCrossEntropy without mixup), ``crop_pct`` for evaluation transforms.

Evaluation: top-1 ``accuracy`` (the main metric), ``accuracy_top5`` and mean cross-entropy ``loss`` over the
test split (ImageNet: val). ``EA_SUITE_DOWNLOAD=1`` (or ``download: true`` in the data section) lets
torchvision download CIFAR into the data root; nothing is downloaded otherwise.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from suite.data import download_allowed
from suite.data.sampling import epoch_permutation, seeded_permutation
from suite.data.vision import ImageArrays, VisionData, load_vision
from suite.harness.builders import BuildContext, Job, register_builder
from suite.models.vit import Geometry, create_vit, nearest_geometry, valid_geometries, vit_shape

AUGMENTS = ("none", "deit")
DEFAULT_RANDAUGMENT = "rand-m9-mstd0.5-inc1"


# -- geometry -----------------------------------------------------------------------------------------
def job_geometry(seq_len: int, hp: dict[str, Any], native_size: int | None) -> Geometry:
    """The (image, patch) combination nearest ``seq_len`` tokens; ValueError when none is close enough."""
    image_sizes = list(hp.get("image_sizes") or ([native_size] if native_size else []))
    patch_sizes = list(hp.get("patch_sizes") or [])
    if not image_sizes or not patch_sizes:
        raise ValueError("the vit builder needs the hyperparameters patch_sizes (and image_sizes when the data's "
                         "images have no single size)")
    geometry = nearest_geometry(seq_len, image_sizes, patch_sizes, hp.get("image_size", native_size))
    tolerance = float(hp.get("max_seq_len_mismatch", 0.5))
    if abs(geometry.seq_len - seq_len) > tolerance * seq_len:
        valid = sorted({g.seq_len for g in valid_geometries(image_sizes, patch_sizes)})
        raise ValueError(f"seq_len {seq_len} is not near any token count this task allows "
                         f"(image sizes {image_sizes}, patch sizes {patch_sizes}); valid: {', '.join(map(str, valid))}")
    return geometry


def train_batch_size(hp: dict[str, Any], seq_len: int) -> int:
    """Images per training batch: ``batch_size``, or ``batch_tokens / seq_len`` rounded to an even number >= 2."""
    if ("batch_size" in hp) == ("batch_tokens" in hp):
        raise ValueError("the vit builder needs exactly one of the hyperparameters batch_size and batch_tokens")
    if "batch_size" in hp:
        return int(hp["batch_size"])
    tokens = hp["batch_tokens"]
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
        raise ValueError(f"batch_tokens must be a positive integer, got {tokens!r}")
    return max(2, 2 * round(tokens / seq_len / 2))


# -- batches from tensors in memory -------------------------------------------------------------------
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


class ArrayBatches:
    """Re-iterable (images float [B, C, S, S], labels int64 [B]) from ImageArrays, prepared per batch.

    Training (``shuffle``): a fresh seeded permutation per pass, sharded by rank, full batches only.
    Evaluation: every image once, in order.
    """

    def __init__(self, arrays: ImageArrays, batch_size: int, size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], channels: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.arrays, self.batch_size, self.size, self.channels = arrays, batch_size, size, channels
        self.mean, self.std, self.shuffle, self.seed = tuple(mean), tuple(std), shuffle, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.arrays))
        order = epoch_permutation(len(self.arrays), self.seed, self.epoch)
        self.epoch += 1
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        stop = len(order) - len(order) % self.batch_size if self.shuffle else len(order)
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield (prepare_images(self.arrays.images[idx], self.size, self.mean, self.std, self.channels),
                   self.arrays.labels[idx])

    @property
    def num_images(self) -> int:
        return len(self.arrays)

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.arrays), self.world_size)) if self.shuffle else len(self.arrays)
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)


# -- batches through timm's PIL transforms -------------------------------------------------------------
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

        self.sampler = (DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                           drop_last=shuffle) if world_size > 1 else None)
        generator = torch.Generator().manual_seed(seed) if shuffle and self.sampler is None else None
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and self.sampler is None,
                                 sampler=self.sampler, generator=generator, num_workers=num_workers,
                                 pin_memory=pin_memory, drop_last=shuffle, persistent_workers=num_workers > 0)
        self.epoch = 0

    @property
    def num_images(self) -> int:
        return len(self.loader.dataset)

    def __iter__(self):
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def _seeded_indices(total: int, count: int | None) -> list[int] | None:
    if count is None or count >= total:
        return None
    return seeded_permutation(total, 0)[:count].tolist()


def timm_transforms(hp: dict[str, Any], geometry: Geometry, data: VisionData) -> tuple[Any, Any]:
    """(train, eval) transforms from ``timm.data.create_transform`` on RGB PIL images -> float [3, S, S]."""
    from timm.data import create_transform

    mean, std = data.mean, data.std
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    interpolation = str(hp.get("interpolation", "bicubic"))
    crop_pct = float(hp.get("crop_pct", 1.0 if data.native_size is not None else 0.875))
    eval_tf = create_transform(geometry.image_size, is_training=False, interpolation=interpolation, mean=mean, std=std,
                               crop_pct=crop_pct)
    if hp.get("augment", "none") != "deit":
        return eval_tf, eval_tf
    train_tf = create_transform(geometry.image_size, is_training=True, interpolation=interpolation, mean=mean, std=std,
                                scale=tuple(hp.get("crop_scale", (0.08, 1.0))), hflip=float(hp.get("hflip", 0.5)),
                                color_jitter=float(hp.get("color_jitter", 0.4)),
                                auto_augment=hp.get("randaugment", DEFAULT_RANDAUGMENT) or None,
                                re_prob=float(hp.get("reprob", 0.25)), re_mode="pixel", re_count=1)
    return train_tf, eval_tf


# -- loss and evaluation ------------------------------------------------------------------------------
def make_loss_fn(hp: dict[str, Any], num_classes: int, batch_size: int):
    """(model, (images, labels)) -> scalar loss: timm Mixup/CutMix + SoftTargetCrossEntropy when either alpha
    is set, else LabelSmoothingCrossEntropy (``label_smoothing`` > 0), else plain cross-entropy."""
    mixup, cutmix = float(hp.get("mixup", 0.0)), float(hp.get("cutmix", 0.0))
    smoothing = float(hp.get("label_smoothing", 0.0))
    if mixup > 0 or cutmix > 0:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        if batch_size % 2:
            raise ValueError(f"mixup/cutmix need an even batch_size, got {batch_size}")
        mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing, num_classes=num_classes)
        criterion = SoftTargetCrossEntropy()

        def mixed_loss(model, batch):
            images, targets = mixer(batch[0], batch[1])
            return criterion(model(images), targets)

        return mixed_loss
    if smoothing > 0:
        from timm.loss import LabelSmoothingCrossEntropy

        smooth = LabelSmoothingCrossEntropy(smoothing=smoothing)
        return lambda model, batch: smooth(model(batch[0]), batch[1])
    return lambda model, batch: F.cross_entropy(model(batch[0]), batch[1])


def evaluate_classifier(model, batches) -> dict[str, float]:
    """Top-1 ``accuracy``, ``accuracy_top5`` and mean cross-entropy ``loss`` (nats) over (images, labels) batches."""
    correct = correct5 = total = 0
    loss = 0.0
    for images, labels in batches:
        logits = model(images).float()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        correct += (top[:, 0] == labels).sum().item()
        correct5 += (top == labels[:, None]).any(-1).sum().item()
        total += len(labels)
    if total == 0:
        raise ValueError("the evaluation split is empty")
    return {"accuracy": correct / total, "accuracy_top5": correct5 / total, "loss": loss / total}


# -- the builder --------------------------------------------------------------------------------------
def _pipelines(ctx: BuildContext, data: VisionData, geometry: Geometry, hp: dict[str, Any], batch_size: int):
    """(train batches, eval batches, model input channels)."""
    eval_batch_size = int(hp.get("eval_batch_size", batch_size))
    num_train, num_eval = hp.get("num_train"), hp.get("num_eval")
    augment = hp.get("augment", "none")
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; valid: {', '.join(AUGMENTS)}")
    if isinstance(data.train, ImageArrays) and augment == "none":
        train, test = data.train.subset(num_train), data.test.subset(num_eval)
        channels = data.in_chans
        train_batches = ArrayBatches(train, batch_size, geometry.image_size, data.mean, data.std, channels, True,
                                     ctx.seed, ctx.rank, ctx.world_size)
        eval_batches = ArrayBatches(test, eval_batch_size, geometry.image_size, data.mean, data.std, channels, False)
        return train_batches, eval_batches, channels
    train_tf, eval_tf = timm_transforms(hp, geometry, data)
    if isinstance(data.train, ImageArrays):
        train_set = PILArrays(data.train.subset(num_train), train_tf)
        eval_set = PILArrays(data.test.subset(num_eval), eval_tf)
    else:
        train_set = Transformed(data.train, train_tf, _seeded_indices(len(data.train), num_train))
        eval_set = Transformed(data.test, eval_tf, _seeded_indices(len(data.test), num_eval))
    workers = int(hp.get("num_workers", min(8, os.cpu_count() or 1)))
    pin = ctx.device.startswith("cuda")
    train_batches = EpochLoader(train_set, batch_size, True, ctx.seed, workers, pin, ctx.rank, ctx.world_size)
    eval_batches = EpochLoader(eval_set, eval_batch_size, False, 0, workers, pin)
    return train_batches, eval_batches, 3


@register_builder("vit")
def build_vit_job(ctx: BuildContext) -> Job:
    hp: dict[str, Any] = ctx.hparams
    download = download_allowed(ctx.data)
    data = load_vision(ctx.data, ctx.data_root, download=download)
    geometry = job_geometry(ctx.seq_len, hp, data.native_size)
    batch_size = train_batch_size(hp, geometry.seq_len)
    train_batches, eval_batches, channels = _pipelines(ctx, data, geometry, hp, batch_size)
    if len(train_batches) == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the training split "
                         f"({len(data.train)} images, {ctx.world_size} rank(s))")
    shape = vit_shape(hp)
    model = create_vit(ctx.attention, num_classes=data.num_classes, in_chans=channels,
                       image_size=geometry.image_size, patch_size=geometry.patch_size,
                       drop_path_rate=float(hp.get("drop_path", 0.0)), drop_rate=float(hp.get("dropout", 0.0)),
                       pool=str(hp.get("pool", "token")), **shape)
    tokens = geometry.seq_len

    def count_batch(batch) -> tuple[int, int]:
        samples = len(batch[1])
        return samples, samples * tokens

    shape_info = {"actual_seq_len": tokens, "image_size": geometry.image_size, "patch_size": geometry.patch_size,
                  "batch_size": batch_size}
    info = dict(data.info)
    info.update(shape_info, requested_seq_len=ctx.seq_len, in_chans=channels, augment=hp.get("augment", "none"),
                train_examples=train_batches.num_images, eval_examples=eval_batches.num_images)
    return Job(model=model, train_batches=train_batches, loss_fn=make_loss_fn(hp, data.num_classes, batch_size),
               eval_batches=eval_batches, evaluate=evaluate_classifier, count_batch=count_batch,
               extra_eval=lambda _model: dict(shape_info), steps_per_epoch=len(train_batches), data_info=info)
