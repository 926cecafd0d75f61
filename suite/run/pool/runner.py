"""Running many jobs: plan task x attention x seed x L, run each in its own child process, record each one.

- ``plan_jobs`` expands tasks into ``JobSpec``s (a job per attention, seed and sequence length).
- ``run_jobs`` runs them on a pool of ``Slot``s (``make_slots``: one per GPU, or N on a CPU with the cores
  split between them), each job in a fresh child process (``suite.run.pool.process``: forked from a
  ``forkserver`` that imported torch once, pinned to its slot's device through ``CUDA_VISIBLE_DEVICES``), in
  the order given (the CLI puts the longest first), with an optional per-job timeout. A crash, OOM,
  divergence, timeout or missing data set becomes that job's record and the run goes on. The parent is the
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterator, Protocol

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from suite.console import make_console
from suite.errors import UsageError
from suite.run.builders import Builder
from suite.run.job import JobSpec, run_job
from suite.run.hparams import unknown_key_message
from suite.run.pool.process import JobProcess, start_job_server
from suite.run.records import (RecordsWriteError, append_record, base_env, job_key, job_slug, latest_by_key,
                                   make_record, now_iso, read_records_file, records_path)
from suite.run.pool.rundir import (ARTIFACTS_DIR, MIN_FREE_BYTES, RunDirLock, default_out_dir, done_keys,
                                  ensure_out_dir, save_curve)

FAILED = ("oom", "diverged", "timeout", "error")
MAX_JOBS = 100_000  # a plan larger than this is a typo (e.g. --seeds 100000000), refused before it is built

__all__ = ["FAILED", "RunSummary", "Slot", "default_out_dir", "make_slots", "plan_jobs", "print_summary",
           "run_in_process", "run_jobs", "start_job_server"]


class Task(Protocol):
    """What planning needs of a task (``suite.tasks.Task`` is one); the harness imports no task loader."""

    name: str
    family: str
    job_builder: Builder | None

    def job_config(self, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def declares(self, key: str) -> bool: ...

    def default_attentions(self) -> list[str]: ...

    def seq_lens(self, profile: str) -> list[int]: ...
_STATUS_STYLE = {"ok": "green", "skipped": "yellow", "oom": "red", "diverged": "red", "timeout": "red",
                 "error": "red"}


def check_overrides(tasks: list[Task], overrides: dict[str, Any]) -> None:
    """UsageError unless every override is a hyperparameter some of ``tasks`` declares, with a valid value there."""
    for key, value in overrides.items():
        declaring = [t for t in tasks if t.declares(key)]
        if not declaring:
            declared = {name: p for t in tasks if t.job_builder for name, p in t.job_builder.hparams.items()}
            raise UsageError(f"--set {key}: {unknown_key_message(key, declared, 'the selected tasks')}")
        for task in declaring:
            problem = task.job_builder.hparams[key].problem(value)
            if problem is not None:
                raise UsageError(f"--set {key}={value!r}: expected {problem} (task {task.name})")


def plan_jobs(tasks: list[Task], profile: str, attentions: list[str] | None = None, seeds: int = 1,
              seq_lens: list[int] | None = None, overrides: dict[str, Any] | None = None,
              rehearse: bool = False) -> list[JobSpec]:
    """Every job of ``tasks``: per task, its lengths x seeds x attentions (the task defaults unless given).

    ``attentions`` must already be canonical specs. ``overrides`` set declared hyperparameters of the tasks that
    declare them (``check_overrides``). ``rehearse`` adds each builder's rehearsal overrides (under the given
    ones) and keeps only the profile's shortest length (unless ``seq_lens`` is given): the profile end to end in
    a couple of steps. Each task's builder checks its resolved hyperparameters here, before any job runs
    (``Builder.check``); a ValueError becomes a UsageError naming the task. Duplicate jobs (same key) appear
    once.
    """
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    count = sum((len(seq_lens or task.seq_lens(profile)) if not rehearse else 1) * seeds
                * len(attentions or task.default_attentions()) for task in tasks)
    if count > MAX_JOBS:
        raise UsageError(f"the plan has {count:,} jobs (more than {MAX_JOBS:,}); check --seeds, --seq-len and --attn")
    overrides = dict(overrides or {})
    check_overrides(tasks, overrides)
    jobs: dict[str, JobSpec] = {}
    for task in tasks:
        rehearsal = task.job_builder.rehearsal if rehearse and task.job_builder is not None else {}
        config = task.job_config(profile, {**rehearsal, **overrides})
        if task.job_builder is not None and task.job_builder.check is not None:
            try:
                task.job_builder.check(config["hparams"])
            except ValueError as err:
                raise UsageError(f"{task.name} ({profile}): {err}") from None
        specs = attentions or task.default_attentions()
        lengths = seq_lens or ([min(task.seq_lens(profile))] if rehearse else task.seq_lens(profile))
        for seq_len in lengths:
            for seed in range(seeds):
                for attention in specs:
                    key = job_key(task.name, attention, profile, seed, seq_len, config)
                    jobs.setdefault(key, JobSpec(task.name, task.family, attention, profile, seed, seq_len, config,
                                                 key, task.job_builder))
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
    signal: int = 2  # the signal that interrupted the run (SIGINT for Ctrl-C)
    stopped: str | None = None  # why the run stopped early (a record could not be written)

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] in FAILED]

    def skipped(self) -> list[dict[str, Any]]:
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


def _log_line(record: dict[str, Any], spec: JobSpec, slot: str = "") -> Text:
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
        _run_pool(todo, out, slots, summary, console, data_root=data_root, job_timeout=job_timeout,
                  stop_on_skip=stop_on_skip, download=download, tensorboard=tensorboard)
    keys = {job.key for job in jobs}
    path = records_path(out)
    written = read_records_file(path) if path.exists() else []
    summary.ran = len(written) - recorded_before
    summary.records = [r for r in latest_by_key(written) if r["key"] in keys]
    summary.not_run = len(keys - {r["key"] for r in summary.records})
    if summary.interrupted:
        console.print(f"interrupted by {signal.Signals(summary.signal).name}: {summary.not_run} jobs not run; "
                      f"continue with --resume --out {out}")
    if summary.stopped:
        console.print(f"stopped: {summary.stopped}; {summary.not_run} jobs not run; free space or make it writable, "
                      f"then continue with --resume --out {out}")
    return summary


def _payload(spec: JobSpec, slot: Slot, out: Path, data_root: str | None, download: bool,
             tensorboard: Path | None) -> dict[str, Any]:
    return {"spec": spec, "device": slot.device, "data_root": data_root, "environ": {**os.environ, **slot.environ},
            "threads": slot.threads, "download": download, "log": str(out / "logs" / f"{spec.slug}.log"),
            "artifacts_dir": (out / ARTIFACTS_DIR / spec.slug).resolve(),
            "tensorboard": None if tensorboard is None else Path(tensorboard).resolve() / spec.slug}


def _run_pool(todo: list[JobSpec], out: Path, slots: list[Slot], summary: RunSummary, console: Console, *,
              data_root: str | None, job_timeout: float | None, stop_on_skip: bool, download: bool,
              tensorboard: Path | None) -> None:
    """Keep every slot busy until the queue is empty; the parent records each job as it finishes."""
    env = {**base_env(), "download": bool(download)}
    queue, free, running = deque(todo), list(slots), []
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
                    proc = JobProcess(_payload(spec, slot, out, data_root, download, tensorboard), job_timeout)
                    running.append(_Running(proc, spec, slot, now_iso(), time.monotonic()))
                    proc.start()
                label = running[0].spec.label() if len(slots) == 1 and running else f"{len(running)} running"
                progress.update(bar, description=f"{label} · {failed} failed · {len(queue)} queued")
                wait([item.proc.reader for item in running], timeout=0.5)
                for item in list(running):
                    outcome = item.proc.poll()
                    if outcome is None:
                        continue
                    record = _record(item.spec, outcome, env, item.started_at, time.monotonic() - item.start)
                    append_record(out, record)
                    save_curve(out, item.spec.slug, record, outcome.get("curve"))
                    item.proc.stop(grace=True)  # recorded first: a Ctrl-C while it exits loses nothing
                    running.remove(item)
                    free.append(item.slot)
                    log = out / "logs" / f"{item.spec.slug}.log"
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
            handles = slurm.submit_jobs(todo, out, options, data_root=data_root, download=download,
                                        tensorboard=tensorboard, console=console)
        if wait:
            with stop_signals_interrupt():
                try:
                    slurm.wait_and_record(out, console, _record, handles)
                except KeyboardInterrupt as stop:
                    summary.interrupted = True
                    summary.signal = getattr(stop, "signum", signal.SIGINT)
                except RecordsWriteError as err:
                    summary.stopped = err.strerror or str(err)
    return _summarize(summary, jobs, out, recorded_before, console, waiting=not wait or summary.interrupted)


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
        slurm.record_ended(out, entries, {**base_env(), "launcher": "slurm"}, console, _record)
    return _summarize(RunSummary(out=out), keys, out, recorded_before, console, waiting=True)


@contextmanager
def _owning(out: Path, console: Console) -> Iterator[None]:
    """Hold OUT's lock (``rundir.RunDirLock``) for the block, saying when a stale lock was taken over; another
    live run holding it is a UsageError before the block runs."""
    with RunDirLock(out) as lock:
        if lock.warning:
            console.print(f"warning: {lock.warning}", markup=False)
        yield


def _summarize(summary: RunSummary, jobs: list[JobSpec], out: Path, recorded_before: int, console: Console,
               waiting: bool) -> RunSummary:
    """Fill the summary from OUT's records; say what is still queued or running in Slurm."""
    from suite.run.pool import slurm

    keys = {job.key for job in jobs}
    path = records_path(out)
    written = read_records_file(path) if path.exists() else []
    summary.ran = len(written) - recorded_before
    summary.records = [r for r in latest_by_key(written) if r["key"] in keys]
    summary.not_run = len(keys - {r["key"] for r in summary.records})
    running = len(slurm.pending(out))
    if running and waiting:
        console.print(f"{running} jobs still queued or running in Slurm; gather them later with "
                      f"`run_suite.py suite --collect --out {out}`", markup=False, highlight=False)
    if summary.stopped:
        console.print(f"stopped: {summary.stopped}; free space or make it writable, then `run_suite.py suite "
                      f"--collect --out {out}`", markup=False, highlight=False)
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
    env = {**base_env(), "download": bool(download)}
    for spec in todo:
        started_at, start = now_iso(), time.monotonic()
        outcome = run_job(spec, resolved, data_root, rank=rank, world_size=world, download=download,
                          artifacts_dir=(out / ARTIFACTS_DIR / spec.slug).resolve(),
                          tensorboard=None if tensorboard is None else Path(tensorboard).resolve() / spec.slug)
        dist.barrier()
        if rank == 0:
            record = _record(spec, outcome, env, started_at, time.monotonic() - start)
            append_record(out, record)
            save_curve(out, spec.slug, record, outcome.get("curve"))
            console.print(_log_line(record, spec))
        summary.ran += 1
    dist.barrier()
    keys = {job.key for job in jobs}
    summary.records = [r for r in latest_by_key(read_records_file(records_path(out))) if r["key"] in keys]
    lock.release()
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
