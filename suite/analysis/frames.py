"""Records as pandas frames and the statistics of every table (module ``compare`` says what the tables show).

- ``load_runs(paths)``: records of run directories or ``.jsonl`` files (latest record per key) as one DataFrame,
  one row per job, with a ``run`` label per path and a ``kind`` (``attention``, or ``probe`` for attentions named
  ``probe:...``: learnability probes, shown after the attentions and never a baseline).
- ``metric_stats(frame, metric, baseline)``: per run, task, L and attention over the ``ok`` seeds of ``metric``
  (default: each task's main metric): n, mean, std and ``ci95``, the half-width of the 95% confidence interval of
  the mean (Student t with n - 1 degrees of freedom; none for n = 1); cells with no ok seed carry the failing
  statuses instead (e.g. ``oom``). Then against the baseline (default ``softmax``) the paired difference by seed
  (``delta``: mean over the seeds both finished of attention - baseline, its ``delta_ci95`` by the paired t,
  ``delta_pct`` in % of the baseline's mean over those seeds) and, for every run after the first, the difference to
  the first run (``run_delta``, Welch's t: seeds are not paired across runs). A difference whose interval excludes
  0 is marked ``better`` or ``worse`` by the metric's direction (``differs`` when the metric has none).
- ``scaling_frame(frame)``: per run, task, scaling metric and attention, the log-log slope against L and the
  crossover length against the baseline; the metrics are time (``fwd_ms``, ``fwdbwd_ms``, ``decode_ms_per_token``,
  and ``train_ms_per_sample`` / ``infer_ms_per_sample`` from throughput) and memory (``peak_mem_bytes``, the
  decoding ``state_bytes``).
- ``lra_frame`` / ``published_lra_rows``: the LRA rows, and the published LRA accuracies as long-form rows.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from suite.analysis import DEFAULT_BASELINE
from suite.analysis.published import LRA_TASKS, PUBLISHED_LRA
from suite.analysis.stats import loglog_slope, mean_ci, paired_difference, verdict, welch_difference
from suite.analysis.units import crossover_cell, metric_direction
from suite.run.records import is_probe, latest_by_key, read_records

TIME_METRICS = ("fwd_ms", "fwdbwd_ms", "decode_ms_per_token", "train_ms_per_sample", "infer_ms_per_sample")
SCALING_METRICS = TIME_METRICS + ("peak_mem_bytes", "state_bytes")
_DERIVED = {"train_ms_per_sample": "train_samples_per_s", "infer_ms_per_sample": "infer_samples_per_s"}
PUBLISHED_RUN = "published"
LRA_METRIC = "accuracy"


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
            metrics: dict[str, float | None] = dict(r.get("metrics") or {})
            for derived, source in _DERIVED.items():
                rate = metrics.get(source)
                if isinstance(rate, (int, float)) and rate > 0:
                    metrics[derived] = 1000.0 / rate
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


def attention_order(attentions: Iterable[str], baseline: str = DEFAULT_BASELINE) -> list[str]:
    """Row and column order: the baseline first, then the other attentions alphabetically, then the probes."""
    return sorted(set(attentions), key=lambda a: (is_probe(a), a != baseline, a))


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


def _runs_of(stats: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(stats["run"]))


def csv_frame(stats: pd.DataFrame) -> pd.DataFrame:
    """The long form of ``stats`` for CSV: every column of ``STATS_COLUMNS``, numbers unrounded."""
    return stats[STATS_COLUMNS].astype({"delta_n": "Int64"})


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


def lra_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` that belong to LRA tasks (a published task name, or family ``lra``)."""
    return frame[frame["task"].isin(list(LRA_TASKS)) | (frame["family"] == "lra")]


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
