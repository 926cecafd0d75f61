"""The Slurm launcher: a run's jobs as one Slurm job array through submitit, gathered into the same records.

``submit_jobs(jobs, out, options, ...)`` submits every job not already ``ok`` in OUT as one array
(``submitit.AutoExecutor``: partition, time limit, GPUs and CPUs per job, memory, array parallelism, extra
sbatch parameters), writes the manifest ``OUT/slurm/jobs.jsonl`` (each job's spec and Slurm job id), and
either waits, recording each job as it ends, or returns at once (``--no-wait``; ``collect`` later gathers
whatever has ended). Each array task runs ``run_job`` on its node, as the local pool's child process does.
The submitting process stays the only writer of ``OUT/records.jsonl``; a job's record carries its Slurm job
id in ``env.slurm_job_id`` and its submitit log in ``env.slurm_log``. Slurm's own failure states become
record statuses: TIMEOUT -> ``timeout``, OUT_OF_MEMORY -> ``oom``, CANCELLED, NODE_FAIL, PREEMPTED, BOOT_FAIL,
DEADLINE and FAILED -> ``error`` with Slurm's state and reason. Keys are the same as the local launcher's, so
``--resume`` works across launchers. ``cluster="local"`` runs the same path with submitit's local executor
(no Slurm needed; for tests and a laptop).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from suite.run.job import JobRequest, JobSpec, Outcome, record_from, run_job
from suite.run.pool.rundir import RunSettings, job_request, save_curve
from suite.run.records import RecordsWriteError, append_record, base_env, now_iso

SLURM_DIR = "slurm"
MANIFEST = "jobs.jsonl"
COLLECTED = "collected.txt"
#: Slurm job states -> record status
STATES = {"TIMEOUT": "timeout", "OUT_OF_MEMORY": "oom", "OUT_OF_ME+": "oom", "CANCELLED": "error",
          "NODE_FAIL": "error", "PREEMPTED": "error", "BOOT_FAIL": "error", "DEADLINE": "error", "FAILED": "error"}


@dataclass(frozen=True)
class SlurmOptions:
    """What the array asks Slurm for (per job), and which submitit executor runs it."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 64
    sbatch: dict[str, str] = field(default_factory=dict)  # extra sbatch parameters (e.g. account, qos)
    cluster: str = "slurm"  # "slurm", or "local" (submitit's local executor)


def run_array_task(request: JobRequest) -> Outcome:
    """One array task, on its node: the job's outcome, as the local pool's child gives it, timed here."""
    if request.threads:
        import torch

        torch.set_num_threads(int(request.threads))
    started_at, start = now_iso(), time.monotonic()
    outcome = run_job(request)
    outcome.started_at, outcome.wall_s = started_at, time.monotonic() - start
    return outcome


def _executor(folder: Path, options: SlurmOptions) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=None if options.cluster == "slurm" else "local")
    params: dict[str, Any] = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_job,
                              "name": "ea-suite", "slurm_array_parallelism": options.array_parallelism}
    if options.gpus_per_job:
        params["gpus_per_node"] = options.gpus_per_job
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.sbatch:
        params["slurm_additional_parameters"] = dict(options.sbatch)
    executor.update_parameters(**params)
    return executor


def submit_jobs(jobs: list[JobSpec], out: Path, options: SlurmOptions, settings: RunSettings, *,
                console: Console) -> list[Any]:
    """Submit ``jobs`` as one array; write the manifest; returns submitit's job handles (in ``jobs`` order)."""
    folder = out / SLURM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    executor = _executor(folder, options)
    device = "cuda" if options.gpus_per_job else "cpu"
    # each task's stdout and stderr go to submitit's log (env.slurm_log), not to OUT/logs
    requests = [replace(job_request(spec, out, device, settings, threads=options.cpus_per_job), log=None)
                for spec in jobs]
    handles = executor.map_array(run_array_task, requests)
    submitted = now_iso()
    with open(folder / MANIFEST, "a", encoding="utf-8") as f:
        for spec, handle in zip(jobs, handles):
            f.write(json.dumps({"key": spec.key, "slurm_job_id": str(handle.job_id), "cluster": options.cluster,
                                "submitted_at": submitted, "spec": spec.to_dict()}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    array = str(handles[0].job_id).split("_")[0] if handles else "-"
    console.print(f"submitted {len(handles)} jobs as Slurm array {array}"
                  f" ({options.cluster}); submitit logs in {folder}", markup=False, highlight=False)
    return handles


def _collected(out: Path) -> set[str]:
    path = out / SLURM_DIR / COLLECTED
    return set(path.read_text().split()) if path.exists() else set()


def _mark_collected(out: Path, job_id: str) -> None:
    with open(out / SLURM_DIR / COLLECTED, "a", encoding="utf-8") as f:
        f.write(job_id + "\n")


def pending(out: Path, live: dict[str, Any] | None = None) -> list[tuple[dict[str, Any], Any]]:
    """(manifest entry, submitit job handle) of every submitted job whose outcome is not recorded yet; ``live``
    (job id -> handle) gives the handles of jobs submitted by this process (the local executor's can only be
    followed through them), the others are re-attached from the submitit folder."""
    import submitit

    path = out / SLURM_DIR / MANIFEST
    if not path.exists():
        return []
    done = _collected(out)
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    handles = []
    for entry in entries:
        if entry["slurm_job_id"] in done:
            continue
        folder = out / SLURM_DIR
        if live and entry["slurm_job_id"] in live:
            handle = live[entry["slurm_job_id"]]
        elif entry.get("cluster") == "local":
            from submitit.local.local import LocalJob

            handle = LocalJob(folder=folder, job_id=entry["slurm_job_id"])
        else:
            handle = submitit.SlurmJob(folder=folder, job_id=entry["slurm_job_id"])
        handles.append((entry, handle))
    return handles


def pending_and_collected(out: Path) -> list[tuple[dict[str, Any], Any]]:
    """Every manifest entry (collected or not), with None for the handle: the jobs of the whole submission."""
    path = out / SLURM_DIR / MANIFEST
    if not path.exists():
        return []
    return [(json.loads(line), None) for line in path.read_text().splitlines() if line.strip()]


def outcome_of(handle: Any) -> Outcome | None:
    """The outcome of an ended array task (its result, or Slurm's state as a status); None while it runs."""
    if not handle.done():
        return None
    state = str(handle.state)
    try:
        result = handle.result()
    except Exception as err:  # noqa: BLE001 - the job ended without a result: Slurm's state says why
        name = state.split()[0] if state else "FAILED"
        reason = " ".join(str(err).split())[:300]
        return Outcome.failed(STATES.get(name, "error"), f"slurm: {state} ({reason})")
    return result if isinstance(result, Outcome) else Outcome(**result)  # a dict: an earlier version's result


def record_ended(out: Path, entries: list[tuple[dict[str, Any], Any]], env: dict[str, Any],
                 console: Console) -> tuple[int, int]:
    """Record every ended job of ``entries`` (parent: the only writer), mark it collected; (recorded, still
    running)."""
    recorded = running = 0
    for entry, handle in entries:
        outcome = outcome_of(handle)
        if outcome is None:
            running += 1
            continue
        spec = JobSpec(**entry["spec"])
        job_env = {**env, "slurm_job_id": entry["slurm_job_id"], "slurm_log": str(handle.paths.stdout)}
        # the array task times itself; a job that never reported has no start of its own: its submission
        record = record_from(spec, outcome, job_env, outcome.started_at or entry["submitted_at"],
                             float(outcome.wall_s or 0.0))
        append_record(out, record)
        save_curve(out, spec.slug, record, outcome.curve)
        _mark_collected(out, entry["slurm_job_id"])
        console.print(f"{record['status']:<8} {spec.label()}  slurm {entry['slurm_job_id']}  "
                      f"{record['error'] or ''}", markup=False, highlight=False)
        recorded += 1
    return recorded, running


def wait_and_record(out: Path, console: Console, live: Sequence[Any] = (), poll_s: float = 2.0) -> None:
    """Record jobs as they end until none is left (Ctrl-C stops waiting; the jobs go on in Slurm). ``live``: the
    handles this process submitted."""
    env = {**base_env(), "launcher": "slurm"}
    handles = {str(h.job_id): h for h in live}
    while True:
        entries = pending(out, handles)
        if not entries:
            return
        _, running = record_ended(out, entries, env, console)
        if running:
            time.sleep(poll_s)


__all__ = ["RecordsWriteError", "SlurmOptions", "pending", "record_ended", "submit_jobs", "wait_and_record"]
