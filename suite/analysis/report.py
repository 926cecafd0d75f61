"""``report RUN [RUN ...] [--out DIR]``: DIR/report.md with the comparison tables and PNG plots in DIR/plots/.

DIR is the run itself for one run; several runs are reported together (overlaid, compared run to run) into the
``out`` folder they name. The report reads the runs' records and curves and nothing else:

- provenance (devices, versions, git sha, profiles) and job counts by status, per run;
- the main metric, one table per task (``compare``'s tables: mean ± 95% CI over seeds, the paired difference
  to the baseline attention, and with several runs the difference to the first run by Welch's t);
- per family, one cost table: training and inference throughput, times and peak memory, params, in their
  units (``12.3k tok/s``, ``1.23 GB``, ``4.1 ms``), only the columns some job measured;
- the scaling table (log-log slope against L and crossover against the baseline) of time and memory metrics;
- for runs with LRA tasks, their accuracy beside the published LRA results (``compare --reference lra``);
- plots: per task swept over two or more lengths, each time metric and peak memory against L on log-log
  axes, one line per attention (line style per run); per task with a quality metric (accuracy, loss, bpb,
  ...), a bar per attention (L and run) with the 95% CI as error bars; per task and L with learning curves
  (``RUN/curves/<job>.json``, matched to the latest record of their key; jobs that did not finish ok left
  out), the training loss and the task's metric against tokens seen, the attentions overlaid (line style per
  run), seeds as a band (min-max) around their mean;
- every job that did not finish ok, with its error.

Substitute-data rows are marked † in every table and plot title. Plots use matplotlib's Agg canvas.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from suite.analysis.compare import (DEFAULT_BASELINE, SCALING_METRICS, SUBSTITUTE_MARK, TIME_METRICS,
                                   attention_label, attention_order, check_baseline, footnotes, format_value,
                                   load_runs, lra_reference_table, markdown_table, markdown_tables, metric_stats,
                                   scaling_frame, scaling_note, scaling_table, task_tables)
from suite.run.records import CURVES_DIR, latest_by_key, read_records

#: the cost table's columns, in order, with their headers
COST_METRICS = {"train_samples_per_s": "train samples/s", "train_tokens_per_s": "train tok/s",
                "infer_samples_per_s": "infer samples/s", "infer_tokens_per_s": "infer tok/s",
                "fwd_ms": "fwd", "fwdbwd_ms": "fwd+bwd", "decode_ms_per_token": "decode per token",
                "peak_mem_bytes": "peak memory", "state_bytes": "decode state", "params": "params"}
RUN_STYLES = ("-", "--", ":", "-.")
RUN_HATCHES = ("", "//", "..", "xx")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _task_title(task: str, substitute: bool) -> str:
    return f"{task} {SUBSTITUTE_MARK} (substitute data)" if substitute else task


def _colors(attentions: Sequence[str]) -> dict[str, Any]:
    """One colour per attention, the same in every figure of a report."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors + colormaps["Dark2"].colors
    return {a: palette[i % len(palette)] for i, a in enumerate(attentions)}


def _style(runs: list[str], run: str) -> str:
    return RUN_STYLES[runs.index(run) % len(RUN_STYLES)]


def _label(attention: str, run: str, runs: list[str]) -> str:
    return attention_label(attention) + (f" [{run}]" if len(runs) > 1 else "")


def _legend(fig: Figure) -> None:
    handles, labels = [], []
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)), fontsize="small")


# -- plots ----------------------------------------------------------------------------------------------------

def _scaling_plot(stats: dict[str, pd.DataFrame], task: str, path: Path, runs: list[str], colors: dict) -> bool:
    panels = [(m, s[(s["task"] == task) & (s["n"] > 0) & (s["mean"] > 0)]) for m, s in stats.items()]
    panels = [(m, s) for m, s in panels if s["seq_len"].nunique() >= 2]  # log axes: positive values, two lengths
    if not panels:
        return False
    substitute = any(bool(s["substitute"].any()) for _, s in panels)
    fig = Figure(figsize=(4.2 * len(panels) + 0.6, 4.2), layout="constrained")
    for i, (metric, sub) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for attention in attention_order(sub["attention"]):
            for run in runs:
                line = sub[(sub["attention"] == attention) & (sub["run"] == run)].sort_values("seq_len")
                if line.empty:
                    continue
                ax.errorbar(line["seq_len"], line["mean"], yerr=line["ci95"].fillna(0.0), marker="o", capsize=2,
                            color=colors[attention], linestyle=_style(runs, run), label=_label(attention, run, runs))
        ax.set_xscale("log", base=2)
        lengths = sorted(sub["seq_len"].unique())
        ax.set_xticks(lengths, [str(length) for length in lengths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig)
    fig.suptitle(f"{_task_title(task, substitute)}: against L (log-log; bars: 95% CI)")
    fig.savefig(path, dpi=110)
    return True


def _quality_plot(stats: pd.DataFrame, task: str, path: Path, runs: list[str]) -> bool:
    sub = stats[(stats["task"] == task) & (stats["n"] > 0)]
    if sub.empty:
        return False
    series = [(run, length) for length in sorted(sub["seq_len"].unique()) for run in runs
              if ((sub["run"] == run) & (sub["seq_len"] == length)).any()]  # the runs of one L side by side
    attentions = attention_order(sub["attention"])
    fig = Figure(figsize=(min(16.0, max(4.0, 0.35 * len(attentions) * len(series) + 2.0)), 3.6),
                 layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    lengths = sorted({length for _, length in series})
    for j, (run, length) in enumerate(series):
        at = sub[(sub["seq_len"] == length) & (sub["run"] == run)].set_index("attention")
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(attentions))]
        means = [at["mean"].get(a, math.nan) for a in attentions]
        errs = [0.0 if math.isnan(at["ci95"].get(a, math.nan)) else at["ci95"].get(a) for a in attentions]
        label = " ".join(([f"L={length}"] if len(lengths) > 1 else []) + ([f"[{run}]"] if len(runs) > 1 else []))
        ax.bar(xs, means, width=width, yerr=errs, capsize=2, label=label or None,
               color=f"C{lengths.index(length)}", hatch=RUN_HATCHES[runs.index(run) % len(RUN_HATCHES)],
               edgecolor="black", linewidth=0.3)
    ax.set_xticks(range(len(attentions)), [attention_label(a) for a in attentions], rotation=30, ha="right")
    metric, direction = sub["metric"].iloc[0], sub["direction"].iloc[0]
    ax.set_ylabel(f"{metric} ({'higher' if direction == 'max' else 'lower'} is better)")
    if len(series) > 1:
        ax.legend(fontsize="small")
    fig.suptitle(f"{_task_title(task, bool(sub['substitute'].any()))} (bars: 95% CI over seeds)")
    fig.savefig(path, dpi=110)
    return True


# -- learning curves ------------------------------------------------------------------------------------------

def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unusable_curve(curve: Any) -> str | None:
    if not isinstance(curve, dict):
        return "not a JSON object"
    if not isinstance(curve.get("key"), str):
        return "no key"
    for part in ("train", "eval"):
        points = curve.get(part, [])
        if not isinstance(points, list) or not all(isinstance(p, dict) and _number(p.get("step")) for p in points):
            return f"'{part}' is not a list of points with a step"
    return None


def load_curves(run_dir: Path, run: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curves in ``run_dir/curves/`` whose key has a latest record that finished ok, each with that record's
    identity (task, attention, seq_len, seed, metric, substitute) and ``run``. A curve without a record is
    ignored; an unreadable one is skipped with one warning line; no ``curves/`` folder: no curves."""
    folder = run_dir / CURVES_DIR
    if not folder.is_dir():
        return []
    by_key = {r["key"]: r for r in latest_by_key(records)}
    curves = []
    for path in sorted(folder.glob("*.json")):
        try:
            curve = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            print(f"warning: {path}: not a readable curve ({type(err).__name__}); skipped", file=sys.stderr)
            continue
        why = _unusable_curve(curve)
        if why is not None:
            print(f"warning: {path}: not a usable curve ({why}); skipped", file=sys.stderr)
            continue
        record = by_key.get(curve["key"])
        if record is None or record["status"] != "ok":
            continue
        metric = curve.get("metric") if isinstance(curve.get("metric"), str) else record["config"]["metric"]
        curves.append({"run": run, "task": record["task"], "attention": record["attention"],
                       "seq_len": int(record["seq_len"]), "seed": record["seed"], "metric": metric,
                       "direction": record["config"]["direction"] if metric == record["config"]["metric"] else None,
                       "substitute": bool((record.get("data") or {}).get("substitute")),
                       "train": curve.get("train", []), "eval": curve.get("eval", [])})
    return curves


def _series(points: list[dict[str, Any]], y: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = sorted((float(p[x]), float(p[y])) for p in points if _number(p.get(x)) and _number(p.get(y)))
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def seed_band(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, min, max) over seeds: every seed interpolated onto the union of their x within the range all
    of them cover (one seed: its own points, min = max = mean)."""
    series = [(x, y) for x, y in series if len(x)]
    if not series:
        return (np.array([]),) * 4
    if len(series) == 1:
        x, y = series[0]
        return x, y, y, y
    low, high = max(x[0] for x, _ in series), min(x[-1] for x, _ in series)
    grid = np.unique(np.concatenate([x for x, _ in series]))
    grid = grid[(grid >= low) & (grid <= high)]
    if not len(grid):
        return (np.array([]),) * 4
    ys = np.stack([np.interp(grid, x, y) for x, y in series])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def _x_axis(curves: list[dict[str, Any]]) -> str:
    """``tokens`` when every point counts tokens, else ``step``."""
    points = [p for c in curves for p in c["train"] + c["eval"]]
    return "tokens" if points and all(_number(p.get("tokens")) and p["tokens"] > 0 for p in points) else "step"


def _curve_plot(curves: list[dict[str, Any]], task: str, seq_len: int, path: Path, runs: list[str],
                colors: dict) -> bool:
    x = _x_axis(curves)
    metric = curves[0]["metric"]
    panels = [("train", "loss", "training loss")]
    if any(_number(p.get(metric)) for c in curves for p in c["eval"]):
        panels.append(("eval", metric, f"{metric} (evaluation)"))
    if not any(_number(p.get("loss")) for c in curves for p in c["train"]):
        panels = panels[1:]
    if not panels:
        return False
    fig = Figure(figsize=(4.6 * len(panels) + 0.6, 4.2), layout="constrained")
    seeds = 0
    for i, (part, y, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for attention in attention_order({c["attention"] for c in curves}):
            for run in runs:
                mine = [c for c in curves if c["attention"] == attention and c["run"] == run]
                if not mine:
                    continue
                seeds = max(seeds, len(mine))
                grid, mean, low, high = seed_band([_series(c[part], y, x) for c in mine])
                if not len(grid):
                    continue
                color = colors[attention]
                label = _label(attention, run, runs) + (f" (n={len(mine)})" if len(mine) > 1 else "")
                ax.plot(grid, mean, color=color, linestyle=_style(runs, run), marker="o" if part == "eval" else None,
                        markersize=3, label=label)
                if len(mine) > 1:
                    ax.fill_between(grid, low, high, color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel("tokens seen" if x == "tokens" else "optimizer step")
        ax.set_ylabel(ylabel)
        low_high = [v for line in ax.get_lines() for v in line.get_ydata() if v > 0]
        if part == "train" and low_high and max(low_high) > 10 * min(low_high):
            ax.set_yscale("log")  # a loss over more than a decade
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig)
    band = "; band: min-max over seeds" if seeds > 1 else ""
    title = _task_title(task, any(c["substitute"] for c in curves))
    fig.suptitle(f"{title}, L={seq_len}: learning curves (line: mean{band})")
    fig.savefig(path, dpi=110)
    return True


# -- tables ---------------------------------------------------------------------------------------------------

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
                columns[header] = (metric, stats.set_index(["run", "task", "seq_len", "attention"]))
        if not columns:
            continue
        cells = next(iter(columns.values()))[1]
        rows = []
        for task in dict.fromkeys(part["task"]):
            sub = cells.xs(task, level="task", drop_level=False).reset_index()
            order = {a: i for i, a in enumerate(attention_order(sub["attention"], baseline))}
            sub = sub.assign(_a=sub["attention"].map(order), _r=sub["run"].map({r: i for i, r in enumerate(runs)}))
            for r in sub.sort_values(["seq_len", "_a", "_r"]).itertuples():
                key = (r.run, task, r.seq_len, r.attention)
                row = {"task": f"{task}{f' {SUBSTITUTE_MARK}' if r.substitute else ''}", "L": str(r.seq_len),
                       "attention": attention_label(r.attention)}
                if len(runs) > 1:
                    row["run"] = r.run
                n = int(part[(part["run"] == r.run) & (part["task"] == task) & (part["seq_len"] == r.seq_len)
                             & (part["attention"] == r.attention) & (part["status"] == "ok")]["seed"].nunique())
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


def _provenance(records: list[dict]) -> list[str]:
    def values(field: str) -> str:
        found = sorted({str(r["env"].get(field)) for r in records if r.get("env") and r["env"].get(field) is not None})
        return ", ".join(found) or "unknown"

    statuses = pd.Series([r["status"] for r in records]).value_counts()
    return [f"- jobs: {len(records)} ({', '.join(f'{n} {s}' for s, n in statuses.items())})",
            f"- profiles: {', '.join(sorted({r['profile'] for r in records}))}",
            f"- devices: {values('device_name')} ({values('device')})",
            f"- torch {values('torch')}, triton {values('triton')}, CUDA {values('cuda')}, python {values('python')}",
            f"- git: {values('git_sha')} (uncommitted changes: {values('git_dirty')})",
            f"- hosts: {values('hostname')}; memory measured as: {values('memory_measure')}",
            f"- first job started {min(str(r['started_at']) for r in records)}; "
            f"total job time {sum(r['wall_s'] or 0 for r in records):.0f} s"]


def check_runs(run_dirs: Sequence[Path | str], out: Path | str | None) -> tuple[list[Path], Path]:
    """(run directories, output folder) of a report; ValueError (one line) for bad input."""
    if not run_dirs:
        raise ValueError("report needs at least one run directory")
    paths = [Path(p) for p in run_dirs]
    seen: set[Path] = set()
    for path in paths:
        if not path.is_dir():
            raise ValueError(f"{path}: not a run directory")
        if path.resolve() in seen:
            raise ValueError(f"{path}: given twice")
        seen.add(path.resolve())
    if out is None:
        if len(paths) > 1:
            raise ValueError(f"a report of {len(paths)} runs needs --out DIR (the folder for report.md and plots/)")
        return paths, paths[0]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: not a directory")
    return paths, out


def write_report(run_dirs: Path | str | Sequence[Path | str], out: Path | str | None = None,
                 baseline: str | None = None) -> Path:
    """Write ``out/report.md`` and ``out/plots/*.png`` (``out`` defaults to the run for one run; several runs
    need it) with differences against ``baseline`` (default softmax, where present); returns the report's path.
    ValueError (one line) for bad input, a baseline that is not an attention of the runs among them."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    paths, out = check_runs(run_dirs, out)
    frame = load_runs(paths)  # ValueError for a run without records
    if baseline is not None:
        check_baseline(frame, baseline)
    baseline = baseline or DEFAULT_BASELINE
    runs = frame.attrs["runs"]
    records = {run: latest_by_key(read_records(path)) for run, path in zip(runs, paths)}
    try:
        plots = out / "plots"
        plots.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write there ({err.strerror or err})") from None

    lines = [f"# Report: {' vs '.join(runs)}", ""]
    for run, path in zip(runs, paths):
        if len(runs) > 1:
            lines += [f"### {run} ({path})", ""]
        lines += [*_provenance(records[run]), ""]

    main = metric_stats(frame, None, baseline)
    lines += ["## Main metric", ""] + markdown_tables(task_tables(main, baseline, runs), level="###")
    lines += [f"- {note}" for note in footnotes(main, baseline, runs)] + [""]

    costs = cost_tables(frame, baseline, runs)
    if costs:
        lines += ["## Cost", ""]
        for family, table in costs:
            lines += [f"### {family}", "", markdown_table(table), ""]
        lines += [f"- {COST_NOTE}", ""]

    scale = scaling_table(scaling_frame(frame, baseline), baseline)
    if not scale.empty:
        lines += ["## Scaling against L", "", markdown_table(scale), "", f"- {scaling_note(baseline)}", ""]

    lra = lra_reference_table(frame, baseline)
    if lra is not None:
        lines += ["## LRA: measured beside published results (not re-run)", "", markdown_table(lra[0]), ""]
        lines += [f"- {note}" for note in lra[1]] + [""]

    colors = _colors(attention_order(frame["attention"], baseline))
    per_metric = {m: metric_stats(frame, m, baseline) for m in SCALING_METRICS}
    images = []
    for task in dict.fromkeys(frame["task"]):
        path = plots / f"{_safe(task)}-vs-L.png"
        if _scaling_plot(per_metric, task, path, runs, colors):
            images.append((f"{task}: time and memory against L", path))
        task_main = main[main["task"] == task]
        if len(task_main) and task_main["metric"].iloc[0] not in TIME_METRICS:
            path = plots / f"{_safe(task)}-{_safe(task_main['metric'].iloc[0])}.png"
            if _quality_plot(main, task, path, runs):
                images.append((f"{task}: {task_main['metric'].iloc[0]} per attention", path))
    if images:
        lines += ["## Plots", ""]
        for caption, path in images:
            lines += [f"![{caption}](plots/{path.name})", ""]

    curves = [c for run, path in zip(runs, paths) for c in load_curves(path, run, records[run])]
    figures = []
    for task in dict.fromkeys(c["task"] for c in curves):
        for seq_len in sorted({c["seq_len"] for c in curves if c["task"] == task}):
            mine = [c for c in curves if c["task"] == task and c["seq_len"] == seq_len]
            path = plots / f"{_safe(task)}-L{seq_len}-curves.png"
            if _curve_plot(mine, task, seq_len, path, runs, colors):
                figures.append((f"{task}, L={seq_len}: training loss and {mine[0]['metric']} against tokens seen",
                                path))
    if figures:
        styles = ", ".join(f"{run}: {_style(runs, run)}" for run in runs) if len(runs) > 1 else ""
        lines += ["## Learning curves", "", "Line: mean over seeds; band: min-max over seeds; one colour per "
                  "attention" + (f"; line style per run ({styles})" if styles else "") + ". Jobs that did not "
                  "finish ok are left out.", ""]
        for caption, path in figures:
            lines += [f"![{caption}](plots/{path.name})", ""]

    failed = [(run, r) for run in runs for r in records[run] if r["status"] != "ok"]
    if failed:
        table = pd.DataFrame([{**({"run": run} if len(runs) > 1 else {}), "task": r["task"],
                               "attention": r["attention"], "L": r["seq_len"], "seed": r["seed"], "status": r["status"],
                               "error": (r["error"] or "").replace("|", "/")} for run, r in failed])
        lines += ["## Jobs that did not finish ok", "", table.to_markdown(index=False, disable_numparse=True), ""]

    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
