"""The rows of gpu-check as they run on the device, in a worker process (``serve``).

Each row function takes the worker's ``Context`` and the row's keyword arguments and returns the row's fields,
``status`` among them: "ok", "FAIL" (measured, but a check does not hold), "skipped: <why>" or, from ``run_row``,
"error: <one line>". Inputs are made on the device (seeded device generators); rows of one shape share their
inputs (``Context.inputs_for``). The fp64 reference of EA is its torch path on the same device (one cumsum per
prefix sum, no host synchronisation inside it; DESIGN.md §2), run one batch row at a time to bound its memory.

A CUDA error that poisons the context (an illegal address, a launch failure, a device-side assert) is recorded on
its row, and the worker then exits: the parent starts a fresh process for the next row (runner.py).
"""
from __future__ import annotations

import functools
import importlib
import os
import platform
import re
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from suite.gpu_check.plan import BASELINES, TIMED, TOLERANCE, Shapes

#: errors after which the CUDA context cannot be trusted: the worker process is replaced
POISON = re.compile(r"illegal memory access|illegal address|unspecified launch failure|device-side assert|"
                    r"misaligned address|illegal instruction|CUDA error: (?!out of memory)|cudaErrorLaunch|"
                    r"CUBLAS_STATUS_EXECUTION_FAILED|CUDNN_STATUS_EXECUTION_FAILED|context is destroyed", re.I)


@dataclass
class Context:
    """What a worker keeps between rows."""

    device: str
    shapes: Shapes
    ea_backend: str
    inputs: dict = field(default_factory=dict)
    inputs_key: Any = None

    def inputs_for(self, key: Any) -> dict:
        """The shared inputs of rows with this key (the shape); those of another shape are dropped first."""
        if key != self.inputs_key:
            self.inputs.clear()
            self.inputs_key = key
        return self.inputs


def one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _importable(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
        return True, f"yes ({getattr(mod, '__version__', 'version unknown')})"
    except Exception as err:  # noqa: BLE001  (an optional package's import fails in many ways)
        return False, f"no ({type(err).__name__}: {one_line(err, 120)})"


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(ctx: Context) -> dict[str, Any]:
    """The card and the versions: what a reader needs to say where a number came from."""
    import torch
    import triton

    env: dict[str, Any] = {"device": ctx.device, "torch": torch.__version__, "triton": triton.__version__,
                           "python": platform.python_version(), "host_cpu": platform.processor() or platform.machine(),
                           "ea_backend": ctx.ea_backend}
    if ctx.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(ctx.device)
        env.update(card=props.name, capability=f"sm_{props.major}{props.minor}", sms=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), driver=_driver_version())
    else:
        env.update(card="cpu", triton_interpreter=os.environ.get("TRITON_INTERPRET") == "1")
    for module in ("fla", "mamba_ssm"):
        env[module] = _importable(module)[1]
    return {**env, "status": "ok"}


# -- EA against the fp64 reference ----------------------------------------------------------------------

def _rel(out, ref) -> float:
    from suite.run.measure import relative_error

    return relative_error(out, ref)


def ea_check(ctx: Context, case: str, L: int, D: int, dtype: str) -> dict[str, Any]:
    """One EA case against the fp64 reference on the device: max relative error over o, dq, dk, dv (and the
    state); "causal inference" is the forward without gradients (no Z written)."""
    import torch

    from suite.attention.ea import ea_attention
    from suite.run.measure import torch_dtype

    shapes = ctx.shapes
    B, H, t = shapes.batch, shapes.heads, shapes.order
    gen = torch.Generator(device=ctx.device).manual_seed(1000 * L + D)
    shape = (B, L, H, D)
    q, k, v, g = (torch.randn(shape, generator=gen, device=ctx.device, dtype=torch.float64) for _ in range(4))
    q.mul_(0.5)
    k.mul_(0.5)
    causal = case.startswith("causal")
    mask = None
    if "mask" in case:
        mask = torch.rand(B, L, generator=gen, device=ctx.device) > 0.2
        mask[:, 0] = True

    def run(tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor], backend: str, rows: slice) -> list:
        qr, kr, vr = (x[rows] for x in tensors)
        m = mask[rows] if mask is not None else None
        if case == "causal inference":
            with torch.no_grad():
                return [ea_attention(qr, kr, vr, t, True, backend=backend)]
        ql, kl, vl = leaves = [x.detach().clone().requires_grad_() for x in (qr, kr, vr)]
        extra = None
        if case == "causal state":  # two calls chained through the (detached) state, both sides alike
            half = L // 2
            o1, s1 = ea_attention(ql[:, :half], kl[:, :half], vl[:, :half], t, True, output_final_state=True,
                                  backend=backend)
            o2, extra = ea_attention(ql[:, half:], kl[:, half:], vl[:, half:], t, True, initial_state=s1.detach(),
                                     output_final_state=True, backend=backend)
            o = torch.cat([o1, o2], 1)
        else:
            o = ea_attention(ql, kl, vl, t, causal, m, backend=backend)
        o.backward(g[rows].to(o.dtype))
        out = [o.detach()] + [x.grad for x in leaves]
        return out + ([extra.detach()] if extra is not None else [])

    # the reference one batch row at a time: its fp64 temporaries stay a quarter of the size
    parts = [run((q, k, v), "torch", slice(b, b + 1)) for b in range(B)]
    ref = [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]
    del parts
    low = torch_dtype(dtype)
    got = run((q.to(low), k.to(low), v.to(low)), ctx.ea_backend, slice(None))
    names = ["o", "dq", "dk", "dv", "state"]
    errors = {n: _rel(a, r) for n, a, r in zip(names, got, ref)}
    finite = all(bool(torch.isfinite(a).all()) for a in got)
    worst = max(errors.values())
    ok = finite and worst <= TOLERANCE[dtype]
    return {"backend": ctx.ea_backend, "max_rel_error": worst, "tolerance": TOLERANCE[dtype],
            "errors": {n: float(f"{e:.3g}") for n, e in errors.items()}, "finite": finite,
            "status": "ok" if ok else "FAIL"}


# -- timings ---------------------------------------------------------------------------------------------

def _ea_traffic(ctx: Context, L: int, mode: str) -> float | None:
    """Bytes one EA call moves at this shape (triton_ops.traffic), or None off the Triton path."""
    if ctx.ea_backend != "triton":
        return None
    import torch

    from suite.attention.ea import triton_ops

    s = ctx.shapes
    cfg = triton_ops.launch_config(s.batch, L, s.heads, s.time_dim, torch.device(ctx.device))
    itemsize = 4 if s.time_dtype == "float32" else 2
    return sum(triton_ops.traffic(s.batch, L, s.heads, s.time_dim, itemsize, s.order, True,
                                  "inference" if mode == "fwd" else "fwdbwd", cfg).values())


def timing(ctx: Context, key: str, mode: str, L: int) -> dict[str, Any]:
    """One timed row: check on the shape, then time (measure.measure_attention); decode rows: one step after a
    prefill of L tokens (EA's recurrent state, softmax's KV cache)."""
    from suite.run.measure import measure_point, torch_dtype

    s = ctx.shapes
    if key == "mamba-scan":
        return time_selective_scan(ctx, mode, L)
    if mode == "decode":
        spec, level = (f"ea:backend={ctx.ea_backend}" if key == "ea" else "softmax"), "module"
    else:
        _, spec, level, _ = TIMED[key]
        if key == "ea":
            spec = f"ea:backend={ctx.ea_backend}"
    tolerance = TOLERANCE[s.time_dtype]
    try:
        point = measure_point(spec, L, mode, tolerance=tolerance, catch=False, batch=s.batch, num_heads=s.heads,
                              head_dim=s.time_dim, causal=True, dtype=s.time_dtype, device=ctx.device, repeats=5,
                              level=level, inputs=ctx.inputs_for((L, s.time_dtype)), rep_ms=s.timing_rep_ms)
    except RuntimeError as err:
        if key == "sdpa-cudnn" and "no available kernel" in str(err).lower():
            return {"status": "skipped: torch offers no cuDNN attention for these inputs here "
                              f"({one_line(err, 120)})"}
        raise
    m = point.result
    tensor = s.batch * L * s.heads * s.time_dim * torch_dtype(s.time_dtype).itemsize
    row = {"check_error": m["check_error"], "tolerance": tolerance, "backend": m["backend_used"],
           "level": m["level"], "spec": spec, "io_bytes": 4 * tensor}
    if point.status != "ok":  # a wrong path is not timed
        return {**row, "status": f"FAIL: {point.error}"}
    row.update(ms=point.ms, time_min_ms=m["time_min_ms"], time_max_ms=m["time_max_ms"], timed_calls=m["repeats"],
               peak_mem_bytes=m["peak_mem_bytes"])
    if mode == "decode":
        row.update(state_bytes=m["state_bytes"], prefill_ms=m["prefill_ms"])
    elif key == "ea":
        moved = _ea_traffic(ctx, L, mode)
        if moved is not None:
            row.update(bytes_moved=moved, gb_per_s=moved / (row["ms"] * 1e-3) / 1e9)
    return {**row, "status": "ok"}


def _scan_inputs(ctx: Context, L: int, dtype: str, requires_grad: bool):
    """Random inputs of mamba's selective scan at the timing width: u, delta [B, Di, L], A [Di, N], B, C
    [B, N, L], D [Di] (Di = 2 x dim, N = 16), on the device."""
    import torch

    from suite.run.measure import torch_dtype

    s = ctx.shapes
    Di, N = 2 * s.heads * s.time_dim, 16
    gen = torch.Generator(device=ctx.device).manual_seed(L)
    dt = torch_dtype(dtype)
    u = torch.randn(s.batch, Di, L, generator=gen, device=ctx.device).to(dt)
    delta = torch.nn.functional.softplus(torch.randn(s.batch, Di, L, generator=gen, device=ctx.device) - 4).to(dt)
    A = -torch.rand(Di, N, generator=gen, device=ctx.device) - 0.5
    Bm = torch.randn(s.batch, N, L, generator=gen, device=ctx.device).to(dt)
    Cm = torch.randn(s.batch, N, L, generator=gen, device=ctx.device).to(dt)
    D = torch.ones(Di, device=ctx.device)
    tensors = [u, delta, A, Bm, Cm, D]
    return [x.requires_grad_(requires_grad) for x in tensors]


def _scan_check(ctx: Context, fn: Callable, tensors: list, rows: int) -> float:
    """Relative error of ``fn`` against the suite's torch S6 scan (fp32) over the first ``rows`` positions."""
    import torch

    from suite.attention.mamba import selective_scan

    u, delta, A, Bm, Cm, D = (x.detach() for x in tensors)
    with torch.no_grad():
        got = fn(u[..., :rows], delta[..., :rows], A, Bm[..., :rows], Cm[..., :rows], D)
        seq_first = [x[..., :rows].transpose(1, 2).float() for x in (u, delta, Bm, Cm)]
        ref, _ = selective_scan(seq_first[0], seq_first[1], A, seq_first[2], seq_first[3], D)
    return _rel(got.transpose(1, 2), ref)


def time_selective_scan(ctx: Context, mode: str, L: int) -> dict[str, Any]:
    """mamba-ssm's ``selective_scan_fn`` timed as an op (EA's level), checked on its first 1,024 positions."""
    import torch
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    from suite.run.measure import peak_call_bytes, time_call

    s = ctx.shapes
    tensors = _scan_inputs(ctx, L, s.time_dtype, mode == "fwdbwd")

    def scan(u, delta, A, Bm, Cm, D):
        return selective_scan_fn(u, delta, A, Bm, Cm, D, z=None, delta_bias=None, delta_softplus=False)

    error = _scan_check(ctx, scan, tensors, min(L, 1024))
    grad = torch.randn_like(tensors[0]) if mode == "fwdbwd" else None

    def call():
        if grad is None:
            with torch.no_grad():
                return scan(*tensors)
        for x in tensors:
            x.grad = None
        scan(*tensors).backward(grad)

    call()
    peak = peak_call_bytes(call, ctx.device)
    timing_ = time_call(call, ctx.device, 5, warmup=False, rep_ms=s.timing_rep_ms)
    tolerance = TOLERANCE[s.time_dtype]
    return {"ms": timing_.median, "time_min_ms": timing_.min, "time_max_ms": timing_.max,
            "timed_calls": timing_.repeats,
            "peak_mem_bytes": peak, "check_error": error, "check_rows": min(L, 1024), "tolerance": tolerance,
            "backend": "mamba_ssm-selective-scan", "level": "op", "spec": "selective_scan_fn",
            "status": "ok" if error <= tolerance else f"FAIL: check error {error:.2g} > {tolerance:g}"}


def baseline_check(ctx: Context, key: str) -> dict[str, Any]:
    """A GPU baseline once against its own reference (relative error, fp32, L = baseline_length)."""
    from suite.run.measure import measure_attention

    s = ctx.shapes
    tolerance = 1e-2  # fla's chunked kernels may use TF32 dots
    if key == "mamba-scan":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        tensors = _scan_inputs(ctx, s.baseline_length, "float32", False)
        error = _scan_check(ctx, lambda *a: selective_scan_fn(*a, z=None, delta_bias=None, delta_softplus=False),
                            tensors, s.baseline_length)
        backend = "mamba_ssm-selective-scan"
    else:
        _, spec, level, _ = TIMED[key]
        m = measure_attention(spec, s.baseline_length, "fwd", batch=2, num_heads=s.heads, head_dim=s.time_dim,
                              causal=True, dtype="float32", device=ctx.device, repeats=1, level=level)
        error, backend = m["check_error"], m["backend_used"]
    return {"backend": backend, "max_rel_error": error, "tolerance": tolerance,
            "status": "ok" if error <= tolerance else "FAIL"}


def copy_bandwidth(ctx: Context, mib: int) -> dict[str, Any]:
    """Device-to-device copy of ``mib`` MiB: GB/s counting the read and the write."""
    import torch

    from suite.run.measure import time_call

    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=ctx.device)
    dst = torch.empty_like(src)
    timing_ = time_call(lambda: dst.copy_(src), ctx.device, 20)
    return {"bytes": 2 * src.numel(), "ms": timing_.median,
            "gb_per_s": 2 * src.numel() / (timing_.median * 1e-3) / 1e9, "status": "ok"}


def launch_sweep(ctx: Context, L: int, max_s: float) -> dict[str, Any]:
    """EA causal fwd+bwd under a small grid of launch settings (L split, rows per tile, channels per program) at
    one shape, each checked against the default settings' result before it is timed; the best and how far the
    defaults are from it. Stops starting new settings after ``max_s`` seconds."""
    import torch

    from suite.attention.ea import triton_ops
    from suite.run.measure import time_call, torch_dtype

    s = ctx.shapes
    start = time.monotonic()
    dt = torch_dtype(s.time_dtype)
    shape = (s.batch, L, s.heads, s.time_dim)
    gen = torch.Generator(device=ctx.device).manual_seed(7)
    q, k, v, g = ((torch.randn(shape, generator=gen, device=ctx.device) * 0.5).to(dt) for _ in range(4))
    default = triton_ops.launch_config(s.batch, L, s.heads, s.time_dim, q.device)
    ql, kl, vl = leaves = [x.detach().requires_grad_() for x in (q, k, v)]

    def run(settings: dict[str, int]) -> list[torch.Tensor]:
        for x in leaves:
            x.grad = None
        o, _ = triton_ops.ea_triton(ql, kl, vl, s.order, True, num_splits=settings.get("num_splits"),
                                    block_l=settings.get("block_l"), block_c=settings.get("block_c"))
        o.backward(g)
        return [o.detach()] + [x.grad.detach().clone() for x in leaves if x.grad is not None]

    reference = run({})
    tolerance = TOLERANCE[s.time_dtype]
    grid: list[dict[str, int]] = [{}]
    for splits in dict.fromkeys((default.num_splits, max(1, default.num_splits // 2), default.num_splits * 2)):
        for block_l in (None, 2, 8):
            for block_c in (None, 64, 256):
                setting = {k: v for k, v in (("num_splits", splits), ("block_l", block_l), ("block_c", block_c))
                           if v is not None and not (k == "num_splits" and v == default.num_splits)}
                if setting and setting not in grid:
                    grid.append(setting)
    results: list[dict[str, Any]] = []
    for setting in grid:
        if time.monotonic() - start > max_s:
            break
        try:
            out = run(setting)
            error = max(_rel(a, r) for a, r in zip(out, reference))
            if error > tolerance:
                results.append({**setting, "status": f"FAIL: {error:.2g} from the default settings' result"})
                continue
            ms = time_call(functools.partial(run, setting), ctx.device, 3, rep_ms=20).median
            results.append({**setting, "ms": ms, "status": "ok"})
        except Exception as err:  # noqa: BLE001  (a setting that does not compile or launch is a result too)
            if POISON.search(str(err)):
                raise
            results.append({**setting, "status": f"error: {one_line(err, 160)}"})
    timed = [r for r in results if r["status"] == "ok"]
    if not timed or "ms" not in results[0]:
        return {"configs": results, "tried": len(results), "of": len(grid),
                "status": "FAIL: the default settings did not time" if results else "error: nothing ran"}
    best = min(timed, key=lambda r: float(r["ms"]))

    def describe(r: dict[str, Any]) -> str:
        return ", ".join(f"{k}={r[k]}" for k in ("num_splits", "block_l", "block_c") if k in r) or "defaults"

    return {"default_ms": results[0]["ms"], "best_ms": best["ms"], "best": describe(best),
            "default_over_best": results[0]["ms"] / best["ms"], "tried": len(results), "of": len(grid),
            "defaults": f"num_splits={default.num_splits}, block_l=per kernel, block_c={default.block_c}",
            "configs": results, "status": "ok"}


CALLS: dict[str, Callable[..., dict[str, Any]]] = {
    "environment": environment, "ea_check": ea_check, "timing": timing, "baseline_check": baseline_check,
    "copy_bandwidth": copy_bandwidth, "launch_sweep": launch_sweep,
}


def resolve(call: str) -> Callable[..., dict[str, Any]]:
    """A row function by name: one of ``CALLS`` or ``module:function`` (the tests' fault-injecting rows)."""
    if call in CALLS:
        return CALLS[call]
    module, _, name = call.partition(":")
    return getattr(importlib.import_module(module), name)


def run_row(ctx: Context, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(row fields, poisoned): the row's own fields, or its error as one line (with a traceback tail). The
    clean-up after a row cannot raise."""
    start = time.monotonic()
    poisoned = False
    try:
        fields = resolve(spec["call"])(ctx, **spec.get("kwargs", {}))
    except Exception as err:  # noqa: BLE001  (a report row per failure, not a lost session)
        text = f"{type(err).__name__}: {one_line(err, 2000)}"
        oom = "out of memory" in text.lower() and not POISON.search(text.replace("CUDA error: out of memory", ""))
        poisoned = bool(POISON.search(text)) and not oom
        fields = {"status": "error: " + ("out of memory" if oom else text[:300]),
                  "traceback": traceback.format_exc()[-3000:]}
        if poisoned:
            fields["status"] += " (the CUDA context is lost; the next row runs in a fresh process)"
    fields["row_s"] = round(time.monotonic() - start, 2)
    if not poisoned:
        _release_memory(ctx)
    return fields, poisoned


def _release_memory(ctx: Context) -> None:
    try:
        if ctx.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001  (the clean-up must never be what ends a row)
        pass


def serve(conn, device: str, shapes: dict[str, Any], ea_backend: str) -> None:
    """The worker's loop: receive a row spec, send back ("row", id, fields); exit after a poisoning error."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)  # the current device for Triton, do_bench and the allocator's caches
    ctx = Context(device, Shapes.from_dict(shapes), ea_backend)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        conn.send(("started", message["id"]))
        fields, poisoned = run_row(ctx, message)
        conn.send(("row", message["id"], fields))
        if poisoned:
            conn.close()
            os._exit(3)  # no atexit or CUDA teardown on a lost context


__all__ = ["BASELINES", "CALLS", "Context", "POISON", "resolve", "run_row", "serve"]
