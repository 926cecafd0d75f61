"""Comparisons on the same test examples: two attentions' per-example outcomes (``records.Examples``), seed by seed.

A seed-paired t interval (``stats.paired_difference``) holds the training noise between seeds but treats the test
set as the whole population: it leaves out the test set's own sampling error (about ±6 points at n = 120 and
88% accuracy). With both attentions' per-example outcomes on the same examples, ``combined_difference`` adds it:

- per seed pair s, the per-example differences ``a[s, i] - b[s, i]`` (correct: 1 / 0 / -1; loss: the
  difference of the example's loss); their mean over examples is the seed's difference ``d_s``;
- the seed component: the variance of ``d_s`` over the S seeds, divided by S;
- the test-set component: the variance of the mean over examples of ``e_i`` (``e_i``: example i's difference
  averaged over the seeds), cluster-robust where examples share a source (``clusters``: the variance of
  cluster sums, with the G / (G - 1) small-sample factor, CR1; each example its own cluster otherwise);
- the interval: Δ ± t(0.975, S - 1) x sqrt(seed + test-set variance), its two-sided p from the same t.

``mcnemar_exact(a, b)``: McNemar's exact test of one pair of correct/incorrect vectors (the discordant
examples, binomial at 1/2; scipy ``binomtest``). ``min_detectable(se, df)``: the smallest true difference the
comparison would detect with 80% power at the 5% level, (t(0.975, df) + t(0.80, df)) x SE. ``holm(p)``: Holm's
step-down adjustment of a table's p-values (the marks of a table use the adjusted p).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.05
POWER = 0.80


@dataclass(frozen=True)
class Difference:
    """A paired difference (attention - baseline): its mean, the 95% CI half-width, two-sided p, standard error,
    degrees of freedom, and what entered it (seed pairs, examples, clusters)."""

    delta: float
    half: float
    p: float
    se: float
    df: int
    seeds: int
    examples: int = 0
    clusters: int = 0

    @property
    def mde(self) -> float:
        """The smallest detectable difference of this comparison (``min_detectable``)."""
        return min_detectable(self.se, self.df)


def _t(q: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def min_detectable(se: float, df: int, level: float = LEVEL, power: float = POWER) -> float:
    """(t(1 - level/2, df) + t(power, df)) x ``se``: the true difference detected with ``power`` at ``level``
    (two-sided); NaN without a finite positive SE or with df < 1."""
    if not (math.isfinite(se) and se > 0 and df >= 1):
        return math.nan
    return (_t(1 - level / 2, df) + _t(power, df)) * se


def cluster_variance(values: np.ndarray, clusters: np.ndarray | None = None) -> tuple[float, int]:
    """(variance of the mean of ``values`` [N], clusters): cluster-robust (CR1, G / (G - 1) x the sum over clusters
    of the squared cluster sums of deviations, / N^2) when ``clusters`` [N] is given, else s^2 / N (ddof 1);
    NaN for fewer than two clusters."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    deviations = values - values.mean()
    if clusters is None:
        return (float(deviations.var(ddof=0) * n / (n - 1) / n) if n > 1 else math.nan), n
    _, group = np.unique(np.asarray(clusters), return_inverse=True)
    count = int(group.max()) + 1 if n else 0
    if count < 2:
        return math.nan, count
    sums = np.bincount(group, weights=deviations, minlength=count)
    return float(count / (count - 1) * (sums ** 2).sum() / n ** 2), count


def combined_difference(a: np.ndarray, b: np.ndarray, clusters: np.ndarray | None = None) -> Difference:
    """Δ = mean of ``a - b`` ([S, N]: S seed pairs x the same N examples, outcomes as floats) with the interval of
    the seeds plus the test set (module docstring). ValueError for S < 2 or shapes that differ."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"outcomes must be two arrays [seeds, examples] of one shape, got {a.shape}, {b.shape}")
    seeds, examples = a.shape
    if seeds < 2:
        raise ValueError("a combined interval needs at least two seed pairs")
    diff = a - b
    per_seed = diff.mean(axis=1)
    delta = float(per_seed.mean())
    seed_var = float(per_seed.var(ddof=1) / seeds)
    test_var, groups = cluster_variance(diff.mean(axis=0), clusters)
    se = math.sqrt(seed_var + (test_var if math.isfinite(test_var) else 0.0))
    df = seeds - 1
    if se == 0:
        return Difference(delta, 0.0, math.nan, 0.0, df, seeds, examples, groups)
    from scipy import stats

    p = float(2 * stats.t.sf(abs(delta) / se, df))
    return Difference(delta, _t(0.975, df) * se, p, se, df, seeds, examples, groups)


def seed_difference(values: Sequence[float], baseline: Sequence[float]) -> Difference:
    """The paired t by seed alone (``values`` and ``baseline`` aligned by seed, at least two)."""
    diffs = np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    seeds = len(diffs)
    if seeds < 2:
        raise ValueError("a paired interval needs at least two seed pairs")
    delta = float(diffs.mean())
    se = float(diffs.std(ddof=1) / math.sqrt(seeds))
    if se <= 1e-12 * max(1.0, abs(delta)):
        return Difference(delta, 0.0, math.nan, 0.0, seeds - 1, seeds)
    from scipy import stats

    p = float(2 * stats.t.sf(abs(delta) / se, seeds - 1))
    return Difference(delta, _t(0.975, seeds - 1) * se, p, se, seeds - 1, seeds)


def mcnemar_exact(a: Any, b: Any) -> tuple[int, int, float]:
    """(examples only ``a`` got right, examples only ``b`` got right, exact two-sided McNemar p) of two boolean
    vectors over the same examples; p 1 when no example is discordant."""
    from scipy import stats

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 0, 0, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted among the comparisons)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    m, running = len(indexed), 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
