"""Time attentions against the sequence length L: forward, forward+backward and one decoding step.

For every attention and L the timed path is first checked against the attention's own reference (the naive
O(L²) formula for EA, fp32 softmax for SDPA, ...) on the same shape, at up to --check-rows query positions
spread over L; the relative RMSE is reported, and a path whose error exceeds --max-check-error gets no time.

Levels: ``op`` times the attention core on random q, k ~ U(0, 1) and v ~ N(0, 1), [B, L, H, D]
(``module.attend``); ``module``
times the whole layer x [B, L, H*D] -> [B, L, H*D] including its projections (every attention has this).
Decode always runs at module level: a parallel prefill of L tokens, then one ``step`` timed from that
state (ms per token), with the state / KV-cache size in bytes.

Times are medians (CPU: perf_counter over --repeats calls after a warm-up; CUDA: triton.testing.do_bench).
Memory is the peak during one call minus the memory in use just before it (CUDA: max_memory_allocated;
CPU: the process's peak RSS, reset through /proc/self/clear_refs where Linux allows).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any, Callable

import torch

from suite.console import make_console
from suite.errors import UsageError
from suite.harness.measure import (crossover_length, loglog_slope, peak_memory_bytes, reset_peak_memory,
                                   synchronize)

MODES = ("fwd", "fwdbwd", "decode")
LEVELS = ("op", "module")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def _dtype(value: Any) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise ValueError(f"unknown dtype {value!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[value]


def _current_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated(device)
    import psutil

    return psutil.Process().memory_info().rss


def time_call(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median milliseconds of ``fn()`` after one warm-up call."""
    if device.startswith("cuda"):
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=max(100, 20 * repeats), return_mode="median"))
    fn()
    times = []
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_call_bytes(fn: Callable[[], Any], device: str) -> int:
    """Peak memory of one ``fn()`` above what was in use just before it, in bytes."""
    synchronize(device)
    base = _current_bytes(device)
    reset_peak_memory(device)
    fn()
    synchronize(device)
    return max(0, peak_memory_bytes(device) - base)


def check_rows(seq_len: int, count: int, device: str) -> torch.Tensor:
    """Up to ``count`` query positions spread evenly over [0, L), always including the last one."""
    return torch.linspace(0, seq_len - 1, min(count, seq_len), device=device).round().long().unique()


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in fp64."""
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def measure_attention(spec: str, seq_len: int, mode: str, *, batch: int = 1, num_heads: int = 8, head_dim: int = 64,
                      causal: bool = False, dtype: Any = torch.float32, device: str = "cpu", repeats: int = 5,
                      level: str = "op", max_check_rows: int = 16, seed: int = 0) -> dict[str, Any]:
    """Check, then time one attention at one L in one mode. Returns metrics (ms, bytes) and provenance.

    Keys: ``fwd_ms`` | ``fwdbwd_ms`` | ``decode_ms_per_token`` (+ ``prefill_ms``, ``state_bytes``),
    ``peak_mem_bytes`` (peak above the memory in use before the call), ``check_error`` (relative RMSE of the
    timed path against the reference on this shape), ``check_rows``, ``backend_used``, ``level``.
    Tokens per second for the timed mode come as ``tokens_per_s``.
    """
    from suite.attention import build_attention

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; valid: {', '.join(LEVELS)}")
    if mode == "decode" and not causal:
        raise ValueError("mode 'decode' needs causal=True")
    dtype = _dtype(dtype)
    device = str(device)
    torch.manual_seed(seed)
    dim = num_heads * head_dim
    module = build_attention(spec, dim, num_heads, causal=causal).to(device=device, dtype=dtype)
    if level == "op" and mode != "decode" and not hasattr(module, "attend"):
        raise ValueError(f"attention {spec!r} has no op-level form (attend(q, k, v)); use level 'module'")
    rows = check_rows(seq_len, max_check_rows, device)
    x = torch.randn(batch, seq_len, dim, device=device, dtype=dtype)
    result: dict[str, Any] = {"level": "module" if mode == "decode" else level, "check_rows": int(rows.numel())}

    with torch.no_grad():
        if mode == "decode":
            x_t = torch.randn(batch, dim, device=device, dtype=dtype)
            start = time.perf_counter()
            _, state = module.prefill(x)
            synchronize(device)
            result["prefill_ms"] = (time.perf_counter() - start) * 1e3
            y_t, _ = module.step(x_t, state)
            ref = module.reference_forward(torch.cat([x, x_t[:, None]], 1),
                                           rows=torch.tensor([seq_len], device=device))[:, 0]
            result["check_error"] = relative_error(y_t, ref)
            result["backend_used"] = module.backend_used
            result["state_bytes"] = module.state_bytes(state)
            step = lambda: module.step(x_t, state)  # noqa: E731  (the state is not advanced: same L each call)
            result["peak_mem_bytes"] = peak_call_bytes(step, device)
            result["decode_ms_per_token"] = time_call(step, device, repeats)
            result["tokens_per_s"] = batch * 1e3 / result["decode_ms_per_token"]
            return result
        y = module(x)
        result["backend_used"] = module.backend_used
        ref = module.reference_forward(x, rows=rows)
        result["check_error"] = relative_error(y[:, rows], ref)
        del y, ref

    if level == "op":
        # q, k ~ U(0, 1): positive, so attentions whose attend() takes feature-mapped q, k stay well defined
        shape = (batch, seq_len, num_heads, head_dim)
        q, k = (torch.rand(shape, device=device, dtype=dtype) for _ in range(2))
        v = torch.randn(shape, device=device, dtype=dtype)

        def attend(*qkv):
            out = module.attend(*qkv)
            return out[0] if isinstance(out, tuple) else out  # some attend() also return a state

        if mode == "fwd":
            def call():
                with torch.no_grad():
                    return attend(q, k, v)
        else:
            leaves = [t.requires_grad_() for t in (q, k, v)]
            grad = torch.randn_like(v)

            def call():
                for t in leaves:
                    t.grad = None
                attend(*leaves).backward(grad)
    else:
        if mode == "fwd":
            def call():
                with torch.no_grad():
                    return module(x)
        else:
            xg = x.clone().requires_grad_()
            grad = torch.randn_like(x)

            def call():
                module.zero_grad(set_to_none=True)
                xg.grad = None
                module(xg).backward(grad)

    result["peak_mem_bytes"] = peak_call_bytes(call, device)
    ms = time_call(call, device, repeats)
    result[f"{mode}_ms"] = ms
    result["tokens_per_s"] = batch * seq_len * 1e3 / ms
    return result


# -- the command ------------------------------------------------------------------------------------

def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise UsageError(f"expected positive integers, got {text!r}")
    return values


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attn", default="ea,softmax",
                   help="comma-separated attention specs, e.g. 'ea:order=2,softmax' (default: ea,softmax)")
    p.add_argument("--lengths", "--seq-len", dest="lengths", default="512,2048,8192,32768",
                   help="sequence lengths L (default: 512,2048,8192,32768)")
    p.add_argument("--mode", default="fwd,fwdbwd", help="any of fwd, fwdbwd, decode (default: fwd,fwdbwd)")
    p.add_argument("--order", type=int, default=None, help="Taylor order for 'ea' specs that do not set one")
    p.add_argument("--causal", action="store_true", help="causal attention (needed for decode)")
    p.add_argument("--level", choices=LEVELS, default="op",
                   help="op: the attention core on q, k, v; module: the whole layer with projections (default: op)")
    p.add_argument("--batch", type=int, default=1, help="batch size B (default: 1)")
    p.add_argument("--heads", type=int, default=8, help="number of heads H (default: 8)")
    p.add_argument("--head-dim", type=int, default=64, help="head dimension D (default: 64)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="input dtype (default: fp32)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per point on the CPU; the median is kept")
    p.add_argument("--check-rows", type=int, default=16, help="query positions checked against the reference")
    p.add_argument("--max-check-error", type=float, default=None,
                   help="refuse to time a path whose relative RMSE exceeds this (default: 1e-4 fp32, 3e-2 bf16/fp16)")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")


def _expand_specs(text: str, order: int | None) -> list[str]:
    from suite.attention import canonical_spec, parse_spec

    specs = []
    for spec in filter(None, (s.strip() for s in text.split(","))):
        # "ea:order=2,softmax" splits into "ea:order=2" and "softmax"; a bare key=value continues the spec
        if "=" in spec and ":" not in spec and specs:
            specs[-1] += "," + spec
        else:
            specs.append(spec)
    out = []
    for spec in specs:
        try:
            name, options = parse_spec(spec)
        except ValueError as err:
            raise UsageError(str(err)) from None
        if order is not None and name == "ea" and "order" not in options:
            spec = f"{spec}{',' if ':' in spec else ':'}order={order}"
        out.append(canonical_spec(spec))
    return out


def run_bench(args: argparse.Namespace) -> int:
    """``run_suite.py bench``: one table of time and memory per attention and L, then slopes and crossovers."""
    import pandas as pd
    specs = _expand_specs(args.attn, args.order)
    lengths = _int_list(args.lengths)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise UsageError(f"unknown mode {', '.join(bad) or '(none)'}; valid: {', '.join(MODES)}")
    if "decode" in modes and not args.causal:
        raise UsageError("--mode decode needs --causal")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda given but CUDA is not available")
    dtype = _dtype(args.dtype)
    tolerance = args.max_check_error or (1e-4 if dtype == torch.float32 else 3e-2)
    console = make_console()
    rows = []
    failed = False
    for spec in specs:
        for length in lengths:
            row: dict[str, Any] = {"attention": spec, "L": length}
            for mode in modes:
                try:
                    res = measure_attention(spec, length, mode, batch=args.batch, num_heads=args.heads,
                                            head_dim=args.head_dim, causal=args.causal, dtype=dtype, device=device,
                                            repeats=args.repeats, level=args.level, max_check_rows=args.check_rows)
                except torch.OutOfMemoryError:
                    row[f"{mode}_status"] = "oom"
                    continue
                except ValueError as err:
                    raise UsageError(str(err)) from None
                except Exception as err:  # a crash in one point must not lose the others
                    row[f"{mode}_status"] = f"error: {type(err).__name__}: {err}"
                    failed = True
                    continue
                if not res["check_error"] <= tolerance:
                    row[f"{mode}_status"] = f"wrong: check error {res['check_error']:.2e} > {tolerance:g}"
                    failed = True
                    continue
                row[f"{mode}_status"] = "ok"
                row[f"{mode}_backend"] = res["backend_used"]
                row[f"{mode}_check"] = res["check_error"]
                row[f"{mode}_mem"] = res["peak_mem_bytes"]
                for key in ("fwd_ms", "fwdbwd_ms", "decode_ms_per_token", "prefill_ms", "state_bytes"):
                    if key in res:
                        row[key] = res[key]
            rows.append(row)
            console.log(f"{spec} L={length}: " + ", ".join(f"{m}={row.get(m + '_status')}" for m in modes))
    df = pd.DataFrame(rows)
    _print_tables(console, df, specs, lengths, modes, args, device, dtype)
    if args.csv:
        df.to_csv(args.csv, index=False)
    return 1 if failed else 0


_TIME_COLUMN = {"fwd": "fwd_ms", "fwdbwd": "fwdbwd_ms", "decode": "decode_ms_per_token"}


def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    value = value * scale
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


def _print_tables(console, df, specs, lengths, modes, args, device, dtype) -> None:
    from rich.table import Table

    title = (f"bench · {args.level} level · B={args.batch} H={args.heads} D={args.head_dim} · "
             f"{str(dtype).replace('torch.', '')} · {'causal' if args.causal else 'non-causal'} · {device}")
    table = Table(title=title)
    table.add_column("attention", style="cyan")
    table.add_column("backend")
    table.add_column("L", justify="right")
    for mode in modes:
        table.add_column({"fwd": "fwd ms", "fwdbwd": "fwd+bwd ms", "decode": "decode ms/tok"}[mode], justify="right")
        table.add_column(f"{mode} peak MB", justify="right")
    if "decode" in modes:
        table.add_column("state MB", justify="right")
    table.add_column("max check err", justify="right")
    for row in df.to_dict("records"):
        cells = [row["attention"], row.get(f"{modes[0]}_backend") or "—", str(row["L"])]
        for mode in modes:
            status = row.get(f"{mode}_status")
            cells.append(_fmt(row.get(_TIME_COLUMN[mode])) if status == "ok" else str(status)[:28])
            cells.append(_fmt(row.get(f"{mode}_mem"), 1e-6, 1) if status == "ok" else "—")
        if "decode" in modes:
            cells.append(_fmt(row.get("state_bytes"), 1e-6, 3))
        checks = [row.get(f"{m}_check") for m in modes if row.get(f"{m}_check") is not None]
        cells.append(f"{max(checks):.1e}" if checks else "—")
        table.add_row(*cells)
    console.print(table)

    scaling = Table(title="scaling with L: log-log slope of time (1 = linear, 2 = quadratic) and crossover vs softmax")
    scaling.add_column("attention", style="cyan")
    for mode in modes:
        scaling.add_column(f"{mode} slope (all L)", justify="right")
        if len(lengths) > 2:
            scaling.add_column(f"{mode} slope (upper half)", justify="right")
        scaling.add_column(f"{mode} faster than softmax from L", justify="right")
    soft = next((s for s in specs if s.split(":")[0] == "softmax"), None)
    for spec in specs:
        sub = df[df["attention"] == spec].sort_values("L")
        cells = [spec]
        for mode in modes:
            col = _TIME_COLUMN[mode]
            times = list(sub[col]) if col in sub else [None] * len(sub)
            ls = list(sub["L"])
            cells.append(_fmt(loglog_slope(ls, times)))
            if len(lengths) > 2:
                half = len(ls) // 2
                cells.append(_fmt(loglog_slope(ls[half:], times[half:])))
            if soft is None or spec == soft:
                cells.append("—")
            else:
                ref = df[df["attention"] == soft].sort_values("L")
                ref_times = list(ref[col]) if col in ref else [None] * len(ref)
                cross = crossover_length(list(ref["L"]), times, ref_times) if len(ref) == len(sub) else None
                cells.append("never" if cross is None else f"{cross:.0f}")
        scaling.add_row(*cells)
    console.print(scaling)
