"""The tables of compare, report, bench and gpu-check: built from the frames of ``frames`` (or plain rows) and
rendered as Markdown pipe tables (``pipe_table``: no dependency, so the GPU box renders them too), rich tables
(the console) or CSV.

- ``task_tables(stats)``: one table per task, configuration and metric (its heading names them, the split, and
  how many comparisons its marks are Holm-adjusted over): rows L, attention (probes last) and run; columns only
  where some row has a value (n, mean ± 95% CI, Δ vs the baseline by seed and by seeds plus test set, Δ in %,
  the smallest detectable difference, Δ vs the first run and in %). Numbers carry their unit: memory in
  kB/MB/GB, throughput as ``12.3k tok/s``, times in ms, digits set by the interval (two significant digits of the
  half-width).
- ``cost_tables(frame)``: per family, throughput, times, peak memory and params, only the columns some job measured.
- ``scaling_table(scaling)``: the log-log slope and the crossover length per task, metric and attention.
- ``lra_reference_table(frame)``: the measured LRA accuracy beside the published results (not re-run).
- Tables of substitute data (``data.substitute``) get ``†`` in their heading and a footnote naming the data
  source, in every format (the data that ran is part of a configuration: real and substitute data never share a
  table).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from rich.table import Table
from rich.text import Text

from suite.analysis.frames import DEFAULT_BASELINE, LRA_METRIC, _runs_of, attention_order, lra_frame, metric_stats
from suite.analysis.published import LRA_TASKS, PUBLISHED_LRA
from suite.analysis.units import format_pct, format_value
from suite.run.records import is_probe

SUBSTITUTE_MARK = "†"
DELTA_MARK = "*"
CI_NOTE = "95% CI"


def pipe_table(columns: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown pipe table of ``rows`` under ``columns``, every cell as its text: each column as wide as its
    widest cell and at least its header plus two, left-aligned (``:---``; plain ``---`` when there are no rows).
    This is the layout of tabulate's "pipe" format for text cells, which the committed tables were written in."""
    header = [str(c).strip() for c in columns]
    cells = [[str(v).strip() for v in row] for row in rows]
    widths = [max([len(h) + 2] + [len(row[i]) for row in cells]) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    rule = "|" + "|".join(":" + "-" * (w + 1) if cells else "-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule] + [line(row) for row in cells])


def markdown_table(table: pd.DataFrame) -> str:
    """A task, scaling or bench table as a pipe table: its index as leading columns, cells as they are (no number
    parsing)."""
    flat = table.reset_index()
    return pipe_table(list(flat.columns), flat.itertuples(index=False))


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


def _mark_text(mark: str) -> str:
    return "" if not mark else f" {DELTA_MARK}" if mark == "differs" else f" {DELTA_MARK} {mark}"


def _mean_cell(row) -> str:
    if row.n == 0:
        return row.statuses or "-"
    if row.n == 1 and math.isfinite(row.wilson_low):
        low, high = (format_value(row.metric, v, like=row.mean) for v in (row.wilson_low, row.wilson_high))
        return f"{format_value(row.metric, row.mean)} [{low}, {high}] (1 seed; Wilson, {row.wilson_n} examples)"
    if row.ci_note:
        return f"{format_value(row.metric, row.mean)} (no CI: {row.ci_note})"
    return format_value(row.metric, row.mean, row.ci95)


def _delta_cell(metric: str, delta: float, half: float, mark: str, like: float, note: str = "") -> str:
    if not math.isfinite(delta):
        return note
    if not math.isfinite(half) or half == 0:
        return format_value(metric, delta, signed=True, like=like) + " (no CI)"
    return format_value(metric, delta, half, signed=True, like=like) + _mark_text(mark)


def _n_cell(row) -> str:
    return f"{row.n} (+{row.failed})" if row.failed and (row.n or row.missing) else str(row.n)


def _mde_cell(row) -> str:
    if not math.isfinite(row.mde):
        return ""
    return format_value(row.metric, row.mde)


def _like(row) -> float:
    """The value a difference's decimals follow: the larger of the row's and the baseline's means."""
    means = [abs(m) for m in (row.mean, row.mean - row.delta) if math.isfinite(m)]
    return max(means) if means else row.mean


def table_columns(baseline: str, first_run: str | None) -> dict[str, str]:
    """Header of every possible column of a task table, by id."""
    columns = {"n": "n", "mean": f"mean ± {CI_NOTE}", "delta": f"Δ vs {baseline} ± {CI_NOTE} (seeds)",
               "combined": f"Δ vs {baseline} ± {CI_NOTE} (seeds + test set)", "delta_pct": f"Δ% vs {baseline}",
               "mde": "MDE"}
    if first_run is not None:
        columns.update(run_delta=f"Δ vs {first_run} ± {CI_NOTE} (Welch)", run_delta_pct=f"Δ% vs {first_run}")
    return columns


#: the CSV fields that carry each table column (CSV and markdown carry the same columns)
CSV_FIELDS = {"L": ["seq_len"], "attention": ["attention", "kind"], "run": ["run"],
              "n": ["n", "missing", "failed", "statuses"],
              "mean": ["mean", "ci95", "ci_note", "wilson_low", "wilson_high", "wilson_n"],
              "delta": ["delta", "delta_ci95", "delta_p", "delta_n", "delta_note", "comparisons", "delta_p_holm",
                        "delta_mark"],
              "combined": ["combined_delta", "combined_ci95", "combined_p", "examples_n", "clusters_n"],
              "delta_pct": ["delta_pct"], "mde": ["mde"],
              "run_delta": ["run_delta", "run_delta_ci95", "run_delta_p", "run_delta_p_holm", "run_delta_mark"],
              "run_delta_pct": ["run_delta_pct"]}


def attention_label(attention: str) -> str:
    """How a table names an attention: probes say so."""
    return f"{attention} (probe)" if is_probe(attention) else attention


def _arrow(direction: str | None) -> str:
    return {"max": " ↑", "min": " ↓"}.get(direction or "", "")


def task_heading(task: str, metric: str, direction: str | None, substitute: bool, config: str = "",
                 split: str = "") -> str:
    """``task † · configuration · metric ↑ (split)``: what a table (or row) holds (the configuration where the task
    has several in the runs)."""
    where = f" ({split})" if split else ""
    setting = f" · {config}" if config else ""
    return f"{task}{f' {SUBSTITUTE_MARK}' if substitute else ''}{setting} · {metric}{_arrow(direction)}{where}"


def _prune(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the columns no row has a value in."""
    keep = [c for c in table.columns if any(str(v) not in ("", "-") for v in table[c])]
    return table[keep]


def _split_of(group: pd.DataFrame) -> str:
    return ",".join(sorted({str(v) for v in group["split"] if v}))


def task_tables(stats: pd.DataFrame, baseline: str = DEFAULT_BASELINE,
                runs: list[str] | None = None) -> list[tuple[str, pd.DataFrame]]:
    """(heading, table) per task, configuration and metric: rows (L, attention[, run]); only the columns with
    values; the heading says how many comparisons the table's marks are Holm-adjusted over."""
    runs = runs or _runs_of(stats)
    several = len(runs) > 1
    headers = table_columns(baseline, runs[0] if several else None)
    out = []
    for (task, _config, metric), group in stats.groupby(["task", "config", "metric"], sort=False):
        if not (group["n"] > 0).any() and not (group["is_main"].all() and (group["statuses"] != "").any()):
            continue  # the metric is nowhere in this task (a main metric that no job reached still shows why)
        order = {a: i for i, a in enumerate(attention_order(group["attention"], baseline))}
        run_order = {r: i for i, r in enumerate(runs)}
        group = group.assign(_a=group["attention"].map(order), _r=group["run"].map(run_order))
        group = group.sort_values(["seq_len", "_a", "_r"], kind="stable")
        rows = []
        for r in group.itertuples():
            row = {"L": str(r.seq_len), "attention": attention_label(r.attention)}
            if several:
                row["run"] = r.run
            combined = math.isfinite(r.combined_delta)
            row[headers["n"]] = _n_cell(r)
            row[headers["mean"]] = _mean_cell(r)
            row[headers["delta"]] = _delta_cell(metric, r.delta, r.delta_ci95, "" if combined else r.delta_mark,
                                                _like(r), r.delta_note)
            row[headers["combined"]] = _delta_cell(metric, r.combined_delta, r.combined_ci95, r.delta_mark, _like(r))
            row[headers["delta_pct"]] = "" if not math.isfinite(r.delta) else format_pct(r.delta_pct)
            row[headers["mde"]] = _mde_cell(r)
            if several:
                row[headers["run_delta"]] = _delta_cell(metric, r.run_delta, r.run_delta_ci95, r.run_delta_mark, r.mean)
                row[headers["run_delta_pct"]] = "" if not math.isfinite(r.run_delta) else format_pct(r.run_delta_pct)
            rows.append(row)
        index = ["L", "attention"] + (["run"] if several else [])
        table = _prune(pd.DataFrame(rows).set_index(index))
        configs = stats.loc[stats["task"] == task, "config"].nunique()
        heading = task_heading(task, metric, group["direction"].iloc[0], bool(group["substitute"].any()),
                               str(group["config_label"].iloc[0]) if configs > 1 else "", _split_of(group))
        count = int(group["comparisons"].max())
        heading += f" · {count} comparison{'s' if count != 1 else ''}, Holm" if count else ""
        out.append((heading, table))
    return out


def footnotes(stats: pd.DataFrame, baseline: str = DEFAULT_BASELINE, runs: list[str] | None = None) -> list[str]:
    """What the tables' cells mean: the interval, the differences and their marks, †, probes."""
    runs = runs or _runs_of(stats)
    notes = ["each table is one configuration (task, profile, every --set, the data that ran; the heading names "
             "what sets it apart from the task's others): configurations are never averaged or paired across; "
             "(test) / (val): the split the metric was measured on (the test split is read once, at the end)",
             f"mean ± {CI_NOTE}: mean over seeds (n = seeds that finished ok) ± the half-width of its 95% confidence "
             "interval (Student t, n - 1 degrees of freedom); n = 1 or zero variance has no interval (no CI), except "
             "that one seed of an accuracy shows [the 95% Wilson interval] over its test examples (the test set's "
             "sampling error alone: it says nothing of the seeds' spread); a "
             "status (oom, timeout, ...) where no seed finished, (+k status) where some did not, (+k ok without a "
             "value) for ok jobs whose metric is missing or not finite"]
    present = set(stats["attention"])
    if baseline in present:
        notes.append(f"Δ vs {baseline} (seeds): mean over the seeds both finished of (attention - {baseline}), ± the "
                     f"95% CI of that paired difference (paired t); at least 2 seed pairs, one seed is never compared; "
                     f"Δ%: in % of {baseline}'s mean over the same seeds")
        notes.append(f"Δ vs {baseline} (seeds + test set): the same difference over the same test examples, its "
                     "interval adding the test set's sampling error to the seeds' (per-example outcomes of every seed; "
                     "cluster-robust where examples share a source; suite.analysis.paired)")
        notes.append("MDE: the smallest true difference the comparison would detect with 80% power at the 5% level, "
                     "(t(0.975) + t(0.80)) x its standard error (seeds + test set where given)")
    else:
        attentions = [a for a in attention_order(present) if not is_probe(a)]
        notes.append(f"no Δ column: these records hold no {baseline} rows (pick a baseline with --baseline; "
                     f"attentions present: {', '.join(attentions) or 'none'})")
    if len(runs) > 1:
        notes.append(f"Δ vs {runs[0]}: this run's mean - {runs[0]}'s of the same configuration, ± the 95% CI by "
                     f"Welch's t (seeds are not paired across runs; needs n >= 2 in both); Δ%: in % of {runs[0]}'s "
                     "mean")
    notes.append(f"{DELTA_MARK}: the difference holds after Holm's adjustment over the table's comparisons (its "
                 "heading says how many; adjusted p < 0.05, on the seeds + test set interval where given); better / "
                 "worse by the metric's direction (↑ higher is better, ↓ lower is better); the intervals shown are "
                 "unadjusted")
    probes = [a for a in attention_order(present) if is_probe(a)]
    if probes:
        notes.append(f"(probe): {', '.join(probes)} are learnability probes (a model without attention that shows how "
                     "learnable the task is), not attentions; listed after them and never the baseline")
    substitutes = stats[stats["substitute"]].drop_duplicates(["task"])
    if len(substitutes):
        listed = "; ".join(f"{t}: {s}" for t, s in zip(substitutes["task"], substitutes["source"]))
        notes.append(f"{SUBSTITUTE_MARK} substitute data (an embedded stand-in, not the published data set): {listed}")
    return notes


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
    several = stats.groupby("task")["config"].nunique()
    stats = stats.assign(row=[task_heading(t, m, d, s, c if several[t] > 1 else "", sp) for t, m, d, s, c, sp in
                              zip(stats["task"], stats["metric"], stats["direction"], stats["substitute"],
                                  stats["config_label"], stats["split"])],
                         cell=[_lra_cell(r) for r in stats.itertuples()])
    index = ["row", "seq_len"] + (["run"] if len(runs) > 1 else [])
    table = stats.pivot_table(index=index, columns="attention", values="cell", aggfunc="first", sort=False)
    table = table[attention_order(table.columns, baseline)].fillna("-")
    table.columns = [attention_label(a) for a in table.columns]
    task_of_row = dict(zip(stats["row"], stats["task"]))
    for result in PUBLISHED_LRA:
        table[result.label] = [_published_cell(task_of_row[key[0]], result) for key in table.index]
    table.index.names = ["task · metric", "L"] + (["run"] if len(runs) > 1 else [])
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


#: the cost table's columns, in order, with their headers
COST_METRICS = {"train_samples_per_s": "train samples/s", "train_tokens_per_s": "train tok/s",
                "infer_samples_per_s": "infer samples/s", "infer_tokens_per_s": "infer tok/s",
                "fwd_ms": "fwd", "fwdbwd_ms": "fwd+bwd", "decode_ms_per_token": "decode per token",
                "peak_mem_bytes": "peak memory", "state_bytes": "decode state", "params": "params"}


def _cost_cell(metric: str, row: pd.Series) -> str:
    if row["n"] == 0:
        return row["statuses"] or "-"
    if metric == "params" or not math.isfinite(row["ci95"]):
        return format_value(metric, row["mean"], unit=False)
    return format_value(metric, row["mean"], row["ci95"], unit=False)


def cost_tables(frame: pd.DataFrame, baseline: str, runs: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(family, table) per family: rows task, L, attention[, run]; columns n and the cost metrics some job of the
    family measured (a family's main metric, already tabulated, left out)."""
    out = []
    for family, part in frame.groupby("family", sort=False):
        main = set(part["main_metric"])
        columns = {}
        for metric, header in COST_METRICS.items():
            if {metric} == main:
                continue
            stats = metric_stats(part, metric, baseline)
            if (stats["n"] > 0).any():
                columns[header] = (metric, stats.set_index(["run", "task", "config", "seq_len", "attention"]))
        if not columns:
            continue
        cells = next(iter(columns.values()))[1]
        rows = []
        for task in dict.fromkeys(part["task"]):
            sub = cells.xs(task, level="task", drop_level=False).reset_index()
            order = {a: i for i, a in enumerate(attention_order(sub["attention"], baseline))}
            sub = sub.assign(_a=sub["attention"].map(order), _r=sub["run"].map({r: i for i, r in enumerate(runs)}))
            several_configs = sub["config"].nunique() > 1
            for r in sub.sort_values(["config", "seq_len", "_a", "_r"]).itertuples():
                key = (r.run, task, r.config, r.seq_len, r.attention)
                name = f"{task}{f' {SUBSTITUTE_MARK}' if r.substitute else ''}"
                row = {"task": f"{name} · {r.config_label}" if several_configs else name, "L": str(r.seq_len),
                       "attention": attention_label(r.attention)}
                if len(runs) > 1:
                    row["run"] = r.run
                n = int(part[(part["run"] == r.run) & (part["task"] == task) & (part["config"] == r.config)
                             & (part["seq_len"] == r.seq_len) & (part["attention"] == r.attention)
                             & (part["status"] == "ok")]["seed"].nunique())
                row["n"] = str(n)
                for header, (metric, stats) in columns.items():
                    row[header] = _cost_cell(metric, stats.loc[key]) if key in stats.index else "-"
                rows.append(row)
        table = pd.DataFrame(rows)
        heading = family
        if table["task"].nunique() == 1:  # the task goes into the heading
            heading = f"{family}: {table['task'].iloc[0]}"
            table = table.drop(columns="task")
        index = [c for c in ("task", "L", "attention", "run") if c in table.columns]
        out.append((heading, table.set_index(index)))
    return out


COST_NOTE = ("cells: mean ± 95% CI over the seeds that finished ok (Student t; one seed: its value alone); "
             "throughput per second with k = 10^3, M = 10^6; memory in kB/MB/GB (10^3/10^6/10^9 bytes); times in ms")
