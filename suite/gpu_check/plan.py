"""What gpu-check runs, in which order, and how long it should take (its cost model).

The plan is a list of ``RowSpec``: one row of the report each, run in this order so that a window cut short
still holds the rows that matter most:

1. ``environment``: the card, the versions, which baselines import.
2. ``screen``: EA's Triton op against the fp64 reference (forward and the three gradients) on exactly the
   shapes the headline timings use.
3. ``headline``: EA against SDPA (flash and cuDNN backends), causal fwd+bwd at L = 16k and 4k; EA fwd+bwd at
   the longest L with its peak memory; decoding at the longest context, EA's state against softmax's KV cache.
4. ``checks``: the other shapes, cases (masks, state, non-causal, inference), head dims and dtypes.
5. ``baseline_checks``, ``bandwidth`` (device-to-device copy), ``launch_sweep`` (EA's split and block settings).
6. ``timings``: every attention at every L, fwd (inference) and fwd+bwd, and decoding at the shortest context.

Each row carries an estimate from the cost model below; gpu-check prints the sum before it starts and refuses a
plan over its budget. The model, per card (``Card``): a worker process costs ``worker_start_s`` (spawn, import
torch, CUDA context); a kernel family's first use costs ``compile_s`` per Triton binary (EA: 2 to 4 binaries
per distinct set of launch constants; fla: an autotuning pass per op); a check costs a fixed ``row_s`` plus the
fp64 reference's traffic (about 2 kB per element of [B, L, H, D], forward and backward) at the card's memory
bandwidth; a timing costs ``row_s`` (module, fp64 check on 16 rows) plus about ten calls (a warm-up, the peak-
memory call, do_bench's estimate and its 100 ms of timed calls), each call at the roofline of what it must move
(bytes at the memory bandwidth) or compute (flops at half the dense bf16 rate), whichever is longer.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: the report's sections, in run order
STEPS = ("environment", "screen", "headline", "checks", "baseline_checks", "bandwidth", "launch_sweep", "timings")


@dataclass(frozen=True)
class Shapes:
    """What gpu-check runs: the GPU set, or the tiny set the tests run on a CPU."""

    batch: int = 4
    heads: int = 16
    order: int = 6
    time_dim: int = 64
    time_dtype: str = "bfloat16"
    time_lengths: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
    #: the headline fwd+bwd lengths (EA against SDPA), in the order they run
    headline_lengths: tuple[int, ...] = (16384, 4096)
    #: the full matrix of EA checks: every case and dtype at each (L, D) here (the kernels see channels, not
    #: heads, so every D launches the same binaries; D = 128 still checks the state layout and two channel blocks)
    check_shapes: tuple[tuple[int, int], ...] = ((1024, 64), (16384, 128))
    dtypes: tuple[str, ...] = ("bfloat16", "float32")
    baseline_length: int = 1024
    copy_mib: int = 1024
    sweep_length: int = 16384
    sweep_max_s: float = 30.0
    timing_rep_ms: float = 100.0

    @property
    def longest(self) -> int:
        return max(self.time_lengths)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shapes:
        def tupled(v: Any) -> Any:
            return tuple(tupled(x) for x in v) if isinstance(v, (list, tuple)) else v

        return cls(**{k: tupled(v) for k, v in data.items()})


TINY = Shapes(batch=1, heads=2, time_dim=16, time_dtype="float32", time_lengths=(32, 64), headline_lengths=(64, 32),
              check_shapes=((24, 16),), dtypes=("float32",), baseline_length=16, copy_mib=4,
              sweep_length=64, sweep_max_s=10.0, timing_rep_ms=20.0)

#: relative-error tolerance of a check, by the dtype under test
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}
#: the EA check cases: (what the op is asked for) -> causal
EA_CASES = ("causal", "causal mask", "causal state", "causal inference", "non-causal", "non-causal mask")


@dataclass(frozen=True)
class Card:
    """What the cost model knows of a card: memory bandwidth (GB/s), dense bf16 rate (TFLOP/s), fixed costs (s)."""

    name: str
    mem_gb_s: float
    bf16_tflops: float
    worker_start_s: float = 20.0
    compile_s: float = 2.0
    autotune_s: float = 12.0
    row_s: float = 0.5


#: by a word of the card's name (the first that matches, in this order); data-sheet figures
CARDS = {
    "h100 pcie": Card("NVIDIA H100 PCIe", 2000, 756),
    "h100": Card("NVIDIA H100 SXM", 3350, 989),
    "h200": Card("NVIDIA H200", 4800, 989),
    "gh200": Card("NVIDIA GH200", 4000, 989),
    "a100": Card("NVIDIA A100", 1555, 312),
    "l40s": Card("NVIDIA L40S", 864, 362),
    "cpu": Card("CPU (tiny shapes)", 10, 0.2, worker_start_s=4.0, compile_s=0.0, autotune_s=0.0, row_s=0.1),
}
#: a CUDA card the table does not know: slow figures, so the estimate errs long
UNKNOWN_CARD = Card("unknown CUDA card", 1000, 150)


def card_for(name: str) -> Card:
    """The cost model's card for a device name ('NVIDIA H100 80GB HBM3', 'cpu', ...)."""
    low = name.lower()
    if low.startswith("cpu"):
        return CARDS["cpu"]
    for word, card in CARDS.items():
        if word != "cpu" and all(part in low for part in word.split()):
            return card
    return UNKNOWN_CARD


@dataclass(frozen=True)
class RowSpec:
    """One row of the plan: ``call`` names the worker function (``rows.CALLS`` or ``module:function``) and
    ``kwargs`` its arguments; ``requires`` the ids of check rows a timing's validity rests on."""

    id: str
    step: str
    label: dict[str, Any]
    call: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    estimate_s: float = 1.0
    requires: tuple[str, ...] = ()
    timeout_s: float | None = None
    #: why this row cannot run here (recorded as "skipped: <why>" without starting it)
    skip: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowSpec:
        return cls(**{**data, "requires": tuple(data.get("requires", ()))})


#: the timed attentions: key -> (label in the report, spec or special call, level, needs)
TIMED = {
    "ea": ("EA", "ea", "op", None),
    "sdpa-flash": ("softmax: SDPA flash backend (FlashAttention-2)", "softmax:backend=flash", "op", "cuda"),
    "sdpa-cudnn": ("softmax: SDPA cuDNN backend", "softmax:backend=cudnn", "op", "cuda"),
    "sdpa": ("softmax: SDPA (CPU kernel)", "softmax", "op", "cpu"),
    "fla-retention": ("fla chunk_retention", "retention:backend=fla", "op", "fla"),
    "fla-linear": ("fla chunk_linear_attn + the suite's normaliser", "linear:backend=fla", "op", "fla"),
    "mamba-scan": ("mamba-ssm selective_scan_fn (op)", "selective_scan", "op", "mamba_ssm"),
    "mamba-block": ("mamba-ssm Mamba block (module: projections, conv, scan)", "mamba:backend=mamba_ssm", "module",
                    "mamba_ssm"),
}
#: the SDPA backends EA is compared with, by device
SDPA_KEYS = {"cuda": ("sdpa-flash", "sdpa-cudnn"), "cpu": ("sdpa",)}
#: the baselines checked against their own references, and the module each needs
BASELINES = {"fla-retention": "fla", "fla-linear": "fla", "mamba-scan": "mamba_ssm"}


def ea_check_id(case: str, L: int, D: int, dtype: str) -> str:
    return f"check/ea {case}/L{L}/D{D}/{dtype}"


def timing_id(key: str, mode: str, L: int, dtype: str) -> str:
    return f"time/{key}/{mode}/L{L}/{dtype}"


# -- the cost model ----------------------------------------------------------------------------------------

def _elements(shapes: Shapes, L: int, D: int | None = None) -> int:
    return shapes.batch * L * shapes.heads * (D or shapes.time_dim)


def _itemsize(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def _call_s(card: Card, key: str, mode: str, L: int, shapes: Shapes) -> float:
    """Roofline seconds of one call (the longer of its bytes at the bandwidth and its flops at half the bf16 rate)."""
    n = _elements(shapes, L)
    s = _itemsize(shapes.time_dtype)
    bw = card.mem_gb_s * 1e9
    flops_rate = card.bf16_tflops * 1e12 / 2
    if mode == "decode":
        if key == "ea":
            return 50e-6  # about 20 small launches per step, whatever L
        return 2 * n * s / bw + 20e-6  # the KV cache read once
    passes = 1 if mode == "fwd" else 3.5
    if key.startswith("sdpa"):
        flops = 2 * 2 * shapes.batch * shapes.heads * L * L * shapes.time_dim / 2  # QK^T and PV, causal half
        return flops * passes / flops_rate + 8 * n * s / bw
    if key == "ea":
        per_elt = 8 * s if mode == "fwd" else 30 * s + 16
        return per_elt * n / bw * 2  # at half the copy bandwidth
    if key.startswith("fla"):
        flops = 4 * n * 64 * passes  # chunk size 64: quadratic inside a chunk
        return max(flops / flops_rate, 6 * n * s * passes / bw)
    return 40 * n * s * passes / bw  # the Mamba scan: d_inner = 2 dim, state 16, reads and writes several times


def _timing_s(card: Card, key: str, mode: str, L: int, shapes: Shapes) -> float:
    call = _call_s(card, key, mode, L, shapes)
    timed = max(shapes.timing_rep_ms / 1e3, 3 * call)  # do_bench runs at least its rep window, and a call
    return card.row_s + 7 * call + timed


def _check_s(card: Card, L: int, D: int, shapes: Shapes) -> float:
    return card.row_s + 2e3 * _elements(shapes, L, D) / (card.mem_gb_s * 1e9)


# -- the plan -----------------------------------------------------------------------------------------------

def plan_rows(shapes: Shapes, device_kind: str, card: Card, importable: dict[str, bool],
              ea_backend: str = "triton") -> list[RowSpec]:
    """Every row, in run order, with its estimate (module docstring). ``device_kind``: "cuda" or "cpu";
    ``importable``: which optional modules (fla, mamba_ssm) the box has; ``ea_backend``: triton, or torch on a
    CPU without the interpreter."""
    rows: list[RowSpec] = []
    compiled: set[tuple] = set()
    D0, dt0, longest = shapes.time_dim, shapes.time_dtype, shapes.longest

    def compile_cost(key: tuple, binaries: int) -> float:
        if ea_backend != "triton" or key in compiled:
            return 0.0
        compiled.add(key)
        return binaries * card.compile_s

    def tune_cost(key: str, dtype: str, mode: str) -> float:
        """fla autotunes each kernel on its first call per dtype: the forward's, then the backward's."""
        cost = 0.0
        for part in ("fwd", "bwd") if mode == "fwdbwd" else ("fwd",):
            if (key, dtype, part) not in compiled:
                compiled.add((key, dtype, part))
                cost += card.autotune_s
        return cost

    def ea_check(step: str, case: str, L: int, D: int, dtype: str) -> None:
        binaries = 1 if case == "causal inference" else 4
        est = _check_s(card, L, D, shapes) + compile_cost((case, dtype), binaries)
        rows.append(RowSpec(ea_check_id(case, L, D, dtype), step, {"what": f"ea {case}", "L": L, "D": D,
                                                                   "dtype": dtype},
                            "ea_check", {"case": case, "L": L, "D": D, "dtype": dtype}, round(est, 2)))

    sdpa_keys = SDPA_KEYS["cuda" if device_kind == "cuda" else "cpu"]

    def timing(step: str, key: str, mode: str, L: int) -> None:
        label, spec, level, _ = TIMED[key]
        if key == "ea":
            label = f"EA ({ea_backend})"
        requires: tuple[str, ...] = ()
        est = _timing_s(card, key, mode, L, shapes)
        if key == "ea" and mode != "decode":
            requires = (ea_check_id("causal" if mode == "fwdbwd" else "causal inference", L, D0, dt0),)
            est += compile_cost(("timing", mode, dt0), 1 if mode == "fwd" else 4)
        elif key.startswith("fla"):
            est += tune_cost(key, dt0, mode)
        rows.append(RowSpec(timing_id(key, mode, L, dt0), step, {"attention": label, "mode": mode, "L": L,
                                                                 "dtype": dt0},
                            "timing", {"key": key, "mode": mode, "L": L}, round(est, 2), requires))

    rows.append(RowSpec("environment", "environment", {"what": "environment"}, "environment", {},
                        card.worker_start_s + 2))
    # the screen: the headline shapes, forward and gradients
    screen = [(L, "causal") for L in shapes.headline_lengths] + [(longest, "causal")]
    for L, case in dict.fromkeys(screen):
        ea_check("screen", case, L, D0, dt0)
    # the headline
    for L in shapes.headline_lengths:
        for key in ("ea",) + sdpa_keys:
            timing("headline", key, "fwdbwd", L)
    if longest not in shapes.headline_lengths:
        timing("headline", "ea", "fwdbwd", longest)
    for key in ("ea", "softmax"):
        decode_label = "EA (recurrent state)" if key == "ea" else "softmax: SDPA over a KV cache"
        rows.append(RowSpec(timing_id(key, "decode", longest, dt0), "headline",
                            {"attention": decode_label, "mode": "decode", "L": longest, "dtype": dt0},
                            "timing", {"key": key, "mode": "decode", "L": longest},
                            round(_timing_s(card, key, "decode", longest, shapes) + card.row_s, 2)))
    # the other checks: the timed lengths, the inference forward, then the full matrix
    done = {r.id for r in rows}
    for L in shapes.time_lengths:
        for case in ("causal", "causal inference"):
            if ea_check_id(case, L, D0, dt0) not in done:
                ea_check("checks", case, L, D0, dt0)
    done = {r.id for r in rows}
    for L, D in shapes.check_shapes:
        for dtype in shapes.dtypes:
            for case in EA_CASES:
                if ea_check_id(case, L, D, dtype) not in done:
                    ea_check("checks", case, L, D, dtype)
    for key in BASELINES:
        label = TIMED[key][0]
        base = {"what": label, "L": shapes.baseline_length, "D": D0, "dtype": "float32"}
        reason = unavailable_reason(key, device_kind, importable)
        est = card.row_s + (tune_cost(key, "float32", "fwd") if key.startswith("fla") else 1.0)
        rows.append(RowSpec(f"baseline/{key}", "baseline_checks", base, "baseline_check", {"key": key},
                            0.0 if reason else round(est, 2), skip=reason))
    rows.append(RowSpec("bandwidth/copy", "bandwidth", {"what": "device-to-device copy", "MiB": shapes.copy_mib},
                        "copy_bandwidth", {"mib": shapes.copy_mib}, card.row_s + 0.5))
    rows.append(RowSpec("launch_sweep", "launch_sweep", {"what": "EA causal fwd+bwd launch settings",
                                                         "L": shapes.sweep_length, "dtype": dt0},
                        "launch_sweep", {"L": shapes.sweep_length, "max_s": shapes.sweep_max_s},
                        shapes.sweep_max_s + card.row_s if ea_backend == "triton" else 0.0,
                        timeout_s=shapes.sweep_max_s * 3 + 60,
                        skip=None if ea_backend == "triton" else "EA's launch settings are the Triton launcher's, "
                                                                 "which runs on CUDA or under TRITON_INTERPRET=1"))
    done = {r.id for r in rows}
    for L in shapes.time_lengths:
        for key in ("ea",) + sdpa_keys + ("fla-retention", "fla-linear", "mamba-scan", "mamba-block"):
            for mode in ("fwd", "fwdbwd"):
                if timing_id(key, mode, L, dt0) in done:
                    continue
                reason = unavailable_reason(key, device_kind, importable)
                if reason is None:
                    timing("timings", key, mode, L)
                elif key not in SDPA_KEYS["cpu" if device_kind == "cuda" else "cuda"]:
                    rows.append(RowSpec(timing_id(key, mode, L, dt0), "timings",
                                        {"attention": TIMED[key][0], "mode": mode, "L": L, "dtype": dt0},
                                        "timing", {"key": key, "mode": mode, "L": L}, 0.0, skip=reason))
    for key in ("ea", "softmax"):
        L = min(shapes.time_lengths)
        if timing_id(key, "decode", L, dt0) not in done:
            label = "EA (recurrent state)" if key == "ea" else "softmax: SDPA over a KV cache"
            rows.append(RowSpec(timing_id(key, "decode", L, dt0), "timings",
                                {"attention": label, "mode": "decode", "L": L, "dtype": dt0}, "timing",
                                {"key": key, "mode": "decode", "L": L},
                                round(_timing_s(card, key, "decode", L, shapes), 2)))
    return rows


def unavailable_reason(key: str, device_kind: str, importable: dict[str, bool]) -> str | None:
    """Why a timed attention cannot run here (None when it can)."""
    need = TIMED[key][3] if key in TIMED else None
    if need == "cuda" and device_kind != "cuda":
        return "needs CUDA"
    if need == "cpu" and device_kind != "cpu":
        return "the CPU kernel (CUDA rows use flash and cuDNN)"
    if need in ("fla", "mamba_ssm"):
        if device_kind != "cuda":
            return "needs CUDA"
        if not importable.get(need, False):
            return f"{need} not importable"
    return None


def total_estimate(rows: list[RowSpec]) -> float:
    return float(sum(r.estimate_s for r in rows))


def estimate_by_step(rows: list[RowSpec]) -> dict[str, tuple[int, float]]:
    """step -> (rows, estimated seconds), in run order."""
    out: dict[str, tuple[int, float]] = {}
    for r in rows:
        n, s = out.get(r.step, (0, 0.0))
        out[r.step] = (n + 1, s + r.estimate_s)
    return out


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
