"""The QK-norm control: does EA's difference to softmax survive when softmax gets EA's QK-norm?

EA RMS-normalises q and k per head (with learnable gains); plain softmax does not. A task's 2x2 (``ea``,
``ea:qk_norm=false``, ``softmax``, ``softmax:qk_norm=true``) tells the attention's effect from QK-norm's. For each
table (task, configuration, L) holding ``ea``, ``softmax`` and ``softmax:qk_norm=true``, ``qk_norm_lines`` writes
one line: EA - softmax and EA - softmax:qk_norm=true on the main metric, each with its unadjusted 95% CI (seeds
plus test set where the records hold per-example outcomes, else seeds), and the verdict:

- ``survives the control``: both intervals exclude 0, with the same sign;
- ``does not survive the control``: EA - softmax excludes 0, EA - softmax:qk_norm=true does not (or has the
  other sign): QK-norm may be the difference;
- ``no difference to control for``: EA - softmax's interval includes 0.

and whether EA **matches** softmax within ``margin`` (1 point of accuracy for a fraction metric, else 1% of
softmax's mean): ``holds`` when the interval lies inside ±margin, ``fails`` when it lies outside, ``cannot be
decided`` otherwise (the interval straddles the margin).
"""
from __future__ import annotations

import math

import pandas as pd

from suite.analysis.frames import DEFAULT_SPLIT, metric_stats
from suite.analysis.units import format_value

EA, SOFTMAX, SOFTMAX_QK = "ea", "softmax", "softmax:qk_norm=true"
FRACTION_METRICS = ("accuracy", "accuracy_top5")


def margin_for(metric: str, baseline_mean: float) -> tuple[float, str]:
    """(margin, how it reads): 0.01 (1 point) for a fraction metric, else 1% of the baseline's mean."""
    if metric in FRACTION_METRICS:
        return 0.01, "1 point"
    return 0.01 * abs(baseline_mean), "1%"


def equivalence(delta: float, half: float, margin: float) -> str:
    """``holds`` (delta ± half inside ±margin), ``fails`` (outside it) or ``cannot be decided``."""
    if not (math.isfinite(delta) and math.isfinite(half)):
        return "cannot be decided"
    low, high = delta - half, delta + half
    if -margin < low and high < margin:
        return "holds"
    if low > margin or high < -margin:
        return "fails"
    return "cannot be decided"


def _difference(row) -> tuple[float, float, str]:
    """(delta, half-width, which interval) of a stats row: seeds + test set where given, else seeds."""
    if math.isfinite(row.combined_delta):
        return row.combined_delta, row.combined_ci95, "seeds + test set"
    return row.delta, row.delta_ci95, "seeds"


def _excludes_zero(delta: float, half: float) -> bool:
    return math.isfinite(delta) and math.isfinite(half) and half > 0 and abs(delta) > half


def qk_norm_lines(frame: pd.DataFrame, split: str = DEFAULT_SPLIT) -> list[str]:
    """One line per task, configuration and L holding ea, softmax and softmax:qk_norm=true (module docstring)."""
    if not {EA, SOFTMAX, SOFTMAX_QK} <= set(frame["attention"]):
        return []
    plain = metric_stats(frame, None, SOFTMAX, split)
    control = metric_stats(frame, None, SOFTMAX_QK, split)
    keys = ["run", "task", "config", "seq_len", "attention"]
    control = control.set_index(keys)
    lines = []
    for row in plain[plain["attention"] == EA].itertuples():
        key = (row.run, row.task, row.config, row.seq_len, EA)
        if key not in control.index:
            continue
        other = next(control.loc[[key]].itertuples())
        d1, h1, how = _difference(row)
        d2, h2, _ = _difference(other)
        if not (math.isfinite(d1) and math.isfinite(d2)):
            continue
        if not _excludes_zero(d1, h1):
            verdict = "no difference to control for (EA - softmax's interval includes 0)"
        elif _excludes_zero(d2, h2) and (d1 > 0) == (d2 > 0):
            verdict = "EA's difference survives the QK-norm control"
        else:
            verdict = "EA's difference does not survive the QK-norm control (QK-norm may be the difference)"
        softmax_mean = row.mean - d1
        margin, reads = margin_for(row.metric, softmax_mean)
        runs = plain["run"].nunique() > 1
        where = f"{row.task} ({row.config_label}, L {row.seq_len}{f', {row.run}' if runs else ''}; {row.metric}"
        lines.append(f"{where} on {row.split or 'its split'}): EA - softmax "
                     f"{format_value(row.metric, d1, h1, signed=True, like=row.mean)}, EA - softmax:qk_norm=true "
                     f"{format_value(row.metric, d2, h2, signed=True, like=row.mean)} (95% CI, {how}): {verdict}; "
                     f"EA matches softmax within {reads}: {equivalence(d1, h1, margin)}")
    return lines


QK_NORM_NOTE = ("EA normalises q and k per head (RMSNorm, learnable gain); softmax:qk_norm=true is softmax with the "
                "same QK-norm, ea:qk_norm=false EA without it. Intervals unadjusted (95%); 'matches within 1 point' "
                "holds when the whole interval lies within ±1 point (±1% for a non-fraction metric), fails when it "
                "lies outside, and cannot be decided when it straddles the margin.")
