"""Running many jobs: plan task x attention x seed x L, run each in its own child process, record each one.

- ``run_jobs`` runs them on a pool of ``Slot``s (``make_slots``: one per GPU, or N on a CPU with the cores
  split between them), each job in a fresh child process (``suite.run.pool.process``: forked from a
  ``forkserver`` that imported torch once, pinned to its slot's device through ``CUDA_VISIBLE_DEVICES``), in
  the order given (with several workers the CLI puts the longest job first), with an optional per-job timeout.
  A crash, OOM, divergence, timeout or missing data set becomes that job's record and the run goes on. The parent is the
  only writer of ``OUT/records.jsonl`` (each record flushed and fsynced, all or nothing), so a record is never
  torn or duplicated, and it holds the run directory's lock (``rundir.RunDirLock``) for the whole run. Ctrl-C,
  SIGTERM and SIGHUP stop the run after recording every job that finished (jobs in flight are dropped and
  run again on ``--resume``).
- ``resume=True`` skips jobs whose latest record in OUT is ``ok``; without it, an OUT that already holds
  records is refused, so a record is never duplicated by accident.
- ``run_in_process`` is the torchrun path: every rank runs the same jobs in its own process with
  DistributedDataParallel, and rank 0 writes the records.

The runner knows no family: each job carries the ``Builder`` of the task that planned it, and settings reach
the builder as ``BuildContext`` fields (``data_root``, ``download``, ``artifacts_dir``), never through the
environment. ``plan_jobs(..., overrides={key: value})`` sets declared hyperparameters (``--set``; the LM
tasks' ``--lm-eval-tasks``) in the resolved config, so they are part of the job key and of the record.
``download`` only permits fetching a missing data set: it is recorded in ``env.download`` but not part of the
key (``--resume --download`` re-runs a job skipped for missing data under the same key). The layout of OUT is
in ``suite.run.pool.rundir``.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from suite.console import make_console
from suite.errors import UsageError
from suite.run.job import JobSpec, record_from, run_job
from suite.run.pool.process import JobProcess, start_job_server
from suite.run.pool.rundir import (
    MIN_FREE_BYTES,
    RunDirLock,
    RunSettings,
    default_out_dir,
    done_keys,
    ensure_out_dir,
    job_request,
    log_path,
    save_curve,
)
from suite.run.records import (
    Record,
    RecordsWriteError,
    append_record,
    base_env,
    job_slug,
    latest_by_key,
    now_iso,
    read_records_file,
    records_path,
)

FAILED = ("oom", "diverged", "timeout", "error")

__all__ = ["FAILED", "RunSummary", "Slot", "default_out_dir", "make_slots", "print_summary",
           "run_in_process", "run_jobs", "start_job_server"]


_STATUS_STYLE = {"ok": "green", "skipped": "yellow", "oom": "red", "diverged": "red", "timeout": "red",
                 "error": "red"}


@dataclass
class RunSummary:
    """What a run did: the latest record of every planned job, and how many ran now, were reused or not run."""

    out: Path
    records: list[Record] = field(default_factory=list)
    ran: int = 0
    reused: int = 0
    not_run: int = 0
    interrupted: bool = False
    signal: int = 2  # the signal that interrupted the run (SIGINT for Ctrl-C)
    stopped: str | None = None  # why the run stopped early (a record could not be written)

    def failed(self) -> list[Record]:
        return [r for r in self.records if r["status"] in FAILED]

    def skipped(self) -> list[Record]:
        return [r for r in self.records if r["status"] == "skipped"]


@dataclass(frozen=True)
class Slot:
    """Where one job at a time runs: the device it sees, its environment, its CPU threads (None: torch's
    default), and a label for the log."""

    device: str
    environ: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    label: str = ""


def make_slots(device: str, workers: int | None = None, devices: list[str] | None = None) -> list[Slot]:
    """The pool: one slot per entry of ``devices`` (``cuda:N`` pins a job to GPU N through
    ``CUDA_VISIBLE_DEVICES``; ``workers`` above their number shares them round robin), else ``workers`` slots on
    ``device`` (default 1; several slots on a CPU split its cores between them, ``torch.set_num_threads``)."""
    if devices:
        count = workers or len(devices)
        slots = []
        for i in range(count):
            name = devices[i % len(devices)]
            if name.startswith("cuda:"):
                slots.append(Slot("cuda", {"CUDA_VISIBLE_DEVICES": name.split(":", 1)[1]}, None, name))
            else:
                slots.append(Slot(name, {}, None, name))
        return slots
    count = workers or 1
    if count == 1:
        return [Slot(device, {}, None, device)]
    threads = max(1, (os.cpu_count() or 1) // count) if device == "cpu" else None
    return [Slot(device, {}, threads, f"{device}#{i}") for i in range(count)]


def _main_metric_text(record: Mapping[str, Any]) -> str:
    name = record["config"]["metric"]
    value = record["metrics"].get(name)
    return f"{name}={value:.4g}" if isinstance(value, (int, float)) else ""


def _log_line(record: Mapping[str, Any], spec: JobSpec, slot: str = "") -> Text:
    line = Text()
    line.append(f"{record['status']:<8}", style=_STATUS_STYLE[record["status"]])
    line.append(f" {spec.label()}  {record['wall_s']:.1f}s" + (f" [{slot}]" if slot else "") + "  ")
    line.append(_main_metric_text(record) if record["status"] == "ok" else (record["error"] or ""))
    for warning in record["env"].get("warnings") or []:
        line.append(f"  warning: {warning}", style="yellow")
    return line


@dataclass
class _Running:
    proc: JobProcess
    spec: JobSpec
    slot: Slot
    started_at: str
    start: float


def run_jobs(jobs: list[JobSpec], out: Path, *, device: str = "cpu", data_root: str | None = None,
             job_timeout: float | None = None, resume: bool = False, stop_on_skip: bool = False,
             download: bool = False, console: Console | None = None, min_free_bytes: int = MIN_FREE_BYTES,
             tensorboard: Path | None = None, slots: list[Slot] | None = None, banner: str | None = None) -> RunSummary:
    """Run ``jobs`` on a pool of ``slots`` (default: one on ``device``), one child process per job, appending a
    record per finished job to ``OUT/records.jsonl`` (module docstring).

    ``banner`` (what is about to run, and where) is printed once OUT has been checked (usable, not held by
    another run, no records unless ``resume``), so that a refused OUT prints its one-line error and nothing else.

    ``device`` must be resolved (``cpu``, ``cuda``, ``cuda:N``). ``stop_on_skip`` starts no new job after the
    first ``skipped`` one (``run`` uses it: missing data is then a usage error). ``download`` allows jobs to
    fetch a missing data set. Ctrl-C, SIGTERM and SIGHUP stop the run after recording every finished job (the
    summary says ``interrupted`` and which signal); a record that cannot be written (a full disk) stops it too,
    leaving every earlier record whole (``summary.stopped`` says why). Another run holding OUT is a UsageError.
    """
    console = console or make_console()
    out = Path(out)
    slots = slots or [Slot(device, {}, None, device)]
    ensure_out_dir(out, min_free_bytes)
    with _owning(out, console):
        done, recorded_before = done_keys(out, resume)
        if banner:
            console.print(banner, markup=False, highlight=False)
        todo = [job for job in jobs if job.key not in done]
        summary = RunSummary(out=out, reused=len(jobs) - len(todo))
        if summary.reused:
            console.print(f"resuming {out}: {summary.reused} of {len(jobs)} jobs already ok, {len(todo)} to run")
        settings = RunSettings(data_root, download, tensorboard)
        _run_pool(todo, out, slots, summary, console, settings, job_timeout=job_timeout, stop_on_skip=stop_on_skip)
    return _summarize(summary, jobs, out, recorded_before, console)


def _run_pool(todo: list[JobSpec], out: Path, slots: list[Slot], summary: RunSummary, console: Console,
              settings: RunSettings, *, job_timeout: float | None, stop_on_skip: bool) -> None:
    """Keep every slot busy until the queue is empty; the parent records each job as it finishes."""
    env = {**base_env(), "download": bool(settings.download)}
    queue, free = deque(todo), list(slots)
    running: list[_Running] = []
    failed = 0
    starting_new = True
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress, stop_signals_interrupt():
        bar = progress.add_task("starting", total=len(todo))
        try:
            while (queue and starting_new) or running:
                while queue and free and starting_new:
                    spec, slot = queue.popleft(), free.pop(0)
                    request = job_request(spec, out, slot.device, settings, environ={**os.environ, **slot.environ},
                                          threads=slot.threads)
                    proc = JobProcess(request, job_timeout)
                    running.append(_Running(proc, spec, slot, now_iso(), time.monotonic()))
                    proc.start()
                label = running[0].spec.label() if len(slots) == 1 and running else f"{len(running)} running"
                progress.update(bar, description=f"{label} · {failed} failed · {len(queue)} queued")
                wait([item.proc.reader for item in running], timeout=0.5)
                for item in list(running):
                    outcome = item.proc.poll()
                    if outcome is None:
                        continue
                    record = record_from(item.spec, outcome, env, item.started_at, time.monotonic() - item.start)
                    append_record(out, record)
                    save_curve(out, item.spec.slug, record, outcome.curve)
                    item.proc.stop(grace=True)  # recorded first: a Ctrl-C while it exits loses nothing
                    running.remove(item)
                    free.append(item.slot)
                    log = log_path(out, item.spec.slug)
                    if log.exists() and log.stat().st_size == 0:
                        log.unlink()
                    failed += record["status"] in FAILED
                    progress.console.print(_log_line(record, item.spec, item.slot.label if len(slots) > 1 else ""))
                    progress.advance(bar)
                    if stop_on_skip and record["status"] == "skipped":
                        starting_new = False
        except KeyboardInterrupt as stop:  # the jobs in flight are stopped and not recorded; --resume runs them
            summary.interrupted = True
            summary.signal = getattr(stop, "signum", signal.SIGINT)
        except RecordsWriteError as err:
            summary.stopped = err.strerror or str(err)
        finally:
            for item in running:
                item.proc.stop()
        progress.update(bar, description="interrupted" if summary.interrupted else "stopped" if summary.stopped
                        else "done")


def run_on_slurm(jobs: list[JobSpec], out: Path, options: Any, *, data_root: str | None = None,
                 resume: bool = False, download: bool = False, tensorboard: Path | None = None, wait: bool = True,
                 console: Console | None = None, min_free_bytes: int = MIN_FREE_BYTES) -> RunSummary:
    """Run ``jobs`` as a Slurm job array (``suite.run.pool.slurm``): submit what is neither ok in OUT nor already
    submitted and pending, then (``wait``) record each job as it ends. Ctrl-C stops waiting, not the jobs:
    ``collect_slurm`` (``suite --collect``) gathers them later."""
    from suite.run.pool import slurm

    console = console or make_console()
    out = Path(out)
    ensure_out_dir(out, min_free_bytes)
    summary = RunSummary(out=out)
    with _owning(out, console):
        done, recorded_before = done_keys(out, resume)
        queued = {entry["key"] for entry, _ in slurm.pending(out)}
        todo = [job for job in jobs if job.key not in done and job.key not in queued]
        summary.reused = len(jobs) - len(todo)
        handles = []
        if todo:
            handles = slurm.submit_jobs(todo, out, options, RunSettings(data_root, download, tensorboard),
                                        console=console)
        if wait:
            with stop_signals_interrupt():
                try:
                    slurm.wait_and_record(out, console, handles)
                except KeyboardInterrupt as stop:
                    summary.interrupted = True
                    summary.signal = getattr(stop, "signum", signal.SIGINT)
                except RecordsWriteError as err:
                    summary.stopped = err.strerror or str(err)
    return _summarize(summary, jobs, out, recorded_before, console, launcher="slurm",
                      waiting=not wait or summary.interrupted)


def collect_slurm(out: Path, console: Console | None = None) -> RunSummary:
    """Record every job of OUT's Slurm array that has ended since the last look (``suite --collect``)."""
    from suite.run.pool import slurm

    console = console or make_console()
    out = Path(out)
    if not (out / slurm.SLURM_DIR / slurm.MANIFEST).exists():
        raise UsageError(f"{out}: no Slurm submission to collect (no {slurm.SLURM_DIR}/{slurm.MANIFEST})")
    with _owning(out, console):
        _, recorded_before = done_keys(out, True)
        entries = slurm.pending(out)
        keys = [JobSpec(**entry["spec"]) for entry, _ in slurm.pending_and_collected(out)]
        slurm.record_ended(out, entries, {**base_env(), "launcher": "slurm"}, console)
    return _summarize(RunSummary(out=out), keys, out, recorded_before, console, launcher="slurm", waiting=True)


@contextmanager
def _owning(out: Path, console: Console) -> Iterator[None]:
    """Hold OUT's lock (``rundir.RunDirLock``) for the block, saying when a stale lock was taken over; another
    live run holding it is a UsageError before the block runs."""
    with RunDirLock(out) as lock:
        if lock.warning:
            console.print(f"warning: {lock.warning}", markup=False)
        yield


def _summarize(summary: RunSummary, jobs: list[JobSpec], out: Path, recorded_before: int, console: Console,
               launcher: str = "local", waiting: bool = False) -> RunSummary:
    """Fill the summary from OUT's records (the latest of every job of ``jobs``, how many ran now, how many did not
    run) and say how to go on: after an interrupt or a stop, and for Slurm, what is still queued or running."""
    keys = {job.key for job in jobs}
    path = records_path(out)
    written = read_records_file(path) if path.exists() else []
    summary.ran = len(written) - recorded_before
    summary.records = [r for r in latest_by_key(written) if r["key"] in keys]
    summary.not_run = len(keys - {r["key"] for r in summary.records})
    if launcher == "slurm":
        from suite.run.pool import slurm

        running = len(slurm.pending(out))
        if running and waiting:
            console.print(f"{running} jobs still queued or running in Slurm; gather them later with "
                          f"`run_suite.py suite --collect --out {out}`", markup=False, highlight=False)
        if summary.stopped:
            console.print(f"stopped: {summary.stopped}; free space or make it writable, then `run_suite.py suite "
                          f"--collect --out {out}`", markup=False, highlight=False)
        return summary
    if summary.interrupted:
        console.print(f"interrupted by {signal.Signals(summary.signal).name}: {summary.not_run} jobs not run; "
                      f"continue with --resume --out {out}")
    if summary.stopped:
        console.print(f"stopped: {summary.stopped}; {summary.not_run} jobs not run; free space or make it writable, "
                      f"then continue with --resume --out {out}")
    return summary


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) handled like Ctrl-C; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While inside: SIGTERM and SIGHUP raise ``Interrupted`` in the main thread, as Ctrl-C raises
    KeyboardInterrupt, so a run stopped by a scheduler or a closed terminal records what finished."""
    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def run_in_process(jobs: list[JobSpec], out: Path, *, device: str = "auto", data_root: str | None = None,
                   resume: bool = False, download: bool = False, console: Console | None = None,
                   tensorboard: Path | None = None) -> RunSummary:
    """The torchrun path: each rank runs every job here under DDP (gloo on CPU, nccl on GPU); rank 0 records."""
    import torch.distributed as dist

    from suite.run.job import resolve_device

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
    lock = RunDirLock(out)
    if rank == 0:
        try:
            ensure_out_dir(out)
            warning = lock.acquire()
            if warning:
                console.print(f"warning: {warning}", markup=False)
            shared[0] = done_keys(out, resume)[0]
        except UsageError as err:
            lock.release()
            shared[1] = str(err)
    dist.broadcast_object_list(shared, src=0)
    if shared[1] is not None:
        dist.destroy_process_group()
        raise UsageError(shared[1])
    done = shared[0]
    todo = [job for job in jobs if job.key not in done]
    summary = RunSummary(out=out, reused=len(jobs) - len(todo))
    settings = RunSettings(data_root, download, tensorboard)
    env = {**base_env(), "download": bool(download)}
    recorded_before = len(read_records_file(records_path(out))) if records_path(out).exists() else 0
    for spec in todo:
        started_at, start = now_iso(), time.monotonic()
        request = replace(job_request(spec, out, resolved, settings), rank=rank, world_size=world, log=None)
        outcome = run_job(request)
        dist.barrier()
        if rank == 0:
            record = record_from(spec, outcome, env, started_at, time.monotonic() - start)
            append_record(out, record)
            save_curve(out, spec.slug, record, outcome.curve)
            console.print(_log_line(record, spec))
    dist.barrier()
    _summarize(summary, jobs, out, recorded_before, console)
    lock.release()
    dist.destroy_process_group()
    return summary


def summary_table(summary: RunSummary) -> Table:
    """Per task, attention and L: jobs, status counts and the mean main metric over ok seeds."""
    groups: dict[tuple[str, str, int], list[Record]] = {}
    for record in summary.records:
        groups.setdefault((record["task"], record["attention"], record["seq_len"]), []).append(record)
    table = Table(title=f"summary: {summary.out}")
    for name in ("task", "attention", "L", "seeds", "status", "main metric (mean over ok)"):
        table.add_column(name, justify="right" if name in ("L", "seeds") else "left")
    for (task, attention, seq_len), records in groups.items():
        counts = Counter(r["status"] for r in records)
        status = Text(", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                      style="green" if set(counts) == {"ok"} else "red" if set(counts) & set(FAILED) else "yellow")
        values = [v for r in records if r["status"] == "ok"
                  if isinstance(v := r["metrics"].get(r["config"]["metric"]), (int, float))]
        metric = f"{records[0]['config']['metric']}={sum(values) / len(values):.4g}" if values else "-"
        table.add_row(task, attention, str(seq_len), str(len(records)), status, metric)
    return table


def print_summary(summary: RunSummary, console: Console) -> None:
    """The summary table, then one line per failed or skipped job with its error and log file."""
    if summary.records:
        console.print(summary_table(summary))
    for record in summary.failed() + summary.skipped():
        slug = job_slug(record["task"], record["attention"], record["seq_len"], record["seed"], record["key"])
        log = summary.out / "logs" / f"{slug}.log"
        where = f"  (log: {log})" if log.exists() else ""
        console.print(Text(f"{record['status']}: {record['task']} {record['attention']} L={record['seq_len']} "
                           f"seed={record['seed']}: {record['error']}{where}"))
    counts = Counter(r["status"] for r in summary.records)
    console.print(f"{len(summary.records)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                  + f" (ran {summary.ran} now, {summary.reused} already ok"
                  + (f", {summary.not_run} not run" if summary.not_run else "")
                  + f"); records in {records_path(summary.out)}")
