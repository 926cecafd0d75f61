"""Tokenizers for the LM tasks: bytes (default) or a byte-level BPE trained locally with ``tokenizers``.

Both share one small interface: ``vocab_size``, ``eos_id``, ``encode(str) -> list[int]``,
``decode(ids) -> str``, ``encode_tensor(bytes) -> Tensor [N]``, ``to_dict()`` (stored in a checkpoint's JSON).
Nothing is fetched from a hub: a BPE vocabulary is learnt from the training split and saved beside the weights.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import torch

EOS = "<eos>"


class ByteTokenizer:
    """UTF-8 bytes 0..255 plus ``<eos>`` = 256 (vocab_size 257)."""

    kind = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def encode_tensor(self, data: bytes) -> torch.Tensor:
        """uint8 [len(data)], one byte per token (cast windows with ``.long()``)."""
        if not data:
            return torch.zeros(0, dtype=torch.uint8)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


class BPETokenizer:
    """A byte-level BPE (``tokenizers`` library) whose vocabulary includes ``<eos>``."""

    kind = "bpe"

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        eos = tokenizer.token_to_id(EOS)
        if eos is None:
            raise ValueError(f"BPE tokenizer has no {EOS} token")
        self.eos_id = eos

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids if int(i) != self.eos_id])

    def encode_tensor(self, data: bytes) -> torch.Tensor:
        """int64 [N]: the text encoded line by line (in parallel batches) and concatenated."""
        ids: list[int] = []
        lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
        for start in range(0, len(lines), 65536):
            for enc in self.tok.encode_batch(lines[start:start + 65536]):
                ids.extend(enc.ids)
        return torch.tensor(ids, dtype=torch.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "tokenizer": json.loads(self.tok.to_str())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(json.dumps(data["tokenizer"])))


def _lines(data: bytes, max_bytes: int) -> Iterator[str]:
    yield from data[:max_bytes].decode("utf-8", errors="ignore").splitlines(keepends=True)


def train_bpe(train_text: bytes, vocab_size: int = 4096, max_train_bytes: int = 32 << 20) -> BPETokenizer:
    """Learn a byte-level BPE of ``vocab_size`` tokens (incl. <eos>) from the first ``max_train_bytes`` of text."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as err:
        raise ValueError("a BPE tokenizer needs the 'tokenizers' package: pip install tokenizers") from err
    if vocab_size < 257 + 1:
        raise ValueError(f"a byte-level BPE needs vocab_size > 257 (256 bytes + <eos>), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_lines(train_text, max_train_bytes), trainer=trainer)
    return BPETokenizer(tok)


def build_tokenizer(kind: str = "byte", train_text: bytes | None = None, vocab_size: int = 4096) -> Any:
    """``"byte"`` -> ByteTokenizer; ``"bpe"`` -> a BPE trained on ``train_text``."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        if train_text is None:
            raise ValueError("a BPE tokenizer is trained on the training split: pass train_text")
        return train_bpe(train_text, vocab_size)
    raise ValueError(f"unknown tokenizer {kind!r}; valid: byte, bpe")


def tokenizer_from_dict(data: dict[str, Any]) -> Any:
    """Rebuild a tokenizer from ``to_dict()`` output (as stored in a checkpoint)."""
    if data.get("kind") == "byte":
        return ByteTokenizer()
    if data.get("kind") == "bpe":
        return BPETokenizer.from_dict(data)
    raise ValueError(f"unknown tokenizer record {data.get('kind')!r}; valid kinds: byte, bpe")

