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

from suite.cli.options import (
    attention_specs,
    comma_list,
    key_value,
    lengths,
    out_dir,
    positive_float,
    positive_int,
    seconds,
)
from suite.console import make_console
from suite.errors import UsageError
from suite.settings import DATA_ROOT_ENV
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
    p.add_argument("--plan", action="store_true",
                   help="print every job (data status, estimated time and peak memory, done in --out) and the "
                        "totals for --workers, and run nothing")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="--plan output: a table, or JSON / CSV for scripts (default: table)")
    p.add_argument("--history", type=comma_list, default=[], metavar="DIR[,DIR]",
                   help="earlier run directories (or records files) whose records estimate job times, beside --out")
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
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="run up to N jobs at once, longest first (default: one per GPU of --devices; 1 on a CPU, "
                        "where N workers split the cores between them)")
    p.add_argument("--devices", type=comma_list, metavar="cuda:0,cuda:1",
                   help="GPUs to spread the jobs over, one job per device at a time, each pinned through "
                        "CUDA_VISIBLE_DEVICES (default with --device cuda: every visible GPU)")
    slurm = p.add_argument_group(
        "Slurm", "--launcher slurm submits the jobs as one Slurm job array through submitit, waits and records\n"
                 "each as it ends (or --no-wait, then `suite --collect --out DIR`); submitit-local runs the same\n"
                 "path on this machine with submitit's local executor.")
    slurm.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
                       help="local: the worker pool on this machine (default); slurm: a Slurm job array")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--time", type=positive_int, default=60, metavar="MIN",
                       help="time limit per job in minutes (default: 60); a job past it is recorded as timeout")
    slurm.add_argument("--gpus-per-job", type=int, default=0, metavar="N", help="GPUs per job (default: 0)")
    slurm.add_argument("--cpus-per-job", type=positive_int, default=1, metavar="N", help="CPUs per job (default: 1)")
    slurm.add_argument("--mem", type=positive_float, metavar="GB", help="memory per job in GB (default: the cluster's)")
    slurm.add_argument("--array-parallelism", type=positive_int, default=64, metavar="N",
                       help="at most N array tasks at once (default: 64)")
    slurm.add_argument("--sbatch", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="an extra sbatch parameter, e.g. --sbatch account=abc --sbatch qos=high (repeatable)")
    slurm.add_argument("--no-wait", action="store_true",
                       help="submit and return; gather the results later with `suite --collect --out DIR`")
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
    from suite.run.job import resolve_device

    try:
        return resolve_device(device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from None


def _slots(args: argparse.Namespace, device: str) -> list:
    """The worker pool: --devices (checked against what torch sees), else every visible GPU for a CUDA run with
    several, else --workers slots on the device."""
    from suite.run.job import resolve_device
    from suite.run.pool.runner import make_slots

    devices = args.devices
    if devices:
        for name in devices:
            try:
                resolve_device(name)
            except ValueError as err:
                raise UsageError(f"--devices {name}: {err}") from None
            if name.startswith("cuda") and ":" not in name:
                raise UsageError(f"--devices {name}: name each GPU (cuda:0,cuda:1,...)")
    elif device == "cuda":
        import torch

        count = torch.cuda.device_count()
        devices = [f"cuda:{i}" for i in range(count)] if count > 1 else None
    return make_slots(device, args.workers, devices)


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


def _run_tasks(args: argparse.Namespace, tasks: list, stop_on_skip: bool, name: str,
               attentions: list[str] | None = None) -> int:
    from suite.run.pool.plan import plan_jobs
    from suite.run.pool.runner import default_out_dir, print_summary, run_in_process, run_jobs, start_job_server

    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR (the run to continue)")
    if args.launcher != "slurm" and (args.no_wait or args.sbatch or args.partition):
        raise UsageError("--no-wait, --sbatch and --partition apply to --launcher slurm")
    if args.data_root and not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root {args.data_root}: no such directory")
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not torchrun and not args.plan:
        start_job_server()  # the forkserver imports torch while the jobs are planned
    if attentions is None and args.attn:
        attentions = attention_specs(args.attn)
    jobs = plan_jobs(tasks, args.profile, attentions, args.seeds, args.seq_len, overrides=_overrides(args),
                     rehearse=args.rehearse)
    if args.plan:
        return _print_plan(args, jobs)
    out = args.out or default_out_dir(name)
    console = make_console()
    if args.launcher != "local":
        from suite.run.pool.runner import run_on_slurm
        from suite.run.pool.slurm import SlurmOptions

        options = SlurmOptions(partition=args.partition, time_min=args.time, gpus_per_job=args.gpus_per_job,
                               cpus_per_job=args.cpus_per_job, mem_gb=args.mem,
                               array_parallelism=args.array_parallelism,
                               sbatch={k: str(v) for k, v in args.sbatch},
                               cluster="slurm" if args.launcher == "slurm" else "local")
        summary = run_on_slurm(jobs, out, options, data_root=args.data_root, resume=args.resume,
                               download=args.download, tensorboard=args.tensorboard, wait=not args.no_wait,
                               console=console)
    elif torchrun:  # launched by torchrun: every rank runs the jobs under DDP
        summary = run_in_process(jobs, out, device=args.device, data_root=args.data_root, resume=args.resume,
                                 download=args.download, console=console, tensorboard=args.tensorboard)
        if int(os.environ.get("RANK", "0")) != 0:
            return 1 if summary.failed() else 0
    else:
        device = _resolve_device(args.device)
        slots = _slots(args, device)
        where = ", ".join(dict.fromkeys(slot.label for slot in slots))
        # printed by run_jobs once --out is checked, so that a refused --out prints its one line and nothing else
        banner = (f"{len(jobs)} jobs on {where} ({len(slots)} at a time), profile {args.profile}; "
                  f"records in {out}/records.jsonl")
        if len(slots) > 1:
            from suite.run.pool.estimates import longest_first

            jobs = longest_first(jobs, out, device, [Path(h) for h in args.history])
        summary = run_jobs(jobs, out, device=device, data_root=args.data_root, job_timeout=args.job_timeout,
                           resume=args.resume, stop_on_skip=stop_on_skip, download=args.download, console=console,
                           tensorboard=args.tensorboard, slots=slots, banner=banner)
    print_summary(summary, console)
    if summary.interrupted:
        return 128 + int(summary.signal)  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    if summary.stopped:
        return 1
    if stop_on_skip and summary.skipped():
        raise UsageError(summary.skipped()[0]["error"])
    return 1 if summary.failed() else 0


def _size(nbytes: float | None) -> str:
    if nbytes is None or nbytes != nbytes:  # None or NaN
        return "-"
    return f"{nbytes / 2**30:.2f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MB"


def _print_plan(args: argparse.Namespace, jobs: list) -> int:
    """``--plan``: every job and the totals (suite.run.pool.estimates), as a table, JSON or CSV; runs nothing."""
    import json
    import sys

    from rich.table import Table

    from suite.run.pool.estimates import duration, plan_frame, plan_totals
    from suite.run.pool.rundir import done_keys

    device = _resolve_device(args.device)
    workers = len(_slots(args, device))
    history = [Path(h) for h in args.history]
    done: set[str] = set()
    if args.out is not None and Path(args.out).is_dir():
        history.append(Path(args.out))
        if args.resume:
            done = done_keys(Path(args.out), True)[0]
    frame = plan_frame(jobs, device, args.data_root, done, history)
    totals = plan_totals(frame, workers)
    if args.format == "json":
        print(json.dumps({"totals": totals, "jobs": frame.to_dict("records")}, indent=1, default=str))
        return 0
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
        return 0
    table = Table(title=f"plan: {len(frame)} jobs, profile {args.profile}, on {device}")
    for column in ("task", "attention", "L", "seed", "data", "est. time", "est. peak", "estimate", "done"):
        table.add_column(column, justify="right" if column in ("L", "seed", "est. time", "est. peak") else "left")
    for row in frame.itertuples():
        table.add_row(row.task, row.attention, str(row.L), str(row.seed), row.data, duration(row.est_s),
                      _size(row.est_peak_bytes),
                      row.estimate, "ok" if row.done else "")
    console = make_console()
    console.print(table)
    for task, fix in dict.fromkeys((r.task, r.fix) for r in frame.itertuples() if r.fix):
        console.print(f"missing data: {task}: {fix}", markup=False, highlight=False)
    missing = totals["missing_data"]
    skipped = f" ({missing} without their data: they will be skipped)" if missing else ""
    console.print(f"{totals['jobs']} jobs: {totals['done']} already ok, {totals['to_run']} to run{skipped}; about "
                  f"{duration(totals['job_seconds'])} of job time, {duration(totals['wall_seconds'])} of wall time on "
                  f"{workers} worker(s). Estimates: 'record'/'similar' from earlier records on this device, 'model' "
                  "from a rough cost model (suite.run.pool.estimates)", markup=False, highlight=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one task's jobs (each attention x seed x length)."""
    from suite.tasks import select_tasks

    return _run_tasks(args, select_tasks(_load_tasks(), [args.task]), stop_on_skip=True, name=args.task)


def cmd_probe(args: argparse.Namespace) -> int:
    """Run a task's learnability probes (models without attention) as jobs like any other: attention
    ``probe:<name>``, same data, L, budget and evaluation as the task's attentions."""
    from suite.run.records import probe_attention
    from suite.tasks import select_tasks

    if args.attn:
        raise UsageError("probe runs the task's probes, not attentions (use run TASK --attn ...)")
    task = select_tasks(_load_tasks(), [args.task])[0]
    offered = task.job_builder.probes(task.data) if task.job_builder and task.job_builder.probes else {}
    if not offered:
        raise UsageError(f"task {task.name} has no probes (tasks with probes: the lra family)")
    names = args.probe or list(offered)
    unknown = [n for n in names if n not in offered]
    if unknown:
        raise UsageError(f"--probe {unknown[0]}: not a probe of {task.name}; its probes: {', '.join(offered)}")
    return _run_tasks(args, [task], stop_on_skip=True, name=f"{task.name}-probe",
                      attentions=[probe_attention(n) for n in dict.fromkeys(names)])


def cmd_suite(args: argparse.Namespace) -> int:
    """Run every selected task's jobs (or, with --collect, record what a Slurm submission has finished)."""
    from suite.tasks import select_tasks

    if args.collect:
        from suite.run.pool.runner import collect_slurm, print_summary

        if args.out is None:
            raise UsageError("--collect needs --out DIR (the run whose Slurm jobs to gather)")
        console = make_console()
        summary = collect_slurm(args.out, console)
        print_summary(summary, console)
        return 1 if summary.failed() else 0

    return _run_tasks(args, select_tasks(_load_tasks(), args.tasks, args.families), stop_on_skip=False, name="suite")


def add_parsers(sub) -> None:
    p = sub.add_parser("list", help="list every task with family, lengths per profile and data source",
                       description="List every task (tasks/<family>/<name>.yaml) with family, the lengths of each "
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

    p = sub.add_parser("probe", help="run a task's learnability probes (models without attention), recorded like jobs",
                       description="Run a task's learnability probes: models without attention (bag of n-grams, GRU, "
                                   "CNN, ListOps' own evaluator) trained and evaluated like the task's attentions "
                                   "(same data, L, profile budget), recorded with attention probe:<name>, so compare "
                                   "and report show them beside the attentions.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="task name (see `run_suite.py list`)")
    p.add_argument("--probe", type=comma_list, metavar="A,B", help="only these probes (default: all of the task's)")
    add_run_options(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("suite", help="run every task (or the chosen ones) overnight; --resume continues",
                       description="Run every task x attention x seed x length job, each in its own child process.\n"
                                   "A crash, OOM, divergence, timeout or missing data set is recorded and the suite\n"
                                   "goes on; Ctrl-C stops after recording what finished; --resume --out DIR "
                                   "continues.\n"
                                   "Exits 1 if a job failed (skipped jobs, i.e. missing data, do not count).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect", action="store_true",
                   help="record what the Slurm jobs of --out (submitted with --no-wait) have finished, and exit")
    p.add_argument("--families", type=comma_list, metavar="F,G", help="only tasks of these families")
    p.add_argument("--tasks", type=comma_list, metavar="T,U", help="only these tasks")
    add_run_options(p)
    p.set_defaults(func=cmd_suite)
