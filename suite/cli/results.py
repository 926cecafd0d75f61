"""``run_suite.py compare`` and ``report``: tables and reports from records, nothing else."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suite.errors import UsageError


def compare(args: argparse.Namespace) -> int:
    from suite.analysis.compare import NO_LRA_TASKS, render
    from suite.analysis.frames import DEFAULT_BASELINE, check_baseline, load_runs, lra_frame

    try:
        frame = load_runs(args.runs)
        if args.baseline is not None:
            check_baseline(frame, args.baseline)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.metric:
        names = sorted({name for metrics in frame["metrics"] for name in metrics})
        if args.metric not in names:
            raise UsageError(f"no record has metric {args.metric!r}; metrics in these runs: {', '.join(names)}")
    baseline = args.baseline or DEFAULT_BASELINE
    text = render(frame, args.metric, args.format, scaling=not args.no_scaling, reference=args.reference,
                  baseline=baseline)
    if text:
        sys.stdout.write(text)
    if args.reference == "lra" and args.format == "csv" and lra_frame(frame).empty:
        print(NO_LRA_TASKS, file=sys.stderr)  # stdout stays plain CSV
    return 0


def report(args: argparse.Namespace) -> int:
    from suite.analysis.report import write_report

    try:
        path = write_report(args.runs, args.out, args.baseline)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {path}")
    return 0


COMPARE_DESCRIPTION = """\
One table per task: rows L and attention (probes last, then run), cells the mean over seeds ± the
half-width of its 95% confidence interval (Student t; none for one seed), the paired difference by seed to
the baseline attention with its 95% CI and in % (marked * better / worse where the interval excludes 0),
and with several runs each run's difference to the first (Welch's t, marked alike). Only columns with
values are shown; memory in MB/GB, throughput as 12.3k tok/s, times in ms. Substitute-data rows are
marked †. Also prints the log-log slope against L and the crossover length against the baseline.
--reference lra adds the published LRA accuracies (not re-run) beside the LRA rows."""

REPORT_DESCRIPTION = """\
Write DIR/report.md: the comparison tables (as compare), a cost table per family, scaling against L,
failed jobs, and PNG plots in DIR/plots/ (time and memory against L, quality per attention, and the
learning curves the runs saved in RUN/curves/: training loss and the main metric against tokens seen,
seeds as a min-max band). One run: DIR is the run. Several runs are drawn together (line style per run)
and compared run to run; they need --out DIR."""


def add_parsers(sub) -> None:
    from suite.analysis import DEFAULT_BASELINE, FORMATS, REFERENCES

    baseline_help = (f"the attention every other is compared with, paired by seed (default: {DEFAULT_BASELINE}); "
                     "probes (probe:...) cannot be the baseline")
    p = sub.add_parser("compare", help="tables: mean ± 95%% CI over seeds per task, L and attention, and the "
                                       "differences to a baseline attention and across runs",
                       description=COMPARE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories or records .jsonl files")
    p.add_argument("--metric", help="metric to tabulate (default: each task's main metric)")
    p.add_argument("--baseline", metavar="NAME", help=baseline_help)
    p.add_argument("--format", choices=FORMATS, default="rich",
                   help="rich (console tables), markdown, or csv (the same columns in long form: one row per run, "
                        "task, L and attention, numbers unrounded) (default: rich)")
    p.add_argument("--no-scaling", action="store_true", help="leave out the slope / crossover table")
    p.add_argument("--reference", choices=REFERENCES,
                   help="lra: add the published LRA test accuracies (Transformer, Linear Trans., Performer from LRA "
                        "Table 1; S4 and Mega from their papers) beside the measured lra-* rows, labelled "
                        "'published' (not re-run here) with their sources")
    p.set_defaults(func=compare)

    p = sub.add_parser("report", help="write report.md with tables, plots (PNG) and learning curves of one or more "
                                      "runs",
                       description=REPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories (holding records.jsonl)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="folder for report.md and plots/ (default: the run, for one run; required for several)")
    p.add_argument("--baseline", metavar="NAME", help=baseline_help)
    p.set_defaults(func=report)
