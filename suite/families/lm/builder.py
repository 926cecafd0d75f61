"""The LM family's builders: ``lm`` (train, evaluate, lm-eval) and ``lm-decode`` (decoding against L).

``lm`` trains a DecoderLM on a corpus (``data: {source, tokenizer: byte|bpe, vocab_size}``, see
``suite.data.text``) with random windows of ``seq_len`` tokens, and evaluates it on the validation split (curves,
every choice) and once on the test split, each in non-overlapping windows (``eval_tokens`` caps the tokens
scored): ``val_``/``test_`` ``loss`` (nats/token), ``bpb``, ``ppl``, with each test window's bits per byte.
Afterwards, untimed: lm-eval's metrics for ``lm_eval_tasks``
(``lm_eval.<task>.<metric>``; local held-out tasks, or standard ones from the Hugging Face cache, fetched only
with ``--download``), the decode benchmark at ``decode_lengths`` (``decode_ms_per_token_L<n>``,
``prefill_ms_L<n>``, ``state_bytes_L<n>``), and the trained model saved to ``ARTIFACTS/checkpoint/`` (the job's
artifacts folder, ``OUT/artifacts/<job>/``) for ``python -m suite.families.lm.eval_checkpoint``.

``lm-decode`` is a measurement job: a DecoderLM of the task's size (random weights, or ``checkpoint``) on the
job's device, then ``decode_benchmark`` at context length ``seq_len``: ``decode_ms_per_token``, ``prefill_ms``,
``state_bytes``, ``decode_tokens_per_s``, ``peak_mem_bytes``, ``params``.

The model's defaults are ``LMConfig``'s (one source); ``run_suite.py list --family lm --hparams`` lists all.
"""
from __future__ import annotations

from typing import Any

from suite.data.text import text_data_status
from suite.models.config import POS_EMB_KINDS, LMConfig
from suite.run.builders import BuildContext, Workload, register_builder
from suite.run.hparams import TRAINING, HParam
from suite.run.measure import DTYPES, torch_dtype
from suite.run.pool.estimates import transformer_cost

_MODEL = LMConfig()
MODEL_HPARAMS = (
    HParam("dim", "int", _MODEL.dim, "model width", low=1),
    HParam("depth", "int", _MODEL.depth, "decoder blocks", low=1),
    HParam("heads", "int", _MODEL.heads, "attention heads", low=1),
    HParam("mlp_ratio", "float", _MODEL.mlp_ratio, "MLP width / model width", low=0, low_open=True),
    HParam("pos_emb", "str", _MODEL.pos_emb, "position embedding (none: the mixers carry order)",
           choices=POS_EMB_KINDS),
    HParam("dropout", "float", _MODEL.dropout, "dropout rate", low=0, high=1, high_open=True),
)
LM_HPARAMS = (
    *TRAINING, *MODEL_HPARAMS,
    HParam("eval_tokens", "int", None, "validation/test tokens scored (default: the whole split)", low=1),
    HParam("lm_eval_tasks", "strs", [], "lm-eval tasks run after training (local suite_heldout_* or standard ones)"),
    HParam("lm_eval_limit", "int", None, "documents per lm-eval task (default: all)", low=1),
    HParam("decode_lengths", "ints", None, "context lengths of the decode benchmark after training", low=1),
    HParam("decode_new_tokens", "int", 16, "tokens decoded per context length", low=1),
)
DECODE_HPARAMS = (
    *MODEL_HPARAMS,
    HParam("checkpoint", "str", None, "a checkpoint folder to decode with (default: random weights)"),
    HParam("vocab_size", "int", 257, "vocabulary of the random-weight model", low=2),
    HParam("dtype", "str", "float32", "model dtype", choices=tuple(DTYPES)),
    HParam("batch_size", "int", 1, "sequences decoded at once", low=1),
    HParam("new_tokens", "int", 32, "tokens decoded after the context (the timed steps)", low=1),
    HParam("prefill_repeats", "int", 3, "timed prefills (the median is kept)", low=1),
)


def model_config(hp: dict[str, Any], attention: str, vocab_size: int, seq_len: int) -> LMConfig:
    """The DecoderLM of the job: the declared model hyperparameters, ``attention`` as every block's mixer."""
    options = {p.name: hp[p.name] for p in MODEL_HPARAMS if p.name in hp}
    return LMConfig(attention=attention, vocab_size=vocab_size, max_seq_len=max(seq_len, 1024), **options)


def _check_lm(hparams: dict[str, Any]) -> None:
    if hparams.get("lm_eval_tasks"):
        from suite.families.lm.lm_eval_run import check_task_names

        check_task_names(hparams["lm_eval_tasks"])


def _lm_dims(hp: dict[str, Any], seq_len: int, attention: str) -> dict[str, Any]:
    return dict(tokens=seq_len, dim=hp["dim"], depth=hp["depth"], mlp_hidden=int(hp["mlp_ratio"] * hp["dim"]),
                attention=attention, vocab=257)


def lm_cost(hp: dict[str, Any], data: dict[str, Any], seq_len: int, attention: str) -> tuple[float, float]:
    """Rough (FLOPs, peak bytes) of an LM job: its training steps and the held-out evaluations."""
    dims = _lm_dims(hp, seq_len, attention)
    flops, peak = transformer_cost(examples=(hp.get("steps") or 1000) * hp["batch_size"], **dims)
    eval_windows = (hp.get("eval_tokens") or 1 << 20) / seq_len * (hp["eval_points"] + 1)
    evals, _ = transformer_cost(examples=eval_windows, train=False, **dims)
    return flops + evals, peak + hp["batch_size"] * seq_len * hp["dim"] * hp["depth"] * 4 * 24


def lm_decode_cost(hp: dict[str, Any], data: dict[str, Any], seq_len: int, attention: str) -> tuple[float, float]:
    """Rough (FLOPs, peak bytes): the timed prefills of L tokens and the decoded tokens."""
    dims = _lm_dims(hp, seq_len, attention)
    flops, peak = transformer_cost(examples=hp["batch_size"] * (hp["prefill_repeats"] + 1), train=False, **dims)
    return flops * (1 + hp["new_tokens"] / seq_len), peak


def _lm_data_status(data: dict[str, Any], root: Any) -> tuple[str, str]:
    return text_data_status(data.get("source", "kjv"), root)


@register_builder("lm", LM_HPARAMS, "train a causal decoder LM with the job's attention as its mixer",
                  check=_check_lm, rehearsal={"steps": 2, "batch_size": 2, "eval_batch_size": 2, "eval_tokens": 64,
                                              "lm_eval_limit": 1, "decode_new_tokens": 2},
                  data_status=_lm_data_status, cost=lm_cost)
def build_lm_job(ctx: BuildContext) -> Workload:
    from suite.data.text import RandomWindowBatches, encode_splits, load_text, sequential_windows
    from suite.data.tokenizer import build_tokenizer
    from suite.families.lm.evaluate import Windows, evaluate_batches
    from suite.models.lm import DecoderLM, next_token_loss

    hp, data = ctx.hparams, ctx.data
    download = ctx.download or bool(data.get("download"))
    source = data.get("source", "kjv")
    corpus = load_text(source, ctx.data_root, download)
    tokenizer = build_tokenizer(data.get("tokenizer", "byte"), corpus.splits["train"], int(data.get("vocab_size",
                                                                                                    4096)))
    tokens = encode_splits(corpus, tokenizer)
    train = tokens["train"]
    if ctx.world_size > 1:  # each rank samples windows from its own contiguous shard
        shard = train.numel() // ctx.world_size
        train = train[ctx.rank * shard:(ctx.rank + 1) * shard + ctx.seq_len + 1]
    model = DecoderLM(model_config(hp, ctx.attention, tokenizer.vocab_size, ctx.seq_len))
    eval_bs = int(hp.get("eval_batch_size") or hp["batch_size"])
    max_eval = hp.get("eval_tokens")
    held_out = {split: Windows(sequential_windows(tokens[split], ctx.seq_len, eval_bs, max_eval),
                               len(corpus.splits[split]) / max(1, tokens[split].numel())) for split in ("val", "test")}

    def extra_eval(net: Any) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if hp.get("lm_eval_tasks"):
            from suite.families.lm.lm_eval_run import flatten_metrics, run_lm_eval

            result = run_lm_eval(net, tokenizer, hp["lm_eval_tasks"], source=source, data_root=ctx.data_root,
                                 limit=hp.get("lm_eval_limit"), max_length=ctx.seq_len, batch_size=eval_bs,
                                 download=download)
            metrics.update(flatten_metrics(result["results"]))
        if hp.get("decode_lengths"):
            from suite.families.lm.decode_bench import decode_benchmark

            for row in decode_benchmark(net, hp["decode_lengths"], int(hp["decode_new_tokens"])):
                if row["status"] == "ok":
                    for name in ("decode_ms_per_token", "prefill_ms", "state_bytes"):
                        metrics[f"{name}_L{row['context_len']}"] = row[name]
        if ctx.artifacts_dir is not None and ctx.rank == 0:
            from suite.families.lm.checkpoint import save_checkpoint

            meta = {"task": ctx.task, "attention": ctx.attention, "seq_len": ctx.seq_len, "seed": ctx.seed,
                    "profile": ctx.profile, "data": corpus.record}
            checkpoint_dir = ctx.artifacts_dir / "checkpoint"
            job.save_artifact("checkpoint", lambda: save_checkpoint(checkpoint_dir, net, tokenizer, meta))
        return metrics

    info = {**corpus.record, "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
            "train_tokens": int(tokens["train"].numel())}
    train_batches = RandomWindowBatches(train, ctx.seq_len, int(hp["batch_size"]), 1000 + ctx.seed + ctx.rank)
    job = Workload(data_info=info, model=model, train_batches=train_batches, loss_fn=next_token_loss,
                   val_batches=held_out["val"], test_batches=held_out["test"], evaluate=evaluate_batches,
                   extra_eval=extra_eval)
    return job


@register_builder("lm-decode", DECODE_HPARAMS, "decoding speed and state size of a decoder LM after L tokens",
                  rehearsal={"new_tokens": 2, "prefill_repeats": 1},
                  data_status=lambda data, root: ("generated", "random tokens"), cost=lm_decode_cost)
def build_lm_decode_job(ctx: BuildContext) -> Workload:
    hp = ctx.hparams

    def measure() -> dict[str, Any]:
        import torch

        from suite.families.lm.decode_bench import decode_benchmark
        from suite.models.lm import DecoderLM

        if hp.get("checkpoint"):
            from suite.families.lm.checkpoint import load_checkpoint

            model = load_checkpoint(hp["checkpoint"], ctx.device)[0]
        else:
            model = DecoderLM(model_config(hp, ctx.attention, int(hp["vocab_size"]), ctx.seq_len))
        model = model.to(device=ctx.device, dtype=torch_dtype(hp["dtype"]))
        (row,) = decode_benchmark(model, [ctx.seq_len], int(hp["new_tokens"]), int(hp["batch_size"]),
                                  prefill_repeats=int(hp["prefill_repeats"]))
        job.backends[ctx.attention] = f"prefill={row.get('prefill_backend')},step={row.get('step_backend')}"
        if row["status"] == "oom":
            raise torch.OutOfMemoryError(row["error"])
        keys = ("decode_ms_per_token", "prefill_ms", "state_bytes", "decode_tokens_per_s", "peak_mem_bytes")
        return {**{k: float(row[k]) for k in keys}, "params": float(sum(p.numel() for p in model.parameters()))}

    job = Workload(data_info={"source": "random-tokens", "substitute": False}, measure=measure)
    return job
