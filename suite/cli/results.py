"""``run_suite.py compare`` and ``report``: tables and reports from records, nothing else."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suite.errors import UsageError


def compare(args: argparse.Namespace) -> int:
    from suite.harness.compare import NO_LRA_TASKS, load_runs, lra_frame, render

    try:
        frame = load_runs(args.runs)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.metric:
        names = sorted({name for metrics in frame["metrics"] for name in metrics})
        if args.metric not in names:
            raise UsageError(f"no record has metric {args.metric!r}; metrics in these runs: {', '.join(names)}")
    text = render(frame, args.metric, args.format, scaling=not args.no_scaling, reference=args.reference)
    if text:
        sys.stdout.write(text)
    if args.reference == "lra" and args.format == "csv" and lra_frame(frame).empty:
        print(NO_LRA_TASKS, file=sys.stderr)  # stdout stays plain CSV
    return 0


def report(args: argparse.Namespace) -> int:
    from suite.harness.report import write_report

    try:
        path = write_report(args.run)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {path}")
    return 0


def add_parsers(sub) -> None:
    from suite.harness.compare import FORMATS, REFERENCES

    p = sub.add_parser("compare", help="tables: mean ± std over seeds per task, L and attention, across runs",
                       description="Pivot the records of one or more runs: rows task and L, columns attention, cells\n"
                                   "mean ± std over seeds (n seeds). Two runs add a delta column per attention, marked *\n"
                                   "where it exceeds the seed spread. Substitute-data rows are marked †. Also prints the\n"
                                   "log-log slope against L and the crossover length against softmax.\n"
                                   "--reference lra adds the published LRA accuracies (not re-run) beside the LRA rows.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories or records .jsonl files")
    p.add_argument("--metric", help="metric to tabulate (default: each task's main metric)")
    p.add_argument("--format", choices=FORMATS, default="rich",
                   help="rich (console table), markdown, or csv (numbers in long form) (default: rich)")
    p.add_argument("--no-scaling", action="store_true", help="leave out the slope / crossover table")
    p.add_argument("--reference", choices=REFERENCES,
                   help="lra: add the published LRA test accuracies (Transformer, Linear Trans., Performer from LRA "
                        "Table 1; S4 and Mega from their papers) beside the measured lra-* rows, labelled "
                        "'published' (not re-run here) with their sources")
    p.set_defaults(func=compare)

    p = sub.add_parser("report", help="write DIR/report.md with tables and plots (PNG) of a run",
                       description="Write DIR/report.md: the comparison tables, scaling against L, failed jobs, and\n"
                                   "PNG plots in DIR/plots/ (time and memory against L, quality per attention).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="DIR", help="a run directory (holding records.jsonl)")
    p.set_defaults(func=report)
