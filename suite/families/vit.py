"""The ViT family (builder ``vit``): an image data set + a timm ViT with the job's attention -> a training job.

The job's L picks the geometry: among the task's ``image_sizes`` x ``patch_sizes`` (patch tiling the image),
the one whose token count ``(image/patch)^2 + 1`` is nearest L (``suite.models.vit.nearest_geometry``). The
record's ``seq_len`` is the requested L; the L that ran is ``actual_seq_len`` in ``data`` and in ``metrics``
(with ``image_size`` and ``patch_size``), and tokens/s counts the actual L. A request further than
``max_seq_len_mismatch`` (relative) from every valid L is an error listing the valid ones.

Data (``suite.data.vision``, pipelines in ``suite.data.images``): ``augment: none`` resizes and normalises
tensors in memory; ``deit`` runs timm's training transforms (RandAugment, random erasing, ...) in a
DataLoader. Validation: ``num_val`` training images held out by a fixed seed (``suite.data.images.holdout``,
the same for every job; never trained on), for the curves and every choice; test: the data set's test split
(ImageNet: val), read once at the end. Each gives top-1 ``accuracy`` (the main metric), ``accuracy_top5``
and mean cross-entropy ``loss`` (``val_*``, ``test_*``), the test split also each image's outcome.
A missing CIFAR is downloaded only with ``--download`` (or ``download: true`` in the task's data section).
``run_suite.py list --family vit --hparams`` lists every hyperparameter below.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from suite.data.vision import DEFAULT_RANDAUGMENT, ImageArrays, VisionData, load_vision, vision_data_status
from suite.families.classifier import evaluate_classifier
from suite.models.config import PRESETS, Geometry, nearest_geometry, valid_geometries
from suite.run.builders import BuildContext, Evaluation, Workload, register_builder
from suite.run.hparams import TRAINING, HParam
from suite.run.pool.estimates import transformer_cost

if TYPE_CHECKING:
    from suite.data.batching import SeededBatches

#: the suite's pooling words -> timm's global_pool
POOLS = {"cls": "token", "mean": "avg"}

HPARAMS = (
    *TRAINING,
    HParam("model", "str", None, "a shape preset (DeiT): vit_tiny (192 wide, 12 deep, 3 heads), vit_small",
           choices=tuple(PRESETS)),
    HParam("dim", "int", None, "embedding width (default: the preset's, else 64)", low=1),
    HParam("depth", "int", None, "transformer blocks (default: the preset's, else 4)", low=1),
    HParam("heads", "int", None, "attention heads (default: the preset's, else 4)", low=1),
    HParam("mlp_ratio", "float", 4.0, "MLP width / embedding width", low=0, low_open=True),
    HParam("pool", "str", "cls", "classify from the class token (cls, as DeiT) or the mean of the patch tokens",
           choices=tuple(POOLS)),
    HParam("drop_path", "float", 0.0, "stochastic depth rate", low=0, high=1, high_open=True),
    HParam("dropout", "float", 0.0, "dropout rate", low=0, high=1, high_open=True),
    HParam("image_sizes", "ints", None, "image sides (pixels) the L sweep may use (default: the native size)", low=1),
    HParam("patch_sizes", "ints", None, "patch sides (pixels) the L sweep may use (required)", low=1),
    HParam("image_size", "int", None, "side preferred when two geometries give the same L (default: native)", low=1),
    HParam("max_seq_len_mismatch", "float", 0.5, "largest relative distance between the requested and actual L",
           low=0),
    HParam("batch_tokens", "int", None, "instead of batch_size: tokens per batch (batch = tokens / L, even, >= 2)",
           low=1),
    HParam("num_train", "int", None, "training images: a fixed seeded subset (default: all not held out)", low=1),
    HParam("num_val", "int", None, "validation images held out of the training split (default: a tenth, at most "
                                   "5,000)", low=1),
    HParam("num_test", "int", None, "test images: a fixed seeded subset (default: all)", low=1),
    HParam("num_workers", "int", None, "DataLoader workers of the deit and image-file pipelines (default: "
                                       "min(8, CPUs))", low=0),
    HParam("augment", "str", "none", "none: resize and normalise; deit: DeiT's training transforms",
           choices=("none", "deit")),
    HParam("randaugment", "str", DEFAULT_RANDAUGMENT, "timm RandAugment policy (deit; null: none)", nullable=True),
    HParam("crop_scale", "floats", [0.08, 1.0], "random-resized-crop area range (deit)", low=0, high=1, length=2),
    HParam("hflip", "float", 0.5, "horizontal flip probability (deit)", low=0, high=1),
    HParam("color_jitter", "float", 0.4, "colour jitter strength (deit)", low=0),
    HParam("reprob", "float", 0.25, "random erasing probability (deit)", low=0, high=1),
    HParam("interpolation", "str", "bicubic", "resize interpolation of the timm transforms",
           choices=("bicubic", "bilinear", "nearest")),
    HParam("crop_pct", "float", None, "centre-crop fraction for evaluation (default: 1 for stored square "
                                      "images, 0.875 otherwise)", low=0, low_open=True, high=1),
    HParam("mixup", "float", 0.0, "mixup alpha (timm Mixup; 0: off)", low=0),
    HParam("cutmix", "float", 0.0, "cutmix alpha (timm Mixup; 0: off)", low=0),
    HParam("label_smoothing", "float", 0.0, "label smoothing", low=0, high=1, high_open=True),
)


def job_geometry(seq_len: int, hp: dict[str, Any], native_size: int | None) -> Geometry:
    """The (image, patch) combination nearest ``seq_len`` tokens; ValueError when none is close enough."""
    image_sizes = list(hp.get("image_sizes") or ([native_size] if native_size else []))
    patch_sizes = list(hp.get("patch_sizes") or [])
    if not image_sizes or not patch_sizes:
        raise ValueError("the vit builder needs the hyperparameters patch_sizes (and image_sizes when the data's "
                         "images have no single size)")
    geometry = nearest_geometry(seq_len, image_sizes, patch_sizes, hp.get("image_size") or native_size)
    tolerance = float(hp.get("max_seq_len_mismatch", 0.5))
    if abs(geometry.seq_len - seq_len) > tolerance * seq_len:
        valid = sorted({g.seq_len for g in valid_geometries(image_sizes, patch_sizes)})
        raise ValueError(f"seq_len {seq_len} is not near any token count this task allows "
                         f"(image sizes {image_sizes}, patch sizes {patch_sizes}); valid: {', '.join(map(str, valid))}")
    return geometry


def train_batch_size(hp: dict[str, Any], seq_len: int) -> int:
    """Images per training batch: ``batch_size``, or ``batch_tokens / seq_len`` rounded to an even number >= 2."""
    has_size, has_tokens = hp.get("batch_size") is not None, hp.get("batch_tokens") is not None
    if has_size == has_tokens:
        raise ValueError("the vit builder needs exactly one of the hyperparameters batch_size and batch_tokens")
    if has_size:
        return int(hp["batch_size"])
    return max(2, 2 * round(int(hp["batch_tokens"]) / seq_len / 2))


def vit_shape(hp: dict[str, Any]) -> dict[str, Any]:
    """Width, depth, heads and MLP ratio: the ``model`` preset (else 64 wide, 4 deep, 4 heads), overridden by the
    explicit ``dim``, ``depth``, ``heads``."""
    preset: dict[str, Any] = dict(PRESETS.get(hp.get("model", ""), {"embed_dim": 64, "depth": 4, "num_heads": 4}))
    for ours, timm_name in (("dim", "embed_dim"), ("depth", "depth"), ("heads", "num_heads")):
        if hp.get(ours) is not None:
            preset[timm_name] = hp[ours]
    preset["mlp_ratio"] = float(hp.get("mlp_ratio", 4.0))
    return preset


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
    import torch.nn.functional as F

    return lambda model, batch: F.cross_entropy(model(batch[0]), batch[1])


def evaluate_images(model, batches) -> Evaluation:
    """Top-1 ``accuracy``, ``accuracy_top5``, mean cross-entropy ``loss`` and each image's outcome over (images,
    labels) batches."""
    return evaluate_classifier(model, batches, lambda m, batch: (m(batch[0]), batch[1]), top5=True)


def validation_size(train_size: int, num_val: int | None) -> int:
    """Images held out of a training split of ``train_size`` for validation: ``num_val``, else a tenth (at most
    5,000)."""
    return int(num_val) if num_val is not None else max(1, min(5000, train_size // 10))


def _pipelines(ctx: BuildContext, data: VisionData, geometry: Geometry, hp: dict[str, Any], batch_size: int):
    """(train batches, val batches, test batches, model input channels)."""
    from suite.data.images import (
        EpochLoader,
        PILArrays,
        Transformed,
        array_batches,
        holdout,
        seeded_indices,
        timm_transforms,
    )

    eval_batch_size = int(hp.get("eval_batch_size") or batch_size)
    num_train, num_test = hp.get("num_train"), hp.get("num_test")
    train_idx, val_idx = holdout(len(data.train), validation_size(len(data.train), hp.get("num_val")))
    chosen = seeded_indices(len(train_idx), num_train)
    if chosen is not None:
        train_idx = sorted(train_idx[i] for i in chosen)
    augment = hp.get("augment", "none")
    batches: list[SeededBatches | EpochLoader]
    if isinstance(data.train, ImageArrays) and augment == "none":
        channels = data.in_chans
        common: dict[str, Any] = dict(size=geometry.image_size, mean=data.mean, std=data.std, channels=channels)
        batches = [array_batches(data.train.take(train_idx), batch_size, shuffle=True, seed=ctx.seed,
                                 rank=ctx.rank, world_size=ctx.world_size, **common),
                   array_batches(data.train.take(val_idx), eval_batch_size, shuffle=False, **common),
                   array_batches(data.test.subset(num_test), eval_batch_size, shuffle=False, **common)]
        return (*batches, channels)
    crop_pct = hp.get("crop_pct") or (1.0 if data.native_size is not None else 0.875)
    train_tf, eval_tf = timm_transforms(
        geometry.image_size, data.mean, data.std, augment=augment == "deit", interpolation=hp["interpolation"],
        crop_pct=crop_pct, crop_scale=tuple(hp["crop_scale"]), hflip=hp["hflip"], color_jitter=hp["color_jitter"],
        randaugment=hp["randaugment"], reprob=hp["reprob"])
    sets: list[PILArrays | Transformed]
    if isinstance(data.train, ImageArrays):
        sets = [PILArrays(data.train.take(train_idx), train_tf), PILArrays(data.train.take(val_idx), eval_tf),
                PILArrays(data.test.subset(num_test), eval_tf)]
    else:
        sets = [Transformed(data.train, train_tf, train_idx), Transformed(data.train, eval_tf, val_idx),
                Transformed(data.test, eval_tf, seeded_indices(len(data.test), num_test))]
    workers = hp.get("num_workers")
    workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)
    pin = ctx.device.startswith("cuda")
    train_batches = EpochLoader(sets[0], batch_size, True, ctx.seed, workers, pin, ctx.rank, ctx.world_size)
    return (train_batches, *(EpochLoader(held, eval_batch_size, False, 0, workers, pin) for held in sets[1:]), 3)


#: a couple of steps on a few images, through the profile's own model, pipeline (workers too) and recipe
REHEARSAL = {"steps": 2, "batch_size": 8, "batch_tokens": None, "eval_batch_size": 8, "num_train": 32, "num_val": 8,
             "num_test": 16, "num_workers": 2}


#: training images of each source (for the cost of an epoch)
TRAIN_SIZES = {"fashion-mnist": 60_000, "mnist-5k": 4_000, "cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}


def vit_cost(hp: dict[str, Any], data: dict[str, Any], seq_len: int, attention: str) -> tuple[float, float]:
    """Rough (FLOPs, peak bytes) of a ViT job: its steps of batches of L-token images, and the evaluations."""
    shape = vit_shape(hp)
    batch = hp.get("batch_size") or max(2, 2 * round(int(hp.get("batch_tokens") or 6400) / seq_len / 2))
    examples = hp.get("num_train") or TRAIN_SIZES.get(data.get("source", ""), 50_000)
    steps = hp.get("steps") or math.ceil(float(hp.get("epochs") or 1) * examples / batch)
    dims: dict[str, Any] = dict(tokens=seq_len, dim=int(shape["embed_dim"]), depth=int(shape["depth"]),
                                mlp_hidden=int(shape["mlp_ratio"] * shape["embed_dim"]), attention=attention)
    flops, peak = transformer_cost(examples=steps * batch, **dims)
    held_out = (hp.get("num_val") or 5000) * hp["eval_points"] + (hp.get("num_test") or 10000)
    evals, _ = transformer_cost(examples=held_out, train=False, **dims)
    return flops + evals, peak + batch * seq_len * dims["dim"] * dims["depth"] * 4 * 24


@register_builder("vit", HPARAMS, "timm ViT image classification with the job's attention in every block",
                  rehearsal=REHEARSAL, data_status=lambda data, root: vision_data_status(data, root), cost=vit_cost)
def build_vit_job(ctx: BuildContext) -> Workload:
    from suite.data.images import HOLDOUT_SEED
    from suite.models.vit import create_vit

    hp: dict[str, Any] = ctx.hparams
    data = load_vision(ctx.data, ctx.data_root, download=ctx.download or bool(ctx.data.get("download")))
    geometry = job_geometry(ctx.seq_len, hp, data.native_size)
    batch_size = train_batch_size(hp, geometry.seq_len)
    train_batches, val_batches, test_batches, channels = _pipelines(ctx, data, geometry, hp, batch_size)
    if len(train_batches) == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the training split "
                         f"({len(data.train)} images, {ctx.world_size} rank(s))")
    model = create_vit(ctx.attention, num_classes=data.num_classes, in_chans=channels,
                       image_size=geometry.image_size, patch_size=geometry.patch_size,
                       drop_path_rate=float(hp.get("drop_path", 0.0)), drop_rate=float(hp.get("dropout", 0.0)),
                       pool=POOLS[hp.get("pool", "cls")], **vit_shape(hp))
    tokens = geometry.seq_len

    def count_batch(batch) -> tuple[int, int]:
        samples = len(batch[1])
        return samples, samples * tokens

    shape_info = {"actual_seq_len": tokens, "image_size": geometry.image_size, "patch_size": geometry.patch_size,
                  "batch_size": batch_size}
    info = dict(data.info)
    info.update(shape_info, requested_seq_len=ctx.seq_len, in_chans=channels, augment=hp.get("augment", "none"),
                train_examples=train_batches.num_examples, val_examples=val_batches.num_examples,
                test_examples=test_batches.num_examples, val_rule=f"held out of train (seed {HOLDOUT_SEED})")
    return Workload(model=model, train_batches=train_batches, loss_fn=make_loss_fn(hp, data.num_classes, batch_size),
                    val_batches=val_batches, test_batches=test_batches, evaluate=evaluate_images,
                    count_batch=count_batch, extra_eval=lambda _model: dict(shape_info),
                    steps_per_epoch=len(train_batches), data_info=info)
