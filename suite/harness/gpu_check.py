"""``run_suite.py gpu-check``: everything a first GPU session needs, in one command (DESIGN.md §6).

Steps, in order, each a list of rows (dicts) with a ``status`` ("ok", "FAIL", "skipped: <why>" or
"error: <one line>"):

1. ``environment``: the card, torch / triton / CUDA versions, and which optional baselines import (fla, mamba-ssm).
2. ``ea_checks``: EA's Triton op against the fp64 reference (the torch backend in fp64, itself checked against
   the O(L²) formula in the tests): forward and the three gradients, causal and not, with and without a key
   padding mask, a causal call chained through its state (initial/final state), and one decode step of the
   module against its reference; at B=4, H=16, D in {64, 128}, L in {1024, 16384}, bf16 and fp32.
3. ``baseline_checks``: each installed GPU baseline (fla's ``chunk_retention`` and ``chunk_linear_attn``,
   mamba-ssm's ``selective_scan_fn``) once against its own reference (relative error, fp32, L=1024).
4. ``bandwidth``: the card's device-to-device copy bandwidth (GB/s), the floor for a memory-bound kernel.
5. ``timings``: causal fwd and fwd+bwd of EA against SDPA (flash), fla and mamba, L = 1k ... 64k, bf16, B=4,
   H=16, D=64, with the peak memory of the call; EA decode ms/token at 1k and 64k.
6. ``targets``: which of issue 14's GPU targets the timings meet (``TARGETS`` says each one exactly).

Everything is written to ``OUT/<card>/`` as ``gpu_check.json`` (all rows, the command, the environment),
``timings.csv``, ``checks.csv`` and ``README.md``. A step that runs past the time budget (``budget_s``) leaves
its remaining rows as "skipped: time budget", so a slow card still leaves a complete, labelled report.

``tiny=True`` runs the same steps on tiny shapes; on a CPU that is how the tests keep this script from rotting
(the Triton op then needs ``TRITON_INTERPRET=1``, else EA's torch backend stands in and the rows say so).
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

#: the targets, worded as they are checked (issue 14)
TARGETS = {
    "ea_beats_flash_from_2k": "EA causal fwd+bwd faster than SDPA-flash at every L >= 2048",
    "ea_8x_flash_at_16k": "EA causal fwd+bwd >= 8x faster than SDPA-flash at L = 16384",
    "ea_vs_chunk_retention": "EA causal fwd+bwd at least as fast as fla chunk_retention at every L >= 4096",
    "ea_fwd_bandwidth": "EA causal forward moves >= 50% of the copy bandwidth at every L >= 8192 "
                        "(bytes = q, k, v read + o written)",
    "ea_memory_64k": "EA fwd+bwd at the longest L: inputs (q, k, v, do) + peak during the call <= 1.5x "
                     "(q, k, v, do, o, dq, dk, dv)",
    "ea_decode_flat": "EA decode ms/token at the longest L / at the shortest <= 1.2",
}


@dataclass(frozen=True)
class Shapes:
    """What gpu-check runs: the full GPU set or the tiny test set."""

    batch: int = 4
    heads: int = 16
    check_dims: tuple[int, ...] = (64, 128)
    check_lengths: tuple[int, ...] = (1024, 16384)
    dtypes: tuple[str, ...] = ("bfloat16", "float32")
    time_dim: int = 64
    time_lengths: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
    time_dtype: str = "bfloat16"
    baseline_length: int = 1024
    copy_mib: int = 1024
    order: int = 6


TINY = Shapes(batch=1, heads=2, check_dims=(16,), check_lengths=(24,), dtypes=("float32",), time_dim=16,
              time_lengths=(32, 64), time_dtype="float32", baseline_length=16, copy_mib=4)

#: relative-error tolerance of a check, by the dtype under test
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}
#: the timed attentions: label -> (spec, level); mamba has no op-level form
TIMED = {
    "ea": ("ea", "op"),
    "softmax (SDPA flash)": ("softmax:backend=flash", "op"),
    "fla chunk_retention": ("retention:backend=fla", "op"),
    "fla chunk_linear_attn": ("linear:backend=fla", "op"),
    "mamba selective_scan": ("mamba:backend=mamba_ssm", "module"),
}
#: the baselines and the module each needs
BASELINES = {"fla chunk_retention": "fla", "fla chunk_linear_attn": "fla", "mamba selective_scan": "mamba_ssm"}


@dataclass
class Report:
    """All rows of one gpu-check run, by step, plus where they came from."""

    command: str
    environment: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, step: str, row: dict[str, Any]) -> None:
        self.steps.setdefault(step, []).append(row)


def card_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': the results folder of a card."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _importable(module: str) -> str:
    try:
        __import__(module)
        return "yes"
    except Exception as err:  # noqa: BLE001  (an optional package's import can fail in many ways)
        return f"no ({type(err).__name__}: {' '.join(str(err).split())[:120]})"


def environment(device: str) -> dict[str, Any]:
    """The card and the versions: what a reader needs to say where a number came from."""
    import torch
    import triton

    env: dict[str, Any] = {"device": device, "torch": torch.__version__, "triton": triton.__version__,
                           "python": platform.python_version(), "host_cpu": platform.processor() or platform.machine()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(card=props.name, capability=f"sm_{props.major}{props.minor}", sms=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        env.update(card="cpu", triton_interpreter=os.environ.get("TRITON_INTERPRET") == "1")
    env["fla"] = _importable("fla")
    env["mamba_ssm"] = _importable("mamba_ssm")
    return env


def ea_backend(device: str) -> str:
    """The EA backend under test: Triton on CUDA and under the interpreter, else the torch path (labelled)."""
    return "triton" if device.startswith("cuda") or os.environ.get("TRITON_INTERPRET") == "1" else "torch"


def _rel(out, ref) -> float:
    from suite.harness.measure import relative_error

    return relative_error(out, ref)


def check_ea_case(case: str, L: int, D: int, dtype: str, shapes: Shapes, device: str) -> dict[str, Any]:
    """One EA op case against the fp64 reference: max relative error over o, dq, dk, dv (and the state)."""
    import torch

    from suite.attention.ea import ea_attention
    from suite.harness.measure import torch_dtype

    gen = torch.Generator(device="cpu").manual_seed(L + D)
    B, H, t = shapes.batch, shapes.heads, shapes.order
    shape = (B, L, H, D)
    q, k, v, g = (torch.randn(shape, generator=gen, dtype=torch.float64).to(device) for _ in range(4))
    q, k = q * 0.5, k * 0.5
    causal = case.startswith("causal")
    mask = None
    if "mask" in case:
        mask = torch.rand(B, L, generator=gen) > 0.2
        mask[:, 0] = True
        mask = mask.to(device)
    backend = ea_backend(device)

    def run(tensors, backend_name):
        leaves = [x.detach().clone().requires_grad_() for x in tensors]
        if case == "causal state":  # two calls chained through the (detached) state, both sides alike
            half = L // 2
            o1, s1 = ea_attention(*(x[:, :half] for x in leaves), t, True, output_final_state=True,
                                  backend=backend_name)
            o2, s2 = ea_attention(*(x[:, half:] for x in leaves), t, True, initial_state=s1.detach(),
                                  output_final_state=True, backend=backend_name)
            o, extra = torch.cat([o1, o2], 1), s2
        else:
            o, extra = ea_attention(*leaves, t, causal, mask, backend=backend_name), None
        o.backward(g.to(o.dtype))
        return [o.detach()] + [x.grad for x in leaves] + ([extra.detach()] if extra is not None else [])

    ref = run((q, k, v), "torch")
    got = run([x.to(torch_dtype(dtype)) for x in (q, k, v)], backend)
    names = ["o", "dq", "dk", "dv", "state"]
    errors = {n: _rel(a, r) for n, a, r in zip(names, got, ref)}
    worst = max(errors.values())
    finite = all(bool(torch.isfinite(a).all()) for a in got)
    ok = finite and worst <= TOLERANCE[dtype]
    return {"what": f"ea {case}", "L": L, "D": D, "dtype": dtype, "backend": backend,
            "max_rel_error": worst, "tolerance": TOLERANCE[dtype],
            "errors": {n: float(f"{e:.3g}") for n, e in errors.items()}, "status": "ok" if ok else "FAIL"}


EA_CASES = ("non-causal", "non-causal mask", "causal", "causal mask", "causal state")


def _guarded(fn: Callable[[], dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    """Run one row; an exception becomes its status (one line), never the end of the check."""
    import torch

    try:
        return {**base, **fn()}
    except torch.cuda.OutOfMemoryError:
        row = {**base, "status": "error: out of memory"}
    except Exception as err:  # noqa: BLE001  (a report row per failure, not a lost session)
        row = {**base, "status": f"error: {type(err).__name__}: {' '.join(str(err).split())[:200]}"}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def copy_bandwidth(mib: int, device: str) -> dict[str, Any]:
    """Device-to-device copy of ``mib`` MiB: GB/s counting the read and the write."""
    import torch

    from suite.harness.measure import time_call

    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    timing = time_call(lambda: dst.copy_(src), device, 20)
    return {"what": "copy", "bytes": 2 * src.numel(), "ms": timing.median,
            "gb_per_s": 2 * src.numel() / (timing.median * 1e-3) / 1e9, "status": "ok"}


def evaluate_targets(timings: list[dict[str, Any]], copy_gb_s: float | None, shapes: Shapes) -> list[dict[str, Any]]:
    """Each target of ``TARGETS``: met / missed (with the numbers) / not measured."""
    def ms(label: str, mode: str, L: int) -> float | None:
        for row in timings:
            if row.get("attention") == label and row.get("mode") == mode and row.get("L") == L and row["status"] == "ok":
                return row.get("ms")
        return None

    rows = []

    def verdict(key: str, pairs: list[tuple[int, float | None]], test: Callable[[float], bool], fmt: str) -> None:
        measured = [(L, x) for L, x in pairs if x is not None]
        if not pairs:
            rows.append({"target": key, "rule": TARGETS[key], "status": "not measured",
                         "detail": "no length in this run's range"})
            return
        if len(measured) < len(pairs):
            missing = [L for L, x in pairs if x is None]
            rows.append({"target": key, "rule": TARGETS[key], "status": "not measured",
                         "detail": "no measurement at L = " + ", ".join(map(str, missing))})
            return
        met = all(test(x) for _, x in measured)
        rows.append({"target": key, "rule": TARGETS[key], "status": "met" if met else "missed",
                     "detail": "; ".join(f"L={L}: {fmt.format(x)}" for L, x in measured)})

    def ratio(base: str, L: int, mode: str = "fwdbwd") -> float | None:
        a, b = ms("ea", mode, L), ms(base, mode, L)
        return None if a is None or b is None else b / a

    lengths = shapes.time_lengths
    verdict("ea_beats_flash_from_2k", [(L, ratio("softmax (SDPA flash)", L)) for L in lengths if L >= 2048],
            lambda r: r > 1.0, "{:.2f}x")
    verdict("ea_8x_flash_at_16k", [(16384, ratio("softmax (SDPA flash)", 16384))], lambda r: r >= 8.0, "{:.2f}x")
    verdict("ea_vs_chunk_retention", [(L, ratio("fla chunk_retention", L)) for L in lengths if L >= 4096],
            lambda r: r >= 1.0, "{:.2f}x")
    fwd_share = []
    for L in [x for x in lengths if x >= 8192]:
        fwd = ms("ea", "fwd", L)
        row = next((r for r in timings if r.get("attention") == "ea" and r.get("mode") == "fwd" and r.get("L") == L
                    and r["status"] == "ok"), None)
        share = None
        if fwd is not None and copy_gb_s and row is not None:
            share = row["io_bytes"] / (fwd * 1e-3) / 1e9 / copy_gb_s
        fwd_share.append((L, share))
    verdict("ea_fwd_bandwidth", fwd_share, lambda s: s >= 0.5, "{:.0%} of copy")
    longest = lengths[-1]
    mem = next((r for r in timings if r.get("attention") == "ea" and r.get("mode") == "fwdbwd" and r.get("L") == longest
                and r["status"] == "ok"), None)
    mem_ratio = None
    if mem is not None:
        tensor = mem["io_bytes"] / 4  # io_bytes of fwd+bwd rows: q, k, v, do
        mem_ratio = (4 * tensor + mem["peak_mem_bytes"]) / (8 * tensor)
    verdict("ea_memory_64k", [(longest, mem_ratio)], lambda r: r <= 1.5, "{:.2f}x")
    first, last = ms("ea", "decode", lengths[0]), ms("ea", "decode", longest)
    verdict("ea_decode_flat", [(longest, None if first is None or last is None else last / first)],
            lambda r: r <= 1.2, "{:.2f}")
    return rows


def run_gpu_check(device: str, shapes: Shapes, command: str, budget_s: float = 450.0,
                  progress: Callable[[str], None] = print) -> Report:
    """Run every step on ``device``; rows past ``budget_s`` seconds are recorded as skipped."""
    start = time.monotonic()
    report = Report(command=command, environment=environment(device))
    env = report.environment

    def over_budget() -> bool:
        return time.monotonic() - start > budget_s

    def step_row(step: str, base: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        row = {**base, "status": "skipped: time budget"} if over_budget() else _guarded(fn, base)
        report.add(step, row)
        progress(f"{step:16s} {' '.join(str(v) for k, v in base.items())}: {row['status']}")
        return row

    for dtype in shapes.dtypes:
        for D in shapes.check_dims:
            for L in shapes.check_lengths:
                for case in EA_CASES:
                    step_row("ea_checks", {"what": f"ea {case}", "L": L, "D": D, "dtype": dtype},
                             lambda: check_ea_case(case, L, D, dtype, shapes, device))
    D0 = shapes.time_dim
    step_row("ea_checks", {"what": "ea decode step", "L": shapes.check_lengths[0], "D": D0, "dtype": "float32"},
             lambda: _decode_check(shapes, device))
    for label, module in BASELINES.items():
        spec, level = TIMED[label]
        base = {"what": label, "L": shapes.baseline_length, "D": D0, "dtype": "float32"}
        if not device.startswith("cuda") or env[module] != "yes":
            why = "needs CUDA" if not device.startswith("cuda") else f"{module} not importable"
            report.add("baseline_checks", {**base, "status": f"skipped: {why}"})
            continue
        step_row("baseline_checks", base, lambda: _baseline_check(spec, level, shapes, device))
    copy = step_row("bandwidth", {"what": "copy", "MiB": shapes.copy_mib},
                    lambda: copy_bandwidth(shapes.copy_mib, device))
    copy_gb_s = copy.get("gb_per_s") if copy["status"] == "ok" else None
    timed = {"ea": TIMED["ea"], "softmax (SDPA flash)": TIMED["softmax (SDPA flash)"]}
    if device.startswith("cuda"):
        timed = {label: value for label, value in TIMED.items()
                 if label not in BASELINES or env[BASELINES[label]] == "yes"}
    else:
        timed["softmax (SDPA)"] = ("softmax", "op")  # flash is CUDA-only
        del timed["softmax (SDPA flash)"]
    slow: set[str] = set()
    for L in shapes.time_lengths:
        for label, (spec, level) in timed.items():
            if label == "ea":
                spec = f"ea:backend={ea_backend(device)}"
            for mode in ("fwd", "fwdbwd"):
                base = {"attention": label, "mode": mode, "L": L, "dtype": shapes.time_dtype}
                if label in slow and not over_budget():
                    report.add("timings", {**base, "status": "skipped: an earlier L failed or took > 60 s"})
                    continue
                row = step_row("timings", base, lambda: _timed(spec, level, L, mode, shapes, device))
                if row["status"].startswith(("error", "FAIL")) or row.get("wall_s", 0) > 60:
                    slow.add(label)
    for L in (shapes.time_lengths[0], shapes.time_lengths[-1]):
        step_row("timings", {"attention": "ea", "mode": "decode", "L": L, "dtype": shapes.time_dtype},
                 lambda: _timed(f"ea:backend={ea_backend(device)}", "module", L, "decode", shapes, device))
    for row in evaluate_targets(report.steps.get("timings", []), copy_gb_s, shapes):
        report.add("targets", row)
    report.environment["wall_s"] = round(time.monotonic() - start, 1)
    return report


def _decode_check(shapes: Shapes, device: str) -> dict[str, Any]:
    from suite.harness.measure import measure_attention

    m = measure_attention(f"ea:backend={ea_backend(device)}", shapes.check_lengths[0], "decode", batch=shapes.batch,
                          num_heads=shapes.heads, head_dim=shapes.time_dim, causal=True, dtype="float32",
                          device=device, repeats=1)
    ok = m["check_error"] <= TOLERANCE["float32"]
    return {"backend": m["backend_used"], "max_rel_error": m["check_error"], "tolerance": TOLERANCE["float32"],
            "status": "ok" if ok else "FAIL"}


def _baseline_check(spec: str, level: str, shapes: Shapes, device: str) -> dict[str, Any]:
    from suite.harness.measure import measure_attention

    m = measure_attention(spec, shapes.baseline_length, "fwd", batch=2, num_heads=shapes.heads,
                          head_dim=shapes.time_dim, causal=True, dtype="float32", device=device, repeats=1, level=level)
    tolerance = 1e-2  # fla's chunked kernels may use TF32 dots
    return {"backend": m["backend_used"], "max_rel_error": m["check_error"], "tolerance": tolerance,
            "status": "ok" if m["check_error"] <= tolerance else "FAIL"}


def _timed(spec: str, level: str, L: int, mode: str, shapes: Shapes, device: str) -> dict[str, Any]:
    from suite.harness.measure import TIME_KEYS, measure_attention, torch_dtype

    start = time.monotonic()
    m = measure_attention(spec, L, mode, batch=shapes.batch, num_heads=shapes.heads, head_dim=shapes.time_dim,
                          causal=True, dtype=shapes.time_dtype, device=device, repeats=5, level=level)
    tensor = shapes.batch * L * shapes.heads * shapes.time_dim * torch_dtype(shapes.time_dtype).itemsize
    return {"ms": m[TIME_KEYS[mode]], "time_min_ms": m["time_min_ms"], "time_max_ms": m["time_max_ms"],
            "peak_mem_bytes": m["peak_mem_bytes"], "check_error": m["check_error"], "backend": m["backend_used"],
            "level": m["level"], "io_bytes": 4 * tensor, "wall_s": round(time.monotonic() - start, 1),
            "status": "ok"}


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """``rows`` as compare's pipe table (``compare.markdown_table``): floats to 3 significant digits, "-" where
    a row has no value."""
    import pandas as pd

    from suite.harness.compare import markdown_table

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.3g}"
        return "-" if value is None else str(value)

    frame = pd.DataFrame([[cell(r.get(c)) for c in columns] for r in rows], columns=columns)
    return markdown_table(frame.set_index(columns[0])).splitlines()


def write_report(report: Report, out: Path) -> Path:
    """OUT/<card>/: gpu_check.json, checks.csv, timings.csv, README.md. Returns the folder."""
    import pandas as pd

    folder = Path(out) / card_slug(str(report.environment.get("card", "unknown")))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "gpu_check.json", "w") as f:
        json.dump({"command": report.command, "environment": report.environment, "steps": report.steps}, f,
                  indent=1, default=str)
        f.write("\n")
    checks = report.steps.get("ea_checks", []) + report.steps.get("baseline_checks", [])
    pd.DataFrame(checks).drop(columns=["errors"], errors="ignore").to_csv(folder / "checks.csv", index=False)
    pd.DataFrame(report.steps.get("timings", [])).to_csv(folder / "timings.csv", index=False)
    env = report.environment
    lines = [f"# gpu-check on {env.get('card')}", "", f"Command: `{report.command}`", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "", "## Targets", ""]
    lines += _md_table(report.steps.get("targets", []), ["target", "status", "detail", "rule"])
    counts = {s: sum(r["status"].split(":")[0] == s for r in checks) for s in ("ok", "FAIL", "error", "skipped")}
    lines += ["", "## Checks against the references", "",
              ", ".join(f"{n} {s}" for s, n in counts.items()) + f" (of {len(checks)}).", ""]
    lines += _md_table(checks, ["what", "L", "D", "dtype", "backend", "max_rel_error", "tolerance", "status"])
    lines += ["", "## Copy bandwidth", ""]
    lines += _md_table(report.steps.get("bandwidth", []), ["what", "MiB", "ms", "gb_per_s", "status"])
    lines += ["", f"## Timings (causal, {', '.join(sorted({r['dtype'] for r in report.steps.get('timings', [])}))}; "
              "median ms of the timed calls; peak = memory above the inputs during the call)", ""]
    timing_rows = [{**r, "peak_MB": (r["peak_mem_bytes"] / 1e6 if "peak_mem_bytes" in r else None)}
                   for r in report.steps.get("timings", [])]
    lines += _md_table(timing_rows, ["attention", "mode", "L", "ms", "time_min_ms", "time_max_ms", "peak_MB",
                                     "backend", "level", "status"])
    (folder / "README.md").write_text("\n".join(lines) + "\n")
    return folder
