"""Decoding cost against context length: prefill time, ms per generated token, state/cache bytes.

``decode_benchmark(model, context_lengths, new_tokens)`` returns one row per context length L:

- ``prefill_ms``: median wall time of ``model.prefill`` over a random prompt of L tokens (batch ``batch_size``)
- ``decode_ms_per_token``: median wall time of one ``model.step`` (greedy token fed back), over ``new_tokens``
  steps after ``warmup_steps`` untimed ones; ``decode_tokens_per_s`` = batch_size / that median
- ``state_bytes``: bytes held by every layer's decoding state right after the prefill (softmax: K and V caches,
  which grow with L; EA: the (A_n, B_n) sums, constant in L)
- ``peak_mem_bytes`` (``suite.run.measure``: CUDA allocator peak, or the process's peak RSS on a CPU)
- ``prefill_backend`` / ``step_backend``: what the first layer's mixer actually ran
- ``status``: "ok" or "oom" (a length that ran out of memory; the longer ones are still tried)

Times use ``suite.run.measure.Stopwatch`` (CUDA synchronised at both ends), after one untimed warm-up
prefill and step at the shortest length. Lengths are a parameter: 64k contexts are for GPUs.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from suite.run.measure import Stopwatch, memory_measure, peak_memory_bytes, reset_peak_memory


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


@torch.inference_mode()
def _one_length(model: Any, length: int, new_tokens: int, batch_size: int, warmup_steps: int, prefill_repeats: int,
                device: str, generator: torch.Generator) -> dict[str, Any]:
    idx = torch.randint(0, model.cfg.vocab_size, (batch_size, length), generator=generator).to(device)
    reset_peak_memory(device)
    prefill_times = []
    for _ in range(prefill_repeats):
        with Stopwatch(device) as sw:
            logits, states = model.prefill(idx, last_only=True)
        prefill_times.append(sw.seconds)
    state_bytes = model.state_bytes(states)
    prefill_backend = getattr(model.blocks[0].mixer, "backend_used", "?")
    token, step_times = logits.argmax(-1), []
    for i in range(warmup_steps + new_tokens):
        with Stopwatch(device) as sw:
            logits, states = model.step(token, states)
            token = logits.argmax(-1)
        if i >= warmup_steps:
            step_times.append(sw.seconds)
    per_token = statistics.median(step_times)
    return {"prefill_ms": 1e3 * statistics.median(prefill_times), "decode_ms_per_token": 1e3 * per_token,
            "decode_tokens_per_s": batch_size / per_token, "state_bytes": state_bytes,
            "state_bytes_after_decode": model.state_bytes(states), "peak_mem_bytes": peak_memory_bytes(device),
            "prefill_backend": prefill_backend, "step_backend": getattr(model.blocks[0].mixer, "backend_used", "?")}


def decode_benchmark(model: Any, context_lengths: Sequence[int], new_tokens: int = 32, batch_size: int = 1,
                     warmup_steps: int = 4, prefill_repeats: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """One row per context length (see the module docstring); the model runs on its own device, in eval mode."""
    lengths = [int(n) for n in context_lengths]
    if not lengths or min(lengths) < 1 or new_tokens < 1 or batch_size < 1:
        raise ValueError(f"need context lengths >= 1, new_tokens >= 1 and batch_size >= 1, got {context_lengths}, "
                         f"{new_tokens}, {batch_size}")
    if model.cfg.pos_emb == "learned" and max(lengths) + warmup_steps + new_tokens > model.cfg.max_seq_len:
        raise ValueError(f"a learned position table of {model.cfg.max_seq_len} rows cannot decode past that length")
    device = str(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    base = {"attention": model.cfg.attention, "batch_size": batch_size, "new_tokens": new_tokens, "device": device,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "memory_measure": memory_measure(device)}
    rows = []
    try:
        _one_length(model, min(lengths), 2, batch_size, 1, 1, device, generator)  # warm-up (kernels, allocator)
        for length in lengths:
            row = {**base, "context_len": length, "status": "ok"}
            try:
                row.update(_one_length(model, length, new_tokens, batch_size, warmup_steps, prefill_repeats, device,
                                       generator))
            except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
                if not _is_oom(err):
                    raise
                row.update(status="oom", error=str(err).splitlines()[0][:200])
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            rows.append(row)
    finally:
        model.train(was_training)
    return rows
