"""Held-out loss of a DecoderLM: nats per token, bits per byte and token perplexity, and each window's bits per byte.

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
from suite.run.builders import Evaluation
from suite.run.records import fingerprint


class Windows(list):
    """A held-out split's evaluation batches (``sequential_windows``) with the split's ``bytes_per_token``."""

    def __init__(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], bytes_per_token: float) -> None:
        super().__init__(batches)
        self.bytes_per_token = bytes_per_token


@torch.no_grad()
def evaluate_batches(model: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     bytes_per_token: float | None = None) -> Evaluation:
    """{"loss" (nats/token), "bpb", "ppl", "eval_tokens"} over (x, y) int64 [B, L] batches on the model's device,
    and each window's bits per byte (kind ``loss``; fingerprint of the targets). ``bytes_per_token``: the
    argument, else the batches' own (``Windows``), else 1 (a byte tokenizer)."""
    import numpy as np

    if bytes_per_token is None:
        bytes_per_token = float(getattr(batches, "bytes_per_token", 1.0))
    nats, tokens = 0.0, 0
    per_window: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for x, y in batches:
        logits = model(x)
        window_nats = F.cross_entropy(logits.transpose(1, 2).float(), y, reduction="none").sum(-1)
        nats += window_nats.sum().item()
        tokens += y.numel()
        per_window.append((window_nats / (y.shape[1] * math.log(2) * bytes_per_token)).cpu().numpy())
        targets.append(y.cpu().numpy())
    if tokens == 0:
        raise ValueError("no evaluation batches")
    loss = nats / tokens
    metrics = {"loss": loss, "bpb": loss / math.log(2) / bytes_per_token, "ppl": math.exp(min(loss, 700.0)),
               "eval_tokens": float(tokens)}
    return Evaluation(metrics, np.concatenate(per_window), "loss", None,
                      fingerprint(*(t.astype(np.int64) for t in targets)))


def heldout_metrics(model: Any, tokens: torch.Tensor, n_bytes: int, seq_len: int, batch_size: int = 8,
                    max_tokens: int | None = None) -> dict[str, float]:
    """Score a held-out split (tokens [N]) in non-overlapping windows of ``seq_len``; see ``evaluate_batches``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        batches = ((x.to(device), y.to(device)) for x, y in sequential_windows(tokens, seq_len, batch_size, max_tokens))
        return evaluate_batches(model, batches, bytes_per_token=n_bytes / max(1, tokens.numel())).metrics
    finally:
        model.train(was_training)
