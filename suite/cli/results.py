"""``run_suite.py compare``, ``report`` and ``regenerate``: tables and reports from records, nothing else.

``regenerate`` rewrites (or with ``--check`` verifies) every generated comparison a results folder commits, as
``results/generated.yaml`` lists them (``{file, compare: [arguments]}``, paths relative to the repository),
so that no committed table is typed by hand or left behind by a change of the analysis.
"""
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
        names = sorted({name.removeprefix("val_").removeprefix("test_") for metrics in frame["metrics"]
                        for name in metrics})
        if args.metric not in names:
            raise UsageError(f"no record has metric {args.metric!r}; metrics in these runs: {', '.join(names)}")
    baseline = args.baseline or DEFAULT_BASELINE
    text = render(frame, args.metric, args.format, scaling=not args.no_scaling, reference=args.reference,
                  baseline=baseline, split=args.split)
    if text:
        sys.stdout.write(text)
    if args.reference == "lra" and args.format == "csv" and lra_frame(frame).empty:
        print(NO_LRA_TASKS, file=sys.stderr)  # stdout stays plain CSV
    return 0


MANIFEST = Path("results") / "generated.yaml"


def _compare_output(arguments: list[str], root: Path) -> str:
    """What ``run_suite.py compare ARGUMENTS --format markdown`` prints, run from ``root``."""
    import contextlib
    import io
    import os

    parser = argparse.ArgumentParser(prog="run_suite.py", add_help=False)
    add_parsers(parser.add_subparsers(dest="command"))
    buffer = io.StringIO()
    here = Path.cwd()
    try:
        os.chdir(root)
        args = parser.parse_args(["compare", *arguments, "--format", "markdown"])
        with contextlib.redirect_stdout(buffer):
            compare(args)
    finally:
        os.chdir(here)
    return buffer.getvalue()


def regenerate(args: argparse.Namespace) -> int:
    import yaml

    manifest = args.manifest
    if not manifest.is_file():
        raise UsageError(f"{manifest}: no such manifest (run from the repository root, or pass --manifest)")
    root = manifest.resolve().parent.parent
    try:
        entries = yaml.safe_load(manifest.read_text(encoding="utf-8"))["generated"]
        pairs = [(str(e["file"]), [str(a) for a in e["compare"]]) for e in entries]
    except (KeyError, TypeError, yaml.YAMLError) as err:
        raise UsageError(f"{manifest}: not a list of {{file, compare}} under 'generated' ({err})") from None
    stale = []
    for file, arguments in pairs:
        text = _compare_output(arguments, root)
        target = root / file
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(file)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {file}")
    if stale:
        print(f"out of date (run `python run_suite.py regenerate`): {', '.join(stale)}", file=sys.stderr)
        return 1
    if args.check:
        print(f"{len(pairs)} generated file(s) match their records")
    return 0


def report(args: argparse.Namespace) -> int:
    from suite.analysis.report import write_report

    try:
        path = write_report(args.runs, args.out, args.baseline, args.split)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {path}")
    return 0


COMPARE_DESCRIPTION = """\
One table per task and configuration (profile, --set values, data: never averaged or paired across), on
the test split unless --split val: rows L and attention (probes last, then run), cells the mean over seeds
± the half-width of its 95% confidence interval (Student t; none for one seed), the paired difference by
seed to the baseline attention with its 95% CI and in %, the same difference with the test set's sampling
error added (where the records hold per-example outcomes), the smallest detectable difference (MDE), and
with several runs each run's difference to the first (Welch's t). Marks (* better / worse) are
Holm-adjusted over each table's comparisons, whose number its heading gives. Only columns with values are
shown; memory in MB/GB, throughput as 12.3k tok/s, times in ms. Substitute-data rows are marked †. Also
prints the QK-norm control (EA vs softmax and vs softmax:qk_norm=true), the log-log slope against L and
the crossover length against the baseline. --reference lra adds the published LRA accuracies (not
re-run) beside the LRA rows."""

REPORT_DESCRIPTION = """\
Write DIR/report.md: the comparison tables (as compare), a cost table per family, scaling against L,
failed jobs, and PNG plots in DIR/plots/ (time and memory against L, quality per attention, and the
learning curves the runs saved in RUN/curves/: training loss and the main metric against tokens seen,
seeds as a min-max band). One run: DIR is the run. Several runs are drawn together (line style per run)
and compared run to run; they need --out DIR."""


def add_parsers(sub) -> None:
    from suite.analysis import DEFAULT_BASELINE, FORMATS, REFERENCES
    from suite.run.records import SPLITS

    baseline_help = (f"the attention every other is compared with, paired by seed (default: {DEFAULT_BASELINE}); "
                     "probes (probe:...) cannot be the baseline")
    split_help = ("the held-out split of the training jobs' metrics: test (read once, at the end of each job) or val "
                  "(the split every choice was made on) (default: test)")
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
    p.add_argument("--split", choices=SPLITS, default="test", help=split_help)
    p.set_defaults(func=compare)

    p = sub.add_parser("report", help="write report.md with tables, plots (PNG) and learning curves of one or more "
                                      "runs",
                       description=REPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories (holding records.jsonl)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="folder for report.md and plots/ (default: the run, for one run; required for several)")
    p.add_argument("--baseline", metavar="NAME", help=baseline_help)
    p.add_argument("--split", choices=SPLITS, default="test", help=split_help)
    p.set_defaults(func=report)

    p = sub.add_parser("regenerate", help="rewrite the committed comparisons from their records "
                                          f"({MANIFEST} lists them); --check: fail on any difference")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each file that differs")
    p.add_argument("--manifest", type=Path, default=MANIFEST, metavar="FILE",
                   help=f"the list of generated files (default: {MANIFEST})")
    p.set_defaults(func=regenerate)
