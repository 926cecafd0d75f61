"""A plan before the night: every job with its data status, estimated time and peak memory, and the totals.

``plan_frame(jobs, ...)`` gives one row per job: task, attention, L, seed, profile, the data it will use
(``real`` | ``substitute`` | ``generated`` | ``missing``, with the one-line fix for missing data, from the
builder's ``data_status``), whether it is already ``ok`` in OUT (with ``--resume``), and its estimate:

1. ``record``: the wall time (and peak memory) of an earlier record of the same job key on this device;
2. ``similar``: the median over earlier records of the same task, attention, L and profile on this device
   (another config, e.g. a ``--set``);
3. ``model``: the builder's cost model (``Builder.cost``: floating-point operations and peak bytes of the job,
   from its hyperparameters, L and attention) over this device's measured throughput: a one-second matmul
   probe, times ``EFFICIENCY`` (the share of that peak a training step reaches; calibrated on the committed CPU
   runs), plus ``STARTUP_S`` per job. A rough guide, said as such in the table.

Earlier records come from OUT and from ``history`` (other run directories). ``makespan`` is the wall time of
the jobs on N workers, longest first (LPT), which is how the runner orders them.
"""
from __future__ import annotations

import heapq
import statistics
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suite.run.job import JobSpec
from suite.run.records import Record, latest_by_key, read_records

if TYPE_CHECKING:
    import pandas as pd

EFFICIENCY = 0.25  # share of the matmul probe's throughput a training step reaches (CPU, fp32; rough)
STARTUP_S = 5.0  # a job's own start: its process, imports, data loading (s)


FLOPS_CACHE = "device-flops.json"


@lru_cache(maxsize=8)
def device_flops(device: str = "cpu", keep: bool = True) -> float:
    """Measured fp32 matmul throughput of ``device`` (FLOP/s): the median of a few 512x512 products. A measure
    taken with ``keep`` (the plan: nothing else runs) is kept in ``<cache>/device-flops.json`` per device name,
    CPU count, ``OMP_NUM_THREADS`` and torch version, so a plan measures once per machine (and then needs no
    torch); without ``keep`` (a run ordering its jobs while its job server starts) a kept one is used, and a new
    one is not kept. A CPU measure taken while the CPUs were busy (``cpus_busy``) reads low: it is kept marked
    so, used while they stay busy, and measured again by the first plan on a quiet machine. Delete the file to
    measure again."""
    import os
    from importlib import metadata

    from suite.jsoncache import read_cached_json, write_cached_json

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "?"
    key = (f"{device_name(device)} | {cpus} cpus | OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} | "
           f"torch {torch_version}")
    kept = read_cached_json(FLOPS_CACHE)
    entry = kept.get(key)
    busy = device == "cpu" and cpus_busy(cpus or 1)
    if isinstance(entry, (int, float)):  # kept before the busy mark existed: unknown, so as if busy
        entry = {"flops": entry, "busy": True}
    if (isinstance(entry, dict) and isinstance(entry.get("flops"), (int, float))
            and (not entry.get("busy") or busy)):
        return float(entry["flops"])
    flops = _measure_flops(device)
    if keep:
        write_cached_json(FLOPS_CACHE, {**kept, key: {"flops": flops, "busy": busy}})
    return flops


def cpus_busy(cpus: int) -> bool:
    """Whether other work holds the CPUs now: a 1-minute load average of at least half of ``cpus`` (a matmul
    probe then measures a share of the machine, not the machine); False where the OS has no load average."""
    from suite.run.measure import machine_load

    load = machine_load()
    return load is not None and load >= cpus / 2


def _measure_flops(device: str) -> float:
    import torch

    from suite.run.measure import synchronize

    a = torch.randn(512, 512, device=device)
    b = torch.randn(512, 512, device=device)
    (a @ b).sum().item()
    times = []
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        synchronize(device)
        times.append((time.perf_counter() - start) / 4)
    return 2 * 512 ** 3 / statistics.median(times)


def device_name(device: str) -> str:
    """The device's name as records give it (``env.device_name``); a CPU's without importing torch."""
    from suite.run.job import cpu_name, device_env

    return cpu_name() if device == "cpu" else str(device_env(device)["device_name"])


def _history(paths: Iterable[Path], name: str) -> list[Record]:
    """The latest earlier records on the device named ``name`` (ok ones only: a failure says nothing of time)."""
    records: list[Record] = []
    for path in paths:
        try:
            records += read_records(path)
        except ValueError:
            continue
    return [r for r in latest_by_key(records) if r["status"] == "ok" and r["env"].get("device_name") == name]


def estimates(jobs: list[JobSpec], device: str, history: Iterable[Path] = (), keep_speed: bool = True
              ) -> dict[str, tuple[float, float | None, str]]:
    """key -> (seconds, peak bytes or None, source) for every job (module docstring); ``keep_speed``: as
    ``device_flops``'s ``keep``."""
    earlier = _history(history, device_name(device))
    by_key = {r["key"]: r for r in earlier}
    similar: dict[tuple, list[Record]] = {}
    for r in earlier:
        similar.setdefault((r["task"], r["attention"], r["seq_len"], r["profile"]), []).append(r)
    out: dict[str, tuple[float, float | None, str]] = {}
    for job in jobs:
        if job.key in by_key:
            r = by_key[job.key]
            out[job.key] = (float(r["wall_s"] or 0.0), r["metrics"].get("peak_mem_bytes"), "record")
            continue
        close = similar.get((job.task, job.attention, job.seq_len, job.profile))
        if close:
            mems = [float(m) for r in close if (m := r["metrics"].get("peak_mem_bytes"))]
            out[job.key] = (statistics.median(float(r["wall_s"] or 0.0) for r in close),
                            statistics.median(mems) if mems else None, "similar")
            continue
        cost = job.builder.cost if job.builder is not None else None
        if cost is None:
            out[job.key] = (STARTUP_S, None, "none")
            continue
        flops, peak = cost(job.config["hparams"], job.config["data"], job.seq_len, job.attention)
        out[job.key] = (STARTUP_S + flops / (device_flops(device, keep_speed) * EFFICIENCY), peak, "model")
    return out


def attention_flops_per_token(attention: str, seq_len: int, dim: int) -> float:
    """Forward FLOPs of one attention core per token and layer: softmax-like (quadratic) 4·L·dim, EA about
    12·(t+1)·dim (the 2(t+1) sums and their read-out), the other linear-time mixers about 20·dim."""
    name, _, options = attention.partition(":")
    if name in ("softmax", "ea_exact"):
        return 4.0 * seq_len * dim
    if name == "ea":
        order = int(dict(o.split("=") for o in options.split(",") if "=" in o).get("order", 6))
        return 12.0 * (order + 1) * dim
    return 20.0 * dim


def transformer_cost(*, examples: float, tokens: int, dim: int, depth: int, mlp_hidden: int, attention: str,
                     train: bool = True, vocab: int = 0) -> tuple[float, float]:
    """(FLOPs, peak bytes) of passing ``examples`` sequences of ``tokens`` through a pre-norm transformer
    (fwd+bwd when ``train``: 3x the forward): 2 FLOPs per weight per token, plus the attention core; memory:
    fp32 weights, gradients and AdamW moments, and activations of one batch."""
    weights = depth * (4 * dim * dim + 2 * dim * mlp_hidden) + vocab * dim
    per_token = 2.0 * weights + depth * attention_flops_per_token(attention, tokens, dim)
    flops = examples * tokens * per_token * (3.0 if train else 1.0)
    peak = weights * 4 * (4 if train else 1)
    return flops, peak


def makespan(seconds: Iterable[float], workers: int) -> float:
    """Wall time of jobs of these durations on ``workers`` workers, longest first (each to the first free one)."""
    finish = [0.0] * max(1, workers)
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(finish, finish[0] + s)
    return max(finish)


def longest_first(jobs: list[JobSpec], out: Path, device: str, history: Iterable[Path] = ()) -> list[JobSpec]:
    """``jobs`` ordered by their estimated time, longest first (keeps a pool of workers busy to the end). The
    device's speed is not kept from here: the job server may be importing torch beside the measure."""
    est = estimates(jobs, device, [out, *history] if Path(out).exists() else list(history), keep_speed=False)
    return sorted(jobs, key=lambda j: -est[j.key][0])


def plan_frame(jobs: list[JobSpec], device: str, data_root: str | None, done: set[str],
               history: Iterable[Path] = ()) -> pd.DataFrame:
    """One row per job (module docstring): task, attention, L, seed, profile, data, fix, done, est_s, est_peak_bytes,
    estimate (the source)."""
    est = estimates(jobs, device, history)
    status: dict[tuple[str, str], tuple[str, str]] = {}
    rows = []
    for job in jobs:
        check = job.builder.data_status if job.builder is not None else None
        marker = (job.task, str(job.config["data"]))
        if marker not in status:
            status[marker] = check(job.config["data"], data_root) if check else ("unknown", "")
        data, detail = status[marker]
        seconds, peak, source = est[job.key]
        rows.append({"task": job.task, "attention": job.attention, "L": job.seq_len, "seed": job.seed,
                     "profile": job.profile, "data": data, "fix": detail if data == "missing" else "",
                     "done": job.key in done, "est_s": round(seconds, 1),
                     "est_peak_bytes": None if peak is None else float(peak), "estimate": source, "key": job.key})
    import pandas as pd

    return pd.DataFrame(rows, columns=["task", "attention", "L", "seed", "profile", "data", "fix", "done", "est_s",
                                       "est_peak_bytes", "estimate", "key"])


def plan_totals(frame: pd.DataFrame, workers: int) -> dict[str, Any]:
    """Job counts and the estimated wall time of what is left to run on ``workers`` workers (jobs without their
    data are skipped in seconds, so they count as jobs but not in the times)."""
    todo = frame[~frame["done"]]
    runs = todo[todo["data"] != "missing"]
    return {"jobs": int(len(frame)), "done": int(frame["done"].sum()), "to_run": int(len(todo)),
            "missing_data": int((todo["data"] == "missing").sum()), "workers": workers,
            "job_seconds": float(runs["est_s"].sum()), "wall_seconds": float(makespan(runs["est_s"], workers))}


def duration(seconds: float) -> str:
    """``3d 04h``, ``1h 05m``, ``12m 30s``, ``45s``."""
    seconds = int(round(seconds))
    if seconds >= 2 * 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"
