"""``run_suite.py list``, ``run TASK`` and ``suite``: tasks, their hyperparameters, and running their jobs.

Everything a night could trip over is resolved before the first job: task files against their builders'
declared hyperparameters, every attention spec completely, ``--set`` overrides, each builder's own checks
(e.g. lm-eval task names), the device, the data root and the run directory.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from suite.cli.options import attention_specs, comma_list, key_value, lengths, out_dir, positive_int, seconds
from suite.console import make_console
from suite.data import DATA_ROOT_ENV
from suite.errors import UsageError
from suite.tasks import PROFILES


def _lm_eval_task_list(text: str) -> list[str]:
    """``a,b`` -> [a, b]; ``none`` -> [] (no lm-eval)."""
    if text.strip().lower() == "none":
        return []
    return comma_list(text)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attn", metavar="A;B",
                   help="attention specs, separated by ';' (or ','; a bare key=value continues the spec before it), "
                        "e.g. 'ea:order=2,qk_norm=false;softmax' (default: each task's own list)")
    p.add_argument("--profile", choices=PROFILES, default="smoke",
                   help="smoke: seconds per job on a CPU; cpu: minutes per job; full: the published settings, "
                        "for GPUs (default: smoke)")
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="run seeds 0..N-1 of every job (default: 1)")
    p.add_argument("--seq-len", type=lengths, metavar="L[,L...]",
                   help="sequence lengths, one job per length (default: the profile's lengths)")
    p.add_argument("--set", dest="overrides", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override a declared hyperparameter of the tasks that declare it, e.g. --set lr=3e-4 "
                        "--set depth=2 (repeatable; part of the job key; `list --hparams` lists them)")
    p.add_argument("--rehearse", action="store_true",
                   help="run the profile end to end at a couple of steps, batches and examples per job (each "
                        "family's rehearsal overrides, recorded in config.overrides) and at its shortest L only: "
                        "e.g. --profile full on a CPU in minutes, before a GPU night")
    p.add_argument("--out", type=out_dir, metavar="DIR",
                   help="run directory for records.jsonl, logs/ and artifacts/ "
                        "(default: results/runs/<timestamp>-<task or suite>/)")
    p.add_argument("--data-root", metavar="DIR", default=os.environ.get(DATA_ROOT_ENV),
                   help=f"root of the real data sets (default: ${DATA_ROOT_ENV}, now "
                        f"{os.environ.get(DATA_ROOT_ENV) or 'unset'}); without it, tasks use their embedded defaults")
    p.add_argument("--download", action="store_true",
                   help="allow fetching a missing data set (CIFAR through torchvision, an hf:NAME corpus, a standard "
                        "lm-eval task); nothing is downloaded without it")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (cuda when a GPU is visible), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--job-timeout", type=seconds, metavar="S",
                   help="stop a job after S seconds and record it as timeout (default: no limit)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: skip jobs already ok there, re-run the others")
    p.add_argument("--tensorboard", type=out_dir, metavar="DIR",
                   help="also write every training job's learning curve to TensorBoard event files under DIR as it "
                        "trains (`tensorboard --logdir DIR` to watch a night live); curves are always saved to "
                        "OUT/curves/ and drawn by `report`")
    lm = p.add_argument_group(
        "LM tasks", "LM jobs save each trained model to OUT/artifacts/<job>/checkpoint/, for\n"
                    "`python -m suite.families.lm.eval_checkpoint`.")
    lm.add_argument("--lm-eval-tasks", type=_lm_eval_task_list, metavar="T,U",
                    help="lm-eval tasks to run after training, e.g. suite_heldout_ppl,suite_heldout_cloze or, with "
                         "lm-eval's standard tasks in the Hugging Face cache, lambada_openai,hellaswag; 'none' "
                         "skips lm-eval (default: the task file's lm_eval_tasks). The same as "
                         "--set lm_eval_tasks=[T,U]: recorded in config.hparams and part of the job key")


def _load_tasks() -> dict[str, Any]:
    from suite.tasks import load_tasks

    return load_tasks()


def cmd_list(args: argparse.Namespace) -> int:
    """Every task with family, lengths per profile, data source and main metric; with --hparams, the declared
    hyperparameters of each builder of the listed tasks."""
    from rich.table import Table

    from suite.tasks import select_tasks

    tasks = {t.name: t for t in select_tasks(_load_tasks(), families=args.family)} if args.family else _load_tasks()
    console = make_console()
    if args.hparams:
        builders = {t.job_builder.name: t.job_builder for t in tasks.values() if t.job_builder is not None}
        for builder in builders.values():
            table = Table(title=f"builder {builder.name}: {builder.description} "
                                f"(tasks: {', '.join(t.name for t in tasks.values() if t.builder == builder.name)})")
            for name in ("hyperparameter", "expected", "default"):
                table.add_column(name, overflow="fold")
            table.add_column("meaning", ratio=1, min_width=20)
            for p in builder.hparams.values():
                table.add_row(p.name, p.expected(), "-" if p.default is None else str(p.default), p.help)
            console.print(table)
        return 0
    table = Table(title=f"{len(tasks)} tasks")
    for name in ("task", "family", "L (smoke)", "L (cpu)", "L (full)", "data", "metric", "attentions"):
        table.add_column(name, overflow="fold")
    table.add_column("description", ratio=1, min_width=20)
    for task in tasks.values():
        attentions = task.attentions if isinstance(task.attentions, str) else ",".join(task.attentions)
        table.add_row(task.name, task.family, *(",".join(map(str, task.seq_lens(p))) for p in PROFILES),
                      task.data["source"], f"{task.metric} {'↑' if task.direction == 'max' else '↓'}", attentions,
                      task.description)
    console.print(table)
    return 0


def _resolve_device(device: str) -> str:
    from suite.harness.execute import resolve_device

    try:
        return resolve_device(device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key, value in args.overrides:
        if key in overrides:
            raise UsageError(f"--set {key} is given twice")
        overrides[key] = value
    if args.lm_eval_tasks is not None:
        if "lm_eval_tasks" in overrides:
            raise UsageError("give --lm-eval-tasks or --set lm_eval_tasks=..., not both")
        overrides["lm_eval_tasks"] = args.lm_eval_tasks
    return overrides


def _run_tasks(args: argparse.Namespace, tasks: list, stop_on_skip: bool, name: str) -> int:
    from suite.harness.runner import (default_out_dir, plan_jobs, print_summary, run_in_process, run_jobs,
                                      start_job_server)

    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR (the run to continue)")
    if args.data_root and not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root {args.data_root}: no such directory")
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not torchrun:
        start_job_server()
    attentions = attention_specs(args.attn) if args.attn else None
    jobs = plan_jobs(tasks, args.profile, attentions, args.seeds, args.seq_len, overrides=_overrides(args),
                     rehearse=args.rehearse)
    out = args.out or default_out_dir(name)
    console = make_console()
    if torchrun:  # launched by torchrun: every rank runs the jobs under DDP
        summary = run_in_process(jobs, out, device=args.device, data_root=args.data_root, resume=args.resume,
                                 download=args.download, console=console, tensorboard=args.tensorboard)
        if int(os.environ.get("RANK", "0")) != 0:
            return 1 if summary.failed() else 0
    else:
        device = _resolve_device(args.device)
        console.print(f"{len(jobs)} jobs on {device}, profile {args.profile}; records in {out}/records.jsonl")
        summary = run_jobs(jobs, out, device=device, data_root=args.data_root, job_timeout=args.job_timeout,
                           resume=args.resume, stop_on_skip=stop_on_skip, download=args.download, console=console,
                           tensorboard=args.tensorboard)
    print_summary(summary, console)
    if summary.interrupted:
        return 128 + int(summary.signal)  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    if summary.stopped:
        return 1
    if stop_on_skip and summary.skipped():
        raise UsageError(summary.skipped()[0]["error"])
    return 1 if summary.failed() else 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one task's jobs (each attention x seed x length)."""
    from suite.tasks import select_tasks

    return _run_tasks(args, select_tasks(_load_tasks(), [args.task]), stop_on_skip=True, name=args.task)


def cmd_suite(args: argparse.Namespace) -> int:
    """Run every selected task's jobs."""
    from suite.tasks import select_tasks

    return _run_tasks(args, select_tasks(_load_tasks(), args.tasks, args.families), stop_on_skip=False, name="suite")


def add_parsers(sub) -> None:
    p = sub.add_parser("list", help="list every task with family, lengths per profile and data source",
                       description="List every task (suite/tasks/<family>/<name>.yaml) with family, the lengths of each "
                                   "profile, data source and metric; --hparams: the hyperparameters each builder "
                                   "declares, with type, default and meaning.")
    p.add_argument("--family", type=comma_list, metavar="F,G", help="only these families (vit, lra, lm, kernels)")
    p.add_argument("--hparams", action="store_true", help="list the declared hyperparameters instead of the tasks")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run one task: every attention x seed x length, one child process per job",
                       description="Run one task's jobs (each attention x seed x length) and append a record per job.\n"
                                   "Exits 1 if a job failed, 2 if its data set is missing (with instructions).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="task name (see `run_suite.py list`)")
    add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("suite", help="run every task (or the chosen ones) overnight; --resume continues",
                       description="Run every task x attention x seed x length job, each in its own child process.\n"
                                   "A crash, OOM, divergence, timeout or missing data set is recorded and the suite\n"
                                   "goes on; Ctrl-C stops after recording what finished; --resume --out DIR continues.\n"
                                   "Exits 1 if a job failed (skipped jobs, i.e. missing data, do not count).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", type=comma_list, metavar="F,G", help="only tasks of these families")
    p.add_argument("--tasks", type=comma_list, metavar="T,U", help="only these tasks")
    add_run_options(p)
    p.set_defaults(func=cmd_suite)
