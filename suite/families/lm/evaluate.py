"""Held-out loss of a DecoderLM: nats per token, bits per byte and token perplexity.

bits per byte = (summed nats / ln 2) / (bytes of the text scored); for a byte tokenizer bytes = tokens, for BPE
the bytes of the scored tokens are estimated as ``bytes_per_token`` x tokens (exact for a full pass with
``bytes_per_token = split bytes / split tokens``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from suite.data.text import sequential_windows


@torch.no_grad()
def evaluate_batches(model: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     bytes_per_token: float = 1.0) -> dict[str, float]:
    """{"loss" (nats/token), "bpb", "ppl", "eval_tokens"} over (x, y) int64 [B, L] batches on the model's device."""
    nats, tokens = 0.0, 0
    for x, y in batches:
        logits = model(x)
        nats += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
        tokens += y.numel()
    if tokens == 0:
        raise ValueError("no evaluation batches")
    loss = nats / tokens
    return {"loss": loss, "bpb": loss / math.log(2) / bytes_per_token, "ppl": math.exp(min(loss, 700.0)),
            "eval_tokens": float(tokens)}


def heldout_metrics(model: Any, tokens: torch.Tensor, n_bytes: int, seq_len: int, batch_size: int = 8,
                    max_tokens: int | None = None) -> dict[str, float]:
    """Score a held-out split (tokens [N]) in non-overlapping windows of ``seq_len``; see ``evaluate_batches``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        batches = ((x.to(device), y.to(device)) for x, y in sequential_windows(tokens, seq_len, batch_size, max_tokens))
        return evaluate_batches(model, batches, bytes_per_token=n_bytes / max(1, tokens.numel()))
    finally:
        model.train(was_training)
