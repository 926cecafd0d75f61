"""``report DIR``: DIR/report.md with the comparison tables and PNG plots in DIR/plots/.

The report reads the run's records and nothing else:

- provenance (devices, versions, git sha, profiles) and job counts by status;
- the main metric table (mean ± std over seeds per task, L and attention) and, where present, tables for
  training and inference throughput and peak memory;
- the scaling table (log-log slope against L and crossover against softmax) of time and memory metrics;
- for runs with LRA tasks, their accuracy beside the published LRA results (``compare --reference lra``);
- plots: per task swept over two or more lengths, each time metric and peak memory against L on log-log
  axes, one line per attention; per task with a quality metric (accuracy, loss, bpb, ...), a bar per
  attention (and L) with the seed spread as error bars;
- every job that did not finish ok, with its error.

Substitute-data rows are marked † in every table and plot title. Plots use matplotlib's Agg canvas.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from suite.harness.compare import (SCALING_METRICS, SCALING_NOTE, SUBSTITUTE_MARK, TIME_METRICS, attention_order,
                                   footnotes, load_runs, lra_reference_table, markdown_table, metric_stats,
                                   pivot_table, scaling_frame, scaling_table)
from suite.harness.records import latest_by_key, read_records

EXTRA_TABLE_METRICS = ("train_samples_per_s", "train_tokens_per_s", "infer_samples_per_s", "infer_tokens_per_s",
                       "fwdbwd_ms", "peak_mem_bytes", "params")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _task_title(task: str, substitute: bool) -> str:
    return f"{task} {SUBSTITUTE_MARK} (substitute data)" if substitute else task


def _scaling_plot(stats: dict[str, pd.DataFrame], task: str, path: Path) -> bool:
    panels = [(m, s[(s["task"] == task) & (s["n"] > 0) & (s["mean"] > 0)]) for m, s in stats.items()]
    panels = [(m, s) for m, s in panels if s["seq_len"].nunique() >= 2]  # log axes: positive values, two lengths
    if not panels:
        return False
    substitute = any(bool(s["substitute"].any()) for _, s in panels)
    fig = Figure(figsize=(4.2 * len(panels) + 1.2, 3.6), layout="constrained")
    for i, (metric, sub) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for attention in attention_order(sub["attention"]):
            line = sub[sub["attention"] == attention].sort_values("seq_len")
            ax.errorbar(line["seq_len"], line["mean"], yerr=line["std"].fillna(0.0), marker="o", capsize=2,
                        label=attention)
        ax.set_xscale("log", base=2)
        lengths = sorted(sub["seq_len"].unique())
        ax.set_xticks(lengths, [str(length) for length in lengths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    fig.suptitle(f"{_task_title(task, substitute)}: against L (log-log)")
    fig.savefig(path, dpi=110)
    return True


def _quality_plot(stats: pd.DataFrame, task: str, path: Path) -> bool:
    sub = stats[(stats["task"] == task) & (stats["n"] > 0)]
    if sub.empty:
        return False
    lengths = sorted(sub["seq_len"].unique())
    attentions = attention_order(sub["attention"])
    fig = Figure(figsize=(max(4.0, 0.9 * len(attentions) * max(1, len(lengths)) + 1.5), 3.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(lengths)
    for j, length in enumerate(lengths):
        at = sub[sub["seq_len"] == length].set_index("attention")
        xs = [i + (j - (len(lengths) - 1) / 2) * width for i in range(len(attentions))]
        means = [at["mean"].get(a, math.nan) for a in attentions]
        errs = [0.0 if math.isnan(at["std"].get(a, math.nan)) else at["std"].get(a) for a in attentions]
        ax.bar(xs, means, width=width, yerr=errs, capsize=2, label=f"L={length}")
    ax.set_xticks(range(len(attentions)), attentions, rotation=30, ha="right")
    metric, direction = sub["metric"].iloc[0], sub["direction"].iloc[0]
    ax.set_ylabel(f"{metric} ({'higher' if direction == 'max' else 'lower'} is better)")
    if len(lengths) > 1:
        ax.legend(fontsize="small")
    fig.suptitle(_task_title(task, bool(sub["substitute"].any())))
    fig.savefig(path, dpi=110)
    return True


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
            f"- first job started {min(r['started_at'] for r in records)}; "
            f"total job time {sum(r['wall_s'] or 0 for r in records):.0f} s"]


def write_report(run_dir: Path | str) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/plots/*.png``; returns the report's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a run directory")
    records = latest_by_key(read_records(run_dir))
    if not records:
        raise ValueError(f"{run_dir}: no records")
    frame = load_runs([run_dir])
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    lines = [f"# Report: {run_dir.name}", "", *_provenance(records), ""]

    main = metric_stats(frame)
    lines += ["## Main metric", "", markdown_table(pivot_table(main)), ""]
    lines += [f"- {note}" for note in footnotes(main)] + [""]

    for metric in EXTRA_TABLE_METRICS:
        stats = metric_stats(frame, metric)
        stats = stats[stats["n"] > 0]
        if stats.empty:
            continue
        lines += [f"## {metric}", "", markdown_table(pivot_table(stats)), ""]

    scale = scaling_table(scaling_frame(frame))
    if not scale.empty:
        scale_md = markdown_table(scale)
        lines += ["## Scaling against L", "", scale_md, "", f"- {SCALING_NOTE}", ""]

    lra = lra_reference_table(frame)
    if lra is not None:
        lra_md = markdown_table(lra[0])
        lines += ["## LRA: measured beside published results (not re-run)", "", lra_md, ""]
        lines += [f"- {note}" for note in lra[1]] + [""]

    per_metric = {m: metric_stats(frame, m) for m in SCALING_METRICS}
    images = []
    for task in dict.fromkeys(frame["task"]):
        path = plots / f"{_safe(task)}-vs-L.png"
        if _scaling_plot(per_metric, task, path):
            images.append((f"{task}: time and memory against L", path))
        task_main = main[main["task"] == task]
        if len(task_main) and task_main["metric"].iloc[0] not in TIME_METRICS:
            path = plots / f"{_safe(task)}-{_safe(task_main['metric'].iloc[0])}.png"
            if _quality_plot(main, task, path):
                images.append((f"{task}: {task_main['metric'].iloc[0]} per attention", path))
    if images:
        lines += ["## Plots", ""]
        for caption, path in images:
            lines += [f"![{caption}](plots/{path.name})", ""]

    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        table = pd.DataFrame([{"task": r["task"], "attention": r["attention"], "L": r["seq_len"], "seed": r["seed"],
                               "status": r["status"], "error": (r["error"] or "").replace("|", "/")} for r in failed])
        lines += ["## Jobs that did not finish ok", "", table.to_markdown(index=False, disable_numparse=True), ""]

    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
