"""The statistics of the result tables, on ``scipy.stats``, and how a measure scales with the sequence length.

- ``mean_ci(values)``: mean, standard deviation and the half-width of the 95% confidence interval of the mean
  (Student t with n - 1 degrees of freedom);
- ``welch_difference(first, second)``: the difference of two means, by Welch's t (unpaired: across runs);
- paired comparisons (by seed, and on the same test examples) and their adjustment: ``suite.analysis.paired``;
- ``loglog_slope(lengths, times)``: the slope of log(time) against log(L) (1 = linear, 2 = quadratic);
- ``crossover_length(lengths, times_a, times_b)``: the L from which ``a`` is no slower than ``b``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if not 0.5 <= p < 1.0 or not df > 0:
        raise ValueError(f"student_t_quantile needs 0.5 <= p < 1 and df > 0, got p={p}, df={df}")
    from scipy import stats

    return float(stats.t.ppf(p, df))


def _t95(df: float) -> float:
    return student_t_quantile(0.5 + CONFIDENCE / 2.0, df)


def _noise_free(spread: float, *scale: float) -> float:
    """0 for a spread that is rounding noise of equal values (<= 1e-9 of the largest |scale|)."""
    return 0.0 if spread <= 1e-9 * max((abs(s) for s in scale), default=0.0) else spread


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, std (ddof=1), half-width of the 95% CI of the mean by Student t); std and half-width NaN for n < 2."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    std = _noise_free(math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)), mean)
    return mean, std, _t95(n - 1) * std / math.sqrt(n)


def welch_difference(first: Sequence[float], second: Sequence[float]) -> tuple[float, float, float]:
    """(mean(second) - mean(first), 95% CI half-width by Welch's t, Welch-Satterthwaite degrees of freedom);
    half-width and df NaN unless both have n >= 2."""
    if not first or not second:
        return math.nan, math.nan, math.nan
    (m1, s1, _), (m2, s2, _) = mean_ci(first), mean_ci(second)
    diff = m2 - m1
    if len(first) < 2 or len(second) < 2:
        return diff, math.nan, math.nan
    v1, v2 = s1 * s1 / len(first), s2 * s2 / len(second)
    if v1 + v2 == 0:
        return diff, 0.0, float(len(first) + len(second) - 2)
    df = (v1 + v2) ** 2 / (v1 * v1 / (len(first) - 1) + v2 * v2 / (len(second) - 1))
    return diff, _t95(df) * math.sqrt(v1 + v2), df


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
