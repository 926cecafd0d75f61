"""What a metric is and how its numbers read: its kind (``base_metric``), its direction (higher or lower is
better) and its unit, and the formatting of a value with its interval (digits set by the interval)."""
from __future__ import annotations

import math
import re

from suite.analysis.stats import crossover_length

_AT_LENGTH = re.compile(r"_L\d+$")  # decode_ms_per_token_L8192, state_bytes_L32768: measured after a context of L
_HIGHER_IS_BETTER = ("accuracy", "accuracy_top5", "f1", "acc", "acc_norm", "exact_match")
_LOWER_IS_BETTER = ("loss", "train_loss", "bpb", "ppl", "perplexity", "check_error", "bits_per_byte",
                    "byte_perplexity", "word_perplexity")


def base_metric(metric: str) -> str:
    """The kind of quantity a metric name holds, without what it was measured on: ``state_bytes_L32768`` ->
    ``state_bytes``, ``test_bpb`` -> ``bpb``, ``lm_eval.suite_heldout_ppl.bits_per_byte`` -> ``bits_per_byte``."""
    name = _AT_LENGTH.sub("", metric.rsplit(".", 1)[-1])
    for split in ("test_", "val_"):
        if name.startswith(split):
            return name[len(split):]
    return name


def metric_direction(metric: str, main_metric: str | None = None, main_direction: str | None = None) -> str | None:
    """``max`` / ``min`` / None: the task's own direction for its main metric, else by the metric's name
    (its ``base_metric``)."""
    if metric == main_metric:
        return main_direction
    metric = base_metric(metric)
    if metric.endswith("_per_s") or metric in _HIGHER_IS_BETTER:
        return "max"
    if metric.endswith(("_ms", "_bytes", "_s")) or "_ms_" in metric or metric in _LOWER_IS_BETTER:
        return "min"
    return None


_RATE_SCALES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_BYTE_SCALES = ((1e9, " GB"), (1e6, " MB"), (1e3, " kB"), (1.0, " B"))


def _unit(metric: str, magnitude: float) -> tuple[float, str, str, int]:
    """(divisor, suffix of each number, unit after the last number, significant digits without an interval)."""
    magnitude = abs(magnitude) if math.isfinite(magnitude) else 0.0
    metric = base_metric(metric)
    if metric.endswith("_per_s"):
        unit = " tok/s" if "tokens" in metric else " samples/s" if "samples" in metric else "/s"
        div, suffix = next(((d, s) for d, s in _RATE_SCALES if magnitude >= d), _RATE_SCALES[-1])
        return div, suffix, unit, 3
    if metric.endswith("_bytes"):
        div, unit = next(((d, s) for d, s in _BYTE_SCALES if magnitude >= d), _BYTE_SCALES[-1])
        return div, "", unit, 3
    if metric.endswith("_ms") or "_ms_" in metric:
        return 1.0, "", " ms", 3
    if metric == "params":
        div, suffix = next(((d, s) for d, s in _RATE_SCALES if magnitude >= d), _RATE_SCALES[-1])
        return div, suffix, "", 3
    return 1.0, "", "", 4


def _significant(value: float, digits: int, sign: str = "") -> str:
    """``value`` to ``digits`` significant digits, never in exponent form."""
    if value == 0:
        return "0" if not sign else "+0"
    decimals = max(0, min(12, digits - 1 - math.floor(math.log10(abs(value)))))
    return f"{value:{sign}.{decimals}f}"


def format_value(metric: str, value: float, half: float = math.nan, signed: bool = False,
                 like: float | None = None, unit: bool = True) -> str:
    """``value`` (± ``half``) in the metric's unit: ``"0.830 ± 0.035"``, ``"73.6k ± 6.0k tok/s"``,
    ``"678 ± 9.8 MB"``, ``"4.12 ms"``. The half-width sets the decimals (two significant digits of it, at most
    four significant digits of the value; a half-width too small for those shows its own two digits); without
    one, the unit's significant digits (3, or 4 for plain numbers) of ``value``, or of ``like`` when given (a
    difference gets the decimals of the value it is a difference of). ``unit=False``: a rate without its
    ``tok/s`` (for a column whose header says it)."""
    if not math.isfinite(value):
        return "-"
    magnitude = abs(value) if value or not math.isfinite(half) else half
    div, suffix, unit_text, digits = _unit(metric, magnitude)
    if not unit and base_metric(metric).endswith("_per_s"):
        unit_text = ""
    sign = "+" if signed else ""
    v = value / div
    if math.isfinite(half) and half > 0:
        h = half / div
        decimals = max(0, min(12, 1 - math.floor(math.log10(h))))
        reference = abs(like / div) if like else abs(v)
        if reference > 0:
            decimals = max(0, min(decimals, 3 - math.floor(math.log10(reference))))
        half_text = f"{h:.{decimals}f}"
        if float(half_text) == 0:
            half_text = _significant(h, 2)
        return f"{v:{sign}.{decimals}f}{suffix} ± {half_text}{suffix}{unit_text}"
    if like is not None and math.isfinite(like) and like and v:
        decimals = max(0, min(12, digits - 1 - math.floor(math.log10(abs(like / div)))))
        text = f"{v:{sign}.{decimals}f}" + suffix
    else:
        text = _significant(v, digits, sign) + suffix
    return f"{text} ± 0{suffix}{unit_text}" if half == 0 else f"{text}{unit_text}"


def format_pct(pct: float) -> str:
    if not math.isfinite(pct):
        return "-"
    if abs(pct) >= 100:
        return f"{pct:+.0f}%"
    return f"{pct:+.1f}%" if abs(pct) >= 1 else f"{_significant(pct, 2, '+')}%"


def crossover_cell(lengths: list[int], values: list[float | None],
                   reference: list[float | None]) -> tuple[float | None, str]:
    """(crossover length, its text) of ``values`` against ``reference`` over ``lengths`` (time or memory):
    ``"<= L"`` when already no worse at the shortest usable L, ``"> L"`` when not within the measured lengths,
    else the interpolated length; ``"-"`` when no length has both numbers. ``compare``, ``report`` and ``bench``
    all word crossovers this way."""
    usable = [n for n, v, r in zip(lengths, values, reference)
              if v is not None and r is not None and not math.isnan(v) and not math.isnan(r)]
    if not usable:
        return None, "-"
    crossover = crossover_length(lengths, values, reference)
    if crossover is None:
        return None, f"> {max(usable)}"
    if crossover <= min(usable):
        return crossover, f"<= {min(usable)}"
    return crossover, f"{crossover:.0f}"
