"""How a measure scales with the sequence length L: the log-log slope and the crossover length.

- ``loglog_slope(lengths, times)``: the slope of log(time) against log(L) (1 = linear, 2 = quadratic).
- ``crossover_length(lengths, times_a, times_b)``: the L from which ``a`` is no slower than ``b``.
"""
from __future__ import annotations

import math
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
