"""Tools as commands: ``hopper-profile`` (the static sm_90 profile of the EA Triton kernels, without a GPU),
``approx`` (how far EA's order-t Taylor weights are from exact EA) and ``eval-checkpoint`` (lm-eval and decoding
on a saved LM checkpoint). Their libraries are ``suite.attention.ea.hopper_compile``, ``suite.attention.ea.approx``
and ``suite.families.lm.eval_checkpoint``."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from suite.cli.options import comma_list, lengths, positive_int
from suite.errors import UsageError


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 16,64, got {text!r}") from None


def hopper_profile(args: argparse.Namespace) -> int:
    """Compile what the launcher launches for sm_90 and report it; exit 1 when a binary fails the profile."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise UsageError("hopper-profile compiles real kernels: unset TRITON_INTERPRET (interpreted kernels cannot "
                         "be compiled)")
    from suite.attention.ea import hopper_compile

    bad = sorted(set(args.dtypes) - set(hopper_compile.DTYPES))
    if bad:
        raise UsageError(f"--dtypes: unknown {', '.join(bad)}; valid: {', '.join(hopper_compile.DTYPES)}")
    results = hopper_compile.profile(args.dims, args.orders, tuple(args.dtypes), args.generic, args.jobs)
    given = sys.argv[1:] if sys.argv[1:2] == ["hopper-profile"] else ["hopper-profile"] + (
        ["--resources"] if args.resources else []) + (["--out", str(args.out)] if args.out else []) + (
        ["--name", args.name] if args.name != "sm90" else [])
    command = "python run_suite.py " + shlex.join(given)
    if args.out:
        hopper_compile.write_reports(results, args.out, args.name, command)
    if args.json:
        print(json.dumps(results))
    elif args.resources:
        print(hopper_compile.markdown(results, command))
    else:
        for r in results:
            print(hopper_compile.status_line(r))
    return 0 if all(hopper_compile.passes(r) for r in results) else 1


def approx(args: argparse.Namespace) -> int:
    from suite.analysis.tables import pipe_table
    from suite.attention.ea.approx import approximation_table

    table = approximation_table(length=args.length)
    rows = [[f"{row[0]:g}", *(f"{v:.2e}" for v in row[1:])] for row in table.itertuples(index=False)]
    print(pipe_table(list(table.columns), rows))
    return 0


def eval_checkpoint(args: argparse.Namespace) -> int:
    from suite.analysis.tables import pipe_table
    from suite.families.lm.eval_checkpoint import evaluate_checkpoint

    tasks = [] if args.tasks.strip().lower() == "none" else [t for t in args.tasks.split(",") if t.strip()]
    table, rows = evaluate_checkpoint(args.checkpoint, tasks, source=args.source, data_root=args.data_root,
                                      limit=args.limit, max_length=args.max_length, device=args.device,
                                      download=args.download, decode_lengths=args.decode_lengths)
    if table:
        print(table)
    if rows:
        columns = ["context_len", "status", "prefill_ms", "decode_ms_per_token", "state_bytes"]
        cell = lambda v: f"{v:.2f}" if isinstance(v, float) else "-" if v is None else str(v)  # noqa: E731
        print(pipe_table(columns, [[cell(r.get(c)) for c in columns] for r in rows]))
    return 0


def add_parsers(sub) -> None:
    from suite.cli.options import out_dir

    p = sub.add_parser("hopper-profile", help="compile every EA kernel launch for sm_90 (no GPU) and profile it",
                       description="Compile what EA's Triton launcher launches for Hopper (sm_90), without a GPU, "
                                   "and read registers, spills, shared memory, occupancy and bytes per element from "
                                   "each binary (docs/kernels.md). Exit 1 when a binary spills or has an H100 "
                                   "occupancy under 25%.")
    p.add_argument("--resources", action="store_true", help="print the resource table, not ok/FAIL lines")
    p.add_argument("--json", action="store_true", help="print the results as one JSON list")
    p.add_argument("--out", type=out_dir, metavar="DIR", help="directory to write NAME.md and NAME.json into")
    p.add_argument("--name", default="sm90", help="file name (without suffix) of the reports in --out")
    p.add_argument("--dims", type=_ints, default=(16, 32, 64, 128), metavar="D[,D...]", help="head dims")
    p.add_argument("--orders", type=_ints, default=(0, 2, 4, 6), metavar="T[,T...]", help="Taylor orders")
    p.add_argument("--dtypes", type=comma_list, default=["fp32", "bf16", "fp16"], metavar="DT[,DT...]")
    p.add_argument("--generic", action="store_true", help="compile without Triton's argument specialisation")
    p.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1, help="compile processes")
    p.set_defaults(func=hopper_profile)

    p = sub.add_parser("approx", help="how far EA's order-t Taylor weights are from exact EA (relative RMSE)",
                       description="For q and k at several scales (the RMS of each channel's values: 1 is what "
                                   "EAAttention's per-head RMS normalisation gives at initialisation), the relative "
                                   "RMSE of EA's output at orders 0..8 against exact element-wise attention, "
                                   "non-causal, on random inputs (fp64).")
    p.add_argument("--length", type=positive_int, default=128, help="sequence length (default: 128)")
    p.set_defaults(func=approx)

    p = sub.add_parser("eval-checkpoint", help="lm-eval and decoding on a saved LM checkpoint",
                       description="Run lm-eval (the local held-out tasks by default, or any cached standard task) "
                                   "on the corpus the checkpoint was trained on (from its metadata, unless --source "
                                   "says otherwise), and optionally the decode benchmark.")
    p.add_argument("checkpoint", help="checkpoint folder (model.pt + config.json)")
    p.add_argument("--tasks", default="suite_heldout_ppl,suite_heldout_cloze,suite_heldout_cloze_gen",
                   help="comma-separated lm-eval tasks (default: the local held-out tasks; 'none' to skip)")
    p.add_argument("--source", help="corpus for the local tasks (default: the one in the checkpoint)")
    p.add_argument("--data-root", help="folder holding the real corpora")
    p.add_argument("--limit", type=positive_int, help="documents per task (default: all)")
    p.add_argument("--max-length", type=positive_int, help="context window in tokens (default: the training seq_len)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--download", action="store_true", help="allow fetching Hugging Face data sets")
    p.add_argument("--decode-lengths", type=lengths, metavar="L[,L...]",
                   help="context lengths for the decode benchmark")
    p.set_defaults(func=eval_checkpoint)
