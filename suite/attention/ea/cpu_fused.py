"""The fused CPU path of the torch backend: §2's forward and backward as one C kernel per call (its source:
cpu_fused.c and cpu_fused_body.inc beside this file, compiled with -D macros, never patched as text).

The op-by-op path (torch_op.py) makes about a hundred memory-bound passes over [B, L, H, D] per call, each a
small parallel op whose threads wait for each other. Here each (batch, chunk of up to 64 channels) is one work
item that walks its rows once per pass and keeps the 2(t+1) sums per channel in cache, exactly the recurrent
form of DESIGN.md §2:

- forward, causal: per row, add φ_n(k) v and φ_n(k) to the running A_n, B_n (unless the key is masked), then
  read out o = N/Z by Horner's rule in q; non-causal: sum A_n, B_n over all rows, then read out every row.
- backward: the same forward sweep recomputes A_n, B_n (nothing of size [t+1, L, H, D] is ever stored) and
  gives dq; g/Z and g·o/Z go into the dk, dv buffers; a reverse sweep (causal) or a total (non-causal) of
  a_n(q) g/Z and a_n(q) g·o/Z gives G_n, H_n and with them dk, dv.

Work items are handed out dynamically to torch.get_num_threads() threads in one parallel region per call, so a
core that the machine gives to someone else slows only the items it holds. The region is OpenMP, which on Linux
shares torch's own libgomp (same soname): the threads that torch's ops just used take the items, instead of
spinning beside new ones; a compiler without OpenMP gets plain pthreads. Within an item, groups of 8 channels
live in vector registers (GCC/Clang vector extensions, AVX2 with -march=native) across the loop over n.

fp32 inputs (and bf16/fp16, converted) run in fp32, fp64 inputs in fp64. The kernel is C99 compiled once per
machine with the system C compiler (``$CC``, else cc/gcc/clang) into ``$EA_SUITE_CACHE/cpu-kernels`` (default
``~/.cache/ea-suite/cpu-kernels``), keyed by the source, the flags, the compiler and the CPU; later processes
load the cached library. Without a compiler (or with ``EA_SUITE_CPU_FUSED=0``) the torch backend runs the
op-by-op path, and ``backend_used`` says so: ``FUSED`` ("cpu-fused") for this kernel, ``UNFUSED``
("torch-unfused") for the op-by-op path; ``unavailable_reason()`` says why.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from suite import settings
from suite.attention.base import compute_dtype

#: backend_used of the fused CPU kernel (the torch backend's normal path on a CPU). Records written before this name
#: (before 2026-12-07) say "torch" for it on a CPU; "torch" in a newer record is never this kernel.
FUSED = "cpu-fused"
UNFUSED = "torch-unfused"  # backend_used of the op-by-op PyTorch path (no compiler, disabled, or not a CPU tensor)
ENV_SWITCH = settings.CPU_FUSED_ENV

# -- the C source ----------------------------------------------------------------------------------------

#: the C source (shipped as package data): the common part and the two instantiations of the per-type body
SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("cpu_fused.c", "cpu_fused_body.inc")
_WIDTH = 64  # channels per work item at most: the C source's WMAX, given to it as -DEA_WMAX
FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-pthread", "-std=gnu99", "-fno-math-errno", "-fno-trapping-math",
         f"-DEA_WMAX={_WIDTH}"]


def source_text() -> str:
    """The kernel's source files, concatenated (what the cache key covers)."""
    return "".join((SOURCE_DIR / name).read_text() for name in SOURCES)


class _Args(ctypes.Structure):
    _fields_ = ([(name, ctypes.c_void_p) for name in ("q", "k", "v", "g", "keep", "state_in", "state_out",
                                                       "o", "dq", "dk", "dv")]
                + [(name, ctypes.c_int64) for name in ("B", "L", "H", "D", "q_sb", "q_sl", "k_sb", "k_sl", "v_sb",
                                                       "v_sl", "g_sb", "g_sl", "order", "causal", "nthreads",
                                                       "width")])


# -- building and loading ----------------------------------------------------------------------------------

_lock = threading.Lock()
_lib: Any = None
_reason: str | None = None     # why the kernel is unavailable (None: not tried yet, or available)
_tried = False
_enabled = True
BUILD_INFO: dict[str, Any] = {}  # compiler, path, whether this process compiled it, seconds to build or load


def cache_dir() -> Path:
    """Where compiled kernels live: ``$EA_SUITE_CACHE/cpu-kernels`` (default ``~/.cache/ea-suite/cpu-kernels``)."""
    return settings.cache_dir() / "cpu-kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name.split()[0]):
            return name
    return None


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() + platform.machine()


def _target(cc: str, flags: list[str], version: str) -> Path:
    key = hashlib.sha256("\0".join([source_text(), " ".join(flags), cc, version,
                                    _cpu_signature()]).encode()).hexdigest()
    return cache_dir() / f"ea_cpu_{key[:20]}.so"


def _compile(cc: str, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / "ea_cpu.so"
        res = subprocess.run([*cc.split(), *flags, f"-I{SOURCE_DIR}", "-o", str(out), str(SOURCE_DIR / SOURCES[0]),
                              "-lm"], capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {' '.join((res.stderr or res.stdout).split())[:300]}")
        os.replace(out, target)  # atomic: a process that races us loads one complete library or the other


# tried in this order: OpenMP (torch's runtime), plain pthreads, and without -march=native for a compiler that
# does not know it
_VARIANTS = (("openmp", FLAGS + ["-fopenmp"]), ("pthreads", FLAGS),
             ("pthreads-generic", [f for f in FLAGS if f != "-march=native"]))


def _build(cc: str) -> Path:
    """The cached library (the first variant already on disk), else the first variant that compiles."""
    version = subprocess.run([*cc.split(), "--version"], capture_output=True, text=True, timeout=60).stdout
    targets = [(name, flags, _target(cc, flags, version)) for name, flags in _VARIANTS]
    for name, _, target in targets:
        if target.exists():
            BUILD_INFO.update(compiled=False, threads=name)
            return target
    errors = []
    for name, flags, target in targets:
        try:
            _compile(cc, flags, target)
        except RuntimeError as err:
            errors.append(str(err))
            continue
        BUILD_INFO.update(compiled=True, threads=name)
        return target
    raise RuntimeError(errors[-1])


def _load() -> Any:
    """The compiled library, building it on first use; None (and ``_reason`` set) when it cannot be had."""
    global _lib, _reason, _tried
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        start = time.perf_counter()
        if settings.cpu_fused_disabled():
            _reason = settings.cpu_fused_disabled()
        elif (cc := _compiler()) is None:
            _reason = "no C compiler found ($CC, cc, gcc or clang) to build the fused CPU kernel"
        else:
            try:
                path = _build(cc)
                lib = ctypes.CDLL(str(path))
                for name in ("ea_forward_f32", "ea_backward_f32", "ea_forward_f64", "ea_backward_f64"):
                    fn = getattr(lib, name)
                    fn.argtypes = [ctypes.POINTER(_Args)]
                    fn.restype = ctypes.c_int
                _lib = lib
                BUILD_INFO.update(compiler=cc, path=str(path), seconds=time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001 - any failure means: run the op-by-op path, and say why
                _reason = f"building the fused CPU kernel failed ({type(err).__name__}: {err})"
        if _reason is not None and not _reason.startswith("disabled"):
            warnings.warn(f"ea: {_reason}; the torch backend runs the op-by-op path (backend_used={UNFUSED!r})",
                          RuntimeWarning, stacklevel=3)
        _tried = True
        return _lib


def unavailable_reason() -> str | None:
    """Why the fused CPU kernel cannot run (None when it can); builds it on first call."""
    if not _enabled:
        return "disabled by suite.attention.ea.cpu_fused.disabled()"
    _load()
    return _reason


def build_report() -> str | None:
    """One line on this process's fused CPU kernel for a benchmark's notes (None when no EA ran on a CPU here):
    built or loaded from the cache, in how long (paid once per process, never inside a timed call), or why
    the op-by-op path ran instead."""
    if not _tried:
        return None
    if _lib is None:
        return f"EA's fused CPU kernel did not run: {_reason} (backend_used={UNFUSED!r})"
    how = "compiled" if BUILD_INFO.get("compiled") else "loaded from its cache"
    return (f"EA's fused CPU kernel ({BUILD_INFO.get('threads')}): {how} in {BUILD_INFO.get('seconds', 0.0):.3g} s "
            "by this process before the first call, outside every timing")


def usable(x: torch.Tensor | torch.device | str) -> bool:
    """Whether the torch backend runs the fused kernel for tensors like ``x`` (or on device ``x``): on a CPU, when
    the kernel is available."""
    device = x.device if isinstance(x, torch.Tensor) else torch.device(x)
    return device.type == "cpu" and _enabled and _load() is not None


def path_name(x: torch.Tensor | torch.device | str) -> str:
    """``backend_used`` of the torch backend for tensors like ``x`` (or on device ``x``): FUSED or UNFUSED."""
    return FUSED if usable(x) else UNFUSED


@contextmanager
def disabled() -> Iterator[None]:
    """Run the op-by-op path inside the block (tests, comparisons)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


# -- the op ------------------------------------------------------------------------------------------------

def _new_output(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An output buffer the kernel fills completely (tests poison it with NaN to prove that)."""
    return torch.empty(shape, dtype=dtype)


def _rows(t: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """t in dtype dt with each row of H*D values contiguous (batch and row strides are free)."""
    t = t.to(dt)
    if t.stride(3) != 1 or t.stride(2) != t.shape[3]:
        t = t.contiguous()
    return t


def _args(q, k, v, g, keep, order, causal, **out) -> _Args:
    B, L, H, D = q.shape
    a = _Args(B=B, L=L, H=H, D=D, order=order, causal=int(causal), nthreads=max(1, torch.get_num_threads()))
    a.width = _WIDTH
    while a.width > 8 and B * -(-(H * D) // a.width) < 4 * a.nthreads:
        a.width //= 2  # more, narrower items when there are few: every thread gets work, and a busy core less
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g)):
        if t is not None:
            setattr(a, name, t.data_ptr())
            setattr(a, f"{name}_sb", t.stride(0))
            setattr(a, f"{name}_sl", t.stride(1))
    if keep is not None:
        a.keep = keep.data_ptr()
    for name, t in out.items():
        if t is not None:
            setattr(a, name, t.data_ptr())
    return a


def _call(name: str, dt: torch.dtype, args: _Args) -> None:
    lib = _load()
    if lib is None:
        raise RuntimeError(f"ea fused CPU kernel unavailable: {_reason}")
    fn = getattr(lib, f"{name}_{'f64' if dt == torch.float64 else 'f32'}")
    if fn(ctypes.byref(args)) != 0:
        raise MemoryError("ea fused CPU kernel: out of memory for its per-thread sums")


class EAFusedFunction(torch.autograd.Function):
    """§2's forward and analytic backward as one C kernel each; saves only q, k, v (O(LHD)) for the backward."""

    @staticmethod
    def forward(ctx, q, k, v, order: int, causal: bool, keep, initial_state):
        dt = compute_dtype(q)
        qf, kf, vf = (_rows(t, dt) for t in (q, k, v))
        keep8 = keep.contiguous() if keep is not None else None
        init = initial_state.to(dt).contiguous() if initial_state is not None else None
        B, L, H, D = q.shape
        o = _new_output((B, L, H, D), dt)
        state = _new_output((B, H, 2, order + 1, D), dt)
        args = _args(qf, kf, vf, None, keep8, order, causal, o=o, state_out=state)
        args.state_in = init.data_ptr() if init is not None else None
        _call("ea_forward", dt, args)
        ctx.save_for_backward(q, k, v, keep, initial_state)
        ctx.order, ctx.causal = order, causal
        ctx.set_materialize_grads(False)  # no zero-filled gradient for an unused state (nor for o)
        return o.to(v.dtype), state.float()

    @staticmethod
    @once_differentiable  # the kernel's gradients carry no graph: a double backward raises instead of going quiet
    def backward(ctx, grad_o, grad_state):
        q, k, v, keep, initial_state = ctx.saved_tensors
        if grad_state is not None and bool(grad_state.ne(0).any()):
            raise RuntimeError("ea_attention: gradients through output_final_state are not supported")
        if grad_o is None:
            return None, None, None, None, None, None, None
        dt = compute_dtype(q)
        qf, kf, vf, g = (_rows(t, dt) for t in (q, k, v, grad_o))
        keep8 = keep.contiguous() if keep is not None else None
        init = initial_state.to(dt).contiguous() if initial_state is not None else None
        dq, dk, dv = (_new_output(tuple(q.shape), dt) for _ in range(3))
        args = _args(qf, kf, vf, g, keep8, ctx.order, ctx.causal, dq=dq, dk=dk, dv=dv)
        args.state_in = init.data_ptr() if init is not None else None
        _call("ea_backward", dt, args)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def ea_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: int, causal: bool,
             key_padding_mask: torch.Tensor | None = None,
             initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused CPU path (call only when ``usable(q)``): (o [B, L, H, D] in v's dtype, final state fp32)."""
    return EAFusedFunction.apply(q, k, v, order, causal, key_padding_mask, initial_state)
