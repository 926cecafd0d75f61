"""Text (byte-level IMDB) from a local copy: Stanford's ``aclImdb/`` folder or a Hugging Face ``imdb`` copy.

Looked for under the data root, in this order:
- ``aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`` (the Stanford tarball ``aclImdb_v1.tar.gz``; ``unsup/``
  is ignored);
- a ``datasets.save_to_disk`` directory (holding ``dataset_dict.json``) at ``imdb/``;
- the Hugging Face parquet files ``{train,test}-*.parquet`` anywhere under ``imdb/`` (the hub repository
  ``stanfordnlp/imdb`` keeps them in ``plain_text/``).
Nothing is downloaded. Labels: neg = 0, pos = 1. As in LRA, the raw review (``<br />`` tags included) is
UTF-8 encoded and every byte is a token (id = byte + 1, 0 = pad), truncated to max_len. LRA has no IMDB
validation split (it read the test split for every choice); here ``val`` is ``VAL_SIZE`` (2,500) reviews held
out of the 25,000 training reviews (seed 0; a tenth of a smaller folder) and ``train`` the other 22,500, so the
test split is read once.
Examples come in a fixed shuffled order (seed 0), so the first N are a random, roughly balanced subset.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from suite.data import DataMissingError
from suite.data.lra.byte_tokens import encode_bytes

if TYPE_CHECKING:
    import torch

SPLIT_DIRS = {"train": "train", "val": "train", "test": "test"}
VAL_SIZE = 2500
LABELS = {"neg": 0, "pos": 1}
ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ORDER_SEED = 0


def find_imdb(root: Path | None) -> tuple[str, Path] | None:
    """('aclImdb', dir) | ('hf-disk', dir) | ('hf-parquet', dir), or None."""
    if root is None:
        return None
    for base in (root / "aclImdb", root):
        if (base / "train" / "pos").is_dir() and (base / "test" / "neg").is_dir():
            return "aclImdb", base
    for base in (root / "imdb", root):
        if (base / "dataset_dict.json").is_file():
            return "hf-disk", base
    imdb = root / "imdb"
    if imdb.is_dir() and any(imdb.rglob("train-*.parquet")):
        return "hf-parquet", imdb
    return None


def missing_imdb_message(root: Path | None) -> str:
    where = ("no data root is set (pass --data-root DIR or set EA_SUITE_DATA)" if root is None
             else f"nothing under {root}")
    target = "DIR" if root is None else str(root)
    return (f"IMDB (LRA Text) not found: {where}. Download {ACLIMDB_URL} and run "
            f"`tar xzf aclImdb_v1.tar.gz -C {target}` "
            f"(giving {target}/aclImdb/train/pos/...), or save a Hugging Face copy with "
            f"`datasets.load_dataset('imdb').save_to_disk('{target}/imdb')` on a machine with network access.")


def _shuffled(n: int, split: str) -> np.ndarray:
    """The split's examples among the ``n`` of its folder, in a fixed shuffled order (val: the first VAL_SIZE of
    the training folder's order, train: the rest)."""
    order = np.random.default_rng(ORDER_SEED).permutation(n)
    held = val_size(n)
    if split == "val":
        return order[:held]
    return order[held:] if split == "train" else order


def val_size(n: int) -> int:
    """Reviews of a training folder of ``n`` held out for validation: ``VAL_SIZE`` of the real 25,000, a tenth (at
    least one) of a smaller folder."""
    return min(VAL_SIZE, max(1, n // 10)) if n > 1 else 0


def _read_aclimdb(base: Path, split: str, num_examples: int | None) -> tuple[list[bytes], list[int]]:
    files = []
    for name, label in LABELS.items():
        files += [(path, label) for path in sorted((base / SPLIT_DIRS[split] / name).glob("*.txt"))]
    if not files:
        raise DataMissingError(f"no review files in {base / SPLIT_DIRS[split]}/{{neg,pos}}")
    order = _shuffled(len(files), split)[:num_examples]
    return [files[i][0].read_bytes() for i in order], [files[i][1] for i in order]


def _read_hf(kind: str, base: Path, split: str, num_examples: int | None) -> tuple[list[bytes], list[int]]:
    hf_split = SPLIT_DIRS[split]
    if kind == "hf-disk":
        import datasets

        table = datasets.load_from_disk(str(base))[hf_split]
        texts, labels = table["text"], table["label"]
    else:
        import pandas as pd

        parts = sorted(base.rglob(f"{hf_split}-*.parquet"))
        if not parts:
            raise DataMissingError(f"no {hf_split}-*.parquet files under {base}")
        frame = pd.concat([pd.read_parquet(p, columns=["text", "label"]) for p in parts], ignore_index=True)
        texts, labels = frame["text"].tolist(), frame["label"].tolist()
    order = _shuffled(len(texts), split)[:num_examples]
    return [texts[i].encode("utf-8") for i in order], [int(labels[i]) for i in order]


def load_imdb(root: str | os.PathLike | None, split: str, max_len: int = 1000, *, num_examples: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Load one IMDB split from a local copy under root.

    Returns (tokens int16 [N, max_len] (id = byte + 1, 0 = pad), mask bool [N, max_len] True = real byte,
    labels int64 [N] (neg 0, pos 1), description of the source that was read).
    """
    import torch

    if split not in SPLIT_DIRS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_DIRS)}")
    root_path = None if root is None else Path(root)
    found = find_imdb(root_path)
    if found is None:
        raise DataMissingError(missing_imdb_message(root_path))
    kind, base = found
    docs, labels = (_read_aclimdb(base, split, num_examples) if kind == "aclImdb"
                    else _read_hf(kind, base, split, num_examples))
    if any(label not in (0, 1) for label in labels):
        raise ValueError(f"IMDB labels must be 0 (neg) or 1 (pos) in {base}")
    tokens, mask = encode_bytes(docs, max_len)
    return tokens, mask, torch.tensor(labels, dtype=torch.int64), f"imdb ({kind}: {base}, split {SPLIT_DIRS[split]})"
