"""gpu-check's targets: each one met, missed, invalid or not measured, from the rows alone.

A timing row counts toward a target only if it is valid: its status is "ok" (its own check on the timed shape
held) and every check row it ``requires`` (for EA: the forward and gradient check at the same L, D and dtype,
or the inference check for a forward-only timing) passed. A target whose rows exist but are not all valid is
"invalid", never "met": a fast but wrong kernel meets nothing.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from suite.gpu_check.plan import SDPA_KEYS, Shapes, timing_id

#: the targets, worded as they are checked
TARGETS = {
    "ea_beats_sdpa_from_2k": "EA causal fwd+bwd faster than SDPA (the faster of its flash and cuDNN backends where "
                             "both ran) at every timed L >= 2048",
    "ea_8x_sdpa_at_16k": "EA causal fwd+bwd >= 8x faster than SDPA (the faster backend) at L = 16384",
    "ea_vs_chunk_retention": "EA causal fwd+bwd at least as fast as fla chunk_retention at every timed L >= 4096",
    "ea_fwd_bandwidth": "EA causal inference forward moves >= 50% of the copy bandwidth at every timed L >= 8192 "
                        "(bytes: what each launched kernel reads and writes, triton_ops.traffic)",
    "ea_memory_longest": "EA fwd+bwd at the longest L: inputs (q, k, v, do) + peak during the call <= 1.5x "
                         "(q, k, v, do, o, dq, dk, dv)",
    "ea_decode_vs_kv_cache": "EA decode ms/token at the longest context <= softmax decoding over a KV cache of that "
                             "length (same width, SDPA)",
    "ea_state_vs_kv_cache": "EA's decoding state at the longest context <= 1% of softmax's KV cache at that length",
}
VERDICTS = ("met", "missed", "invalid", "not measured")


def row_validity(row: dict[str, Any] | None, rows: dict[str, dict[str, Any]]) -> str | None:
    """None when ``row`` counts toward a target, else why not ("not measured: ...", "invalid: ...")."""
    if row is None:
        return "not measured"
    status = str(row.get("status", ""))
    if status != "ok":
        kind = "invalid" if status.startswith("FAIL") else "not measured"
        return f"{kind}: {row['id']} is {status.split(' (')[0]}"
    for need in row.get("requires", ()):
        check = rows.get(need)
        if check is None or check.get("status") != "ok":
            got = "missing" if check is None else str(check.get("status"))
            return f"invalid: its check {need} is {got}"
    return None


def evaluate_targets(rows: dict[str, dict[str, Any]], shapes: Shapes, device_kind: str = "cuda") -> list[dict[str,
                                                                                                              Any]]:
    """One verdict per target (``VERDICTS``) with its numbers or the reason it has none."""
    dt = shapes.time_dtype
    lengths = shapes.time_lengths
    longest = shapes.longest
    out: list[dict[str, Any]] = []

    def timed(key: str, mode: str, L: int) -> tuple[float | None, str | None, dict | None]:
        row = rows.get(timing_id(key, mode, L, dt))
        why = row_validity(row, rows)
        return (row["ms"] if why is None and row is not None else None), why, row

    def sdpa(L: int) -> tuple[float | None, str | None, str]:
        """The faster valid SDPA backend at L (None and why when neither is valid)."""
        best, reasons, name = None, [], ""
        for key in SDPA_KEYS["cuda" if device_kind == "cuda" else "cpu"]:
            ms, why, _ = timed(key, "fwdbwd", L)
            if ms is not None and (best is None or ms < best):
                best, name = ms, key
            elif why:
                reasons.append(why)
        return best, (None if best is not None else "; ".join(reasons) or "not measured"), name

    def verdict(key: str, points: list[tuple[str, float | None, str | None]], test: Callable[[float], bool],
                fmt: str) -> None:
        if not points:
            out.append({"target": key, "status": "not measured", "detail": "no timed length in this range",
                        "rule": TARGETS[key]})
            return
        bad = [(where, why) for where, value, why in points if value is None]
        if bad:
            status = "invalid" if any(str(why).startswith("invalid") for _, why in bad) else "not measured"
            detail = "; ".join(f"{where}: {why}" for where, why in bad)
        else:
            values = [(where, value) for where, value, _ in points if value is not None]
            status = "met" if all(test(value) for _, value in values) else "missed"
            detail = "; ".join(f"{where}: {fmt.format(value)}" for where, value in values)
        out.append({"target": key, "status": status, "detail": detail, "rule": TARGETS[key]})

    def speedup(base: Callable[[int], tuple[float | None, str | None, str]], L: int) -> tuple[str, float | None,
                                                                                               str | None]:
        ea, why_ea, _ = timed("ea", "fwdbwd", L)
        other, why_other, name = base(L)
        where = f"L={L}" + (f" vs {name}" if name else "")
        if ea is None or other is None:
            return where, None, why_ea or why_other
        return where, other / ea, None

    def retention(L: int) -> tuple[float | None, str | None, str]:
        ms, why, _ = timed("fla-retention", "fwdbwd", L)
        return ms, why, ""

    verdict("ea_beats_sdpa_from_2k", [speedup(sdpa, L) for L in lengths if L >= 2048], lambda r: r > 1.0,
            "{:.2f}x")
    verdict("ea_8x_sdpa_at_16k", [speedup(sdpa, 16384)] if 16384 in lengths else [], lambda r: r >= 8.0,
            "{:.2f}x")
    verdict("ea_vs_chunk_retention", [speedup(retention, L) for L in lengths if L >= 4096], lambda r: r >= 1.0,
            "{:.2f}x")
    copy = rows.get("bandwidth/copy")
    copy_gb_s = copy.get("gb_per_s") if copy and copy.get("status") == "ok" else None
    shares = []
    for L in [x for x in lengths if x >= 8192]:
        ms, why, row = timed("ea", "fwd", L)
        if ms is not None and row is not None and "gb_per_s" not in row:
            why, ms = "not measured: no byte count (not the Triton path)", None
        if ms is not None and copy_gb_s is None:
            why, ms = "not measured: no copy bandwidth", None
        shares.append((f"L={L}", row["gb_per_s"] / copy_gb_s if ms is not None and row else None, why))
    verdict("ea_fwd_bandwidth", shares, lambda share: share >= 0.5, "{:.0%} of copy")
    ms, why, row = timed("ea", "fwdbwd", longest)
    ratio = None
    if ms is not None and row is not None:
        tensor = row["io_bytes"] / 4  # q, k, v, do
        ratio = (4 * tensor + row["peak_mem_bytes"]) / (8 * tensor)
    verdict("ea_memory_longest", [(f"L={longest}", ratio, why)], lambda r: r <= 1.5, "{:.2f}x")
    ea_ms, ea_why, ea_row = timed("ea", "decode", longest)
    kv_ms, kv_why, kv_row = timed("softmax", "decode", longest)
    both = ea_ms is not None and kv_ms is not None
    decode_ratio = ea_ms / kv_ms if ea_ms is not None and kv_ms is not None else None
    verdict("ea_decode_vs_kv_cache", [(f"L={longest}", decode_ratio, ea_why or kv_why)],
            lambda r: r <= 1.0, "EA at {:.2f}x the KV cache's ms/token")
    state = None
    if both and ea_row is not None and kv_row is not None and kv_row.get("state_bytes"):
        state = ea_row["state_bytes"] / kv_row["state_bytes"]
    verdict("ea_state_vs_kv_cache", [(f"L={longest}", state, ea_why or kv_why)], lambda r: r <= 0.01,
            "{:.2%} of the KV cache")
    return out
