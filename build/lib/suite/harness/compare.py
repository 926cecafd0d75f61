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
- ``render(..., reference="lra")`` adds the published LRA accuracies (``suite.harness.published_lra``, not
  re-run) beside the measured accuracy of the LRA tasks: a second table whose columns are the measured
  attentions and then ``published: <model> (<table>)``, with a footnote citing each source (rich,
  markdown); extra long-form rows with ``run`` = ``published`` and ``published`` = True (csv). Records
  without an LRA task get the one line ``NO_LRA_TASKS`` instead.
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

from suite.console import make_console
from suite.harness.measure import crossover_length, loglog_slope
from suite.harness.published_lra import LRA_TASKS, PUBLISHED_LRA
from suite.harness.records import latest_by_key, read_records

SUBSTITUTE_MARK = "†"
DELTA_MARK = "*"
TIME_METRICS = ("fwd_ms", "fwdbwd_ms", "decode_ms_per_token", "train_ms_per_sample", "infer_ms_per_sample")
SCALING_METRICS = TIME_METRICS + ("peak_mem_bytes", "state_bytes")
_DERIVED = {"train_ms_per_sample": "train_samples_per_s", "infer_ms_per_sample": "infer_samples_per_s"}
FORMATS = ("rich", "markdown", "csv")
REFERENCES = ("lra",)
PUBLISHED_RUN = "published"
LRA_METRIC = "accuracy"
NO_LRA_TASKS = (f"--reference lra: these records hold no LRA task ({', '.join(LRA_TASKS)}), so there is nothing to "
                "set the published LRA numbers beside")


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
                    crossover, text = crossover_cell(lengths, times, [softmax.get(length) for length in lengths])
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


def lra_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` that belong to LRA tasks (a published task name, or family ``lra``)."""
    return frame[frame["task"].isin(list(LRA_TASKS)) | (frame["family"] == "lra")]


def _published_cell(task: str, result) -> str:
    if task not in LRA_TASKS:
        return "-"
    value = result.accuracy(task)
    return "FAIL" if value is None else f"{value:.4f}"  # percent with two decimals: exact as a 4-digit fraction


def lra_reference_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]] | None:
    """Measured LRA accuracy (as ``pivot_table`` shows it) with a column per published model, and footnotes.

    None when ``frame`` holds no LRA task. A published cell is the same at every L of its task: it was
    measured at the paper's length, not re-run here.
    """
    lra = lra_frame(frame)
    if lra.empty:
        return None
    stats = metric_stats(lra, LRA_METRIC)
    table = pivot_table(stats)
    task_of_row = dict(zip(_row_label(stats), stats["task"]))
    for result in PUBLISHED_LRA:
        table[result.label] = [_published_cell(task_of_row[row], result) for row, _ in table.index]
    runs = list(dict.fromkeys(stats["run"]))
    notes = footnotes(stats, two_runs=len(runs) == 2)
    if stats["substitute"].any():  # the first note is the † one
        notes[0] += "; these rows are not comparable with the published numbers"
    notes.append("published: test accuracy as its paper reports it (fraction), NOT re-run by this suite, at the "
                 "paper's own lengths and settings (ListOps up to 2K, Text 4K, Retrieval 4K per document, Image 1K, "
                 "Pathfinder 1K, Path-X 16K), whatever the L of the row; FAIL = the paper reports the model did "
                 "not learn the task (no better than chance)")
    for source in dict.fromkeys(result.source for result in PUBLISHED_LRA):
        models = ", ".join(r.model for r in PUBLISHED_LRA if r.source == source)
        notes.append(f"source of {models}: {source}")
    return table, notes


def published_lra_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Long-form rows (the columns of ``metric_stats`` plus ``published``) of the published accuracies of the
    LRA tasks in ``frame``: run ``published``, attention the model, mean the accuracy (NaN and status FAIL
    for FAIL), seq_len, std and n empty, source the citation."""
    tasks = [task for task in dict.fromkeys(lra_frame(frame)["task"]) if task in LRA_TASKS]
    rows = []
    for result in PUBLISHED_LRA:
        for task in tasks:
            value = result.accuracy(task)
            rows.append({"run": PUBLISHED_RUN, "task": task, "metric": LRA_METRIC, "direction": "max",
                         "seq_len": pd.NA, "attention": f"{result.model} ({result.table})",
                         "mean": math.nan if value is None else value, "std": math.nan, "n": pd.NA,
                         "statuses": "FAIL" if value is None else "", "substitute": False, "source": result.source,
                         "published": True})
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    """A pivot or scaling table as a pipe table: its index as leading columns, cells as they are (no number parsing)."""
    return table.reset_index().to_markdown(index=False, disable_numparse=True)


def rich_table(table: pd.DataFrame, title: str) -> Table:
    """A pivot, scaling or bench table as a rich Table: its index as leading columns, cells as they are."""
    out = Table(title=title)
    flat = table.reset_index()
    for i, column in enumerate(flat.columns):
        out.add_column(Text(str(column)), justify="left" if i == 0 else "right", style="cyan" if i == 0 else None)
    for values in flat.itertuples(index=False):
        out.add_row(*(Text(str(v)) for v in values))
    return out


def render(frame: pd.DataFrame, metric: str | None = None, fmt: str = "rich", console: Console | None = None,
           scaling: bool = True, reference: str | None = None) -> str:
    """Print (rich) or return (markdown, csv) the comparison of ``frame``; returns the text for non-rich formats.

    ``reference="lra"`` adds the published LRA rows (module docstring); the measured numbers do not change.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if reference is not None and reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; valid: {', '.join(REFERENCES)}")
    stats = metric_stats(frame, metric)
    if fmt == "csv":
        if reference == "lra":
            published = published_lra_rows(frame)
            stats = stats.assign(published=False)
            if not published.empty:
                stats = pd.concat([stats.astype({"seq_len": "Int64", "n": "Int64"}),
                                   published.astype({"seq_len": "Int64", "n": "Int64"})], ignore_index=True)
        buffer = io.StringIO()
        stats.to_csv(buffer, index=False, float_format="%.6g")
        return buffer.getvalue()
    runs = frame.attrs.get("runs", list(dict.fromkeys(frame["run"])))
    table = pivot_table(stats)
    notes = footnotes(stats, two_runs=len(runs) == 2)
    scale = scaling_table(scaling_frame(frame)) if scaling else pd.DataFrame()
    lra = lra_reference_table(frame) if reference == "lra" else None
    title = f"{metric or 'main metric'} by task, L and attention ({', '.join(runs)})"
    lra_title = f"LRA {LRA_METRIC}: measured ({', '.join(runs)}) beside published results (not re-run)"
    if fmt == "markdown":
        parts = [f"### {title}", "", markdown_table(table), ""]
        parts += [f"- {note}" for note in notes]
        if not scale.empty:
            scale_md = markdown_table(scale)
            parts += ["", "### scaling against L", "", scale_md, "", f"- {SCALING_NOTE}"]
        if lra is not None:
            lra_md = markdown_table(lra[0])
            parts += ["", f"### {lra_title}", "", lra_md, ""] + [f"- {note}" for note in lra[1]]
        elif reference == "lra":
            parts += ["", NO_LRA_TASKS]
        return "\n".join(parts) + "\n"
    console = console or make_console()
    console.print(rich_table(table, title))
    for note in notes:
        console.print(note, markup=False)
    if not scale.empty:
        console.print(rich_table(scale, "scaling against L"))
        console.print(SCALING_NOTE, markup=False)
    if lra is not None:
        console.print(rich_table(lra[0], lra_title))
        for note in lra[1]:
            console.print(note, markup=False)
    elif reference == "lra":
        console.print(NO_LRA_TASKS, markup=False)
    return ""
