"""The job contract, and one job run in this process: seed, build it, train or measure it, classify the outcome.

- ``JobSpec``: one job of a run (task, attention, profile, seed, L, resolved config, key, builder), what the pool
  schedules; ``JobRequest``: a spec plus everything the job gets to run (device, data root, download, its
  artifacts, TensorBoard and log paths, threads, environment), built by ``rundir.job_request`` for every launcher;
  ``Outcome``: what comes back, ``Outcome.failed`` the one way to make an outcome without running the job;
  ``record_from(spec, outcome, ...)``: the one way an outcome becomes a record (``records.Record``).
- ``run_job(request)`` never raises for a failing job (only KeyboardInterrupt passes); the outcome's status:

- ``skipped``: the builder raised ``suite.data.DataMissingError`` (the error says how to get the data);
- ``oom``: ``torch.OutOfMemoryError`` (CUDA), ``MemoryError``, or a CPU allocation failure (``RuntimeError:
  ... DefaultCPUAllocator: can't allocate memory``); a job process the kernel's OOM killer ends is ``oom`` too
  (the runner sees it);
- ``diverged``: NaN or infinite training loss;
- ``error``: any other exception, or an ``ok`` job whose metrics lack the task's main metric (``test_<metric>``
  for a training job, ``<metric>`` for a measurement job).

The error is one line: the root exception (for an exception re-raised from a DataLoader worker, the
worker's own last line); the whole traceback goes to the job's log.
"""
from __future__ import annotations

import platform
import random
import sys
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from suite.data import DataMissingError
from suite.run.builders import BuildContext, Builder, get_builder
from suite.run.records import Record, job_slug, make_record


@dataclass(frozen=True)
class JobSpec:
    """One job of a run: a task at one attention, profile, seed and sequence length, and the builder that builds it
    (from the task that planned it; None: looked up by the name in ``config``)."""

    task: str
    family: str
    attention: str  # canonical spec
    profile: str
    seed: int
    seq_len: int
    config: dict[str, Any]  # Task.job_config(profile)
    key: str
    builder: Builder | None = field(default=None, compare=False, repr=False)

    def label(self) -> str:
        return f"{self.task} {self.attention} L={self.seq_len} seed={self.seed}"

    @property
    def slug(self) -> str:
        """The job's readable file name (logs, artifacts): task, attention, L, seed and the key's start."""
        return job_slug(self.task, self.attention, self.seq_len, self.seed, self.key)

    def to_dict(self) -> dict[str, Any]:
        """The job's identity (without the builder)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "builder"}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all CUDA devices included)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def no_gpu_driver() -> bool:
    """True on a Linux machine with no GPU driver loaded (no /proc/driver/nvidia, /dev/nvidia*, AMD's /dev/kfd or
    WSL2's /dev/dxg): torch can see no GPU there, so ``auto`` means ``cpu`` without importing torch."""
    if not sys.platform.startswith("linux"):
        return False
    dev = Path("/dev")
    return not (Path("/proc/driver/nvidia").exists() or (dev / "kfd").exists() or (dev / "dxg").exists()
                or any(dev.glob("nvidia*")))


def resolve_device(device: str, local_rank: int | None = None) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; under torchrun each rank takes ``cuda:LOCAL_RANK``."""
    if device == "cpu" or (device == "auto" and no_gpu_driver()):
        return "cpu"
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
        if local_rank is not None and device == "cuda":
            device = f"cuda:{local_rank}"
    elif device != "cpu":
        raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")
    return device


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_env(device: str) -> dict[str, Any]:
    """The device part of a record's env: device, its name, the CUDA version (None on a machine without CUDA;
    ``torch_cuda_build`` is the version torch was built with), threads, how memory was measured."""
    import torch

    from suite.run.measure import memory_measure

    cuda = device.startswith("cuda")
    return {"device": device, "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "torch_cuda_build": torch.version.cuda, "cpu_threads": torch.get_num_threads(),
            "memory_measure": memory_measure(device)}


_CPU_OOM = ("can't allocate memory", "DefaultCPUAllocator", "std::bad_alloc")


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA or CPU allocation failure (torch raises a plain RuntimeError when the CPU allocator fails)."""
    import torch

    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(marker in str(err) for marker in _CPU_OOM)


def one_line(err: BaseException) -> str:
    """The root of ``err`` in one line (at most 500 characters): ``Type: message``. An exception that carries a
    whole traceback in its message (a DataLoader worker's) gives that traceback's last line, with where it
    happened."""
    text = str(err)
    if "Traceback (most recent call last)" in text:
        head = text.strip().splitlines()[0].strip().rstrip(".")
        last = [line.strip() for line in text.strip().splitlines() if line.strip()][-1]
        text = f"{last} ({head})"
    else:
        text = " ".join(text.split())
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 500 else text[:497] + "..."


@dataclass
class Outcome:
    """What running one job gives back (picklable: it crosses a pipe or Slurm's result file)."""

    status: str = "error"  # ok | oom | diverged | timeout | error | skipped
    error: str | None = None  # one line
    traceback: str | None = None  # the whole traceback (into the job's log, not the record)
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None  # the workload's data_info; None: the task's data source, unverified
    env: dict[str, Any] = field(default_factory=dict)  # device, backends, load, warnings
    curve: dict[str, Any] | None = None  # the learning curve the training loop left
    examples: dict[str, Any] | None = None  # per-example test outcomes (records.Examples) the loop left
    started_at: str | None = None  # set where the job times itself (a Slurm array task)
    wall_s: float | None = None

    @classmethod
    def failed(cls, status: str, error: str, traceback: str | None = None) -> Outcome:
        """The outcome of a job that did not run to its end (crashed, timed out, killed, never started)."""
        return cls(status=status, error=error, traceback=traceback)


@dataclass(frozen=True)
class JobRequest:
    """One job and everything it gets to run: where (device), with which data (root, download), where it writes
    (its artifacts folder, its TensorBoard folder, its log), with how many threads and in which environment."""

    spec: JobSpec
    device: str
    data_root: str | None = None
    download: bool = False
    artifacts_dir: Path | None = None
    tensorboard: Path | None = None
    log: Path | None = None
    threads: int | None = None
    environ: dict[str, str] | None = None  # the process environment for a job in its own process (None: as is)
    rank: int = 0
    world_size: int = 1


def run_job(request: JobRequest) -> Outcome:
    """Build and run ``request.spec`` here on ``request.device`` (already resolved); returns the outcome (module
    docstring), with a training job's learning curve under ``curve``. Settings reach the builder as
    ``BuildContext`` fields; ``tensorboard`` (a folder) receives the job's curve live."""
    from suite.run.measure import machine_load
    from suite.run.train import DivergedError, attention_backends, train_and_evaluate

    spec = request.spec
    outcome = Outcome()
    work = None
    load_before = machine_load()
    try:
        outcome.env = device_env(request.device)
        seed_everything(spec.seed)
        builder = spec.builder or get_builder(spec.config["builder"])
        ctx = BuildContext(task=spec.task, family=spec.family, attention=spec.attention, seq_len=spec.seq_len,
                           seed=spec.seed, device=request.device, hparams=spec.config["hparams"],
                           data=spec.config["data"], profile=spec.profile,
                           data_root=Path(request.data_root) if request.data_root else None,
                           download=request.download, artifacts_dir=request.artifacts_dir, rank=request.rank,
                           world_size=request.world_size)
        work = builder(ctx)
        work.validate(spec.config["builder"])
        outcome.data = dict(work.data_info)
        metrics = work.measure() if work.measure is not None else train_and_evaluate(work, ctx, request.tensorboard)
        outcome.metrics = metrics
        main = spec.config["metric"]
        if request.rank == 0 and main not in metrics and f"test_{main}" not in metrics:
            outcome.error = (f"the job finished but its metrics lack the task's main metric "
                             f"{spec.config['metric']!r} (got {', '.join(sorted(metrics))})")
        else:
            outcome.status = "ok"
    except DataMissingError as err:
        outcome.status, outcome.error = "skipped", " ".join(str(err).split())
    except DivergedError as err:
        outcome.status, outcome.error, outcome.traceback = "diverged", one_line(err), traceback.format_exc()
    except Exception as err:  # noqa: BLE001 - any failure of one job is recorded, the suite goes on
        outcome.status = "oom" if is_out_of_memory(err) else "error"
        outcome.error, outcome.traceback = one_line(err), traceback.format_exc()
    # beside its timings, how busy the machine was (the 1-minute load average as the job began and ended)
    outcome.env.update(load_before=load_before, load_after=machine_load())
    if work is not None:
        outcome.curve, outcome.examples = work.curve, work.examples
        if work.warnings:
            outcome.env["warnings"] = list(work.warnings)
        backends = dict(work.backends)
        if work.model is not None:
            backends.update(attention_backends(work.model))
        outcome.env["backends"] = backends
    return outcome


def record_from(spec: JobSpec, outcome: Outcome, env: dict[str, Any], started_at: str, wall_s: float) -> Record:
    """The record of ``spec`` from its ``outcome``: ``env`` (the run's) under the outcome's own env; a job that did
    not say which data it ran records the task's data source, unverified (``substitute`` None)."""
    data = outcome.data or {"source": spec.config["data"]["source"], "substitute": None}
    return make_record(key=spec.key, task=spec.task, family=spec.family, attention=spec.attention,
                       profile=spec.profile, seed=spec.seed, seq_len=spec.seq_len, status=outcome.status,
                       error=outcome.error, metrics=outcome.metrics or {}, config=spec.config, data=data,
                       env={**env, **(outcome.env or {})}, started_at=started_at, wall_s=round(wall_s, 3),
                       examples=outcome.examples)
