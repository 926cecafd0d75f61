"""gpu-check's files in OUT/<card>/, rewritten after every row so that a cut-off run still leaves a report.

    gpu_check.jsonl   one JSON line per event, appended, flushed and fsynced: the header (command, plan with its
                      estimates, environment), one line per finished row, an end line (how the run ended)
    README.md         the report: status, targets, then every section in run order
    checks.csv        the check rows;  timings.csv  the timing rows;  targets.csv  the verdicts

Only the JSON lines are the record; the rest is rendered from them (``render``), each file written to a temporary
name and renamed, so a kill during a write leaves the previous version. A line that is not JSON (a torn last
line) is skipped when reading. Tables are the suite's pipe tables (``analysis.tables``) and CSV from the standard
library: the GPU box needs nothing beyond its own packages to write them.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from suite.analysis.tables import pipe_table
from suite.gpu_check.plan import STEPS, Shapes, format_duration
from suite.gpu_check.targets import evaluate_targets

JSONL = "gpu_check.jsonl"
FILES = (JSONL, "README.md", "checks.csv", "timings.csv", "targets.csv")


def append(folder: Path, record: dict[str, Any]) -> None:
    """One JSON line, flushed and fsynced before this returns."""
    with open(folder / JSONL, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(folder: Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], dict[str, Any] | None]:
    """(header, rows by id (a later line for an id replaces an earlier one), end) of OUT/<card>/gpu_check.jsonl."""
    header, rows, end = None, {}, None
    path = folder / JSONL
    if not path.exists():
        return None, {}, None
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        kind = record.get("kind")
        if kind == "header":
            header = record
        elif kind == "row" and "id" in record:
            rows[record["id"]] = record
        elif kind == "end":
            end = record
    return header, rows, end


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    return " ".join(str(value).split()).replace("|", "/")


def table(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """``rows`` under ``columns`` as pipe-table lines ("-" where a row has no value)."""
    return pipe_table(columns, [[cell(r.get(c)) for c in columns] for r in rows]).splitlines()


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return buffer.getvalue()


CHECK_COLUMNS = ["what", "L", "D", "dtype", "backend", "max_rel_error", "tolerance", "status"]
TIMING_COLUMNS = ["attention", "mode", "L", "dtype", "ms", "time_min_ms", "time_max_ms", "peak_MB", "gb_per_s",
                  "state_MB", "check_error", "backend", "level", "status"]


def _timing_view(row: dict[str, Any]) -> dict[str, Any]:
    view = dict(row)
    if isinstance(row.get("peak_mem_bytes"), (int, float)):
        view["peak_MB"] = row["peak_mem_bytes"] / 1e6
    if isinstance(row.get("state_bytes"), (int, float)):
        view["state_MB"] = row["state_bytes"] / 1e6
    return view


def render(folder: Path, header: dict[str, Any], rows: dict[str, dict[str, Any]], status: str) -> None:
    """README.md and the CSVs from the header (with the plan) and the rows so far."""
    plan = header["plan"]
    shapes = Shapes.from_dict(header["shapes"])
    ordered = [rows[p["id"]] for p in plan if p["id"] in rows]
    env = rows.get("environment", {})
    targets = evaluate_targets(rows, shapes, header.get("device_kind", "cuda"))
    done = sum(1 for r in ordered if not str(r.get("status", "")).startswith("skipped"))
    lines = [f"# gpu-check on {header.get('card')}", "",
             f"**Status: {status}** ({len(ordered)} of {len(plan)} rows recorded, {done} of them run; this file is "
             "rewritten after every row, so a run that was cut off ends at its last recorded row).", "",
             f"Command: `{header.get('command')}`", "",
             f"Estimated {format_duration(header.get('estimate_s', float('nan')))} for {header.get('cost_card')} "
             f"(cost model: `suite/gpu_check/plan.py`); budget {format_duration(header.get('budget_s', 0))}"
             + (f"; ran {format_duration(header['wall_s'])}" if "wall_s" in header else "") + ".", ""]
    if env:
        keep = {k: v for k, v in env.items() if k not in ("id", "kind", "step", "status", "what", "wall_s",
                                                            "estimate_s", "row_s", "requires", "traceback")}
        lines += ["Environment: " + "; ".join(f"{k} {cell(v)}" for k, v in keep.items()), ""]
    lines += ["## Targets", "", "A timing counts only if its own check on the timed shape and the EA check it rests "
              "on passed; otherwise the target is *invalid*, never met.", ""]
    lines += table(["target", "status", "detail", "rule"], targets)
    sections = {
        "screen": ("EA screen: the headline shapes against the fp64 reference (forward and gradients)", CHECK_COLUMNS),
        "headline": ("Headline timings (causal; median ms; peak = memory above the inputs during a call)",
                     TIMING_COLUMNS),
        "checks": ("EA against the fp64 reference: the other shapes and cases", CHECK_COLUMNS),
        "baseline_checks": ("Baselines against their own references", CHECK_COLUMNS),
        "bandwidth": ("Copy bandwidth", ["what", "MiB", "ms", "gb_per_s", "status"]),
        "launch_sweep": ("EA launch settings", ["what", "L", "dtype", "defaults", "default_ms", "best", "best_ms",
                                                "default_over_best", "tried", "of", "status"]),
        "timings": ("Timings (causal; median ms of the timed calls; fwd = inference forward)", TIMING_COLUMNS),
    }
    for step in STEPS[1:]:
        title, columns = sections[step]
        planned = [p for p in plan if p["step"] == step]
        if not planned:
            continue
        got = [_timing_view(rows[p["id"]]) for p in planned if p["id"] in rows]
        lines += ["", f"## {title}", "", f"{len(got)} of {len(planned)} rows recorded.", ""]
        if got:
            lines += table(columns, got)
    sweep = rows.get("launch_sweep")
    if sweep and sweep.get("configs"):
        lines += ["", "Settings tried (ms of one fwd+bwd, checked against the defaults' result first):", ""]
        lines += table(["num_splits", "block_l", "block_c", "ms", "status"], sweep["configs"])
    errors = [r for r in ordered if str(r.get("status", "")).startswith("error") and r.get("traceback")]
    if errors:
        lines += ["", "## Errors", ""]
        for r in errors:
            lines += [f"- `{r['id']}`: {cell(r['status'])}"]
    _atomic_write(folder / "README.md", "\n".join(lines) + "\n")
    checks = [r for r in ordered if r.get("step") in ("screen", "checks", "baseline_checks")]
    timings = [_timing_view(r) for r in ordered if r.get("step") in ("headline", "timings")]
    _atomic_write(folder / "checks.csv", _csv(checks, ["id"] + CHECK_COLUMNS + ["errors", "row_s", "wall_s"]))
    _atomic_write(folder / "timings.csv", _csv(timings, ["id"] + TIMING_COLUMNS + [
        "peak_mem_bytes", "state_bytes", "bytes_moved", "io_bytes", "prefill_ms", "timed_calls", "spec", "requires",
        "estimate_s", "wall_s"]))
    _atomic_write(folder / "targets.csv", _csv(targets, ["target", "status", "detail", "rule"]))
