"""Measuring: scaling against sequence length, wall-clock timing, peak memory.

- ``loglog_slope(lengths, times)``: the slope of log(time) against log(L) (1 = linear, 2 = quadratic).
- ``crossover_length(lengths, times_a, times_b)``: the L from which ``a`` is no slower than ``b``.
- ``Stopwatch``: wall time in seconds that waits for queued CUDA work before reading the clock.
- ``reset_peak_memory(device)`` / ``peak_memory_bytes(device)``: on CUDA, ``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats``; on a CPU, the peak resident set size (bytes) of this process. The CPU
  figure is the whole process's high-water mark, so it includes the interpreter, torch and the data (a few
  hundred MB of baseline); where Linux allows, the mark is reset first (``/proc/self/clear_refs``), otherwise
  it is ``getrusage(RUSAGE_SELF).ru_maxrss`` since the process started. ``memory_measure(device)`` names
  which of these produced the number; it goes into the record's ``env``.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np


def _usable_points(lengths: Sequence[float], *series: Sequence[float | None]) -> list[tuple[float, ...]]:
    if any(len(s) != len(lengths) for s in series):
        raise ValueError(f"lengths and times differ in size: {len(lengths)} vs {[len(s) for s in series]}")
    points = []
    for length, *values in zip(lengths, *series):
        if length is None or not float(length) > 0:
            raise ValueError(f"sequence lengths must be positive, got {length!r}")
        if all(v is not None and math.isfinite(float(v)) and float(v) > 0 for v in values):
            points.append((float(length), *(float(v) for v in values)))
    return sorted(points)


def loglog_slope(lengths: Sequence[float], times: Sequence[float | None]) -> float:
    """Least-squares slope of log(times) against log(lengths).

    Entries whose time is None, NaN, infinite or not positive (e.g. a length that ran out of memory) are
    ignored; with fewer than two distinct usable lengths the slope is NaN. Raises ValueError when the two
    sequences differ in size or a length is not positive.
    """
    points = _usable_points(lengths, times)
    if len({p[0] for p in points}) < 2:
        return float("nan")
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def crossover_length(lengths: Sequence[float], times_a: Sequence[float | None],
                     times_b: Sequence[float | None]) -> float | None:
    """The smallest L at which ``a`` is no slower than ``b`` (times_a <= times_b), within the measured lengths.

    Between two measured lengths where ``a`` turns from slower to no slower, the crossing is interpolated
    linearly in log(L) against log(times_a / times_b). Returns the first usable length when ``a`` is already
    no slower there, and None when ``a`` is slower at every usable length. Lengths where
    either time is missing or not positive are ignored. The result is not extrapolated beyond the data.
    """
    points = _usable_points(lengths, times_a, times_b)
    prev: tuple[float, float] | None = None
    for length, ta, tb in points:
        log_ratio = math.log(ta / tb)
        if log_ratio <= 0:
            if prev is None:
                return length
            (l0, r0), (l1, r1) = prev, (math.log(length), log_ratio)
            return float(math.exp(l0 + (l1 - l0) * r0 / (r0 - r1)))
        prev = (math.log(length), log_ratio)
    return None


def synchronize(device: str) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` then ``sw.seconds``; synchronises CUDA at both ends."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds = float("nan")

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _can_reset_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        return "VmHWM" in _STATUS.read_text()
    except OSError:
        return False


def memory_measure(device: str) -> str:
    """Which figure ``peak_memory_bytes(device)`` reports."""
    if str(device).startswith("cuda"):
        return "torch.cuda.max_memory_allocated"
    return "cpu peak RSS (VmHWM after reset)" if _can_reset_rss() else "cpu peak RSS (ru_maxrss since process start)"


def reset_peak_memory(device: str) -> None:
    """Start a fresh peak-memory window (CUDA allocator stats, or the process's peak RSS where Linux allows)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    else:
        _can_reset_rss()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (VmHWM, else ru_maxrss)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # macOS reports bytes, Linux KiB


def peak_memory_bytes(device: str) -> int:
    """Peak memory since the last ``reset_peak_memory(device)``, in bytes (see the module docstring)."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()
