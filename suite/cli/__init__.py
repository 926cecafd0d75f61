"""``run_suite.py``: argument parsing and dispatch. User errors print one line and exit 2.

Exit codes: 0 every job ok; 1 some job failed (oom, diverged, timeout, error); 2 bad usage (unknown task or
attention, bad option, bad task file, missing data); 130 interrupted by Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from suite.cli.options import PROFILES, Parser, comma_list, lengths, positive_int, seconds
from suite.console import make_console
from suite.data import DATA_ROOT_ENV as DATA_ENV
from suite.data import DOWNLOAD_ENV, download_allowed
from suite.errors import UsageError
from suite.lm import CHECKPOINT_ENV, LM_EVAL_TASKS_ENV, lm_eval_tasks_from_env


def _lm_eval_task_list(text: str) -> list[str]:
    """``a,b`` -> [a, b]; ``none`` -> [] (no lm-eval)."""
    if text.strip().lower() == "none":
        return []
    return comma_list(text)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attn", type=comma_list, metavar="A,B",
                   help="attention specs to run, e.g. ea,softmax,ea:order=2 (default: each task's own list)")
    p.add_argument("--profile", choices=PROFILES, default="smoke",
                   help="smoke: seconds per job on a CPU; cpu: minutes per job; full: the published settings, "
                        "for GPUs (default: smoke)")
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="run seeds 0..N-1 of every job (default: 1)")
    p.add_argument("--seq-len", type=lengths, metavar="L[,L...]",
                   help="sequence lengths, one job per length (default: the profile's lengths)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="run directory for records.jsonl and logs/ (default: results/runs/<timestamp>/)")
    p.add_argument("--data-root", metavar="DIR", default=os.environ.get(DATA_ENV),
                   help=f"root of the real data sets (default: ${DATA_ENV}, now "
                        f"{os.environ.get(DATA_ENV) or 'unset'}); without it, tasks use their embedded defaults")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (cuda when a GPU is visible), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--job-timeout", type=seconds, metavar="S",
                   help="stop a job after S seconds and record it as timeout (default: no limit)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: skip jobs already ok there, re-run the others")
    lm = p.add_argument_group(
        "LM tasks", f"LM jobs save each trained model to OUT/checkpoints/<task>_<attention>_L<L>_s<seed>/\n"
                    f"(${CHECKPOINT_ENV} names another folder), for `python -m suite.lm.eval_checkpoint`.")
    lm.add_argument("--lm-eval-tasks", type=_lm_eval_task_list, metavar="T,U",
                    help="lm-eval tasks to run after training, e.g. suite_heldout_ppl,suite_heldout_cloze or, with "
                         "lm-eval's standard tasks in the Hugging Face cache, lambada_openai,hellaswag; 'none' "
                         f"skips lm-eval (default: ${LM_EVAL_TASKS_ENV} if set, now "
                         f"{os.environ.get(LM_EVAL_TASKS_ENV) or 'unset'}, else the task file's lm_eval_tasks). "
                         "Recorded in config.hparams.lm_eval_tasks and part of the job key")
    lm.add_argument("--download", action="store_true", default=download_allowed(),
                    help="allow fetching a Hugging Face data set (an hf:NAME corpus, a standard lm-eval task) that "
                         f"is not in the local cache; nothing is downloaded without it (default: off unless "
                         f"${DOWNLOAD_ENV}=1, now {os.environ.get(DOWNLOAD_ENV) or 'unset'})")


# -- commands -----------------------------------------------------------------------------------------

def _load_tasks():
    from suite.tasks import load_tasks

    return load_tasks()


def cmd_list(args: argparse.Namespace) -> int:
    """Print every task with family, lengths, data source and main metric."""
    from rich.table import Table

    tasks = _load_tasks()
    if args.family:
        tasks = {n: t for n, t in tasks.items() if t.family in args.family}
    table = Table(title=f"{len(tasks)} tasks")
    for name in ("task", "family", "L", "L (smoke)", "data", "metric", "attentions"):
        table.add_column(name, overflow="fold")
    table.add_column("description", ratio=1, min_width=20)
    for task in tasks.values():
        attentions = task.attentions if isinstance(task.attentions, str) else ",".join(task.attentions)
        table.add_row(task.name, task.family, ",".join(map(str, task.seq_len)),
                      ",".join(map(str, task.seq_lens("smoke"))), task.data["source"],
                      f"{task.metric} {'↑' if task.direction == 'max' else '↓'}", attentions, task.description)
    make_console().print(table)
    return 0


def _attention_specs(names: list[str] | None) -> list[str] | None:
    if not names:
        return None
    from suite.attention import canonical_spec

    specs = []
    for name in names:
        try:
            specs.append(canonical_spec(name))
        except ValueError as err:
            raise UsageError(str(err)) from None
    return specs


def _check_lm_eval_tasks(names: list[str], tasks: list, explicit: bool) -> None:
    """UsageError for lm-eval task names lm-eval does not know, or for --lm-eval-tasks without an LM task.

    The suite's local tasks are known without lm-eval; any other name needs lm-eval's index of its standard
    tasks (about 20 s), which is cheaper than training every model before finding out.
    """
    from suite.harness.runner import LM_EVAL_BUILDERS

    if not any(task.builder in LM_EVAL_BUILDERS for task in tasks):
        if explicit:
            raise UsageError(f"--lm-eval-tasks applies to the LM training tasks (builder "
                             f"{', '.join(LM_EVAL_BUILDERS)}); none of {', '.join(t.name for t in tasks)} is one")
        return
    from suite.lm.lm_eval_run import LOCAL_TASKS, TASK_DIR

    standard = [name for name in names if name not in LOCAL_TASKS]
    if not standard:
        return
    import difflib

    from lm_eval.tasks import TaskManager

    print(f"checking the lm-eval task names {', '.join(standard)} (indexing lm-eval's tasks takes ~20 s)")
    known = TaskManager(include_path=str(TASK_DIR), include_defaults=True).all_tasks
    unknown = [name for name in standard if name not in known]
    if unknown:
        hints = [f"{n} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(n, known, n=1)) else n
                 for n in unknown]
        raise UsageError(f"--lm-eval-tasks: unknown lm-eval task(s) {', '.join(hints)}; local tasks: "
                         f"{', '.join(LOCAL_TASKS)}, or any task `lm-eval ls tasks` lists")


def _resolve_device(device: str) -> str:
    from suite.harness.execute import resolve_device

    try:
        return resolve_device(device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from None


def _run_tasks(args: argparse.Namespace, tasks: list, stop_on_skip: bool) -> int:

    from suite.harness.runner import (default_out_dir, plan_jobs, print_summary, run_in_process, run_jobs,
                                      start_job_server)

    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR (the run to continue)")
    if args.data_root and not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root {args.data_root}: no such directory")
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not torchrun:
        start_job_server()
    lm_eval_tasks = args.lm_eval_tasks if args.lm_eval_tasks is not None else lm_eval_tasks_from_env()
    if lm_eval_tasks is not None:
        _check_lm_eval_tasks(lm_eval_tasks, tasks, explicit=args.lm_eval_tasks is not None)
    jobs = plan_jobs(tasks, args.profile, _attention_specs(args.attn), args.seeds, args.seq_len,
                     lm_eval_tasks=lm_eval_tasks)
    out = args.out or default_out_dir()
    console = make_console()
    if torchrun:  # launched by torchrun: every rank runs the jobs under DDP
        summary = run_in_process(jobs, out, device=args.device, data_root=args.data_root, resume=args.resume,
                                 download=args.download, console=console)
        if int(os.environ.get("RANK", "0")) != 0:
            return 1 if summary.failed() else 0
    else:
        device = _resolve_device(args.device)
        console.print(f"{len(jobs)} jobs on {device}, profile {args.profile}; records in {out}/records.jsonl")
        summary = run_jobs(jobs, out, device=device, data_root=args.data_root, job_timeout=args.job_timeout,
                           resume=args.resume, stop_on_skip=stop_on_skip, download=args.download, console=console)
    print_summary(summary, console)
    if summary.interrupted:
        return 130
    if stop_on_skip and summary.skipped():
        raise UsageError(summary.skipped()[0]["error"])
    return 1 if summary.failed() else 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one task's jobs (each attention x seed x length)."""
    from suite.tasks import select_tasks

    return _run_tasks(args, select_tasks(_load_tasks(), [args.task]), stop_on_skip=True)


def cmd_suite(args: argparse.Namespace) -> int:
    """Run every selected task's jobs."""
    from suite.tasks import select_tasks

    return _run_tasks(args, select_tasks(_load_tasks(), args.tasks, args.families), stop_on_skip=False)


def cmd_compare(args: argparse.Namespace) -> int:
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


def cmd_report(args: argparse.Namespace) -> int:
    from suite.harness.report import write_report

    try:
        path = write_report(args.run)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {path}")
    return 0


def cmd_data_generate(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items() if k in args.generator_options and v is not None}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dataset == "lra-listops":
        from suite.data.lra.listops import generate_listops as generate
    else:
        from suite.data.lra.pathfinder import generate_pathfinder as generate
    try:
        result = generate(args.out, **options)
    except ValueError as err:
        raise UsageError(f"data generate {args.dataset}: {err}") from None
    print(f"{args.dataset}: wrote {args.out}")
    for key, value in result.items():
        print(f"  {key}: {value}")
    return 0


# -- the parser ---------------------------------------------------------------------------------------

def _add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="generate the synthetic LRA data sets (ListOps, Pathfinder)",
                       description="Generate the synthetic LRA data sets in the layout the real loaders read.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser)
    data_sub.required = True
    gen = data_sub.add_parser("generate", help="write a data set to --out",
                              description="Write a synthetic LRA data set to --out (put it under --data-root to use it).")
    datasets = gen.add_subparsers(dest="dataset", metavar="DATASET", parser_class=Parser)
    datasets.required = True

    listops = datasets.add_parser("lra-listops", help="ListOps TSVs ({basic}_{train,val,test}.tsv) as LRA generates them",
                                  description="ListOps as LRA generates it: basic_{train,val,test}.tsv in --out.")
    listops.add_argument("--out", type=Path, required=True, metavar="DIR",
                         help="output directory (e.g. DATA/lra/listops-1000)")
    listops.add_argument("--num-train", type=int, help="training examples (default: LRA's 96000)")
    listops.add_argument("--num-val", type=int, help="validation examples (default: LRA's 2000)")
    listops.add_argument("--num-test", type=int, help="test examples (default: LRA's 2000)")
    listops.add_argument("--seed", type=int, help="random seed (default: 0)")
    listops.add_argument("--min-length", type=int, help="shortest sequence in tokens (default: LRA's 500)")
    listops.add_argument("--max-length", type=int, help="longest sequence in tokens (default: LRA's 2000)")
    listops.set_defaults(func=cmd_data_generate,
                         generator_options=("num_train", "num_val", "num_test", "seed", "min_length", "max_length"))

    pathfinder = datasets.add_parser("lra-pathfinder", help="Pathfinder images and metadata as the LRA generator draws them",
                                     description="Pathfinder: pathfinder{R}/curv_*/{imgs,metadata} under --out.")
    pathfinder.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (e.g. DATA/lra)")
    pathfinder.add_argument("--resolution", type=int, help="image side in pixels (default: 32; Path-X uses 128)")
    pathfinder.add_argument("--contour-length", type=int,
                            help="paddles per contour: 6 easy, 9 intermediate, 14 hard (default: 14, as LRA)")
    pathfinder.add_argument("--num", type=int, help="number of images (default: LRA's 200000)")
    pathfinder.add_argument("--seed", type=int, help="random seed (default: 0)")
    pathfinder.set_defaults(func=cmd_data_generate, generator_options=("resolution", "contour_length", "num", "seed"))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="run_suite.py", description="Element-wise attention benchmark suite.",
                     epilog="exit codes: 0 all jobs ok, 1 some job failed, 2 bad usage, 130 interrupted")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("list", help="list every task with family, L and data source",
                       description="List every task (tasks/<family>/<name>.yaml) with family, L, data source and metric.")
    p.add_argument("--family", type=comma_list, metavar="F,G", help="only these families (vit, lra, lm, kernels)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run one task: every attention x seed x length, one child process per job",
                       description="Run one task's jobs (each attention x seed x length) and append a record per job.\n"
                                   "Exits 1 if a job failed, 2 if its data set is missing (with instructions).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="task name (see `run_suite.py list`)")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("suite", help="run every task (or the chosen ones) overnight; --resume continues",
                       description="Run every task x attention x seed x length job, each in its own child process.\n"
                                   "A crash, OOM, divergence, timeout or missing data set is recorded and the suite\n"
                                   "goes on; Ctrl-C stops after recording what finished; --resume --out DIR continues.\n"
                                   "Exits 1 if a job failed (skipped jobs, i.e. missing data, do not count).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", type=comma_list, metavar="F,G", help="only tasks of these families")
    p.add_argument("--tasks", type=comma_list, metavar="T,U", help="only these tasks")
    _add_run_options(p)
    p.set_defaults(func=cmd_suite)

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
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="write DIR/report.md with tables and plots (PNG) of a run",
                       description="Write DIR/report.md: the comparison tables, scaling against L, failed jobs, and\n"
                                   "PNG plots in DIR/plots/ (time and memory against L, quality per attention).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="DIR", help="a run directory (holding records.jsonl)")
    p.set_defaults(func=cmd_report)

    from suite.cli import bench

    p = sub.add_parser("bench", help="time attentions against sequence length (fwd, fwd+bwd, decode), checked first",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)

    _add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
