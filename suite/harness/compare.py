"""Result tables from records: mean ± std over seeds per task, L and attention, across one or more runs.

- ``load_runs(paths)``: records of run directories or ``.jsonl`` files (latest record per key) as one
  DataFrame, one row per job, with a ``run`` label per path.
- ``metric_stats(frame, metric)``: mean, std (over seeds, ddof=1) and n of ``metric`` (default: each task's
  main metric) per run, task, L and attention, over the ``ok`` jobs; cells with no ok job carry the failing
  statuses instead (e.g. ``oom``).
- ``pivot_table(stats)``: rows task (metric, direction) and L, columns attention (and run). With exactly two
  runs each attention gets a ``Δ`` column (second run minus first), marked ``*`` when |Δ| exceeds the seed
  spread (std of the first + std of the second; needs n >= 2 in both).
- ``scaling_frame(frame)``: per run, task, scaling metric and attention, the log-log slope against L and the
  crossover length against softmax; the metrics are time (``fwd_ms``, ``fwdbwd_ms``, ``decode_ms_per_token``,
  and ``train_ms_per_sample`` / ``infer_ms_per_sample`` from throughput) and memory (``peak_mem_bytes``,
  the decoding ``state_bytes``).
- Rows from substitute data (``data.substitute``) get ``†`` after the task name and a footnote naming the
  data source, in every format.
- ``render(..., fmt)``: ``rich`` (a table on the console), ``markdown`` (pipe tables), ``csv`` (the numbers
  in long form: one row per run, task, metric, L and attention with mean, std, n, statuses, substitute).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from suite.harness.measure import crossover_length, loglog_slope
from suite.harness.records import latest_by_key, read_records

SUBSTITUTE_MARK = "†"
DELTA_MARK = "*"
TIME_METRICS = ("fwd_ms", "fwdbwd_ms", "decode_ms_per_token", "train_ms_per_sample", "infer_ms_per_sample")
SCALING_METRICS = TIME_METRICS + ("peak_mem_bytes", "state_bytes")
_DERIVED = {"train_ms_per_sample": "train_samples_per_s", "infer_ms_per_sample": "infer_samples_per_s"}
FORMATS = ("rich", "markdown", "csv")


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
                         "profile": r["profile"], "seed": r["seed"], "seq_len": r["seq_len"], "status": r["status"],
                         "main_metric": r["config"]["metric"], "direction": r["config"]["direction"],
                         "substitute": bool(data.get("substitute")), "source": data.get("source"),
                         "metrics": metrics})
    frame = pd.DataFrame(rows)
    frame.attrs["runs"] = labels
    return frame


def metric_stats(frame: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """mean / std / n of ``metric`` (each task's main metric when None) per run, task, L and attention.

    Columns: run, task, metric, direction, seq_len, attention, mean, std, n, statuses (the non-ok statuses
    seen, e.g. "oom"), substitute, source.
    """
    rows = []
    for (run, task, seq_len, attention), group in frame.groupby(["run", "task", "seq_len", "attention"], sort=False):
        name = metric or group["main_metric"].iloc[0]
        direction = group["direction"].iloc[0] if name == group["main_metric"].iloc[0] else None
        values = [m.get(name) for m, s in zip(group["metrics"], group["status"]) if s == "ok"]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        series = pd.Series(values, dtype=float)
        bad = sorted(set(group["status"]) - {"ok"})
        rows.append({"run": run, "task": task, "metric": name, "direction": direction, "seq_len": int(seq_len),
                     "attention": attention, "mean": series.mean() if values else math.nan,
                     "std": series.std(ddof=1) if len(values) > 1 else math.nan, "n": len(values),
                     "statuses": ",".join(bad), "substitute": bool(group["substitute"].any()),
                     "source": ",".join(sorted({str(s) for s in group["source"] if s}))})
    return pd.DataFrame(rows)


def _num(value: float) -> str:
    return f"{value:.4g}"


def _cell(row: pd.Series) -> str:
    if row["n"] == 0:
        return row["statuses"] or "-"
    std = 0.0 if row["std"] <= 1e-9 * abs(row["mean"]) else row["std"]  # rounding noise of equal values
    text = _num(row["mean"]) if row["n"] < 2 else f"{_num(row['mean'])} ± {std:.2g}"
    text += f" (n={row['n']})"
    if row["statuses"]:
        text += f" +{row['statuses']}"
    return text


def attention_order(attentions: Iterable[str]) -> list[str]:
    """Column order: softmax (the reference) first, then the others alphabetically."""
    return sorted(set(attentions), key=lambda a: (a != "softmax", a))


def _row_label(stats: pd.DataFrame) -> pd.Series:
    arrow = stats["direction"].map({"max": " ↑", "min": " ↓"}).fillna("")
    mark = stats["substitute"].map({True: f" {SUBSTITUTE_MARK}", False: ""})
    return stats["task"] + mark + " · " + stats["metric"] + arrow


def pivot_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Formatted cells: rows (task · metric, L), columns attention, or (attention, run[, Δ]) for several runs."""
    stats = stats.assign(row=_row_label(stats), cell=stats.apply(_cell, axis=1))
    runs = list(dict.fromkeys(stats["run"]))
    index = ["row", "seq_len"]
    if len(runs) == 1:
        table = stats.pivot_table(index=index, columns="attention", values="cell", aggfunc="first", sort=False)
        table = table[attention_order(table.columns)]
        table.columns.name = None
    else:
        table = stats.pivot_table(index=index, columns=["attention", "run"], values="cell", aggfunc="first", sort=False)
        if len(runs) == 2:
            table = _add_deltas(table, stats, runs)
        attentions = attention_order(stats["attention"])
        order = [(a, r) for a in attentions for r in runs + ["Δ"] if (a, r) in table.columns]
        table = table[order]
        table.columns = [f"{a} [{r}]" for a, r in table.columns]
    table = table.fillna("-")
    table.index.names = ["task · metric", "L"]
    return table


def _add_deltas(table: pd.DataFrame, stats: pd.DataFrame, runs: list[str]) -> pd.DataFrame:
    numbers = stats.set_index(["row", "seq_len", "attention", "run"])
    for attention in dict.fromkeys(stats["attention"]):
        cells = []
        for row, seq_len in table.index:
            try:
                a, b = numbers.loc[(row, seq_len, attention, runs[0])], numbers.loc[(row, seq_len, attention, runs[1])]
            except KeyError:
                cells.append("-")
                continue
            if a["n"] == 0 or b["n"] == 0:
                cells.append("-")
                continue
            delta = b["mean"] - a["mean"]
            spread = a["std"] + b["std"]
            marked = a["n"] >= 2 and b["n"] >= 2 and abs(delta) > spread
            cells.append(f"{delta:+.3g}{DELTA_MARK if marked else ''}")
        table[(attention, "Δ")] = cells
    return table


def footnotes(stats: pd.DataFrame, two_runs: bool = False) -> list[str]:
    """The † footnote (substitute data, with sources) and, for two runs, what Δ and * mean."""
    notes = []
    substitutes = stats[stats["substitute"]].drop_duplicates(["task"])
    if len(substitutes):
        listed = "; ".join(f"{t}: {s}" for t, s in zip(substitutes["task"], substitutes["source"]))
        notes.append(f"{SUBSTITUTE_MARK} substitute data (an embedded stand-in, not the published data set): {listed}")
    if two_runs:
        notes.append(f"Δ = second run - first run; {DELTA_MARK} marks |Δ| > std(first) + std(second) "
                     "(seed spread, needs n >= 2 in both)")
    notes.append("cells: mean ± std over seeds (n = seeds that finished ok); a status (oom, timeout, ...) "
                 "where no seed finished")
    return notes


def scaling_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run, task, scaling metric and attention: log-log slope against L and crossover length vs softmax.

    Columns: run, task, metric, attention, lengths, slope, crossover (float or None), crossover_text,
    substitute. Only groups with at least two lengths appear.
    """
    rows = []
    for metric in SCALING_METRICS:
        stats = metric_stats(frame, metric)
        stats = stats[(stats["n"] > 0) & (stats["mean"] > 0)]  # log-log: positive values only
        for (run, task), group in stats.groupby(["run", "task"], sort=False):
            if group["seq_len"].nunique() < 2:
                continue
            softmax = group[group["attention"] == "softmax"].set_index("seq_len")["mean"]
            for attention, sub in group.groupby("attention", sort=False):
                sub = sub.sort_values("seq_len")
                if len(sub) < 2:
                    continue
                lengths, times = list(sub["seq_len"]), list(sub["mean"])
                crossover, text = None, "-"
                if attention != "softmax" and len(softmax) >= 2:
                    ref = [softmax.get(length) for length in lengths]
                    crossover = crossover_length(lengths, times, ref)
                    usable = [length for length, r in zip(lengths, ref) if r is not None and not math.isnan(r)]
                    if crossover is None:
                        text = f"> {max(usable)}" if usable else "-"
                    elif usable and crossover <= min(usable):
                        text = f"<= {min(usable)}"
                    else:
                        text = f"{crossover:.0f}"
                rows.append({"run": run, "task": task, "metric": metric, "attention": attention,
                             "lengths": ",".join(map(str, lengths)), "slope": loglog_slope(lengths, times),
                             "crossover": crossover, "crossover_text": text,
                             "substitute": bool(sub["substitute"].any())})
    return pd.DataFrame(rows, columns=["run", "task", "metric", "attention", "lengths", "slope", "crossover",
                                       "crossover_text", "substitute"])


def scaling_table(scaling: pd.DataFrame) -> pd.DataFrame:
    """Formatted: rows (task, metric[, run]), columns attention, cells 'slope (crossover vs softmax)'."""
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
    table = table[attention_order(table.columns)]
    table.columns.name = None
    table.index.names = ["task · metric"] + (["run"] if len(index) == 2 else [])
    return table


SCALING_NOTE = ("cells: log-log slope of the metric against L (1 = linear, 2 = quadratic), and in brackets "
                "the length L from which the attention is no slower (uses no more memory) than softmax "
                "('x <= L': already at the shortest L, 'x > L': not within the measured lengths)")


def _rich_table(table: pd.DataFrame, title: str) -> Table:
    out = Table(title=title)
    flat = table.reset_index()
    for i, column in enumerate(flat.columns):
        out.add_column(Text(str(column)), justify="left" if i == 0 else "right", style="cyan" if i == 0 else None)
    for values in flat.itertuples(index=False):
        out.add_row(*(Text(str(v)) for v in values))
    return out


def render(frame: pd.DataFrame, metric: str | None = None, fmt: str = "rich", console: Console | None = None,
           scaling: bool = True) -> str:
    """Print (rich) or return (markdown, csv) the comparison of ``frame``; returns the text for non-rich formats."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    stats = metric_stats(frame, metric)
    if fmt == "csv":
        buffer = io.StringIO()
        stats.to_csv(buffer, index=False, float_format="%.6g")
        return buffer.getvalue()
    runs = frame.attrs.get("runs", list(dict.fromkeys(frame["run"])))
    table = pivot_table(stats)
    notes = footnotes(stats, two_runs=len(runs) == 2)
    scale = scaling_table(scaling_frame(frame)) if scaling else pd.DataFrame()
    title = f"{metric or 'main metric'} by task, L and attention ({', '.join(runs)})"
    if fmt == "markdown":
        parts = [f"### {title}", "", table.reset_index().to_markdown(index=False, disable_numparse=True), ""]
        parts += [f"- {note}" for note in notes]
        if not scale.empty:
            scale_md = scale.reset_index().to_markdown(index=False, disable_numparse=True)
            parts += ["", "### scaling against L", "", scale_md, "", f"- {SCALING_NOTE}"]
        return "\n".join(parts) + "\n"
    console = console or Console()
    console.print(_rich_table(table, title))
    for note in notes:
        console.print(note, markup=False)
    if not scale.empty:
        console.print(_rich_table(scale, "scaling against L"))
        console.print(SCALING_NOTE, markup=False)
    return ""
