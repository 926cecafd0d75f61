"""Evaluate a saved LM checkpoint: ``python -m suite.families.lm.eval_checkpoint CKPT [--tasks ...] [--decode-lengths ...]``.

Runs lm-eval (the local held-out tasks by default, or any cached standard task) on the corpus the checkpoint
was trained on (from its metadata, unless ``--source`` says otherwise), and optionally the decode benchmark.
Prints lm-eval's table and a decode table; exit code 2 with a one-line message for bad input or missing data.
"""
from __future__ import annotations

import argparse
import sys

from suite.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suite.families.lm.eval_checkpoint", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder (model.pt + config.json)")
    parser.add_argument("--tasks", default="suite_heldout_ppl,suite_heldout_cloze,suite_heldout_cloze_gen",
                        help="comma-separated lm-eval tasks (default: the local held-out tasks; 'none' to skip)")
    parser.add_argument("--source", help="corpus for the local tasks (default: the one in the checkpoint)")
    parser.add_argument("--data-root", help="folder holding the real corpora")
    parser.add_argument("--limit", type=int, help="documents per task (default: all)")
    parser.add_argument("--max-length", type=int, help="context window in tokens (default: the training seq_len)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--download", action="store_true", help="allow fetching Hugging Face data sets")
    parser.add_argument("--decode-lengths", help="comma-separated context lengths for the decode benchmark")
    args = parser.parse_args(argv)
    try:
        from suite.families.lm.checkpoint import load_checkpoint

        try:
            model, tokenizer, meta = load_checkpoint(args.checkpoint, args.device)
        except ValueError as err:
            raise UsageError(str(err)) from None
        tasks = [] if args.tasks.strip().lower() == "none" else [t for t in args.tasks.split(",") if t.strip()]
        if tasks:
            from suite.families.lm.lm_eval_run import run_lm_eval

            source = args.source or meta.get("data", {}).get("source", "kjv")
            try:
                result = run_lm_eval(model, tokenizer, tasks, source=source, data_root=args.data_root,
                                     limit=args.limit, max_length=args.max_length, download=args.download)
            except ValueError as err:
                raise UsageError(str(err)) from None
            print(result["table"])
        if args.decode_lengths:
            import pandas as pd

            from suite.families.lm.decode_bench import decode_benchmark

            rows = decode_benchmark(model, [int(n) for n in args.decode_lengths.split(",")])
            columns = ["context_len", "status", "prefill_ms", "decode_ms_per_token", "state_bytes"]
            print(pd.DataFrame(rows).reindex(columns=columns).to_markdown(index=False, floatfmt=".2f"))
    except UsageError as err:  # includes DataMissingError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
