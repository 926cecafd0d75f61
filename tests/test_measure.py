"""Scaling helpers (slope, crossover) and the peak-memory and timing helpers."""
import math
import time

import numpy as np
import pytest

from suite.analysis.stats import crossover_length, loglog_slope
from suite.run.measure import Stopwatch, peak_memory_bytes, reset_peak_memory


def test_loglog_slope_recovers_power_law_exponent():
    lengths = [256, 512, 1024, 2048]
    assert loglog_slope(lengths, [3e-6 * L**2 for L in lengths]) == pytest.approx(2.0)
    assert loglog_slope(lengths, [5.0 * L for L in lengths]) == pytest.approx(1.0)
    assert loglog_slope(lengths, [7.0 for _ in lengths]) == pytest.approx(0.0, abs=1e-12)


def test_loglog_slope_ignores_missing_times_and_needs_two_points():
    lengths = [256, 512, 1024]
    assert loglog_slope(lengths, [1.0, 4.0, None]) == pytest.approx(2.0)
    assert loglog_slope(lengths, [1.0, float("nan"), 4.0]) == pytest.approx(1.0)
    assert math.isnan(loglog_slope(lengths, [1.0, None, float("inf")]))


def test_loglog_slope_rejects_mismatched_or_nonpositive_lengths():
    with pytest.raises(ValueError, match="differ in size"):
        loglog_slope([1, 2], [1.0])
    with pytest.raises(ValueError, match="positive"):
        loglog_slope([0, 2], [1.0, 2.0])


def test_crossover_length_interpolates_in_log_space():
    lengths = [256, 512, 1024, 2048]
    linear = [4.0 * L for L in lengths]  # a: slower at short L, linear
    quadratic = [L * L / 256.0 for L in lengths]  # b: quadratic; equal at L = 1024
    assert crossover_length(lengths, linear, quadratic) == pytest.approx(1024.0)
    # a crossing between two measured lengths: log-ratio goes +1 -> -1 halfway in log L
    assert crossover_length([100, 400], [math.e, 1.0], [1.0, math.e]) == pytest.approx(200.0)


def test_crossover_length_edge_cases():
    lengths = [256, 512]
    assert crossover_length(lengths, [1.0, 1.0], [2.0, 4.0]) == 256.0  # a never slower
    assert crossover_length(lengths, [3.0, 9.0], [2.0, 4.0]) is None  # a always slower
    assert crossover_length([256, 512, 1024], [None, 3.0, 1.0], [1.0, 2.0, 2.0]) == pytest.approx(
        512 * 2 ** (math.log(1.5) / (math.log(1.5) + math.log(2.0))))


def test_stopwatch_measures_wall_seconds():
    with Stopwatch("cpu") as sw:
        time.sleep(0.05)
    assert 0.04 < sw.seconds < 1.0


def test_cpu_peak_memory_sees_a_large_allocation():
    reset_peak_memory("cpu")
    before = peak_memory_bytes("cpu")
    block = np.ones(40_000_000 // 8)  # 40 MB touched
    after = peak_memory_bytes("cpu")
    del block
    assert after - before > 30_000_000
