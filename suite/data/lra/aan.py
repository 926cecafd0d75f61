"""Retrieval (AAN citation pairs): the LRA release's ``tsv_data/new_aan_pairs.{train,eval,test}.tsv``.

Format (``matching/input_pipeline.py``): no header, tab-separated, quotes not special, 5 columns
``label id1 id2 text1 text2``; the label is read as a float (1 = the papers are linked by a citation).
Encoding as LRA's char/byte pipeline: each text is cut to its first 10,000 bytes, byte-encoded
(id = byte + 1, 0 = pad) and truncated to max_len (4000 in LRA's configs).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from suite.data.lra.byte_tokens import encode_bytes

if TYPE_CHECKING:
    import torch

AAN_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
RAW_CUT = 10_000


def aan_path(directory: str | os.PathLike, split: str) -> Path:
    if split not in AAN_FILES:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(AAN_FILES)}")
    return Path(directory) / AAN_FILES[split]


def read_aan_tsv(path: str | os.PathLike, num_examples: int | None = None) -> tuple[list[int], list[bytes],
                                                                                    list[bytes]]:
    """(labels, text1, text2) of an AAN pair file; texts stay raw bytes. Reads the first num_examples rows if given."""
    labels: list[int] = []
    text1: list[bytes] = []
    text2: list[bytes] = []
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if num_examples is not None and len(labels) >= num_examples:
                break
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            cols = line.split(b"\t")
            if len(cols) != 5:
                raise ValueError(f"{path}:{line_no}: expected 5 tab-separated columns "
                                 f"(label id1 id2 text1 text2), got {len(cols)}")
            try:
                label = float(cols[0])
            except ValueError:
                raise ValueError(f"{path}:{line_no}: label {cols[0][:20]!r} is not a number") from None
            if label not in (0.0, 1.0):
                raise ValueError(f"{path}:{line_no}: label must be 0 or 1, got {label}")
            labels.append(int(label))
            text1.append(cols[3])
            text2.append(cols[4])
    return labels, text1, text2


def load_aan(directory: str | os.PathLike, split: str, max_len: int = 4000, *, num_examples: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load one split from a ``tsv_data`` directory.

    Returns (tokens1, mask1, tokens2, mask2, labels): tokens int16 [N, max_len] (id = byte + 1, 0 = pad),
    masks bool [N, max_len] (True = real byte), labels int64 [N].
    """
    import torch

    labels, text1, text2 = read_aan_tsv(aan_path(directory, split), num_examples)
    tokens1, mask1 = encode_bytes([t[:RAW_CUT] for t in text1], max_len)
    tokens2, mask2 = encode_bytes([t[:RAW_CUT] for t in text2], max_len)
    return tokens1, mask1, tokens2, mask2, torch.tensor(labels, dtype=torch.int64)
