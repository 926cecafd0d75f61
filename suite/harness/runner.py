"""Running many jobs: plan task x attention x seed x L, run each in its own child process, record each one.

- ``plan_jobs`` expands tasks into ``JobSpec``s (a job per attention, seed and sequence length).
- ``run_jobs`` runs them one at a time, each in a fresh child process (forked from a ``forkserver`` that has
  imported torch once), with an optional per-job timeout. A crash, OOM, divergence, timeout or missing data
  set becomes that job's record and the run goes on. Ctrl-C stops the run after recording every job that
  finished (the job in flight is dropped and runs again on ``--resume``).
- Records go to ``OUT/records.jsonl``; each job's own stdout/stderr (and traceback, if any) to
  ``OUT/logs/<key>.log`` (deleted when empty).
- ``resume=True`` skips jobs whose latest record in OUT is ``ok``; without it, an OUT that already holds
  records is refused, so a record is never duplicated by accident.
- ``run_in_process`` is the torchrun path: every rank runs the same jobs in its own process with
  DistributedDataParallel, and rank 0 writes the records.

Options for the LM jobs (builder ``lm``, see ``suite.lm.builder``):

- ``plan_jobs(..., lm_eval_tasks=[...])`` replaces the task file's ``lm_eval_tasks`` in the job's resolved
  config, so the record's ``config.hparams.lm_eval_tasks`` says which lm-eval tasks ran and the job key
  changes with them (their metrics are part of the job's result; ``--resume`` with other lm-eval tasks runs
  the jobs again instead of reusing records that lack the requested metrics). The job's environment drops
  ``EA_SUITE_LM_EVAL_TASKS`` so that the builder reads the config and nothing else.
- ``download=True`` sets ``EA_SUITE_DOWNLOAD=1`` in the job's environment (and removes it otherwise): it
  permits fetching a Hugging Face data set and is recorded in ``env.download``, but it is not part of the
  job key, because it does not change which data set or computation a job uses, only whether a missing data
  set may be fetched (so ``--resume --download`` re-runs a job skipped for missing data under the same key).
- Every job gets ``EA_SUITE_CHECKPOINT_DIR=OUT/checkpoints`` unless the environment already sets it: LM
  jobs save their trained model there (``<task>_<attention>_L<seq_len>_s<seed>/``).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from suite.console import make_console
from suite.data import DOWNLOAD_ENV
from suite.errors import UsageError
from suite.harness.builders import plugin_modules
from suite.harness.execute import JobSpec, run_job
from suite.harness.records import (append_record, base_env, job_key, latest_by_key, make_record, now_iso,
                                   read_records_file, records_path)
from suite.lm import CHECKPOINT_ENV, LM_EVAL_TASKS_ENV
from suite.tasks import Task

FAILED = ("oom", "diverged", "timeout", "error")
LM_EVAL_BUILDERS = ("lm",)  # builders that run lm-eval after training and read hparams["lm_eval_tasks"]
CHECKPOINTS_DIR = "checkpoints"
_STATUS_STYLE = {"ok": "green", "skipped": "yellow", "oom": "red", "diverged": "red", "timeout": "red",
                 "error": "red"}


def plan_jobs(tasks: list[Task], profile: str, attentions: list[str] | None = None, seeds: int = 1,
              seq_lens: list[int] | None = None, lm_eval_tasks: list[str] | None = None) -> list[JobSpec]:
    """Every job of ``tasks``: per task, its lengths x seeds x attentions (the task defaults unless given).

    ``attentions`` must already be canonical specs. ``lm_eval_tasks`` (``[]`` = none) replaces the
    ``lm_eval_tasks`` hyperparameter of the tasks whose builder runs lm-eval (``LM_EVAL_BUILDERS``); other
    tasks ignore it. Duplicate jobs (same key) appear once.
    """
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    jobs: dict[str, JobSpec] = {}
    for task in tasks:
        config = task.job_config(profile)
        if lm_eval_tasks is not None and task.builder in LM_EVAL_BUILDERS:
            config["hparams"] = {**config["hparams"], "lm_eval_tasks": list(lm_eval_tasks)}
        specs = attentions or task.default_attentions()
        for seq_len in seq_lens or task.seq_lens(profile):
            for seed in range(seeds):
                for attention in specs:
                    key = job_key(task.name, attention, profile, seed, seq_len, config)
                    jobs.setdefault(key, JobSpec(task.name, task.family, attention, profile, seed, seq_len, config, key))
    return list(jobs.values())


@dataclass
class RunSummary:
    """What a run did: the latest record of every planned job, and how many ran now, were reused or not run."""

    out: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0
    reused: int = 0
    not_run: int = 0
    interrupted: bool = False

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] in FAILED]

    def skipped(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "skipped"]


def default_out_dir() -> Path:
    return Path("results") / "runs" / time.strftime("%Y%m%d-%H%M%S")


def job_environ(base: Mapping[str, str], out: Path, download: bool) -> dict[str, str]:
    """The environment of the jobs of a run in ``out``: ``base`` with the LM options set (module docstring)."""
    environ = dict(base)
    environ.pop(LM_EVAL_TASKS_ENV, None)  # the job's config carries the lm-eval tasks (plan_jobs)
    environ.setdefault(CHECKPOINT_ENV, str((Path(out) / CHECKPOINTS_DIR).resolve()))
    if download:
        environ[DOWNLOAD_ENV] = "1"
    else:
        environ.pop(DOWNLOAD_ENV, None)
    return environ


def _check_out_dir(out: Path, resume: bool) -> tuple[set[str], int]:
    """(keys already ok, number of records) of OUT; UsageError if it holds records and resume is off."""
    path = records_path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    try:
        existing = read_records_file(path) if path.exists() else []
    except ValueError as err:
        raise UsageError(str(err)) from None
    if existing and not resume:
        raise UsageError(f"{out} already holds {len(existing)} records; pass --resume to continue that run, "
                         "or choose another --out")
    return {r["key"] for r in latest_by_key(existing) if r["status"] == "ok"}, len(existing)


# -- the child process --------------------------------------------------------------------------------

def _exit_when_parent_dies() -> None:
    parent = multiprocessing.parent_process()

    def watch() -> None:
        while parent is None or parent.is_alive():
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _child_main(conn, payload: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops this process
    os.environ.clear()
    os.environ.update(payload["environ"])
    with open(payload["log"], "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        _exit_when_parent_dies()
        spec = JobSpec(**payload["spec"])
        try:
            from suite.harness.builders import load_plugins

            load_plugins(payload["plugins"])
            outcome = run_job(spec, payload["device"], payload["data_root"])
        except Exception as err:  # noqa: BLE001 - plugin import failed: still a record, not a hang
            import traceback

            outcome = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                       "metrics": {}, "data": {"source": spec.config["data"]["source"], "substitute": None}, "env": {}}
        if outcome.get("traceback"):
            print(outcome["traceback"], file=sys.stderr, flush=True)
        conn.send(outcome)
        conn.close()


_CONTEXT: Any = None


def _mp_context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["torch", "torch._dynamo", "suite.harness.train", "suite.harness.execute"])
    return _CONTEXT


def start_job_server() -> None:
    """Start the forkserver (it imports torch once) now, so that it loads while the parent plans the run."""
    _mp_context()
    from multiprocessing import forkserver

    forkserver.ensure_running()


def _died_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the host may have run out of memory)" if name == "SIGKILL" else ""
        return f"the job process died from {name}{hint}"
    return f"the job process exited with code {exitcode} before reporting a result"


def _run_in_child(payload: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    ctx = _mp_context()
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(writer, payload), name=f"job-{payload['spec']['key']}")
    deadline = None if timeout is None else time.monotonic() + timeout
    outcome: dict[str, Any] | None = None
    try:
        proc.start()
        writer.close()
        while outcome is None:
            if reader.poll(0.2):
                try:
                    outcome = reader.recv()
                except EOFError:
                    proc.join(5)
                    outcome = {"status": "error", "error": _died_message(proc.exitcode)}
            elif deadline is not None and time.monotonic() > deadline:
                outcome = {"status": "timeout", "error": f"the job ran past --job-timeout {timeout:g} s and was stopped"}
            elif not proc.is_alive() and not reader.poll(0.5):
                outcome = {"status": "error", "error": _died_message(proc.exitcode)}
    finally:
        if proc.pid is not None:  # started (a Ctrl-C may come before)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
            proc.join()
        writer.close()
        reader.close()
    return outcome


# -- the parent -----------------------------------------------------------------------------------------

def _record(spec: JobSpec, outcome: dict[str, Any], env: dict[str, Any], started_at: str, wall: float) -> dict[str, Any]:
    data = outcome.get("data") or {"source": spec.config["data"]["source"], "substitute": None}
    return make_record(key=spec.key, task=spec.task, family=spec.family, attention=spec.attention,
                       profile=spec.profile, seed=spec.seed, seq_len=spec.seq_len, status=outcome["status"],
                       error=outcome.get("error"), metrics=outcome.get("metrics") or {}, config=spec.config, data=data,
                       env={**env, **(outcome.get("env") or {})}, started_at=started_at, wall_s=round(wall, 3))


def _main_metric_text(record: dict[str, Any]) -> str:
    name = record["config"]["metric"]
    value = record["metrics"].get(name)
    return f"{name}={value:.4g}" if isinstance(value, (int, float)) else ""


def _log_line(record: dict[str, Any], spec: JobSpec) -> Text:
    line = Text()
    line.append(f"{record['status']:<8}", style=_STATUS_STYLE[record["status"]])
    line.append(f" {spec.label()}  {record['wall_s']:.1f}s  ")
    line.append(_main_metric_text(record) if record["status"] == "ok" else (record["error"] or ""))
    return line


def run_jobs(jobs: list[JobSpec], out: Path, *, device: str = "cpu", data_root: str | None = None,
             job_timeout: float | None = None, resume: bool = False, stop_on_skip: bool = False,
             download: bool = False, console: Console | None = None) -> RunSummary:
    """Run ``jobs`` one child process each, appending a record per finished job to ``OUT/records.jsonl``.

    ``device`` must be resolved (``cpu``, ``cuda``, ``cuda:N``). ``stop_on_skip`` ends the run at the first
    ``skipped`` job (``run`` uses it: missing data is then a usage error). ``download`` allows jobs to fetch
    Hugging Face data sets. Each child process gets ``job_environ(os.environ, out, download)``.
    KeyboardInterrupt is absorbed: the summary says ``interrupted``.
    """
    console = console or make_console()
    out = Path(out)
    done, recorded_before = _check_out_dir(out, resume)
    todo = [job for job in jobs if job.key not in done]
    summary = RunSummary(out=out, reused=len(jobs) - len(todo))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = {**base_env(), "download": bool(download)}
    environ = job_environ(os.environ, out, download)
    plugins = plugin_modules()
    if summary.reused:
        console.print(f"resuming {out}: {summary.reused} of {len(jobs)} jobs already ok, {len(todo)} to run")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("starting", total=len(todo))
        try:
            for spec in todo:
                progress.update(bar, description=spec.label())
                record = _run_and_record(spec, out, device, data_root, job_timeout, env, environ, plugins)
                progress.console.print(_log_line(record, spec))
                progress.advance(bar)
                if stop_on_skip and record["status"] == "skipped":
                    break
        except KeyboardInterrupt:  # the job in flight was stopped and is not recorded; --resume runs it again
            summary.interrupted = True
        progress.update(bar, description="interrupted" if summary.interrupted else "done")
    keys = {job.key for job in jobs}
    path = records_path(out)
    written = read_records_file(path) if path.exists() else []
    summary.ran = len(written) - recorded_before
    summary.records = [r for r in latest_by_key(written) if r["key"] in keys]
    summary.not_run = len(keys - {r["key"] for r in summary.records})
    if summary.interrupted:
        console.print(f"interrupted: {summary.not_run} jobs not run; continue with --resume --out {out}")
    return summary


def _run_and_record(spec: JobSpec, out: Path, device: str, data_root: str | None, job_timeout: float | None,
                    env: dict[str, Any], environ: dict[str, str], plugins: list[str]) -> dict[str, Any]:
    """Run one job in a child process and append its record; its log file is removed when empty."""
    log = out / "logs" / f"{spec.key}.log"
    payload = {"spec": spec.to_dict(), "device": device, "data_root": data_root, "environ": environ,
               "plugins": plugins, "log": str(log)}
    started_at, start = now_iso(), time.monotonic()
    outcome = _run_in_child(payload, job_timeout)
    record = _record(spec, outcome, env, started_at, time.monotonic() - start)
    append_record(out, record)
    if log.exists() and log.stat().st_size == 0:
        log.unlink()
    return record


def run_in_process(jobs: list[JobSpec], out: Path, *, device: str = "auto", data_root: str | None = None,
                   resume: bool = False, download: bool = False, console: Console | None = None) -> RunSummary:
    """The torchrun path: each rank runs every job here under DDP (gloo on CPU, nccl on GPU); rank 0 records.

    The jobs run in this process, so its own environment is set as ``job_environ`` says.
    """
    import torch.distributed as dist

    from suite.harness.execute import resolve_device

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    resolved = resolve_device(device, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if resolved.startswith("cuda") else "gloo"
        if backend == "nccl":
            import torch

            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend)
    console = console or make_console()
    out = Path(out)
    shared: list[Any] = [set(), None]  # rank 0 checks OUT and tells every rank what to skip, or why to stop
    if rank == 0:
        try:
            shared[0] = _check_out_dir(out, resume)[0]
        except UsageError as err:
            shared[1] = str(err)
    dist.broadcast_object_list(shared, src=0)
    if shared[1] is not None:
        dist.destroy_process_group()
        raise UsageError(shared[1])
    done = shared[0]
    todo = [job for job in jobs if job.key not in done]
    summary = RunSummary(out=out, reused=len(jobs) - len(todo))
    env = {**base_env(), "download": bool(download)}
    environ = job_environ(os.environ, out, download)
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    os.environ.update(environ)
    for spec in todo:
        started_at, start = now_iso(), time.monotonic()
        outcome = run_job(spec, resolved, data_root, rank=rank, world_size=world)
        dist.barrier()
        if rank == 0:
            record = _record(spec, outcome, env, started_at, time.monotonic() - start)
            append_record(out, record)
            console.print(_log_line(record, spec))
        summary.ran += 1
    dist.barrier()
    keys = {job.key for job in jobs}
    summary.records = [r for r in latest_by_key(read_records_file(records_path(out))) if r["key"] in keys]
    dist.destroy_process_group()
    return summary


def summary_table(summary: RunSummary) -> Table:
    """Per task, attention and L: jobs, status counts and the mean main metric over ok seeds."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for record in summary.records:
        groups.setdefault((record["task"], record["attention"], record["seq_len"]), []).append(record)
    table = Table(title=f"summary: {summary.out}")
    for name in ("task", "attention", "L", "seeds", "status", "main metric (mean over ok)"):
        table.add_column(name, justify="right" if name in ("L", "seeds") else "left")
    for (task, attention, seq_len), records in groups.items():
        counts = Counter(r["status"] for r in records)
        status = Text(", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                      style="green" if set(counts) == {"ok"} else "red" if set(counts) & set(FAILED) else "yellow")
        values = [r["metrics"].get(r["config"]["metric"]) for r in records if r["status"] == "ok"]
        values = [v for v in values if isinstance(v, (int, float))]
        metric = f"{records[0]['config']['metric']}={sum(values) / len(values):.4g}" if values else "-"
        table.add_row(task, attention, str(seq_len), str(len(records)), status, metric)
    return table


def print_summary(summary: RunSummary, console: Console) -> None:
    """The summary table, then one line per failed or skipped job with its error and log file."""
    if summary.records:
        console.print(summary_table(summary))
    for record in summary.failed() + summary.skipped():
        log = summary.out / "logs" / f"{record['key']}.log"
        where = f"  (log: {log})" if log.exists() else ""
        console.print(Text(f"{record['status']}: {record['task']} {record['attention']} L={record['seq_len']} "
                           f"seed={record['seed']}: {record['error']}{where}"))
    counts = Counter(r["status"] for r in summary.records)
    console.print(f"{len(summary.records)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                  + f" (ran {summary.ran} now, {summary.reused} already ok"
                  + (f", {summary.not_run} not run" if summary.not_run else "")
                  + f"); records in {records_path(summary.out)}")
