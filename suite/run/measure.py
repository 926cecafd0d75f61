"""Measuring: timing and checking one attention, scaling against sequence length, wall-clock time, peak memory.

- ``measure_attention(spec, L, mode, ...)``: check one attention against its reference on the shape, then time
  it (fwd, fwd+bwd or one decoding step) and take its peak memory; the kernels family and ``bench`` use it.
- ``time_call(fn, device, repeats)``: a ``Timing`` (median, min, max over the repeats, in ms).
- ``Stopwatch``: wall time in seconds that waits for queued CUDA work before reading the clock.
- ``reset_peak_memory(device)`` / ``peak_memory_bytes(device)``: on CUDA, ``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats``; on a CPU, the peak resident set size (bytes) of this process. The CPU
  figure is the whole process's high-water mark, so it includes the interpreter, torch and the data (a few
  hundred MB of baseline); where Linux allows, the mark is reset first (``/proc/self/clear_refs``), otherwise
  it is ``getrusage(RUSAGE_SELF).ru_maxrss`` since the process started. ``memory_measure(device)`` names
  which of these produced the number; it goes into the record's ``env``.
"""
from __future__ import annotations

import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def synchronize(device: str) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` then ``sw.seconds``; synchronises CUDA at both ends."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds = float("nan")

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _can_reset_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        return "VmHWM" in _STATUS.read_text()
    except OSError:
        return False


def memory_measure(device: str) -> str:
    """Which figure ``peak_memory_bytes(device)`` reports."""
    if str(device).startswith("cuda"):
        return "torch.cuda.max_memory_allocated"
    return "cpu peak RSS (VmHWM after reset)" if _can_reset_rss() else "cpu peak RSS (ru_maxrss since process start)"


def reset_peak_memory(device: str) -> None:
    """Start a fresh peak-memory window (CUDA allocator stats, or the process's peak RSS where Linux allows)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    else:
        _can_reset_rss()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (VmHWM, else ru_maxrss)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # macOS reports bytes, Linux KiB


def peak_memory_bytes(device: str) -> int:
    """Peak memory since the last ``reset_peak_memory(device)``, in bytes (see the module docstring)."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()


# -- one attention, checked then timed -------------------------------------------------------------

MODES = ("fwd", "fwdbwd", "decode")
LEVELS = ("op", "module")
#: dtype names accepted by task files and the command line -> torch dtype name
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}
TIME_KEYS = {"fwd": "fwd_ms", "fwdbwd": "fwdbwd_ms", "decode": "decode_ms_per_token"}


def torch_dtype(value: Any):
    """A torch dtype from its name (fp32, float32, bf16, bfloat16, fp16, float16) or itself; ValueError otherwise."""
    import torch

    if isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise ValueError(f"unknown dtype {value!r}; valid: {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[value])


def machine_load() -> float | None:
    """The 1-minute load average of this machine (None where the OS has none); recorded beside timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


@dataclass(frozen=True)
class Timing:
    """Milliseconds of ``repeats`` timed calls: median (the number quoted), min and max (the spread)."""

    median: float
    min: float
    max: float
    repeats: int

    @property
    def spread(self) -> float:
        """max / min: 1.0 when every call took the same time."""
        return self.max / self.min if self.min > 0 else math.inf


def _current_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.memory_allocated(device)
    return current_rss_bytes()


def current_rss_bytes() -> int:
    """Resident set size of this process in bytes (Linux: /proc/self/statm, so a machine without psutil, such as a
    GPU box, needs nothing more; elsewhere psutil)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


def time_call(fn: Callable[[], Any], device: str, repeats: int, warmup: bool = True, rep_ms: float | None = None
              ) -> Timing:
    """Milliseconds of ``fn()``: CUDA through ``triton.testing.do_bench`` (its own warm-up, then all of its timed
    runs over about ``rep_ms`` ms, default max(100, 20 x repeats)), the CPU as ``repeats`` perf_counter calls after
    one warm-up call (``warmup=False`` when the caller has just made one)."""
    if device.startswith("cuda"):
        import triton.testing

        rep = rep_ms if rep_ms is not None else max(100, 20 * repeats)
        times = [float(t) for t in triton.testing.do_bench(fn, warmup=min(25, rep), rep=rep, return_mode="all")]
    else:
        if warmup:
            fn()
        times = []
        for _ in range(max(1, repeats)):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append((time.perf_counter() - start) * 1e3)
    return Timing(statistics.median(times), min(times), max(times), len(times))


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
    import torch

    return torch.linspace(0, seq_len - 1, min(count, seq_len), device=device).round().long().unique()


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in fp64."""
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _random(inputs: dict | None, kind: str, shape: tuple[int, ...], dtype: Any, device: str) -> torch.Tensor:
    """A random tensor (``rand`` in [0, 1) or ``randn``) made on ``device``; with an ``inputs`` dict the same
    (kind, shape, dtype, device) gives the same tensor, so rows that share a shape share their inputs."""
    import torch

    key = (kind, tuple(shape), str(dtype), str(device))
    if inputs is not None and key in inputs:
        return inputs[key]
    make = torch.rand if kind.startswith("rand:") else torch.randn
    tensor = make(shape, device=device, dtype=dtype)
    if inputs is not None:
        inputs[key] = tensor
    return tensor


def measure_attention(spec: str, seq_len: int, mode: str, *, batch: int = 1, num_heads: int = 8, head_dim: int = 64,
                      causal: bool = False, dtype: Any = "float32", device: str = "cpu", repeats: int = 5,
                      level: str = "op", max_check_rows: int = 16, seed: int = 0,
                      inputs: dict | None = None, rep_ms: float | None = None,
                      tolerance: float | None = None) -> dict[str, Any]:
    """Check, then time one attention at one L in one mode. Returns metrics (ms, bytes) and provenance.

    Modes: ``fwd`` (a forward without gradients: inference), ``fwdbwd`` (forward and backward), ``decode`` (one
    step after a prefill of L tokens). The call is made once before the peak-memory window and the timing (a
    first call compiles, autotunes and fills caches), so neither counts that one-time work.

    Keys: ``fwd_ms`` | ``fwdbwd_ms`` | ``decode_ms_per_token`` (the median; + ``prefill_ms``, ``state_bytes``),
    ``time_min_ms``, ``time_max_ms`` and ``repeats`` (the spread of the timed calls), ``peak_mem_bytes`` (peak
    above the memory in use before the call), ``check_error`` (relative RMSE of the timed path against the
    reference on this shape), ``check_rows``, ``backend_used``, ``level``. Tokens per second for the timed mode
    come as ``tokens_per_s``. With ``tolerance``, a check error above it (or not finite) stops there: the result
    has the check and no time (a fast wrong path never produces a timing). ``inputs``: a dict kept by the caller
    across calls, so that calls of the same shape reuse their random inputs instead of making new ones (the seed
    then applies to the first).
    """
    import torch

    from suite.attention import build_attention

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; valid: {', '.join(LEVELS)}")
    if mode == "decode" and not causal:
        raise ValueError("mode 'decode' needs causal=True")
    dtype = torch_dtype(dtype)
    device = str(device)
    torch.manual_seed(seed)
    dim = num_heads * head_dim
    module = build_attention(spec, dim, num_heads, causal=causal).to(device=device, dtype=dtype)
    if level == "op" and mode != "decode" and not hasattr(module, "attend"):
        raise ValueError(f"attention {spec!r} has no op-level form (attend(q, k, v)); use level 'module'")
    rows = check_rows(seq_len, max_check_rows, device)
    x = _random(inputs, "randn:x", (batch, seq_len, dim), dtype, device)
    result: dict[str, Any] = {"level": "module" if mode == "decode" else level, "check_rows": int(rows.numel())}

    with torch.no_grad():
        if mode == "decode":
            x_t = _random(inputs, "randn:x_t", (batch, dim), dtype, device)
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
            if not _checked(result, tolerance):
                return result
            step = lambda: module.step(x_t, state)  # noqa: E731  (the state is not advanced: same L each call)
            result["peak_mem_bytes"] = peak_call_bytes(step, device)
            result.update(_timing_metrics(mode, time_call(step, device, repeats, warmup=False, rep_ms=rep_ms)))
            result["tokens_per_s"] = batch * 1e3 / result["decode_ms_per_token"]
            return result
        y = module(x)
        result["backend_used"] = module.backend_used
        ref = module.reference_forward(x, rows=rows)
        result["check_error"] = relative_error(y[:, rows], ref)
        del y, ref
    if not _checked(result, tolerance):
        return result

    if level == "op":
        # q, k ~ U(0, 1): positive, so attentions whose attend() takes feature-mapped q, k stay well defined
        shape = (batch, seq_len, num_heads, head_dim)
        q, k = (_random(inputs, f"rand:{name}", shape, dtype, device) for name in "qk")
        v = _random(inputs, "randn:v", shape, dtype, device)

        def attend(*qkv):
            out = module.attend(*qkv)
            return out[0] if isinstance(out, tuple) else out  # some attend() also return a state

        if mode == "fwd":
            def call():
                with torch.no_grad():
                    return attend(q, k, v)
        else:
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            grad = _random(inputs, "randn:grad", shape, dtype, device)

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
            xg = x.detach().requires_grad_()
            grad = _random(inputs, "randn:grad", tuple(x.shape), dtype, device)

            def call():
                module.zero_grad(set_to_none=True)
                xg.grad = None
                module(xg).backward(grad)

    call()  # warm-up: compiles, autotunes, fills caches, outside the peak-memory window and the timing
    result["peak_mem_bytes"] = peak_call_bytes(call, device)
    result.update(_timing_metrics(mode, time_call(call, device, repeats, warmup=False, rep_ms=rep_ms)))
    result["tokens_per_s"] = batch * seq_len * 1e3 / result[TIME_KEYS[mode]]
    return result


def _checked(result: dict[str, Any], tolerance: float | None) -> bool:
    """Whether the check allows timing: always without a tolerance, else when the error is at most it."""
    return tolerance is None or result.get("check_error", math.nan) <= tolerance


#: a measured point's status: timed, refused by its check, out of memory, or failed
POINT_STATUSES = ("ok", "wrong", "oom", "error")


@dataclass
class Point:
    """One attention at one L in one mode, checked and (when the check holds) timed: what ``bench``, the kernels
    family and gpu-check each make of ``measure_attention`` (one timing loop, one rule for a failed check)."""

    status: str  # POINT_STATUSES
    result: dict[str, Any]  # measure_attention's keys (no timing keys unless ok)
    error: str | None = None

    @property
    def ms(self) -> float | None:
        """The median time of the point's mode (None when it was not timed)."""
        return next((self.result[k] for k in TIME_KEYS.values() if k in self.result), None)


def measure_point(spec: str, seq_len: int, mode: str, *, tolerance: float, catch: bool = True,
                  **kwargs: Any) -> Point:
    """``measure_attention`` under the rule every front-end shares: timed only when its check on the shape is within
    ``tolerance`` (else ``wrong``, with the error); with ``catch`` an out-of-memory is ``oom`` and any other failure
    ``error`` (one line), without it they propagate (a job records them itself). A ValueError (bad arguments)
    always propagates."""
    try:
        result = measure_attention(spec, seq_len, mode, tolerance=tolerance, **kwargs)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001  (a crash in one point must not lose the others)
        if not catch:
            raise
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return Point("oom", {}, "out of memory")
        return Point("error", {}, f"{type(err).__name__}: {' '.join(str(err).split())}"[:300])
    if not _checked(result, tolerance):
        error = result.get("check_error", math.nan)
        return Point("wrong", result, f"check error {error:.2e} > {tolerance:g}; not timed")
    return Point("ok", result)


def _timing_metrics(mode: str, timing: Timing) -> dict[str, float]:
    return {TIME_KEYS[mode]: timing.median, "time_min_ms": timing.min, "time_max_ms": timing.max,
            "repeats": timing.repeats}
