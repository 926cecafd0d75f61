"""The kernels family (builder ``kernels``): time one attention at one L (fwd, fwd+bwd, decode) on random inputs.

Each mode calls ``suite.run.measure.measure_attention``, which checks the timed path against the
attention's reference on the same shape before timing it. The job fails (status ``error``, no timing kept)
when a mode returns no ``check_error`` or one above ``max_check_error``: a fast wrong kernel never produces a
row. ``level``: ``op`` times the attention core on q, k, v; ``module`` the whole layer with its projections.

Metrics: each mode's own (``fwd_ms``, ``fwdbwd_ms``, ``decode_ms_per_token``: medians; ``prefill_ms``,
``state_bytes``), ``<mode>_tokens_per_s``, ``<mode>_peak_mem_bytes``, ``<mode>_time_min_ms`` /
``<mode>_time_max_ms`` (the spread of the timed calls) and ``check_error_<mode>`` per mode, with
``peak_mem_bytes`` and ``check_error`` the largest over the modes. The backend each mode actually ran goes into
the record's ``env.backends``.
"""
from __future__ import annotations

from typing import Any

from suite.run import measure as measuring
from suite.run.builders import BuildContext, Workload, register_builder
from suite.run.hparams import HParam
from suite.run.measure import DTYPES, LEVELS, MODES, torch_dtype
from suite.run.pool.estimates import attention_flops_per_token

_WORST_OVER_MODES = ("peak_mem_bytes", "check_error")
_PER_MODE = ("tokens_per_s", "peak_mem_bytes", "time_min_ms", "time_max_ms")

HPARAMS = (
    HParam("modes", "strs", None, "what to time: fwd, fwdbwd (forward + backward), decode (one step after L)",
           choices=MODES),
    HParam("level", "str", "op", "op: the attention core on q, k, v; module: the layer with its projections",
           choices=LEVELS),
    HParam("causal", "bool", False, "causal attention (decode needs it)"),
    HParam("batch_size", "int", 1, "batch B", low=1),
    HParam("heads", "int", 8, "heads H", low=1),
    HParam("head_dim", "int", 64, "head dimension D", low=1),
    HParam("dtype", "str", "float32", "input dtype", choices=tuple(DTYPES)),
    HParam("repeats", "int", 5, "timed calls per point on the CPU (the median is kept)", low=1),
    HParam("max_check_error", "float", 1e-4, "largest relative RMSE against the reference that may be timed",
           low=0, low_open=True),
)


class KernelCheckError(RuntimeError):
    """The timed path disagrees with its reference (or was not checked)."""


def _check(hparams: dict[str, Any]) -> None:
    if not hparams.get("modes"):
        raise ValueError(f"hyperparameter modes must be a non-empty list of {', '.join(MODES)}")
    if "decode" in hparams["modes"] and not hparams.get("causal"):
        raise ValueError("mode decode needs causal: true")


def kernels_cost(hp: dict[str, Any], data: dict[str, Any], seq_len: int, attention: str) -> tuple[float, float]:
    """Rough (FLOPs, peak bytes): every mode's warm-up and timed calls of the attention core (fwd+bwd 3x)."""
    dim = hp["heads"] * hp["head_dim"]
    calls = (hp["repeats"] + 2) * sum(3 if mode == "fwdbwd" else 1 for mode in hp["modes"] if mode != "decode")
    per_call = hp["batch_size"] * seq_len * (attention_flops_per_token(attention, seq_len, dim) + 8 * dim * dim)
    return calls * per_call, 4.0 * 8 * hp["batch_size"] * seq_len * dim


@register_builder("kernels", HPARAMS, "time one attention (fwd, fwd+bwd, decode) on random inputs, checked first",
                  check=_check, rehearsal={"repeats": 1, "batch_size": 1},
                  data_status=lambda data, root: ("generated", "random inputs"), cost=kernels_cost)
def build_kernel_job(ctx: BuildContext) -> Workload:
    hp = ctx.hparams
    _check(hp)
    modes = list(hp["modes"])
    tolerance = float(hp["max_check_error"])
    job = Workload(data_info={"source": ctx.data["source"], "substitute": False})

    def measure() -> dict[str, Any]:
        merged: dict[str, Any] = {}
        backends: list[str] = []
        for mode in modes:
            point = measuring.measure_point(
                ctx.attention, ctx.seq_len, mode, tolerance=tolerance, catch=False, batch=int(hp["batch_size"]),
                num_heads=int(hp["heads"]), head_dim=int(hp["head_dim"]), causal=bool(hp["causal"]),
                dtype=torch_dtype(hp["dtype"]), device=ctx.device, repeats=int(hp["repeats"]), level=str(hp["level"]),
                seed=ctx.seed)
            result = dict(point.result)
            backend = result.pop("backend_used", None)
            if backend is not None and str(backend) not in backends:
                backends.append(str(backend))
            error = result.get("check_error")
            if error is None:
                raise KernelCheckError(f"{mode}: measure_attention returned no check_error; the timing is discarded")
            if point.status != "ok":
                raise KernelCheckError(f"{mode}: {ctx.attention} differs from its reference by {float(error):.3g} "
                                       f"(relative RMSE) > max_check_error {tolerance:g}; not timed")
            for key in ("level", "repeats"):  # both are in the config
                result.pop(key, None)
            merged[f"check_error_{mode}"] = float(error)
            for key in _PER_MODE:
                if key in result:
                    merged[f"{mode}_{key}"] = result[key]
            for key in ("tokens_per_s", "time_min_ms", "time_max_ms"):
                result.pop(key, None)
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
