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

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from suite.analysis.compare import markdown_lines, sections
from suite.analysis.frames import (
    DEFAULT_BASELINE,
    DEFAULT_SPLIT,
    SCALING_METRICS,
    TIME_METRICS,
    attention_order,
    check_baseline,
    load_runs,
    metric_stats,
)
from suite.analysis.plots import (
    attention_colors,
    curve_plot,
    load_curves,
    quality_plot,
    run_style,
    safe_name,
    scaling_plot,
)
from suite.analysis.tables import pipe_table
from suite.run.records import Record, latest_by_key, read_records


def _provenance(records: list[Record]) -> list[str]:
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
                 baseline: str | None = None, split: str = DEFAULT_SPLIT) -> Path:
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

    main = metric_stats(frame, None, baseline, split)
    parts = [p for p in sections(frame, baseline, costs=True, reference="lra", split=split)
             if p.title]  # no "no LRA task" line
    lines += markdown_lines(parts, "##") + [""]

    colors = attention_colors(attention_order(frame["attention"], baseline))
    per_metric = {m: metric_stats(frame, m, baseline) for m in SCALING_METRICS}
    images = []
    for task, config in dict.fromkeys(zip(frame["task"], frame["config"])):
        several = frame.loc[frame["task"] == task, "config"].nunique() > 1
        name = f"{safe_name(task)}-{config}" if several else safe_name(task)
        label = f"{task} ({frame.loc[frame['config'] == config, 'config_label'].iloc[0]})" if several else task
        of_config = {m: s[s["config"] == config] for m, s in per_metric.items()}
        path = plots / f"{name}-vs-L.png"
        if scaling_plot(of_config, task, path, runs, colors):
            images.append((f"{label}: time and memory against L", path))
        task_main = main[(main["task"] == task) & (main["config"] == config)]
        if len(task_main) and task_main["metric"].iloc[0] not in TIME_METRICS:
            path = plots / f"{name}-{safe_name(task_main['metric'].iloc[0])}.png"
            if quality_plot(task_main, task, path, runs):
                images.append((f"{label}: {task_main['metric'].iloc[0]} per attention", path))
    if images:
        lines += ["## Plots", ""]
        for caption, path in images:
            lines += [f"![{caption}](plots/{path.name})", ""]

    curves = [c for run, path in zip(runs, paths) for c in load_curves(path, run, records[run])]
    figures = []
    for task, config in dict.fromkeys((c["task"], c["config"]) for c in curves):
        several = len({c["config"] for c in curves if c["task"] == task}) > 1
        for seq_len in sorted({c["seq_len"] for c in curves if c["task"] == task and c["config"] == config}):
            mine = [c for c in curves if c["task"] == task and c["config"] == config and c["seq_len"] == seq_len]
            name = f"{safe_name(task)}-{config}" if several else safe_name(task)
            path = plots / f"{name}-L{seq_len}-curves.png"
            if curve_plot(mine, task, seq_len, path, runs, colors):
                figures.append((f"{task}{f' ({config})' if several else ''}, L={seq_len}: training loss and "
                                f"{mine[0]['metric']} against tokens seen", path))
    if figures:
        styles = ", ".join(f"{run}: {run_style(runs, run)}" for run in runs) if len(runs) > 1 else ""
        lines += ["## Learning curves", "", "Line: mean over seeds; band: min-max over seeds; one colour per "
                  "attention" + (f"; line style per run ({styles})" if styles else "") + ". Jobs that did not "
                  "finish ok are left out.", ""]
        for caption, path in figures:
            lines += [f"![{caption}](plots/{path.name})", ""]

    failed = [(run, r) for run in runs for r in records[run] if r["status"] != "ok"]
    if failed:
        rows = [{**({"run": run} if len(runs) > 1 else {}), "task": r["task"], "attention": r["attention"],
                 "L": r["seq_len"], "seed": r["seed"], "status": r["status"],
                 "error": (r["error"] or "").replace("|", "/")} for run, r in failed]
        lines += ["## Jobs that did not finish ok", "", pipe_table(list(rows[0]), [list(r.values()) for r in rows]), ""]

    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
