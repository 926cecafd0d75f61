"""Harness builders for the LM family: ``lm`` (train, evaluate, lm-eval) and ``lm-decode`` (decoding against L).

``lm`` trains a DecoderLM on a corpus (``data: {source, tokenizer: byte|bpe, vocab_size}``, see
``suite.data.text``) with random windows of ``seq_len`` tokens, and evaluates it on the validation split in
non-overlapping windows (``eval_tokens`` caps the tokens scored): ``loss`` (nats/token), ``bpb``, ``ppl``.
Afterwards, untimed: ``test_bpb`` / ``test_loss`` on the test split, lm-eval's metrics for ``lm_eval_tasks``
(``lm_eval.<task>.<metric>``; local held-out tasks by default, standard ones from the HF cache), the decode
benchmark at ``decode_lengths`` (``decode_ms_per_token_L<n>``, ``prefill_ms_L<n>``, ``state_bytes_L<n>``), and
a checkpoint when a checkpoint folder is given.

Model hyperparameters: dim (128), depth (4), heads (4), mlp_ratio (4), pos_emb (none), dropout (0). Others:
eval_batch_size, eval_tokens, lm_eval_tasks, lm_eval_limit, decode_lengths, decode_new_tokens.

Environment overrides (the runner passes the environment to each job process):
- ``EA_SUITE_LM_EVAL_TASKS``: comma-separated lm-eval tasks replacing ``lm_eval_tasks`` (``none`` = skip);
- ``EA_SUITE_DOWNLOAD=1``: allow fetching Hugging Face data sets (``hf:`` sources, standard lm-eval tasks);
- ``EA_SUITE_CHECKPOINT_DIR``: save every trained model to ``DIR/<task>_<attention>_L<seq_len>_s<seed>/``.

``lm-decode`` is a measurement job: a DecoderLM of the task's size (random weights, or ``checkpoint``) on
the job's device, then ``decode_benchmark`` at context length ``seq_len``: ``decode_ms_per_token``,
``prefill_ms``, ``state_bytes``, ``decode_tokens_per_s``, ``peak_mem_bytes``, ``params``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from suite.data import download_allowed
from suite.data.text import encode_splits, load_text, random_windows, sequential_windows
from suite.harness.builders import BuildContext, Job, register_builder
from suite.harness.measure import torch_dtype
from suite.lm import CHECKPOINT_ENV, lm_eval_tasks_from_env
from suite.lm.evaluate import evaluate_batches, heldout_metrics
from suite.lm.tokenizer import build_tokenizer
from suite.models.lm import DecoderLM, LMConfig

_MODEL_KEYS = ("dim", "depth", "heads", "mlp_ratio", "pos_emb", "dropout")


class RandomWindowBatches:
    """An endless stream of training batches (x, y) int64 [batch_size, seq_len] from random windows."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, batch_size: int, seed: int) -> None:
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield random_windows(self.tokens, self.seq_len, self.batch_size, self.generator)


def model_config(hp: dict[str, Any], attention: str, vocab_size: int, seq_len: int) -> LMConfig:
    options = {k: hp[k] for k in _MODEL_KEYS if k in hp}
    return LMConfig(attention=attention, vocab_size=vocab_size, max_seq_len=max(seq_len, 1024), **options)


def _lm_eval_tasks(hp: dict[str, Any]) -> list[str]:
    override = lm_eval_tasks_from_env()
    return override if override is not None else list(hp.get("lm_eval_tasks", []))


def _slug(ctx: BuildContext) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{ctx.task}_{ctx.attention}_L{ctx.seq_len}_s{ctx.seed}")


@register_builder("lm")
def build_lm_job(ctx: BuildContext) -> Job:
    hp, data = ctx.hparams, ctx.data
    download = download_allowed(data)
    source = data.get("source", "kjv")
    corpus = load_text(source, ctx.data_root, download)
    tokenizer = build_tokenizer(data.get("tokenizer", "byte"), corpus.splits["train"], int(data.get("vocab_size", 4096)))
    tokens = encode_splits(corpus, tokenizer)
    train = tokens["train"]
    if ctx.world_size > 1:  # each rank samples windows from its own contiguous shard
        shard = train.numel() // ctx.world_size
        train = train[ctx.rank * shard:(ctx.rank + 1) * shard + ctx.seq_len + 1]
    model = DecoderLM(model_config(hp, ctx.attention, tokenizer.vocab_size, ctx.seq_len))
    eval_bs = int(hp.get("eval_batch_size", hp.get("batch_size", 8)))
    max_eval = hp.get("eval_tokens")
    val_batches = list(sequential_windows(tokens["val"], ctx.seq_len, eval_bs, max_eval))
    bytes_per_token = {s: len(corpus.splits[s]) / max(1, tokens[s].numel()) for s in ("val", "test")}

    def loss_fn(net: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(net(x).flatten(0, 1).float(), y.flatten())

    def evaluate(net: Any, batches: Any) -> dict[str, float]:
        return evaluate_batches(net, batches, bytes_per_token["val"])

    def extra_eval(net: DecoderLM) -> dict[str, float]:
        test = heldout_metrics(net, tokens["test"], len(corpus.splits["test"]), ctx.seq_len, eval_bs, max_eval)
        metrics = {"test_loss": test["loss"], "test_bpb": test["bpb"]}
        lm_tasks = _lm_eval_tasks(hp)
        if lm_tasks:
            from suite.lm.lm_eval_run import flatten_metrics, run_lm_eval

            result = run_lm_eval(net, tokenizer, lm_tasks, source=source, data_root=ctx.data_root,
                                 limit=hp.get("lm_eval_limit"), max_length=ctx.seq_len, batch_size=eval_bs,
                                 download=download)
            metrics.update(flatten_metrics(result["results"]))
        lengths = hp.get("decode_lengths") or []
        if lengths:
            from suite.lm.decode_bench import decode_benchmark

            for row in decode_benchmark(net, lengths, int(hp.get("decode_new_tokens", 16))):
                if row["status"] == "ok":
                    for name in ("decode_ms_per_token", "prefill_ms", "state_bytes"):
                        metrics[f"{name}_L{row['context_len']}"] = row[name]
        folder = hp.get("checkpoint_dir") or os.environ.get(CHECKPOINT_ENV)
        if folder and ctx.rank == 0:
            from suite.lm.checkpoint import save_checkpoint

            save_checkpoint(Path(folder) / _slug(ctx), net, tokenizer,
                            {"task": ctx.task, "attention": ctx.attention, "seq_len": ctx.seq_len, "seed": ctx.seed,
                             "profile": ctx.profile, "data": corpus.record})
        return metrics

    info = {**corpus.record, "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
            "train_tokens": int(tokens["train"].numel())}
    train_batches = RandomWindowBatches(train, ctx.seq_len, int(hp["batch_size"]), 1000 + ctx.seed + ctx.rank)
    return Job(data_info=info, model=model, train_batches=train_batches, loss_fn=loss_fn, eval_batches=val_batches,
               evaluate=evaluate, extra_eval=extra_eval)


@register_builder("lm-decode")
def build_lm_decode_job(ctx: BuildContext) -> Job:
    hp = ctx.hparams

    def measure() -> dict[str, Any]:
        from suite.lm.decode_bench import decode_benchmark

        if hp.get("checkpoint"):
            from suite.lm.checkpoint import load_checkpoint

            model = load_checkpoint(hp["checkpoint"], ctx.device)[0]
        else:
            model = DecoderLM(model_config(hp, ctx.attention, int(hp.get("vocab_size", 257)), ctx.seq_len))
        dtype = torch_dtype(hp.get("dtype", "float32"))
        model = model.to(device=ctx.device, dtype=dtype)
        (row,) = decode_benchmark(model, [ctx.seq_len], int(hp.get("new_tokens", 32)), int(hp.get("batch", 1)),
                                  prefill_repeats=int(hp.get("prefill_repeats", 3)))
        job.backends[ctx.attention] = f"prefill={row.get('prefill_backend')},step={row.get('step_backend')}"
        if row["status"] == "oom":
            raise torch.OutOfMemoryError(row["error"])
        keys = ("decode_ms_per_token", "prefill_ms", "state_bytes", "decode_tokens_per_s", "peak_mem_bytes")
        return {**{k: float(row[k]) for k in keys}, "params": float(model.num_params())}

    job = Job(data_info={"source": "random-tokens", "substitute": False}, measure=measure)
    return job
