"""Result tables from records: per task, L and attention the mean over seeds with a 95% confidence interval,
the paired difference against a baseline attention, and across runs the run-to-run difference.

- ``load_runs(paths)``: records of run directories or ``.jsonl`` files (latest record per key) as one
  DataFrame, one row per job, with a ``run`` label per path and a ``kind`` (``attention``, or ``probe`` for
  attentions named ``probe:...``: learnability probes, shown after the attentions and never a baseline).
- ``metric_stats(frame, metric, baseline)``: per run, task, L and attention over the ``ok`` seeds of
  ``metric`` (default: each task's main metric): n, mean, std and ``ci95``, the half-width of the 95%
  confidence interval of the mean (Student t with n - 1 degrees of freedom; none for n = 1); cells with no ok
  seed carry the failing statuses instead (e.g. ``oom``). Then against the baseline (default ``softmax``) the
  paired difference by seed (``delta``: mean over the seeds both finished of attention - baseline, its
  ``delta_ci95`` by the paired t, ``delta_pct`` in % of the baseline's mean over those seeds) and, for every
  run after the first, the difference to the first run (``run_delta``, Welch's t: seeds are not paired across
  runs). A difference whose interval excludes 0 is marked ``better`` or ``worse`` by the metric's direction
  (``differs`` when the metric has none).
- ``task_tables(stats)``: one table per task (and metric): rows L, attention (probes last) and run; columns
  only where some row has a value (n, mean ± 95% CI, Δ vs the baseline and in %, Δ vs the first run and in
  %). Numbers carry their unit: memory in kB/MB/GB, throughput as ``12.3k tok/s``, times in ms, digits set by
  the interval (two significant digits of the half-width).
- ``scaling_frame(frame)``: per run, task, scaling metric and attention, the log-log slope against L and the
  crossover length against the baseline; the metrics are time (``fwd_ms``, ``fwdbwd_ms``,
  ``decode_ms_per_token``, and ``train_ms_per_sample`` / ``infer_ms_per_sample`` from throughput) and memory
  (``peak_mem_bytes``, the decoding ``state_bytes``).
- Rows from substitute data (``data.substitute``) get ``†`` (in the table's heading, and on the row when a
  table mixes real and substitute data) and a footnote naming the data source, in every format.
- ``render(..., fmt)``: ``rich`` (tables on the console), ``markdown`` (pipe tables), ``csv`` (long form: one
  row per run, task, metric, L and attention carrying the numbers of every table column, see ``CSV_FIELDS``).
- ``render(..., reference="lra")`` adds the published LRA accuracies (``suite.analysis.published``, not
  re-run) beside the measured accuracy of the LRA tasks: a table whose columns are the measured attentions and
  then ``published: <model> (<table>)``, with a footnote citing each source (rich, markdown); extra long-form
  rows with ``run`` = ``published`` and ``published`` = True (csv). Records without an LRA task get the one
  line ``NO_LRA_TASKS`` instead.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from suite.console import make_console
from suite.analysis.scaling import crossover_length, loglog_slope
from suite.analysis.published import LRA_TASKS, PUBLISHED_LRA
from suite.run.records import is_probe, latest_by_key, read_records

SUBSTITUTE_MARK = "†"
DELTA_MARK = "*"
DEFAULT_BASELINE = "softmax"
CONFIDENCE = 0.95
TIME_METRICS = ("fwd_ms", "fwdbwd_ms", "decode_ms_per_token", "train_ms_per_sample", "infer_ms_per_sample")
SCALING_METRICS = TIME_METRICS + ("peak_mem_bytes", "state_bytes")
_DERIVED = {"train_ms_per_sample": "train_samples_per_s", "infer_ms_per_sample": "infer_samples_per_s"}
FORMATS = ("rich", "markdown", "csv")
REFERENCES = ("lra",)
PUBLISHED_RUN = "published"
LRA_METRIC = "accuracy"
NO_LRA_TASKS = (f"--reference lra: these records hold no LRA task ({', '.join(LRA_TASKS)}), so there is nothing to "
                "set the published LRA numbers beside")


# -- Student t ------------------------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        even = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        for num in (even, odd):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0.5 <= p < 1), by bisection on ``student_t_cdf`` (|error| < 1e-10)."""
    if not 0.5 <= p < 1.0 or not df > 0:
        raise ValueError(f"student_t_quantile needs 0.5 <= p < 1 and df > 0, got p={p}, df={df}")
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, high * 2.0
    while high - low > 1e-10 * max(1.0, high):
        mid = (low + high) / 2.0
        low, high = (mid, high) if student_t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2.0


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


def paired_difference(values: dict[int, float], baseline: dict[int, float]) -> tuple[int, float, float, float]:
    """(pairs, mean of values - baseline over the seeds in both, 95% CI half-width by the paired t (NaN for one
    pair), the baseline's mean over those seeds)."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        return 0, math.nan, math.nan, math.nan
    diffs = [values[s] - baseline[s] for s in seeds]
    mean, _, half = mean_ci(diffs)
    if len(seeds) >= 2:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(seeds) - 1))
        half = _t95(len(seeds) - 1) * _noise_free(sd, *values.values(), *baseline.values()) / math.sqrt(len(seeds))
    return len(seeds), mean, half, sum(baseline[s] for s in seeds) / len(seeds)


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


def verdict(delta: float, half: float, direction: str | None) -> str:
    """``better`` / ``worse`` (by ``direction``) or ``differs`` (no direction) when the interval delta ± half
    excludes 0; ``""`` when it does not or there is no interval."""
    if not (math.isfinite(delta) and math.isfinite(half)) or abs(delta) <= half:
        return ""
    if direction not in ("max", "min"):
        return "differs"
    return "better" if (delta > 0) == (direction == "max") else "worse"


# -- loading --------------------------------------------------------------------------------------------------

def _run_label(path: Path) -> str:
    if path.is_dir():
        return path.resolve().name
    return path.resolve().parent.name if path.stem == "records" else path.stem


def load_runs(paths: Iterable[Path | str]) -> pd.DataFrame:
    """One row per job (latest record per key) of every path; ValueError when a path holds no records."""
    rows = []
    labels: list[str] = []
    for raw in paths:
        path = Path(raw)
        label = _run_label(path)
        if label in labels:
            label = f"{label}#{len(labels) + 1}"
        labels.append(label)
        records = latest_by_key(read_records(path))
        if not records:
            raise ValueError(f"{path}: no records")
        for r in records:
            metrics = dict(r.get("metrics") or {})
            for derived, source in _DERIVED.items():
                if isinstance(metrics.get(source), (int, float)) and metrics[source] > 0:
                    metrics[derived] = 1000.0 / metrics[source]
            data = r.get("data") or {}
            rows.append({"run": label, "task": r["task"], "family": r["family"], "attention": r["attention"],
                         "kind": "probe" if is_probe(r["attention"]) else "attention", "key": r["key"],
                         "profile": r["profile"], "seed": r["seed"], "seq_len": r["seq_len"], "status": r["status"],
                         "main_metric": r["config"]["metric"], "direction": r["config"]["direction"],
                         "substitute": bool(data.get("substitute")), "source": data.get("source"),
                         "metrics": metrics})
    frame = pd.DataFrame(rows)
    frame.attrs["runs"] = labels
    return frame


def attentions_present(frame: pd.DataFrame) -> list[str]:
    """The attentions (not probes) of ``frame``, in column order."""
    return [a for a in attention_order(frame["attention"]) if not is_probe(a)]


def check_baseline(frame: pd.DataFrame, baseline: str) -> None:
    """ValueError (one line, naming the attentions present) unless ``baseline`` is an attention of ``frame``."""
    present = attentions_present(frame)
    if baseline in present:
        return
    what = "is a probe, not an attention" if is_probe(baseline) else "is not an attention of these runs"
    raise ValueError(f"--baseline {baseline}: {what}; attentions present: {', '.join(present) or 'none'}")


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


# -- statistics -----------------------------------------------------------------------------------------------

STATS_COLUMNS = ["run", "family", "task", "metric", "direction", "seq_len", "attention", "kind", "n", "mean", "std",
                 "ci95", "statuses", "failed", "baseline", "delta_n", "delta", "delta_ci95", "delta_pct",
                 "delta_mark", "vs_run", "run_delta", "run_delta_ci95", "run_delta_pct", "run_delta_mark",
                 "substitute", "source"]


def _seed_values(group: pd.DataFrame, name: str) -> dict[int, float]:
    """Finite values of ``name`` by seed over the ok jobs (a seed run twice, e.g. two configs: their mean)."""
    by_seed: dict[int, list[float]] = {}
    for metrics, status, seed in zip(group["metrics"], group["status"], group["seed"]):
        value = metrics.get(name) if status == "ok" else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            by_seed.setdefault(int(seed), []).append(float(value))
    return {seed: sum(v) / len(v) for seed, v in by_seed.items()}


def metric_stats(frame: pd.DataFrame, metric: str | None = None, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """The numbers of every table (module docstring): one row per run, task, L and attention; columns
    ``STATS_COLUMNS`` plus ``values`` (the ok values by seed) and ``is_main`` (the metric is the task's main one)."""
    rows = []
    for (run, task, seq_len, attention), group in frame.groupby(["run", "task", "seq_len", "attention"], sort=False):
        main = group["main_metric"].iloc[0]
        name = metric or main
        values = _seed_values(group, name)
        mean, std, half = mean_ci(list(values.values()))
        failures = group.loc[group["status"] != "ok", "status"].value_counts()
        rows.append({"run": run, "family": group["family"].iloc[0], "task": task, "metric": name,
                     "direction": metric_direction(name, main, group["direction"].iloc[0]), "seq_len": int(seq_len),
                     "attention": attention, "kind": group["kind"].iloc[0], "n": len(values), "mean": mean,
                     "std": std, "ci95": half, "statuses": ",".join(sorted(failures.index)),
                     "failed": ", ".join(f"{count} {status}" for status, count in sorted(failures.items())),
                     "substitute": bool(group["substitute"].any()),
                     "source": ",".join(sorted({str(s) for s in group["source"] if s})), "values": values,
                     "is_main": name == main})
    stats = pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in _COMPARISON_COLUMNS] + _INTERNAL)
    return _add_comparisons(stats, baseline, frame.attrs.get("runs") or list(dict.fromkeys(frame["run"])))


_INTERNAL = ["values", "is_main"]
_COMPARISON_COLUMNS = ("baseline", "delta_n", "delta", "delta_ci95", "delta_pct", "delta_mark", "vs_run",
                       "run_delta", "run_delta_ci95", "run_delta_pct", "run_delta_mark")


def _pct(delta: float, reference: float) -> float:
    return 100.0 * delta / abs(reference) if math.isfinite(delta) and reference else math.nan


def _add_comparisons(stats: pd.DataFrame, baseline: str, runs: list[str]) -> pd.DataFrame:
    cells = {(r.run, r.task, r.seq_len, r.attention): r for r in stats.itertuples()}
    out: dict[str, list] = {c: [] for c in _COMPARISON_COLUMNS}
    for r in stats.itertuples():
        base = cells.get((r.run, r.task, r.seq_len, baseline))
        if base is not None and r.attention != baseline and r.n and base.n:
            pairs, delta, half, base_mean = paired_difference(r.values, base.values)
            row = [baseline, pairs, delta, half, _pct(delta, base_mean), verdict(delta, half, r.direction)]
        else:
            row = [baseline if base is not None else "", 0, math.nan, math.nan, math.nan, ""]
        first = cells.get((runs[0], r.task, r.seq_len, r.attention)) if runs and r.run != runs[0] else None
        if first is not None and r.n and first.n:
            diff, half, _ = welch_difference(list(first.values.values()), list(r.values.values()))
            row += [runs[0], diff, half, _pct(diff, first.mean), verdict(diff, half, r.direction)]
        else:
            row += ["", math.nan, math.nan, math.nan, ""]
        for column, value in zip(_COMPARISON_COLUMNS, row):
            out[column].append(value)
    stats = stats.assign(**out)
    return stats[STATS_COLUMNS + _INTERNAL]


# -- formatting -----------------------------------------------------------------------------------------------

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


def _mark_text(mark: str) -> str:
    return "" if not mark else f" {DELTA_MARK}" if mark == "differs" else f" {DELTA_MARK} {mark}"


def _mean_cell(row) -> str:
    if row.n == 0:
        return row.statuses or "-"
    text = format_value(row.metric, row.mean, row.ci95)
    return text + " (no CI)" if row.n == 1 else text


def _delta_cell(metric: str, delta: float, half: float, mark: str, like: float) -> str:
    if not math.isfinite(delta):
        return ""
    text = format_value(metric, delta, half, signed=True, like=like)
    return text + (" (no CI)" if not math.isfinite(half) else _mark_text(mark))


def _n_cell(row) -> str:
    return f"{row.n} (+{row.failed})" if row.failed and row.n else str(row.n)


# -- tables ---------------------------------------------------------------------------------------------------

CI_NOTE = "95% CI"


def table_columns(baseline: str, first_run: str | None) -> dict[str, str]:
    """Header of every possible column of a task table, by id."""
    columns = {"n": "n", "mean": f"mean ± {CI_NOTE}", "delta": f"Δ vs {baseline} ± {CI_NOTE}",
               "delta_pct": f"Δ% vs {baseline}"}
    if first_run is not None:
        columns.update(run_delta=f"Δ vs {first_run} ± {CI_NOTE} (Welch)", run_delta_pct=f"Δ% vs {first_run}")
    return columns


#: the CSV fields that carry each table column (CSV and markdown carry the same columns)
CSV_FIELDS = {"L": ["seq_len"], "attention": ["attention", "kind"], "run": ["run"], "n": ["n", "failed", "statuses"],
              "mean": ["mean", "ci95"], "delta": ["delta", "delta_ci95", "delta_n", "delta_mark"],
              "delta_pct": ["delta_pct"], "run_delta": ["run_delta", "run_delta_ci95", "run_delta_mark"],
              "run_delta_pct": ["run_delta_pct"]}


def attention_order(attentions: Iterable[str], baseline: str = DEFAULT_BASELINE) -> list[str]:
    """Row and column order: the baseline first, then the other attentions alphabetically, then the probes."""
    return sorted(set(attentions), key=lambda a: (is_probe(a), a != baseline, a))


def attention_label(attention: str) -> str:
    """How a table names an attention: probes say so."""
    return f"{attention} (probe)" if is_probe(attention) else attention


def _arrow(direction: str | None) -> str:
    return {"max": " ↑", "min": " ↓"}.get(direction or "", "")


def task_heading(task: str, metric: str, direction: str | None, substitute: bool) -> str:
    return f"{task}{f' {SUBSTITUTE_MARK}' if substitute else ''} · {metric}{_arrow(direction)}"


def _prune(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the columns no row has a value in."""
    keep = [c for c in table.columns if any(str(v) not in ("", "-") for v in table[c])]
    return table[keep]


def _runs_of(stats: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(stats["run"]))


def task_tables(stats: pd.DataFrame, baseline: str = DEFAULT_BASELINE,
                runs: list[str] | None = None) -> list[tuple[str, pd.DataFrame]]:
    """(heading, table) per task and metric: rows (L, attention[, run]); only the columns with values."""
    runs = runs or _runs_of(stats)
    several = len(runs) > 1
    headers = table_columns(baseline, runs[0] if several else None)
    out = []
    for (task, metric), group in stats.groupby(["task", "metric"], sort=False):
        if not (group["n"] > 0).any() and not (group["is_main"].all() and (group["statuses"] != "").any()):
            continue  # the metric is nowhere in this task (a main metric that no job reached still shows why)
        order = {a: i for i, a in enumerate(attention_order(group["attention"], baseline))}
        run_order = {r: i for i, r in enumerate(runs)}
        group = group.assign(_a=group["attention"].map(order), _r=group["run"].map(run_order))
        group = group.sort_values(["seq_len", "_a", "_r"], kind="stable")
        mixed = group["substitute"].nunique() > 1
        rows = []
        for r in group.itertuples():
            row = {"L": f"{r.seq_len}{f' {SUBSTITUTE_MARK}' if mixed and r.substitute else ''}",
                   "attention": attention_label(r.attention)}
            if several:
                row["run"] = r.run
            row[headers["n"]] = _n_cell(r)
            row[headers["mean"]] = _mean_cell(r)
            row[headers["delta"]] = _delta_cell(metric, r.delta, r.delta_ci95, r.delta_mark, r.mean)
            row[headers["delta_pct"]] = "" if not math.isfinite(r.delta) else format_pct(r.delta_pct)
            if several:
                row[headers["run_delta"]] = _delta_cell(metric, r.run_delta, r.run_delta_ci95, r.run_delta_mark, r.mean)
                row[headers["run_delta_pct"]] = "" if not math.isfinite(r.run_delta) else format_pct(r.run_delta_pct)
            rows.append(row)
        index = ["L", "attention"] + (["run"] if several else [])
        table = _prune(pd.DataFrame(rows).set_index(index))
        heading = task_heading(task, metric, group["direction"].iloc[0], bool(group["substitute"].any()))
        out.append((heading, table))
    return out


def footnotes(stats: pd.DataFrame, baseline: str = DEFAULT_BASELINE, runs: list[str] | None = None) -> list[str]:
    """What the tables' cells mean: the interval, the differences and their marks, †, probes."""
    runs = runs or _runs_of(stats)
    notes = [f"mean ± {CI_NOTE}: mean over seeds (n = seeds that finished ok) ± the half-width of its 95% confidence "
             "interval (Student t, n - 1 degrees of freedom); n = 1 has no interval (no CI); a status (oom, "
             "timeout, ...) where no seed finished, (+k status) where some did not"]
    present = set(stats["attention"])
    if baseline in present:
        notes.append(f"Δ vs {baseline}: mean over the seeds both finished of (attention - {baseline}), ± the 95% CI of "
                     f"that paired difference (paired t); Δ%: in % of {baseline}'s mean over the same seeds")
    else:
        attentions = [a for a in attention_order(present) if not is_probe(a)]
        notes.append(f"no Δ column: these records hold no {baseline} rows (pick a baseline with --baseline; "
                     f"attentions present: {', '.join(attentions) or 'none'})")
    if len(runs) > 1:
        notes.append(f"Δ vs {runs[0]}: this run's mean - {runs[0]}'s, ± the 95% CI by Welch's t (seeds are not paired "
                     f"across runs; needs n >= 2 in both); Δ%: in % of {runs[0]}'s mean")
    notes.append(f"{DELTA_MARK}: the interval excludes 0; better / worse by the metric's direction (↑ higher is "
                 "better, ↓ lower is better)")
    probes = [a for a in attention_order(present) if is_probe(a)]
    if probes:
        notes.append(f"(probe): {', '.join(probes)} are learnability probes (a model without attention that shows how "
                     "learnable the task is), not attentions; listed after them and never the baseline")
    substitutes = stats[stats["substitute"]].drop_duplicates(["task"])
    if len(substitutes):
        listed = "; ".join(f"{t}: {s}" for t, s in zip(substitutes["task"], substitutes["source"]))
        notes.append(f"{SUBSTITUTE_MARK} substitute data (an embedded stand-in, not the published data set): {listed}")
    return notes


def csv_frame(stats: pd.DataFrame) -> pd.DataFrame:
    """The long form of ``stats`` for CSV: every column of ``STATS_COLUMNS``, numbers unrounded."""
    return stats[STATS_COLUMNS].astype({"delta_n": "Int64"})


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


def scaling_frame(frame: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """Per run, task, scaling metric and attention: log-log slope against L and crossover length vs the baseline
    (attentions only; probes get their slope).

    Columns: run, task, metric, attention, lengths, slope, crossover (float or None), crossover_text,
    substitute. Only groups with at least two lengths appear.
    """
    rows = []
    for metric in SCALING_METRICS:
        stats = metric_stats(frame, metric, baseline)
        stats = stats[(stats["n"] > 0) & (stats["mean"] > 0)]  # log-log: positive values only
        for (run, task), group in stats.groupby(["run", "task"], sort=False):
            if group["seq_len"].nunique() < 2:
                continue
            reference = group[group["attention"] == baseline].set_index("seq_len")["mean"]
            for attention, sub in group.groupby("attention", sort=False):
                sub = sub.sort_values("seq_len")
                if len(sub) < 2:
                    continue
                lengths, times = list(sub["seq_len"]), list(sub["mean"])
                crossover, text = None, "-"
                if attention != baseline and not is_probe(attention) and len(reference) >= 2:
                    crossover, text = crossover_cell(lengths, times, [reference.get(length) for length in lengths])
                rows.append({"run": run, "task": task, "metric": metric, "attention": attention,
                             "lengths": ",".join(map(str, lengths)), "slope": loglog_slope(lengths, times),
                             "crossover": crossover, "crossover_text": text,
                             "substitute": bool(sub["substitute"].any())})
    return pd.DataFrame(rows, columns=["run", "task", "metric", "attention", "lengths", "slope", "crossover",
                                       "crossover_text", "substitute"])


def scaling_table(scaling: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """Formatted: rows (task, metric[, run]), columns attention, cells 'slope (x crossover vs the baseline)'."""
    if scaling.empty:
        return pd.DataFrame()
    mark = scaling["substitute"].map({True: f" {SUBSTITUTE_MARK}", False: ""})
    slopes = [f"{s + 0.0:.2f}".replace("-0.00", "0.00") for s in scaling["slope"]]
    crossovers = ["" if c == "-" else f" (x {c})" for c in scaling["crossover_text"]]
    scaling = scaling.assign(row=scaling["task"] + mark + " · " + scaling["metric"],
                             cell=[s + c for s, c in zip(slopes, crossovers)])
    index = ["row"] if scaling["run"].nunique() == 1 else ["row", "run"]
    table = scaling.pivot_table(index=index, columns="attention", values="cell", aggfunc="first", sort=False)
    table = table.fillna("-")
    table = table[attention_order(table.columns, baseline)]
    table.columns = [attention_label(a) for a in table.columns]
    table.index.names = ["task · metric"] + (["run"] if len(index) == 2 else [])
    return table


def scaling_note(baseline: str = DEFAULT_BASELINE) -> str:
    return ("cells: log-log slope of the metric against L (1 = linear, 2 = quadratic), and in brackets the length L "
            f"from which the attention is no slower (uses no more memory) than {baseline} ('x <= L': already at the "
            "shortest L, 'x > L': not within the measured lengths)")


SCALING_NOTE = scaling_note()


# -- LRA reference --------------------------------------------------------------------------------------------

def lra_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` that belong to LRA tasks (a published task name, or family ``lra``)."""
    return frame[frame["task"].isin(list(LRA_TASKS)) | (frame["family"] == "lra")]


def _published_cell(task: str, result) -> str:
    if task not in LRA_TASKS:
        return "-"
    value = result.accuracy(task)
    return "FAIL" if value is None else f"{value:.4f}"  # percent with two decimals: exact as a 4-digit fraction


def _lra_cell(row) -> str:
    if row.n == 0:
        return row.statuses or "-"
    return f"{format_value(row.metric, row.mean, row.ci95)} (n={row.n})"


def lra_reference_table(frame: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> tuple[pd.DataFrame, list[str]] | None:
    """Measured LRA accuracy (rows task · metric, L[, run]; a column per attention, cells mean ± 95% CI (n=seeds))
    with a column per published model, and footnotes.

    None when ``frame`` holds no LRA task. A published cell is the same at every L of its task: it was
    measured at the paper's length, not re-run here.
    """
    lra = lra_frame(frame)
    if lra.empty:
        return None
    stats = metric_stats(lra, LRA_METRIC, baseline)
    runs = [r for r in (frame.attrs.get("runs") or _runs_of(stats)) if r in set(stats["run"])]
    several = len(runs) > 1
    stats = stats.assign(row=[task_heading(t, m, d, s) for t, m, d, s in
                              zip(stats["task"], stats["metric"], stats["direction"], stats["substitute"])],
                         cell=[_lra_cell(r) for r in stats.itertuples()])
    index = ["row", "seq_len"] + (["run"] if several else [])
    table = stats.pivot_table(index=index, columns="attention", values="cell", aggfunc="first", sort=False)
    table = table[attention_order(table.columns, baseline)].fillna("-")
    table.columns = [attention_label(a) for a in table.columns]
    task_of_row = dict(zip(stats["row"], stats["task"]))
    for result in PUBLISHED_LRA:
        table[result.label] = [_published_cell(task_of_row[key[0]], result) for key in table.index]
    table.index.names = ["task · metric", "L"] + (["run"] if several else [])
    notes = [f"measured cells: mean ± {CI_NOTE} over seeds (Student t; no CI for n = 1), n = seeds that finished ok"]
    substitutes = stats[stats["substitute"]].drop_duplicates(["task"])
    if len(substitutes):
        listed = "; ".join(f"{t}: {s}" for t, s in zip(substitutes["task"], substitutes["source"]))
        notes.append(f"{SUBSTITUTE_MARK} substitute data (an embedded stand-in, not the published data set): {listed}; "
                     "these rows are not comparable with the published numbers")
    notes.append("published: test accuracy as its paper reports it (fraction), NOT re-run by this suite, at the "
                 "paper's own lengths and settings (ListOps up to 2K, Text 4K, Retrieval 4K per document, Image 1K, "
                 "Pathfinder 1K, Path-X 16K), whatever the L of the row; FAIL = the paper reports the model did "
                 "not learn the task (no better than chance)")
    for source in dict.fromkeys(result.source for result in PUBLISHED_LRA):
        models = ", ".join(r.model for r in PUBLISHED_LRA if r.source == source)
        notes.append(f"source of {models}: {source}")
    return table, notes


def published_lra_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Long-form rows (the CSV columns plus ``published``) of the published accuracies of the LRA tasks in
    ``frame``: run ``published``, attention the model, mean the accuracy (NaN and status FAIL for FAIL),
    seq_len, n and the intervals empty, source the citation."""
    tasks = [task for task in dict.fromkeys(lra_frame(frame)["task"]) if task in LRA_TASKS]
    rows = []
    for result in PUBLISHED_LRA:
        for task in tasks:
            value = result.accuracy(task)
            rows.append({"run": PUBLISHED_RUN, "family": "lra", "task": task, "metric": LRA_METRIC,
                         "direction": "max", "seq_len": pd.NA, "attention": f"{result.model} ({result.table})",
                         "kind": "published", "n": pd.NA, "mean": math.nan if value is None else value,
                         "statuses": "FAIL" if value is None else "", "failed": "", "substitute": False,
                         "source": result.source, "published": True})
    return pd.DataFrame(rows)


# -- rendering ------------------------------------------------------------------------------------------------

def markdown_table(table: pd.DataFrame) -> str:
    """A task, scaling or bench table as a pipe table: its index as leading columns, cells as they are (no number
    parsing)."""
    return table.reset_index().to_markdown(index=False, disable_numparse=True)


def rich_table(table: pd.DataFrame, title: str) -> Table:
    """A task, scaling or bench table as a rich Table: its index as leading (left-aligned) columns, cells as they
    are."""
    out = Table(title=title)
    flat = table.reset_index()
    leading = table.index.nlevels
    for i, column in enumerate(flat.columns):
        out.add_column(Text(str(column)), justify="left" if i < leading else "right", style="cyan" if i == 0 else None)
    for values in flat.itertuples(index=False):
        out.add_row(*(Text(str(v)) for v in values))
    return out


def markdown_tables(tables: list[tuple[str, pd.DataFrame]], level: str = "####") -> list[str]:
    """Lines of the task tables, each under its heading."""
    lines = []
    for heading, table in tables:
        lines += [f"{level} {heading}", "", markdown_table(table), ""]
    return lines


def render(frame: pd.DataFrame, metric: str | None = None, fmt: str = "rich", console: Console | None = None,
           scaling: bool = True, reference: str | None = None, baseline: str = DEFAULT_BASELINE) -> str:
    """Print (rich) or return (markdown, csv) the comparison of ``frame``; returns the text for non-rich formats.

    ``reference="lra"`` adds the published LRA rows (module docstring); the measured numbers do not change.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if reference is not None and reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; valid: {', '.join(REFERENCES)}")
    runs = frame.attrs.get("runs") or list(dict.fromkeys(frame["run"]))
    stats = metric_stats(frame, metric, baseline)
    if fmt == "csv":
        long = csv_frame(stats)
        if reference == "lra":
            published = published_lra_rows(frame)
            long = long.assign(published=False)
            if not published.empty:
                long = pd.concat([long.astype({"seq_len": "Int64", "n": "Int64"}),
                                  published.astype({"seq_len": "Int64", "n": "Int64"})], ignore_index=True)
        buffer = io.StringIO()
        long.to_csv(buffer, index=False, float_format="%.6g")
        return buffer.getvalue()
    tables = task_tables(stats, baseline, runs)
    notes = footnotes(stats, baseline, runs)
    scale = scaling_table(scaling_frame(frame, baseline), baseline) if scaling else pd.DataFrame()
    lra = lra_reference_table(frame, baseline) if reference == "lra" else None
    title = f"{metric or 'main metric'} by task, L and attention ({', '.join(runs)})"
    lra_title = f"LRA {LRA_METRIC}: measured ({', '.join(runs)}) beside published results (not re-run)"
    if fmt == "markdown":
        parts = [f"### {title}", ""] + markdown_tables(tables) + [f"- {note}" for note in notes]
        if not scale.empty:
            parts += ["", "### scaling against L", "", markdown_table(scale), "", f"- {scaling_note(baseline)}"]
        if lra is not None:
            parts += ["", f"### {lra_title}", "", markdown_table(lra[0]), ""] + [f"- {note}" for note in lra[1]]
        elif reference == "lra":
            parts += ["", NO_LRA_TASKS]
        return "\n".join(parts) + "\n"
    console = console or make_console()
    console.print(title, markup=False, style="bold")
    for heading, table in tables:
        console.print(rich_table(table, heading))
    for note in notes:
        console.print(f"- {note}", markup=False)
    if not scale.empty:
        console.print(rich_table(scale, "scaling against L"))
        console.print(scaling_note(baseline), markup=False)
    if lra is not None:
        console.print(rich_table(lra[0], lra_title))
        for note in lra[1]:
            console.print(note, markup=False)
    elif reference == "lra":
        console.print(NO_LRA_TASKS, markup=False)
    return ""
