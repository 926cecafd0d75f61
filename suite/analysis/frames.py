"""Records as pandas frames and the statistics of every table (module ``compare`` says what the tables show).

- ``load_runs(paths)``: records of run directories or ``.jsonl`` files (latest record per key) as one DataFrame,
  one row per job, with a ``run`` label per path, a ``kind`` (``attention``, or ``probe`` for attentions named
  ``probe:...``: learnability probes, shown after the attentions and never a baseline) and its **configuration**:
  ``config`` (an id of everything in the job's configuration but the attention and seed: task, profile, resolved
  hyperparameters with every ``--set``, the task's data section, and the data source that actually ran) and
  ``config_label`` (the profile, and what sets the configuration apart from the task's others in the frame).
- ``metric_stats(frame, metric, baseline, split)``: per run, task, configuration, L and attention over the ``ok``
  seeds of ``metric`` (default: each task's main metric) on ``split`` (default ``test``; measurement jobs have
  none): n, mean, std and ``ci95``, the half-width of the 95% confidence interval of the mean (Student t with
  n - 1 degrees of freedom; none for n = 1, ``ci_note`` says why); ``missing``: ok jobs without a finite value
  (counted, never dropped silently); cells with no ok seed carry the failing statuses instead (e.g. ``oom``).
  Different configurations are different rows: never averaged, never paired across. Then against the baseline
  (default ``softmax``) of the same configuration the paired difference by seed (``delta``: mean over the seeds
  both finished of attention - baseline, its ``delta_ci95`` and ``delta_p`` by the paired t, ``delta_pct`` in % of
  the baseline's mean over those seeds; needs two seed pairs: one seed is never compared), where both hold
  per-example outcomes on the same examples the interval of seeds plus test set (``combined_*``,
  ``suite.analysis.paired``), ``mde`` (the smallest difference the comparison could detect) and, for every run
  after the first, the difference to the first run (``run_delta``, Welch's t: seeds are not paired across runs).
  Each table's comparisons (task, configuration, metric) are Holm-adjusted together (``comparisons``,
  ``delta_p_holm``, ``run_delta_p_holm``); a difference whose adjusted p is under 0.05 is marked ``better`` or
  ``worse`` by the metric's direction (``differs`` when the metric has none). Degenerate intervals (zero
  variance) get no mark (``delta_note`` says why).
- ``scaling_frame(frame)``: per run, task, scaling metric and attention, the log-log slope against L and the
  crossover length against the baseline; the metrics are time (``fwd_ms``, ``fwdbwd_ms``, ``decode_ms_per_token``,
  and ``train_ms_per_sample`` / ``infer_ms_per_sample`` from throughput) and memory (``peak_mem_bytes``, the
  decoding ``state_bytes``).
- ``lra_frame`` / ``published_lra_rows``: the LRA rows, and the published LRA accuracies as long-form rows.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from suite.analysis import DEFAULT_BASELINE
from suite.analysis.paired import Difference, combined_difference, holm, seed_difference
from suite.analysis.published import LRA_TASKS, PUBLISHED_LRA
from suite.analysis.stats import loglog_slope, mean_ci, welch_difference
from suite.analysis.units import crossover_cell, metric_direction
from suite.run.records import (
    Record,
    decode_examples,
    held_out_value,
    is_probe,
    job_key,
    latest_by_key,
    legacy_split,
    read_records,
)

TIME_METRICS = ("fwd_ms", "fwdbwd_ms", "decode_ms_per_token", "train_ms_per_sample", "infer_ms_per_sample")
SCALING_METRICS = TIME_METRICS + ("peak_mem_bytes", "state_bytes")
_DERIVED = {"train_ms_per_sample": "train_samples_per_s", "infer_ms_per_sample": "infer_samples_per_s"}
PUBLISHED_RUN = "published"
LRA_METRIC = "accuracy"
DEFAULT_SPLIT = "test"
MARK_LEVEL = 0.05


def _run_label(path: Path) -> str:
    if path.is_dir():
        return path.resolve().name
    return path.resolve().parent.name if path.stem == "records" else path.stem


def config_id(record: Mapping[str, Any]) -> str:
    """The id of a record's configuration: everything but the attention and seed (module docstring)."""
    data = record.get("data") or {}
    return job_key(record["task"], "", record["profile"], 0, 0,
                   {"config": record["config"], "source": data.get("source")})[:8]


def _flat_settings(record: Mapping[str, Any]) -> dict[str, str]:
    config = record["config"]
    flat = {f"{k}": _short(v) for k, v in sorted((config.get("hparams") or {}).items())}
    flat.update({f"data.{k}": _short(v) for k, v in sorted((config.get("data") or {}).items())})
    flat.update({k: _short(v) for k, v in sorted(config.items()) if k not in ("hparams", "data")})
    source = _short((record.get("data") or {}).get("source"))
    if flat.get("data.source") == source:
        del flat["data.source"]  # the data that ran is the task's source: say it once
    flat["source"] = source
    return flat


def _short(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _config_labels(records: list[Record]) -> dict[str, str]:
    """config id -> label: the profile, plus, where a task has several configurations in the frame, the settings
    that tell them apart (``lr=0.002``)."""
    by_task: dict[str, dict[str, Record]] = {}
    for record in records:
        by_task.setdefault(record["task"], {}).setdefault(config_id(record), record)
    labels = {}
    for configs in by_task.values():
        flats = {cid: _flat_settings(r) for cid, r in configs.items()}
        keys = sorted({k for flat in flats.values() for k in flat})
        differing = [k for k in keys if len({flat.get(k, "-") for flat in flats.values()}) > 1]
        for cid, record in configs.items():
            extra = [f"{k}={flats[cid].get(k, '-')}" for k in differing]
            labels[cid] = ", ".join([record["profile"], *extra]) if extra else record["profile"]
    return labels


def _test_examples(record: Record) -> int | None:
    """How many test examples the record's main metric was measured on, where the record says so."""
    data, metrics = record.get("data") or {}, record.get("metrics") or {}
    for value in (data.get("test_examples"), metrics.get("test_examples"), data.get("eval_examples"),
                  metrics.get("eval_examples")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
            return int(value)
    return None


def load_runs(paths: Iterable[Path | str]) -> pd.DataFrame:
    """One row per job (latest record per key) of every path; ValueError when a path holds no records."""
    rows = []
    labels: list[str] = []
    every: list[Record] = []
    for raw in paths:
        path = Path(raw)
        label = _run_label(path)
        if label in labels:
            label = f"{label}#{len(labels) + 1}"
        labels.append(label)
        records = latest_by_key(read_records(path))
        if not records:
            raise ValueError(f"{path}: no records")
        every += records
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
                         "metrics": metrics, "config": config_id(r), "legacy_split": legacy_split(r),
                         "examples": r.get("examples"), "test_n": _test_examples(r)})
    labels_by_config = _config_labels(every)
    frame = pd.DataFrame(rows)
    frame["config_label"] = frame["config"].map(labels_by_config)
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


STATS_COLUMNS = ["run", "family", "task", "config", "config_label", "metric", "split", "direction", "seq_len",
                 "attention", "kind", "n", "missing", "mean", "std", "ci95", "ci_note", "wilson_low",
                 "wilson_high", "wilson_n", "statuses", "failed",
                 "baseline", "delta_n", "delta", "delta_ci95", "delta_p", "delta_pct", "delta_note",
                 "combined_delta", "combined_ci95", "combined_p", "examples_n", "clusters_n", "mde", "comparisons",
                 "delta_p_holm", "delta_mark", "vs_run", "run_delta", "run_delta_ci95", "run_delta_p",
                 "run_delta_pct", "run_delta_p_holm", "run_delta_mark", "substitute", "source"]


def _seed_values(group: pd.DataFrame, name: str, split: str) -> tuple[dict[int, float], int, str]:
    """(finite values of ``name`` on ``split`` by seed over the ok jobs, ok jobs without a finite value, the split
    the values come from: ``split``, ``""`` for a measurement job's metric)."""
    values: dict[int, float] = {}
    missing, found_split = 0, ""
    for metrics, status, seed, old in zip(group["metrics"], group["status"], group["seed"], group["legacy_split"]):
        if status != "ok":
            continue
        value, where = held_out_value(metrics, name, split, old)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            values[int(seed)] = float(value)
            found_split = where or ""
        else:
            missing += 1
    return values, missing, found_split


#: metrics that are a fraction of examples right: one seed of them gets a Wilson interval over its test examples
FRACTION_METRICS = ("accuracy", "accuracy_top5")


def _wilson(name: str, values: dict[int, float], group: pd.DataFrame, split: str) -> tuple[float, float, int]:
    """(low, high, examples) of the 95% Wilson interval of one seed's accuracy over the test examples it was
    measured on (the test set's sampling error alone; seeds vary too), or NaNs where that count is unknown."""
    if name not in FRACTION_METRICS or split not in ("test", ""):
        return math.nan, math.nan, 0
    counts = {int(n) for n, status in zip(group["test_n"], group["status"]) if status == "ok" and pd.notna(n)}
    if len(counts) != 1:
        return math.nan, math.nan, 0
    from scipy import stats

    count = counts.pop()
    value = next(iter(values.values()))
    interval = stats.binomtest(round(value * count), count).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high), count


def _seed_examples(group: pd.DataFrame) -> dict[int, tuple]:
    """Per seed (ok jobs): (outcomes [N] as floats, clusters or None, fingerprint) of the test examples."""
    out = {}
    for examples, status, seed in zip(group["examples"], group["status"], group["seed"]):
        if status == "ok" and isinstance(examples, dict) and examples.get("split") == "test":
            try:
                values, clusters = decode_examples(examples)  # type: ignore[arg-type]
            except ValueError:
                continue
            out[int(seed)] = (values.astype(float), clusters, examples.get("fingerprint"))
    return out


def metric_stats(frame: pd.DataFrame, metric: str | None = None, baseline: str = DEFAULT_BASELINE,
                 split: str = DEFAULT_SPLIT) -> pd.DataFrame:
    """The numbers of every table (module docstring): one row per run, task, configuration, L and attention;
    columns ``STATS_COLUMNS`` plus ``values`` (the ok values by seed), ``examples`` (per-example test outcomes by
    seed, for the task's main metric on the test split) and ``is_main`` (the metric is the task's main one)."""
    rows = []
    keys = ["run", "task", "config", "seq_len", "attention"]
    for (run, task, config, seq_len, attention), group in frame.groupby(keys, sort=False):
        main = group["main_metric"].iloc[0]
        name = metric or main
        values, missing, where = _seed_values(group, name, split)
        mean, std, half = mean_ci(list(values.values()))
        ci_note = "n = 1" if len(values) == 1 else "zero variance" if half == 0 else ""
        wilson = _wilson(name, values, group, where) if len(values) == 1 else (math.nan, math.nan, 0)
        failures = group.loc[group["status"] != "ok", "status"].value_counts()
        failed = [f"{count} {status}" for status, count in sorted(failures.items())]
        if missing:
            failed.append(f"{missing} ok without a value")
        rows.append({"run": run, "family": group["family"].iloc[0], "task": task, "config": config,
                     "config_label": group["config_label"].iloc[0], "metric": name, "split": where,
                     "direction": metric_direction(name, main, group["direction"].iloc[0]), "seq_len": int(seq_len),
                     "attention": attention, "kind": group["kind"].iloc[0], "n": len(values), "missing": missing,
                     "mean": mean, "std": std, "ci95": half, "ci_note": ci_note, "wilson_low": wilson[0],
                     "wilson_high": wilson[1], "wilson_n": wilson[2],
                     "statuses": ",".join(sorted(failures.index)), "failed": ", ".join(failed),
                     "substitute": bool(group["substitute"].any()),
                     "source": ",".join(sorted({str(s) for s in group["source"] if s})), "values": values,
                     "examples": _seed_examples(group) if name == main and where == "test" else {},
                     "is_main": name == main})
    stats = pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in _COMPARISON_COLUMNS] + _INTERNAL)
    return _add_comparisons(stats, baseline, frame.attrs.get("runs") or list(dict.fromkeys(frame["run"])))


_INTERNAL = ["values", "examples", "is_main"]
_COMPARISON_COLUMNS = ("baseline", "delta_n", "delta", "delta_ci95", "delta_p", "delta_pct", "delta_note",
                       "combined_delta", "combined_ci95", "combined_p", "examples_n", "clusters_n", "mde",
                       "comparisons", "delta_p_holm", "delta_mark", "vs_run", "run_delta", "run_delta_ci95",
                       "run_delta_p", "run_delta_pct", "run_delta_p_holm", "run_delta_mark")


def _pct(delta: float, reference: float) -> float:
    return 100.0 * delta / abs(reference) if math.isfinite(delta) and reference else math.nan


def _combined(row, base, seeds: list[int]) -> Difference | None:
    """The seeds-plus-test-set difference of ``row`` vs ``base`` over ``seeds`` when both have per-example outcomes
    of those seeds on the same examples (one fingerprint), else None."""
    mine, theirs = row.examples, base.examples
    if len(seeds) < 2 or any(s not in mine or s not in theirs for s in seeds):
        return None
    prints = {mine[s][2] for s in seeds} | {theirs[s][2] for s in seeds}
    sizes = {len(mine[s][0]) for s in seeds} | {len(theirs[s][0]) for s in seeds}
    if len(prints) != 1 or len(sizes) != 1:
        return None
    import numpy as np

    a = np.stack([mine[s][0] for s in seeds])
    b = np.stack([theirs[s][0] for s in seeds])
    return combined_difference(a, b, mine[seeds[0]][1])


def _welch_p(diff: float, half: float, df: float) -> float:
    if not (math.isfinite(half) and half > 0 and math.isfinite(df)):
        return math.nan
    from scipy import stats

    se = half / float(stats.t.ppf(0.975, df))
    return float(2 * stats.t.sf(abs(diff) / se, df))


def _mark(delta: float, p_holm: float, direction: str | None) -> str:
    if not (math.isfinite(p_holm) and p_holm < MARK_LEVEL):
        return ""
    if direction not in ("max", "min"):
        return "differs"
    return "better" if (delta > 0) == (direction == "max") else "worse"


def _compare_to_baseline(r, base, baseline: str) -> dict:
    out: dict = {"baseline": baseline if base is not None else "", "delta_n": 0, "delta": math.nan,
                 "delta_ci95": math.nan, "delta_p": math.nan, "delta_pct": math.nan, "delta_note": "",
                 "combined_delta": math.nan, "combined_ci95": math.nan, "combined_p": math.nan, "examples_n": 0,
                 "clusters_n": 0, "mde": math.nan, "_p": math.nan}
    if base is None or r.attention == baseline or not r.n or not base.n:
        return out
    seeds = sorted(set(r.values) & set(base.values))
    out["delta_n"] = len(seeds)
    if len(seeds) < 2:
        out["delta_note"] = "" if r.kind == "probe" else "one seed: not compared"
        return out
    by_seed = seed_difference([r.values[s] for s in seeds], [base.values[s] for s in seeds])
    base_mean = sum(base.values[s] for s in seeds) / len(seeds)
    out.update(delta=by_seed.delta, delta_ci95=by_seed.half, delta_p=by_seed.p,
               delta_pct=_pct(by_seed.delta, base_mean), mde=by_seed.mde, _p=by_seed.p)
    combined = _combined(r, base, seeds)
    if combined is not None:
        out.update(combined_delta=combined.delta, combined_ci95=combined.half, combined_p=combined.p,
                   examples_n=combined.examples, clusters_n=combined.clusters, mde=combined.mde, _p=combined.p)
    if not math.isfinite(out["_p"]):
        out["delta_note"] = "zero variance: no interval, no mark"
    return out


def _add_comparisons(stats: pd.DataFrame, baseline: str, runs: list[str]) -> pd.DataFrame:
    cells = {(r.run, r.task, r.config, r.seq_len, r.attention): r for r in stats.itertuples()}
    found = []
    for r in stats.itertuples():
        row = _compare_to_baseline(r, cells.get((r.run, r.task, r.config, r.seq_len, baseline)), baseline)
        first = (cells.get((runs[0], r.task, r.config, r.seq_len, r.attention))
                 if runs and r.run != runs[0] else None)
        row.update(vs_run="", run_delta=math.nan, run_delta_ci95=math.nan, run_delta_p=math.nan,
                   run_delta_pct=math.nan)
        if first is not None and r.n and first.n:
            diff, half, df = welch_difference(list(first.values.values()), list(r.values.values()))
            row.update(vs_run=runs[0], run_delta=diff, run_delta_ci95=half, run_delta_p=_welch_p(diff, half, df),
                       run_delta_pct=_pct(diff, first.mean))
        found.append(row)
    extra = pd.DataFrame(found, index=stats.index)
    stats = pd.concat([stats, extra], axis=1)
    # Holm across each table: its comparisons to the baseline and to the first run
    stats["comparisons"] = 0
    stats["delta_p_holm"] = math.nan
    stats["run_delta_p_holm"] = math.nan
    for _, group in stats.groupby(["task", "config", "metric"], sort=False):
        family = [(i, "delta_p_holm", p) for i, p in zip(group.index, group["_p"]) if math.isfinite(p)]
        family += [(i, "run_delta_p_holm", p) for i, p in zip(group.index, group["run_delta_p"]) if math.isfinite(p)]
        adjusted = holm([p for *_, p in family])
        for (i, column, _), value in zip(family, adjusted):
            stats.loc[i, column] = value
        stats.loc[group.index, "comparisons"] = len(family)
    stats["delta_mark"] = [_mark(d, p, direction) for d, p, direction in
                           zip(stats["combined_delta"].where(stats["combined_delta"].notna(), stats["delta"]),
                               stats["delta_p_holm"], stats["direction"])]
    stats["run_delta_mark"] = [_mark(d, p, direction) for d, p, direction in
                               zip(stats["run_delta"], stats["run_delta_p_holm"], stats["direction"])]
    return stats[STATS_COLUMNS + _INTERNAL]


def _runs_of(stats: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(stats["run"]))


def csv_frame(stats: pd.DataFrame) -> pd.DataFrame:
    """The long form of ``stats`` for CSV: every column of ``STATS_COLUMNS``, numbers unrounded."""
    return stats[STATS_COLUMNS].astype({"delta_n": "Int64"})


def scaling_frame(frame: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """Per run, task, scaling metric and attention: log-log slope against L and crossover length vs the baseline
    (attentions only; probes get their slope).

    Columns: run, task, config_label, metric, attention, lengths, slope, crossover (float or None),
    crossover_text, substitute. Only groups (of one configuration) with at least two lengths appear.
    """
    rows = []
    for metric in SCALING_METRICS:
        stats = metric_stats(frame, metric, baseline)
        stats = stats[(stats["n"] > 0) & (stats["mean"] > 0)]  # log-log: positive values only
        for (run, task, _), group in stats.groupby(["run", "task", "config"], sort=False):
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
                rows.append({"run": run, "task": task, "config_label": sub["config_label"].iloc[0],
                             "metric": metric, "attention": attention,
                             "lengths": ",".join(map(str, lengths)), "slope": loglog_slope(lengths, times),
                             "crossover": crossover, "crossover_text": text,
                             "substitute": bool(sub["substitute"].any())})
    return pd.DataFrame(rows, columns=["run", "task", "config_label", "metric", "attention", "lengths", "slope",
                                       "crossover", "crossover_text", "substitute"])


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
