"""Run one job in this process: seed, build it, train or measure it, and classify the outcome.

``run_job`` never raises for a failing job (only KeyboardInterrupt passes); it returns an outcome
``{"status", "error", "traceback", "metrics", "data", "env"}`` that the runner turns into a record:

- ``skipped``: the builder raised ``suite.data.DataMissingError`` (the error says how to get the data);
- ``oom``: ``torch.OutOfMemoryError`` (CUDA), ``MemoryError``, or a CPU allocation failure (``RuntimeError:
  ... DefaultCPUAllocator: can't allocate memory``); a job process the kernel's OOM killer ends is ``oom`` too
  (the runner sees it);
- ``diverged``: NaN or infinite training loss;
- ``error``: any other exception, or an ``ok`` job whose metrics lack the task's main metric.

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
from suite.run.records import job_slug


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


def run_job(spec: JobSpec, device: str, data_root: str | None = None, rank: int = 0, world_size: int = 1, *,
            download: bool = False, artifacts_dir: Path | None = None,
            tensorboard: Path | None = None) -> dict[str, Any]:
    """Build and run ``spec`` here on ``device`` (already resolved); returns the outcome (module docstring),
    with the training job's learning curve under ``curve``.

    ``data_root``, ``download`` and ``artifacts_dir`` reach the builder as ``BuildContext`` fields;
    ``tensorboard`` (a folder) receives the job's curve live.
    """
    from suite.run.measure import machine_load
    from suite.run.train import DivergedError, attention_backends, train_and_evaluate

    outcome: dict[str, Any] = {"status": "error", "error": None, "traceback": None, "metrics": {},
                               "data": {"source": spec.config["data"]["source"], "substitute": None}, "env": {}}
    job = None
    load_before = machine_load()
    try:
        outcome["env"] = device_env(device)
        seed_everything(spec.seed)
        builder = spec.builder or get_builder(spec.config["builder"])
        ctx = BuildContext(task=spec.task, family=spec.family, attention=spec.attention, seq_len=spec.seq_len,
                           seed=spec.seed, device=device, hparams=spec.config["hparams"], data=spec.config["data"],
                           profile=spec.profile, data_root=Path(data_root) if data_root else None,
                           download=download, artifacts_dir=artifacts_dir, rank=rank, world_size=world_size)
        job = builder(ctx)
        job.validate(spec.config["builder"])
        outcome["data"] = dict(job.data_info)
        metrics = job.measure() if job.measure is not None else train_and_evaluate(job, ctx, tensorboard)
        outcome["metrics"] = metrics
        if rank == 0 and spec.config["metric"] not in metrics:
            outcome["error"] = (f"the job finished but its metrics lack the task's main metric "
                                f"{spec.config['metric']!r} (got {', '.join(sorted(metrics))})")
        else:
            outcome["status"] = "ok"
    except DataMissingError as err:
        outcome.update(status="skipped", error=" ".join(str(err).split()))
    except DivergedError as err:
        outcome.update(status="diverged", error=one_line(err), traceback=traceback.format_exc())
    except Exception as err:  # noqa: BLE001 - any failure of one job is recorded, the suite goes on
        status = "oom" if is_out_of_memory(err) else "error"
        outcome.update(status=status, error=one_line(err), traceback=traceback.format_exc())
    # beside its timings, how busy the machine was (the 1-minute load average as the job began and ended)
    outcome["env"].update(load_before=load_before, load_after=machine_load())
    if job is not None:
        outcome["curve"] = job.curve
        if job.warnings:
            outcome["env"]["warnings"] = list(job.warnings)
        backends = dict(job.backends)
        if job.model is not None:
            backends.update(attention_backends(job.model))
        outcome["env"]["backends"] = backends
    return outcome
