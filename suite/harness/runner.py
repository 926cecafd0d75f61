"""Running many jobs: plan task x attention x seed x L, run each in its own child process, record each one.

- ``plan_jobs`` expands tasks into ``JobSpec``s (a job per attention, seed and sequence length).
- ``run_jobs`` runs them one at a time, each in a fresh child process (forked from a ``forkserver`` that has
  imported torch once), with an optional per-job timeout. A crash, OOM, divergence, timeout or missing data
  set becomes that job's record and the run goes on. Ctrl-C stops the run after recording every job that
  finished (the job in flight is dropped and runs again on ``--resume``).
- Records go to ``OUT/records.jsonl``; each job's own stdout/stderr (and traceback, if any) to
  ``OUT/logs/<job>.log`` (deleted when empty), its learning curve to ``OUT/curves/<job>.json`` (written after
  its record), and what it saves (LM checkpoints) to ``OUT/artifacts/<job>/``, where ``<job>`` is the
  readable ``records.job_slug`` (task, attention, L, seed, key). ``tensorboard`` (a folder) receives every
  job's curve live, one run per job.
- ``resume=True`` skips jobs whose latest record in OUT is ``ok``; without it, an OUT that already holds
  records is refused, so a record is never duplicated by accident.
- ``run_in_process`` is the torchrun path: every rank runs the same jobs in its own process with
  DistributedDataParallel, and rank 0 writes the records.

The runner knows no family: each job carries the ``Builder`` of the task that planned it, and settings reach
the builder as ``BuildContext`` fields (``data_root``, ``download``, ``artifacts_dir``), never through the
environment. ``plan_jobs(..., overrides={key: value})`` sets declared hyperparameters (``--set``; the LM
tasks' ``--lm-eval-tasks``) in the resolved config, so they are part of the job key and of the record.
``download`` only permits fetching a missing data set: it is recorded in ``env.download`` but not part of the
key (``--resume --download`` re-runs a job skipped for missing data under the same key).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from suite.console import make_console
from suite.errors import UsageError
from suite.harness.execute import JobSpec, run_job
from suite.harness.hparams import unknown_key_message
from suite.harness.records import (RecordsWriteError, append_record, base_env, job_key, job_slug, latest_by_key,
                                   make_record, now_iso, ok_keys, read_records_file, records_path)
from suite.harness.builders import Builder

FAILED = ("oom", "diverged", "timeout", "error")
ARTIFACTS_DIR = "artifacts"
CURVES_DIR = "curves"
MIN_FREE_BYTES = 16 << 20  # refuse to start a run on a disk with less room than this
MAX_JOBS = 100_000  # a plan larger than this is a typo (e.g. --seeds 100000000), refused before it is built


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


def default_out_dir(name: str = "suite") -> Path:
    """``results/runs/<timestamp>-<name>/`` (name: the task for ``run``, ``suite`` for a suite)."""
    return Path("results") / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"


def prepare_out_dir(out: Path, resume: bool, min_free_bytes: int = MIN_FREE_BYTES) -> tuple[set[str], int]:
    """Create OUT (with logs/) and check it can hold a run: a writable directory with ``min_free_bytes`` free.
    Returns (keys already ok, number of records); UsageError, in one line, for any problem, or when OUT holds
    records and resume is off."""
    if not str(out).strip():
        raise UsageError("--out: an empty path; give a directory")
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a directory")
        path = records_path(out)
        (out / "logs").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        free = shutil.disk_usage(out).free
    except OSError as err:
        raise UsageError(f"--out {out}: cannot create or write there ({err.strerror or err})") from None
    if free < min_free_bytes:
        raise UsageError(f"--out {out}: only {free / 2**20:.1f} MiB free on its disk (at least "
                         f"{min_free_bytes / 2**20:.0f} MiB needed); free some space or choose another --out")
    try:
        existing = read_records_file(path) if path.exists() else []
    except ValueError as err:
        raise UsageError(str(err)) from None
    if existing and not resume:
        raise UsageError(f"{out} already holds {len(existing)} records; pass --resume to continue that run, "
                         "or choose another --out")
    return ok_keys(existing), len(existing)


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
    os.environ.update(payload["environ"])  # the parent's environment now (the forkserver's may be older)
    with open(payload["log"], "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        _exit_when_parent_dies()
        spec: JobSpec = payload["spec"]
        try:
            outcome = run_job(spec, payload["device"], payload["data_root"], download=payload["download"],
                              artifacts_dir=payload["artifacts_dir"], tensorboard=payload["tensorboard"])
        except Exception as err:  # noqa: BLE001 - still a record, not a hang
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


def _cgroup_files() -> list[Path]:
    """Where this process's memory cgroup counts OOM kills (cgroup v2 memory.events, v1 memory.oom_control)."""
    files = [Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control")]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if controllers == "":
                files.insert(0, Path("/sys/fs/cgroup") / where.lstrip("/") / "memory.events")
            elif "memory" in controllers.split(","):
                files.insert(0, Path("/sys/fs/cgroup/memory") / where.lstrip("/") / "memory.oom_control")
    except (OSError, ValueError):
        pass
    return files


def oom_kill_count() -> int | None:
    """How many processes the kernel's OOM killer has ended in this process's memory cgroup; None where the system
    does not say."""
    for path in _cgroup_files():
        try:
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def _died(exitcode: int | None, ooms_before: int | None) -> dict[str, Any]:
    """The outcome of a job process that ended without reporting: ``oom`` when the kernel's OOM killer ended it
    (its cgroup's oom_kill count rose), else ``error`` saying how it ended."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        if name == "SIGKILL":
            after = oom_kill_count()
            if ooms_before is not None and after is not None and after > ooms_before:
                return {"status": "oom", "error": "the kernel's OOM killer ended the job process (out of host memory)"}
            hint = " (the host may have run out of memory)"
            return {"status": "error", "error": f"the job process died from {name}{hint}"}
        return {"status": "error", "error": f"the job process died from {name}"}
    return {"status": "error", "error": f"the job process exited with code {exitcode} before reporting a result"}


def _run_in_child(payload: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    ctx = _mp_context()
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(writer, payload), name=f"job-{payload['spec'].key}")
    outcome: dict[str, Any] | None = None
    ooms_before = oom_kill_count()
    try:
        proc.start()  # the first start waits for the forkserver to import torch: not the job's time
        deadline = None if timeout is None else time.monotonic() + timeout
        writer.close()
        while outcome is None:
            if reader.poll(0.2):
                try:
                    outcome = reader.recv()
                except EOFError:
                    proc.join(5)
                    outcome = _died(proc.exitcode, ooms_before)
            elif deadline is not None and time.monotonic() > deadline:
                outcome = {"status": "timeout", "error": f"the job ran past --job-timeout {timeout:g} s and was stopped"}
            elif not proc.is_alive() and not reader.poll(0.5):
                outcome = _died(proc.exitcode, ooms_before)
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
    for warning in record["env"].get("warnings") or []:
        line.append(f"  warning: {warning}", style="yellow")
    return line


def run_jobs(jobs: list[JobSpec], out: Path, *, device: str = "cpu", data_root: str | None = None,
             job_timeout: float | None = None, resume: bool = False, stop_on_skip: bool = False,
             download: bool = False, console: Console | None = None,
             min_free_bytes: int = MIN_FREE_BYTES, tensorboard: Path | None = None) -> RunSummary:
    """Run ``jobs`` one child process each, appending a record per finished job to ``OUT/records.jsonl``.

    ``device`` must be resolved (``cpu``, ``cuda``, ``cuda:N``). ``stop_on_skip`` ends the run at the first
    ``skipped`` job (``run`` uses it: missing data is then a usage error). ``download`` allows jobs to fetch a
    missing data set. Ctrl-C, SIGTERM and SIGHUP stop the run after recording every finished job (the summary
    says ``interrupted`` and which signal); a record that cannot be written (a full disk) stops it too, leaving
    every earlier record whole (``summary.stopped`` says why).
    """
    console = console or make_console()
    out = Path(out)
    done, recorded_before = prepare_out_dir(out, resume, min_free_bytes)
    todo = [job for job in jobs if job.key not in done]
    summary = RunSummary(out=out, reused=len(jobs) - len(todo))
    env = {**base_env(), "download": bool(download)}
    if summary.reused:
        console.print(f"resuming {out}: {summary.reused} of {len(jobs)} jobs already ok, {len(todo)} to run")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress, stop_signals_interrupt():
        bar = progress.add_task("starting", total=len(todo))
        try:
            for spec in todo:
                progress.update(bar, description=spec.label())
                record = _run_and_record(spec, out, device, data_root, job_timeout, env, download, tensorboard)
                progress.console.print(_log_line(record, spec))
                progress.advance(bar)
                if stop_on_skip and record["status"] == "skipped":
                    break
        except KeyboardInterrupt as stop:  # the job in flight was stopped and is not recorded; --resume runs it
            summary.interrupted = True
            summary.signal = getattr(stop, "signum", signal.SIGINT)
        except RecordsWriteError as err:
            summary.stopped = str(err)
        progress.update(bar, description="interrupted" if summary.interrupted else "stopped" if summary.stopped
                        else "done")
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
        console.print(f"stopped: {summary.stopped}; {summary.not_run} jobs not run; make room, then continue with "
                      f"--resume --out {out}")
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


def _run_and_record(spec: JobSpec, out: Path, device: str, data_root: str | None, job_timeout: float | None,
                    env: dict[str, Any], download: bool, tensorboard: Path | None) -> dict[str, Any]:
    """Run one job in a child process, append its record, then save its curve; an empty log file is removed."""
    log = out / "logs" / f"{spec.slug}.log"
    payload = {"spec": spec, "device": device, "data_root": data_root, "environ": dict(os.environ),
               "download": download, "artifacts_dir": (out / ARTIFACTS_DIR / spec.slug).resolve(), "log": str(log),
               "tensorboard": None if tensorboard is None else Path(tensorboard).resolve() / spec.slug}
    started_at, start = now_iso(), time.monotonic()
    outcome = _run_in_child(payload, job_timeout)
    record = _record(spec, outcome, env, started_at, time.monotonic() - start)
    append_record(out, record)
    save_curve(out, spec.slug, record, outcome.get("curve"))
    if log.exists() and log.stat().st_size == 0:
        log.unlink()
    return record


def save_curve(out: Path, slug: str, record: dict[str, Any], curve: dict[str, Any] | None) -> None:
    """Write ``OUT/curves/<job>.json`` (the record's identity and the curve) whole or not at all; a failure
    (a full disk) is a warning line, never the end of the run: the record is already safe."""
    if not curve:
        return
    identity = {k: record[k] for k in ("key", "task", "attention", "profile", "seed", "seq_len")}
    path = out / CURVES_DIR / f"{slug}.json"
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(exist_ok=True)
        partial.write_text(json.dumps({**identity, "metric": record["config"]["metric"], **curve}, default=str))
        os.replace(partial, path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        print(f"warning: the curve of {slug} was not saved ({err.strerror or err})", file=sys.stderr)


def run_in_process(jobs: list[JobSpec], out: Path, *, device: str = "auto", data_root: str | None = None,
                   resume: bool = False, download: bool = False, console: Console | None = None,
                   tensorboard: Path | None = None) -> RunSummary:
    """The torchrun path: each rank runs every job here under DDP (gloo on CPU, nccl on GPU); rank 0 records."""
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
            shared[0] = prepare_out_dir(out, resume)[0]
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
