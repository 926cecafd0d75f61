"""Evaluate a saved LM checkpoint (``run_suite.py eval-checkpoint CKPT [--tasks ...] [--decode-lengths ...]``).

Runs lm-eval (the local held-out tasks by default, or any cached standard task) on the corpus the checkpoint
was trained on (from its metadata, unless ``source`` says otherwise), and optionally the decode benchmark.
Returns lm-eval's table and a decode table; bad input or missing data raise UsageError (one line, exit 2).
"""
from __future__ import annotations

from suite.errors import UsageError


def evaluate_checkpoint(checkpoint: str, tasks: list[str], *, source: str | None = None, data_root: str | None = None,
                        limit: int | None = None, max_length: int | None = None, device: str = "cpu",
                        download: bool = False, decode_lengths: list[int] | None = None) -> tuple[str | None,
                                                                                                  list[dict]]:
    """(lm-eval's table or None, decode rows) of the checkpoint folder (model.pt + config.json)."""
    from suite.families.lm.checkpoint import load_checkpoint

    try:
        model, tokenizer, meta = load_checkpoint(checkpoint, device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    table = None
    if tasks:
        from suite.families.lm.lm_eval_run import run_lm_eval

        try:
            result = run_lm_eval(model, tokenizer, tasks, source=source or meta.get("data", {}).get("source", "kjv"),
                                 data_root=data_root, limit=limit, max_length=max_length, download=download)
        except ValueError as err:
            raise UsageError(str(err)) from None
        table = result["table"]
    rows: list[dict] = []
    if decode_lengths:
        from suite.families.lm.decode_bench import decode_benchmark

        rows = decode_benchmark(model, decode_lengths)
    return table, rows
