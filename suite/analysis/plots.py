"""The report's plots (matplotlib's Agg canvas): per task, time and memory against L on log-log axes; per task, the
quality metric per attention with its interval; per task and L, the learning curves of the attentions overlaid
(line style per run), seeds as a band (min-max) around their mean. Substitute-data tasks carry † in the title."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from suite.analysis.frames import attention_order, config_id
from suite.analysis.tables import SUBSTITUTE_MARK, attention_label
from suite.console import warn
from suite.run.records import CURVES_DIR, Record, latest_by_key

RUN_STYLES = ("-", "--", ":", "-.")
RUN_HATCHES = ("", "//", "..", "xx")


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def task_title(task: str, substitute: bool) -> str:
    return f"{task} {SUBSTITUTE_MARK} (substitute data)" if substitute else task


def attention_colors(attentions: Sequence[str]) -> dict[str, Any]:
    """One colour per attention, the same in every figure of a report."""
    from matplotlib import colormaps

    # tab10 and Dark2 are ListedColormaps, whose colors the stubs of the base Colormap do not declare
    palette = list(colormaps["tab10"].colors) + list(colormaps["Dark2"].colors)  # type: ignore[attr-defined]
    return {a: palette[i % len(palette)] for i, a in enumerate(attentions)}


def run_style(runs: list[str], run: str) -> str:
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

def scaling_plot(stats: dict[str, pd.DataFrame], task: str, path: Path, runs: list[str], colors: dict) -> bool:
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
                            color=colors[attention], linestyle=run_style(runs, run), label=_label(attention, run, runs))
        ax.set_xscale("log", base=2)
        lengths = sorted(sub["seq_len"].unique())
        ax.set_xticks(lengths, [str(length) for length in lengths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig)
    fig.suptitle(f"{task_title(task, substitute)}: against L (log-log; bars: 95% CI)")
    fig.savefig(path, dpi=110)
    return True


def quality_plot(stats: pd.DataFrame, task: str, path: Path, runs: list[str]) -> bool:
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
    fig.suptitle(f"{task_title(task, bool(sub['substitute'].any()))} (bars: 95% CI over seeds)")
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


def load_curves(run_dir: Path, run: str, records: list[Record]) -> list[dict[str, Any]]:
    """The curves in ``run_dir/curves/`` whose key has a latest record that finished ok, each with that record's
    identity (task, configuration id, attention, seq_len, seed, metric, substitute, the split of its evaluation
    points: val, or the old records' eval split) and ``run``. A curve without a record is
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
            warn(f"{path}: not a readable curve ({type(err).__name__}); skipped")
            continue
        why = _unusable_curve(curve)
        if why is not None:
            warn(f"{path}: not a usable curve ({why}); skipped")
            continue
        record = by_key.get(curve["key"])
        if record is None or record["status"] != "ok":
            continue
        metric = curve.get("metric") if isinstance(curve.get("metric"), str) else record["config"]["metric"]
        curves.append({"run": run, "task": record["task"], "config": config_id(record),
                       "attention": record["attention"],
                       "seq_len": int(record["seq_len"]), "seed": record["seed"], "metric": metric,
                       "direction": record["config"]["direction"] if metric == record["config"]["metric"] else None,
                       "substitute": bool((record.get("data") or {}).get("substitute")),
                       "split": curve.get("split") or "eval",
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


def curve_plot(curves: list[dict[str, Any]], task: str, seq_len: int, path: Path, runs: list[str],
                colors: dict) -> bool:
    x = _x_axis(curves)
    metric = curves[0]["metric"]
    panels = [("train", "loss", "training loss")]
    if any(_number(p.get(metric)) for c in curves for p in c["eval"]):
        split = curves[0].get("split", "eval")
        panels.append(("eval", metric, f"{metric} ({'validation' if split == 'val' else 'evaluation'})"))
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
                ax.plot(grid, mean, color=color, linestyle=run_style(runs, run), marker="o" if part == "eval" else None,
                        markersize=3, label=label)
                if len(mine) > 1:
                    ax.fill_between(grid, low, high, color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel("tokens seen" if x == "tokens" else "optimizer step")
        ax.set_ylabel(ylabel)
        low_high = [float(v) for line in ax.get_lines() for v in np.asarray(line.get_ydata()) if v > 0]
        if part == "train" and low_high and max(low_high) > 10 * min(low_high):
            ax.set_yscale("log")  # a loss over more than a decade
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig)
    band = "; band: min-max over seeds" if seeds > 1 else ""
    title = task_title(task, any(c["substitute"] for c in curves))
    fig.suptitle(f"{title}, L={seq_len}: learning curves (line: mean{band})")
    fig.savefig(path, dpi=110)
    return True
