"""The ``kernels`` builder: time one attention at one L (fwd, fwd+bwd, decode) on random inputs.

Hyperparameters (``tasks/kernels/*.yaml``): ``modes`` (a list of fwd | fwdbwd | decode), ``level``
(``op``: the attention core on q, k, v; ``module``: the whole layer with its projections, which every
attention has), ``causal``, ``batch``, ``num_heads``, ``head_dim``, ``dtype`` (float32 | bfloat16 |
float16), ``repeats`` and ``max_check_error``. Each mode calls ``suite.harness.measure.measure_attention``,
which checks the timed path against the attention's reference on the same shape before timing it. The
job fails (status ``error``, no timing kept) when a mode returns no ``check_error`` or one above
``max_check_error``: a fast wrong kernel never produces a row.

Metrics: each mode's own (``fwd_ms``, ``fwdbwd_ms``, ``decode_ms_per_token``, ``prefill_ms``,
``state_bytes``), ``<mode>_tokens_per_s``, ``<mode>_peak_mem_bytes`` and ``check_error_<mode>`` per mode,
with ``peak_mem_bytes`` and ``check_error`` the largest over the modes. The
backend each mode actually ran goes into the record's ``env.backends``.
"""
from __future__ import annotations

from typing import Any

from suite.harness import measure as measuring
from suite.harness.builders import BuildContext, Job, register_builder
from suite.harness.measure import MODES, torch_dtype

_WORST_OVER_MODES = ("peak_mem_bytes", "check_error")


class KernelCheckError(RuntimeError):
    """The timed path disagrees with its reference (or was not checked)."""


@register_builder("kernels")
def build_kernel_job(ctx: BuildContext) -> Job:
    hp = ctx.hparams
    modes = list(hp.get("modes", []))
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"hyperparameter modes must be a non-empty list of {', '.join(MODES)}, got {modes!r}")
    tolerance = float(hp["max_check_error"])
    job = Job(data_info={"source": ctx.data["source"], "substitute": False})

    def measure() -> dict[str, Any]:
        merged: dict[str, Any] = {}
        backends: list[str] = []
        for mode in modes:
            result = dict(measuring.measure_attention(ctx.attention, ctx.seq_len, mode, batch=int(hp["batch"]),
                                            num_heads=int(hp["num_heads"]), head_dim=int(hp["head_dim"]),
                                            causal=bool(hp["causal"]), dtype=torch_dtype(hp.get("dtype", "float32")),
                                            device=ctx.device, repeats=int(hp["repeats"]),
                                            level=str(hp.get("level", "op")), seed=ctx.seed))
            backend = result.pop("backend_used", None)
            if backend is not None and str(backend) not in backends:
                backends.append(str(backend))
            error = result.get("check_error")
            if error is None:
                raise KernelCheckError(f"{mode}: measure_attention returned no check_error; the timing is discarded")
            if not float(error) <= tolerance:
                raise KernelCheckError(f"{mode}: {ctx.attention} differs from its reference by {float(error):.3g} "
                                       f"(relative RMSE) > max_check_error {tolerance:g}; the timing is discarded")
            result.pop("level", None)  # the level is in the config
            merged[f"check_error_{mode}"] = float(error)
            for key in ("tokens_per_s", "peak_mem_bytes"):
                if key in result:
                    merged[f"{mode}_{key}"] = result[key]
            result.pop("tokens_per_s", None)
            for key, value in result.items():
                if key in _WORST_OVER_MODES and key in merged:
                    merged[key] = max(merged[key], value)
                else:
                    merged.setdefault(key, value)
        if backends:
            job.backends[ctx.attention] = "+".join(backends)
        return merged

    job.measure = measure
    return job
