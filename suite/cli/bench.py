"""``run_suite.py bench``: time attentions against the sequence length L (fwd, fwd+bwd, one decoding step).

Every point is first checked against the attention's own reference on the same shape (the naive O(L²)
formula for EA, fp64 softmax for SDPA, ...) at up to --check-rows query positions spread over L; a path whose
relative RMSE exceeds --max-check-error gets no time. Then it is timed --repeats times after a warm-up
(CUDA: triton.testing.do_bench) and the table shows the median with the spread (min-max) of the calls, the
speed-up against the baseline attention (time of the baseline / time of the row), and the peak memory of one
call above what was in use before it. Points whose calls spread by more than --max-spread (max/min) are
marked: the machine was busy, rerun them. The scaling table gives the log-log slope of time against L and
the length from which each attention is no slower than the baseline, worded as `compare` words it.

Levels: ``op`` times the attention core on random q, k ~ U(0, 1) and v ~ N(0, 1), [B, L, H, D];
``module`` the whole layer x [B, L, H*D] -> [B, L, H*D] with its projections (every attention has one).
Decode always runs at module level: a parallel prefill of L tokens, then one ``step`` timed from that state.

Results are saved whatever happens to the terminal: OUT/bench.csv (one row per attention, L and mode),
OUT/bench.json (the rows, the command, the machine and its load before and after) and OUT/bench.md (the
tables), with OUT = --out (default results/runs/<timestamp>-bench/).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from typing import Any

from suite.cli.options import attention_specs, comma_list, lengths, out_dir, output_file, positive_float, positive_int
from suite.errors import UsageError

DEFAULT_LENGTHS = "512,1024,2048,4096,8192"
_MODE_TITLE = {"fwd": "fwd", "fwdbwd": "fwd+bwd", "decode": "decode/token"}


def add_parsers(sub) -> None:
    p = sub.add_parser("bench", help="time attentions against sequence length (fwd, fwd+bwd, decode), checked first",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from suite.run.measure import DTYPES, LEVELS

    p.add_argument("--attn", default="ea,softmax",
                   help="attention specs separated by ';' or ',' (a bare key=value continues the spec before it), "
                        "e.g. 'ea:order=2,qk_norm=false;softmax' (default: ea,softmax)")
    p.add_argument("--lengths", "--seq-len", dest="lengths", type=lengths, default=lengths(DEFAULT_LENGTHS),
                   metavar="L[,L...]", help=f"sequence lengths (default: {DEFAULT_LENGTHS})")
    p.add_argument("--mode", type=comma_list, default=["fwd", "fwdbwd"], metavar="M[,M...]",
                   help="any of fwd, fwdbwd, decode (default: fwd,fwdbwd)")
    p.add_argument("--order", type=int, default=None, help="Taylor order for 'ea' specs that do not set one")
    p.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True,
                   help="causal attention (needed for decode); --no-causal for bidirectional (default: causal)")
    p.add_argument("--level", choices=LEVELS, default="op",
                   help="op: the attention core on q, k, v; module: the whole layer with projections (default: op)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size B (default: 1)")
    p.add_argument("--heads", type=positive_int, default=8, help="number of heads H (default: 8)")
    p.add_argument("--head-dim", type=positive_int, default=64, help="head dimension D (default: 64)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="input dtype (default: fp32)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="timed calls per point on the CPU after one warm-up; the median is quoted (default: 3)")
    p.add_argument("--check-rows", type=positive_int, default=16, help="query positions checked against the reference")
    p.add_argument("--max-check-error", type=positive_float, default=None,
                   help="refuse to time a path whose relative RMSE exceeds this (default: 1e-4 fp32, 3e-2 bf16/fp16)")
    p.add_argument("--baseline", default=None,
                   help="the attention the speed-up and crossover columns compare against (default: softmax "
                        "when it is in --attn, else the first)")
    p.add_argument("--max-spread", type=positive_float, default=1.5,
                   help="mark points whose slowest call took more than this many times the fastest (default: 1.5)")
    p.add_argument("--out", type=out_dir, metavar="DIR",
                   help="folder for bench.csv, bench.json and bench.md (default: results/runs/<timestamp>-bench/)")
    p.add_argument("--csv", type=output_file, default=None, metavar="FILE", help="also write the CSV rows to FILE")


def resolve_specs(text: str, order: int | None = None) -> list[str]:
    """Canonical specs of ``--attn`` (``order`` added to ``ea`` specs that set none); UsageError for a bad one."""
    from suite.attention import parse_spec

    specs = attention_specs(text)
    if order is None:
        return specs
    with_order = ";".join(f"{s}{',' if ':' in s else ':'}order={order}" if parse_spec(s)[0] == "ea"
                          and "order" not in parse_spec(s)[1] else s for s in specs)
    return attention_specs(with_order, "--order")


def _validate(args: argparse.Namespace) -> tuple[list[str], str, Any, float, str]:
    """Everything checked before the first point: specs, modes, device, dtype, tolerance, baseline."""
    import torch

    from suite.run.measure import MODES, torch_dtype

    specs = resolve_specs(args.attn, args.order)
    bad = [m for m in args.mode if m not in MODES]
    if bad:
        raise UsageError(f"--mode: unknown mode {', '.join(bad)}; valid: {', '.join(MODES)}")
    if "decode" in args.mode and not args.causal:
        raise UsageError("--mode decode needs causal attention (drop --no-causal)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device {device}: valid devices are cpu, cuda, cuda:N")
    dtype = torch_dtype(args.dtype)
    tolerance = args.max_check_error or (1e-4 if dtype == torch.float32 else 3e-2)
    baseline = args.baseline
    if baseline is not None:
        baseline = resolve_specs(baseline)[0]
        if baseline not in specs:
            raise UsageError(f"--baseline {baseline} is not one of --attn ({', '.join(specs)})")
    else:
        baseline = next((s for s in specs if s.split(":")[0] == "softmax"), specs[0])
    return specs, device, dtype, tolerance, baseline


def measure_points(specs: list[str], lengths: list[int], modes: list[str], args: argparse.Namespace, device: str,
                   dtype: Any, tolerance: float, console) -> list[dict[str, Any]]:
    """One row per attention, L and mode (``measure.measure_point``): status, times (median, min, max, repeats),
    memory, check error."""
    from suite.run.measure import measure_point

    points = []
    for spec in specs:
        for length in lengths:
            for mode in modes:
                row: dict[str, Any] = {"attention": spec, "L": length, "mode": mode}
                try:
                    point = measure_point(spec, length, mode, tolerance=tolerance, batch=args.batch,
                                          num_heads=args.heads, head_dim=args.head_dim, causal=args.causal,
                                          dtype=dtype, device=device, repeats=args.repeats, level=args.level,
                                          max_check_rows=args.check_rows)
                except ValueError as err:
                    raise UsageError(f"{spec} L={length} {mode}: {err}") from None
                res = point.result
                row["status"] = point.status
                if point.error:
                    row["error"] = point.error
                if "check_error" in res:
                    row.update(backend=res["backend_used"], check_error=res["check_error"])
                if point.status == "ok":
                    row.update(peak_mem_bytes=res["peak_mem_bytes"], ms=point.ms, min_ms=res["time_min_ms"],
                               max_ms=res["time_max_ms"], repeats=res["repeats"])
                    for key in ("prefill_ms", "state_bytes"):
                        if key in res:
                            row[key] = res[key]
                points.append(row)
                done = f"{row['ms']:.2f} ms" if row["status"] == "ok" else row.get("error") or row["status"]
                console.print(f"{spec} L={length} {_MODE_TITLE[mode]}: {done}", markup=False, highlight=False)
    return points


def add_comparisons(points: list[dict[str, Any]], baseline: str, max_spread: float) -> None:
    """Add ``speedup`` (baseline time / this time, same L and mode) and ``spread_warning`` to every timed row."""
    base = {(p["L"], p["mode"]): p["ms"] for p in points if p["attention"] == baseline and p["status"] == "ok"}
    for p in points:
        if p["status"] != "ok":
            continue
        ref = base.get((p["L"], p["mode"]))
        p["speedup"] = ref / p["ms"] if ref else None
        p["spread"] = p["max_ms"] / p["min_ms"] if p["min_ms"] > 0 else math.inf
        p["spread_warning"] = p["repeats"] > 1 and p["spread"] > max_spread


def _time_cell(p: dict[str, Any]) -> str:
    if p["status"] != "ok":
        return p["status"]
    mark = " !" if p["spread_warning"] else ""
    return f"{p['ms']:.3g} ({p['min_ms']:.3g}-{p['max_ms']:.3g}){mark}"


def tables(points: list[dict[str, Any]], specs: list[str], modes: list[str], baseline: str):
    """(point table, scaling table) as DataFrames ready for compare's rich/markdown renderers."""
    import pandas as pd

    from suite.analysis.stats import loglog_slope
    from suite.analysis.units import crossover_cell

    by_key = {(p["attention"], p["L"], p["mode"]): p for p in points}
    lengths = sorted({p["L"] for p in points})
    rows = []
    for spec in specs:
        for length in lengths:
            row: dict[str, str] = {"attention": spec, "L": str(length)}
            backends = []
            for mode in modes:
                p = by_key[(spec, length, mode)]
                title = _MODE_TITLE[mode]
                row[f"{title} ms (min-max)"] = _time_cell(p)
                speed = p.get("speedup")
                row[f"{title} × {baseline}"] = "-" if speed is None or spec == baseline else f"{speed:.3g}×"
                row[f"{title} peak MB"] = "-" if p.get("peak_mem_bytes") is None else f"{p['peak_mem_bytes'] / 1e6:.1f}"
                if mode == "decode" and p.get("state_bytes") is not None:
                    row["state MB"] = f"{p['state_bytes'] / 1e6:.3f}"
                if p.get("backend") and p["backend"] not in backends:
                    backends.append(p["backend"])
            checks = [c for m in modes if (c := by_key[(spec, length, m)].get("check_error")) is not None]
            row["max check err"] = f"{max(checks):.1e}" if checks else "-"
            row["backend"] = "+".join(backends) or "-"
            rows.append(row)
    point_table = pd.DataFrame(rows).set_index(["attention", "L"])

    scaling_rows = []
    for spec in specs:
        row = {"attention": spec}
        for mode in modes:
            mine = [by_key[(spec, n, mode)].get("ms") for n in lengths]
            ref = [by_key[(baseline, n, mode)].get("ms") for n in lengths]
            slope = loglog_slope(lengths, mine)
            row[f"{_MODE_TITLE[mode]} slope"] = "-" if math.isnan(slope) else f"{slope:.2f}"
            row[f"{_MODE_TITLE[mode]} no slower than {baseline} from L"] = (
                "-" if spec == baseline else crossover_cell(lengths, mine, ref)[1])
        scaling_rows.append(row)
    return point_table, pd.DataFrame(scaling_rows).set_index("attention")


def _machine(device: str) -> dict[str, Any]:
    import torch

    from suite.run.job import device_env

    env = device_env(device)
    return {"device": device, "device_name": env["device_name"], "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__, "platform": platform.platform(), "python": platform.python_version()}


def run(args: argparse.Namespace) -> int:
    """Check and time every point, print and save the tables; exit 1 when a point failed or was wrong."""
    import pandas as pd

    from suite.analysis.tables import markdown_table, rich_table
    from suite.console import make_console
    from suite.run.measure import machine_load
    from suite.run.pool.rundir import default_out_dir, ensure_out_dir

    specs, device, dtype, tolerance, baseline = _validate(args)
    out = args.out or default_out_dir("bench")
    ensure_out_dir(out, subdirs=())
    console = make_console()
    load_before = machine_load()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    points = measure_points(specs, args.lengths, args.mode, args, device, dtype, tolerance, console)
    load_after = machine_load()
    add_comparisons(points, baseline, args.max_spread)
    point_table, scaling_table = tables(points, specs, args.mode, baseline)

    shape = (f"{args.level} level · B={args.batch} H={args.heads} D={args.head_dim} · "
             f"{str(dtype).replace('torch.', '')}"
             f" · {'causal' if args.causal else 'non-causal'} · {device}")
    notes = [f"cells: median ms over {args.repeats} calls (min-max); × {baseline}: its time / this time at the same "
             "L (above 1: faster than the baseline); peak MB: peak memory of one call above what was in use before it",
             f"machine load (1-min average) before / after: {load_before} / {load_after}"]
    fused = sys.modules.get("suite.attention.ea.cpu_fused")
    kernel_note = fused.build_report() if fused is not None else None
    if kernel_note:
        notes.append(kernel_note)
    if any(p.get("spread_warning") for p in points):
        notes.append(f"! the slowest call took more than {args.max_spread:g}× the fastest: the machine was busy "
                     "during these points; rerun them on a quiet machine")
    scaling_note = ("slope: log-log slope of time against L (1 = linear, 2 = quadratic); 'from L': the length "
                    f"from which the attention is no slower than {baseline} ('<= L': already at the shortest L, "
                    "'> L': not within the measured lengths)")
    console.print(rich_table(point_table, f"bench · {shape}"))
    for note in notes:
        console.print(note, markup=False, highlight=False)
    console.print(rich_table(scaling_table, "scaling with L"))
    console.print(scaling_note, markup=False, highlight=False)

    frame = pd.DataFrame(points)
    frame.to_csv(out / "bench.csv", index=False)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    meta = {"command": shlex.join(["run_suite.py", *sys.argv[1:]]) if sys.argv else "", "started_at": started,
            "shape": shape, "baseline": baseline, "machine": _machine(device), "load_before": load_before,
            "load_after": load_after, "ea_cpu_kernel": kernel_note, "points": points}
    (out / "bench.json").write_text(json.dumps(meta, indent=1, default=str))
    markdown = [f"# bench · {shape}", "", f"`{meta['command']}`", "", markdown_table(point_table), ""]
    markdown += [f"- {note}" for note in notes]
    markdown += ["", "## scaling with L", "", markdown_table(scaling_table), "", f"- {scaling_note}", ""]
    (out / "bench.md").write_text("\n".join(markdown))
    console.print(f"saved: {out / 'bench.md'} (tables), {out / 'bench.csv'} (rows), {out / 'bench.json'} "
                  f"(rows, command, machine)" + (f", {args.csv}" if args.csv else ""), markup=False, highlight=False)
    return 1 if any(p["status"] in ("error", "wrong") for p in points) else 0
