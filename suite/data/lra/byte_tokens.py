"""LRA's byte-level text encoding (tfds ``ByteTextEncoder``): id = byte + 1, 0 = padding, vocabulary 257."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PAD_ID = 0
VOCAB_SIZE = 257


def encode_bytes(docs: list[bytes], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens int16 [N, max_len] with id = byte + 1, mask bool [N, max_len] True = real byte); each doc is
    truncated to max_len bytes and padded with 0. int16 keeps the 4K-byte AAN pairs small; use .long() per batch."""
    import torch

    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    tokens = np.zeros((len(docs), max_len), dtype=np.int16)
    for i, doc in enumerate(docs):
        ids = np.frombuffer(doc[:max_len], dtype=np.uint8)
        tokens[i, : len(ids)] = ids.astype(np.int16) + 1
    tokens_t = torch.from_numpy(tokens)
    return tokens_t, tokens_t != PAD_ID
