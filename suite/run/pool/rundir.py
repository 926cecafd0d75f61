"""The run directory ``OUT``: checked before the first job, owned by one run at a time, and what lives in it.

    OUT/records.jsonl          one record per finished job (suite.run.records)
    OUT/logs/<job>.log         each job's stdout/stderr and traceback (removed when empty)
    OUT/curves/<job>.json      each training job's learning curve (written after its record)
    OUT/artifacts/<job>/       what a job saves (LM checkpoints), written all or nothing
    OUT/.lock                  the owner: pid, host and start time of the run holding it (empty when free)

``<job>`` is the readable ``records.job_slug`` (task, attention, L, seed, key). ``RunDirLock`` is an exclusive
``fcntl`` lock held for a run's whole duration: a second run (a ``--resume`` started while the first still
goes) is refused at once, naming the holder; the kernel releases the lock of a process that dies, so a
leftover holder line is a stale lock, taken over with a warning.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.console import warn
from suite.errors import UsageError
from suite.run.job import JobRequest, JobSpec
from suite.run.records import CURVES_DIR, ok_keys, read_records_file, records_path

ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class RunSettings:
    """What every job of a run gets besides its spec: the data root, whether a missing data set may be fetched,
    and the folder that receives the learning curves live (TensorBoard)."""

    data_root: str | None = None
    download: bool = False
    tensorboard: Path | None = None
LOCK_FILE = ".lock"
MIN_FREE_BYTES = 16 << 20  # refuse to start a run on a disk with less room than this


def log_path(out: Path, slug: str) -> Path:
    """Where a job's stdout, stderr and traceback go: OUT/logs/<job>.log."""
    return Path(out) / "logs" / f"{slug}.log"


def job_request(spec: JobSpec, out: Path, device: str, settings: RunSettings, *, environ: dict[str, str] | None = None,
                threads: int | None = None) -> JobRequest:
    """What ``spec`` gets to run in run directory ``out``, whatever the launcher: the run's settings, its artifacts
    folder OUT/artifacts/<job>/, its TensorBoard folder (under ``settings.tensorboard``) and its log."""
    return JobRequest(spec=spec, device=device, data_root=settings.data_root, download=settings.download,
                      artifacts_dir=(Path(out) / ARTIFACTS_DIR / spec.slug).resolve(),
                      tensorboard=(None if settings.tensorboard is None
                                   else Path(settings.tensorboard).resolve() / spec.slug),
                      log=log_path(out, spec.slug), threads=threads, environ=environ)


def default_out_dir(name: str = "suite") -> Path:
    """``results/runs/<timestamp>-<name>/`` (name: the task for ``run``, ``suite`` for a suite)."""
    return Path("results") / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"


def ensure_out_dir(out: Path, min_free_bytes: int = MIN_FREE_BYTES, subdirs: tuple[str, ...] = ("logs",)) -> None:
    """Create OUT (with ``subdirs``) and check it can hold a run: a writable directory with ``min_free_bytes``
    free; UsageError, in one line, for any problem."""
    if not str(out).strip():
        raise UsageError("--out: an empty path; give a directory")
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a directory")
        out.mkdir(parents=True, exist_ok=True)
        for sub in subdirs:
            (out / sub).mkdir(exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        free = shutil.disk_usage(out).free
    except OSError as err:
        raise UsageError(f"--out {out}: cannot create or write there ({err.strerror or err})") from None
    if free < min_free_bytes:
        raise UsageError(f"--out {out}: only {free / 2**20:.1f} MiB free on its disk (at least "
                         f"{min_free_bytes / 2**20:.0f} MiB needed); free some space or choose another --out")


def done_keys(out: Path, resume: bool) -> tuple[set[str], int]:
    """(keys already ok, number of records) of OUT; UsageError when OUT holds records and resume is off."""
    path = records_path(out)
    try:
        existing = read_records_file(path) if path.exists() else []
    except ValueError as err:
        raise UsageError(str(err)) from None
    if existing and not resume:
        raise UsageError(f"{out} already holds {len(existing)} records; pass --resume to continue that run, "
                         "or choose another --out")
    return ok_keys(existing), len(existing)


class RunDirLock:
    """An exclusive lock on a run directory for the duration of one run (module docstring).

    ``acquire()`` returns a warning (a stale lock taken over) or None; UsageError when another live run holds it.
    """

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_FILE
        self._file: Any = None

    def acquire(self) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115  (held open as the lock until release)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _holder_text(handle.read())
            handle.close()
            raise UsageError(f"{self.path.parent} is in use by {holder}; wait for that run to end (or stop it) "
                             "instead of running two on one --out") from None
        handle.seek(0)
        previous = handle.read().strip()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "command": " ".join(sys.argv)}) + "\n")
        handle.flush()
        self._file = handle
        if previous:
            return (f"took over the stale lock of {self.path.parent}: {_holder_text(previous)} ended without "
                    "releasing it")
        return None

    def release(self) -> None:
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.truncate()  # an empty lock file: nobody holds the directory
            self._file.flush()
        except OSError:
            pass
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> RunDirLock:
        self.warning = self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_text(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']} (since {holder['started_at']})"
    except (ValueError, KeyError, TypeError):
        return "another run"


def save_curve(out: Path, slug: str, record: Mapping[str, Any], curve: dict[str, Any] | None) -> None:
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
        warn(f"the curve of {slug} was not saved ({err.strerror or err})")
