"""Launch glue and the autograd.Function for the EA Triton kernels (the kernels are in triton_kernels.py; the
design and the static GPU profile of every launch configuration are in docs/kernels.md).

The kernels see q, k, v [B, L, H, D] as [B, L, C] with C = H*D channels. Internally the chunk sums and carries
are fp32 [B, S, 2, t+1, C]; the public state [B, H, 2, t+1, D] is converted at the boundary.

Forward (causal):     chunk sums of keys -> exclusive cumsum over chunks (+ initial state) -> fwd kernel.
Forward (non-causal): chunk sums of keys -> total                                        -> fwd kernel.
Backward:             fwd kernel in dq mode (recomputes the prefix sums; nothing [t+1, L, H, D] is stored),
                      chunk sums of queries -> suffix carries -> dk/dv kernel walking tiles backwards.
Saved for backward: q, k, v, o, Z (fp32) and the per-chunk carries [B, S, 2, t+1, C]. A forward that needs no
gradient (``torch.no_grad()``, or inputs that do not require grad: inference, a decode prefill) skips the
autograd node and compiles the fwd kernel with STORE_Z off, so Z is neither allocated nor written.

Launch settings: ``num_splits`` (chunks along L), ``block_l`` (rows per tile, every kernel) and ``block_c``
(channels per program; warps = block_c / 32) are arguments of ``ea_triton``; ``None`` takes the defaults
below, which come from the static profile, not from timings (gpu-check's launch sweep measures them).
``traffic(...)`` gives the bytes each launched kernel moves (docs/kernels.md, "Bytes moved").

Every launch goes through ``_launch`` (hopper_compile records the launches there to compile exactly what the
launcher would run on an H100).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton

from suite.attention.ea.triton_kernels import _ea_bwd_dkdv_kernel, _ea_chunk_sums_kernel, _ea_fwd_kernel

#: channels per program by default; warps per program are block_c / 32: one channel per thread (see
#: triton_kernels' docstring)
BLOCK_C = 128
NUM_WARPS = BLOCK_C // 32
#: the channel blocks the launcher accepts (one channel per thread, whole warps, at most 8 warps)
BLOCK_C_CHOICES = (32, 64, 128, 256)
#: the shortest L chunk worth its own program when L is split to fill the GPU
MIN_CHUNK_ROWS = 128
#: warps per SM the L split aims for when B*C alone gives too few programs (16 of 64: 25% occupancy)
TARGET_WARPS_PER_SM = 16


def block_rows(kernel: str, causal: bool, order: int) -> int:
    """BLOCK_L: rows per tile for ``kernel`` ("chunk_sums", "fwd" (also dq) or "dkdv") at order t.

    A thread holds about (live [BLOCK_L] columns) x BLOCK_L + 2(t+1) fp32 values, so the causal fwd/dq/dk/dv
    kernels, which also hold the in-tile scans, take 4 rows and the others 8; half that for 6 < t <= 16, and
    above (at t = 24 the sums alone are 50 registers) 1 row, 2 for the chunk sums (ptxas spills those at 1).
    Measured for sm_90 (docs/kernels.md, results/static): no spill and >= 25% occupancy at t = 0..6 and
    t = 8, 12, 16, 24, 32. 8 rows for the causal fwd and dq reach 116 registers in fp16 at t = 6, too close to
    the 128 that 25% allows.
    """
    if kernel not in ("chunk_sums", "fwd", "dkdv"):
        raise ValueError(f"unknown EA kernel {kernel!r}")
    rows = 4 if causal and kernel != "chunk_sums" else 8
    if order <= 6:
        return rows
    if order <= 16:
        return rows // 2
    return 2 if kernel == "chunk_sums" else 1


@dataclass(frozen=True)
class LaunchConfig:
    block_c: int
    num_warps: int
    num_splits: int  # S: chunks along L, each handled by its own program
    chunk: int       # rows per chunk, a multiple of every kernel's BLOCK_L
    block_l: int | None = None  # one BLOCK_L for every kernel (tests); None: block_rows per kernel

    def rows(self, kernel: str, causal: bool, order: int) -> int:
        return self.block_l or block_rows(kernel, causal, order)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def default_num_splits(B: int, L: int, C: int, sms: int, block_c: int = BLOCK_C) -> int:
    """Chunks along L so that B * S * ceil(C / block_c) programs give about TARGET_WARPS_PER_SM warps per SM,
    with chunks of at least MIN_CHUNK_ROWS rows."""
    programs = B * triton.cdiv(C, block_c)
    wanted = triton.cdiv(TARGET_WARPS_PER_SM * sms, programs * (block_c // 32))
    return max(1, min(wanted, triton.cdiv(L, MIN_CHUNK_ROWS)))


def launch_config(B: int, L: int, H: int, D: int, device: torch.device, num_splits: int | None = None,
                  block_l: int | None = None, sms: int | None = None, block_c: int | None = None) -> LaunchConfig:
    """Channel blocks and the L split; ``num_splits``, ``block_l`` and ``block_c`` override the defaults, ``sms``
    (the SM count) replaces the query of a CUDA device (hopper_compile records an H100's launches on the CPU).
    ValueError for a setting the kernels cannot take."""
    block_c = block_c or BLOCK_C
    if block_c not in BLOCK_C_CHOICES:
        raise ValueError(f"block_c must be one of {', '.join(map(str, BLOCK_C_CHOICES))}, got {block_c!r}")
    if block_l is not None and (block_l < 1 or block_l & (block_l - 1)):
        raise ValueError(f"block_l must be a power of two, got {block_l!r}")
    if num_splits is not None and num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits!r}")
    C = H * D
    if num_splits is None:
        if sms is None and device.type == "cuda" and not interpreting():
            sms = torch.cuda.get_device_properties(device).multi_processor_count
        num_splits = default_num_splits(B, L, C, sms, block_c) if sms else 1
    granule = block_l or 8  # a multiple of every block_rows choice
    tiles = triton.cdiv(L, granule)
    num_splits = max(1, min(num_splits, tiles))
    chunk = triton.cdiv(tiles, num_splits) * granule
    return LaunchConfig(block_c, block_c // 32, triton.cdiv(L, chunk), chunk, block_l)


def _new_output(shape, dtype, device, name: str) -> torch.Tensor:
    """Allocation of every kernel output, ``name`` saying which (o, z, dq, dk, dv, sums); tests patch this to fill
    buffers with NaN or to see what is allocated."""
    return torch.empty(shape, dtype=dtype, device=device)


def _launch(kernel, grid, args, num_warps: int, **constexprs) -> None:
    """The one place a kernel is launched (hopper_compile patches it to record the launches)."""
    kernel[grid](*args, num_warps=num_warps, **constexprs)


def _grid(B: int, C: int, cfg: LaunchConfig) -> tuple[int, int, int]:
    return cfg.num_splits, triton.cdiv(C, cfg.block_c), B


def _chunk_sums(mode: int, x, y, w, z, keep, order: int, causal: bool, cfg: LaunchConfig) -> torch.Tensor:
    """Per-chunk sums [B, S, 2, t+1, C] (MODE 0: keys, MODE 1: queries)."""
    B, L, H, D = x.shape
    C = H * D
    out = _new_output((B, cfg.num_splits, 2, order + 1, C), torch.float32, x.device, "sums")
    _launch(_ea_chunk_sums_kernel, _grid(B, C, cfg),
            (x, y, w if w is not None else x, z if z is not None else x, keep if keep is not None else x, out,
             L, C, cfg.num_splits, cfg.chunk),
            cfg.num_warps, MODE=mode, HAS_KEEP=keep is not None, ORDER=order,
            BLOCK_L=cfg.rows("chunk_sums", causal, order), BLOCK_C=cfg.block_c)
    return out


def _exclusive_prefix(sums: torch.Tensor) -> torch.Tensor:
    """Carries entering each chunk: Σ of the chunks before it (dim 1)."""
    incl = sums.cumsum(1)
    return torch.cat([torch.zeros_like(incl[:, :1]), incl[:, :-1]], dim=1)


def _exclusive_suffix(sums: torch.Tensor) -> torch.Tensor:
    """Carries entering each chunk from the right: Σ of the chunks after it (dim 1)."""
    return _exclusive_prefix(sums.flip(1)).flip(1)


def _state_to_channels(state: torch.Tensor) -> torch.Tensor:
    """[B, H, 2, t+1, D] -> [B, 2, t+1, H*D] fp32."""
    B, H, two, T1, D = state.shape
    return state.float().permute(0, 2, 3, 1, 4).reshape(B, two, T1, H * D)


def _state_from_channels(x: torch.Tensor, H: int) -> torch.Tensor:
    """[B, 2, t+1, H*D] -> [B, H, 2, t+1, D] contiguous."""
    B, two, T1, C = x.shape
    return x.reshape(B, two, T1, H, C // H).permute(0, 3, 1, 2, 4).contiguous()


def _launch_fwd(q, k, v, keep, carry, per_chunk: bool, order: int, causal: bool, cfg: LaunchConfig,
                g=None, store_z: bool = True):
    """o and Z (g None; Z None unless ``store_z``) or dq (g given) from carries [B, S or 1, 2, t+1, C]."""
    B, L, H, D = q.shape
    C = H * D
    o = z = dq = None
    if g is None:
        o = _new_output(q.shape, v.dtype, q.device, "o")
        if store_z:
            z = _new_output(q.shape, torch.float32, q.device, "z")
    else:
        dq = _new_output(q.shape, q.dtype, q.device, "dq")
    use_keep = causal and keep is not None  # non-causal: the mask is already in the carries
    _launch(_ea_fwd_kernel, _grid(B, C, cfg),
            (q, k, v, keep if use_keep else q, carry,
             o if o is not None else q, z if z is not None else q, g if g is not None else q,
             dq if dq is not None else q,
             L, C, cfg.chunk, carry.stride(0), carry.stride(1) if per_chunk else 0),
            cfg.num_warps, CAUSAL=causal, HAS_KEEP=use_keep, COMPUTE_DQ=g is not None, ORDER=order,
            BLOCK_L=cfg.rows("fwd", causal, order), BLOCK_C=cfg.block_c, STORE_Z=g is None and store_z)
    return (o, z) if g is None else dq


def _launch_dkdv(q, k, v, keep, o, z, g, carry, per_chunk: bool, order: int, causal: bool, cfg: LaunchConfig):
    B, L, H, D = q.shape
    C = H * D
    dk = _new_output(k.shape, k.dtype, k.device, "dk")
    dv = _new_output(v.shape, v.dtype, v.device, "dv")
    _launch(_ea_bwd_dkdv_kernel, _grid(B, C, cfg),
            (q, k, v, keep if keep is not None else q, o, z, g, carry, dk, dv,
             L, C, cfg.chunk, carry.stride(0), carry.stride(1) if per_chunk else 0),
            cfg.num_warps, CAUSAL=causal, HAS_KEEP=keep is not None, ORDER=order,
            BLOCK_L=cfg.rows("dkdv", causal, order), BLOCK_C=cfg.block_c)
    return dk, dv


def _forward(q, k, v, order: int, causal: bool, keep8, initial_state, want_state: bool, cfg: LaunchConfig,
             store_z: bool):
    """The forward launches: (o, Z or None, carries, per_chunk, final state or None)."""
    B, L, H, D = q.shape
    state = None
    if causal:
        init = _state_to_channels(initial_state) if initial_state is not None else None
        if cfg.num_splits > 1 or want_state:
            sums = _chunk_sums(0, k, v, None, None, keep8, order, causal, cfg)
            carry = _exclusive_prefix(sums)
            if init is not None:
                carry = carry + init[:, None]
            if want_state:
                state = _state_from_channels(carry[:, -1] + sums[:, -1], H)
        else:
            carry = init if init is not None else q.new_zeros((B, 2, order + 1, H * D), dtype=torch.float32)
            carry = carry[:, None]
        carry = carry.contiguous()
        per_chunk = True
    else:
        sums = _chunk_sums(0, k, v, None, None, keep8, order, causal, cfg)
        carry = sums.sum(1, keepdim=True).contiguous()
        per_chunk = False
    o, z = _launch_fwd(q, k, v, keep8, carry, per_chunk, order, causal, cfg, store_z=store_z)
    return o, z, carry, per_chunk, state


def _prepare(q, k, v, keep, cfg_args):
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    keep8 = keep.to(torch.int8).contiguous() if keep is not None else None
    B, L, H, D = q.shape
    return q, k, v, keep8, launch_config(B, L, H, D, q.device, *cfg_args)


class EATritonFunction(torch.autograd.Function):
    """Element-wise attention with Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, order: int, causal: bool, keep, initial_state, want_state: bool,
                num_splits, block_l, block_c=None):
        q, k, v, keep8, cfg = _prepare(q, k, v, keep, (num_splits, block_l, None, block_c))
        o, z, carry, per_chunk, state = _forward(q, k, v, order, causal, keep8, initial_state, want_state, cfg,
                                                 store_z=True)
        ctx.save_for_backward(q, k, v, o, z, keep8, carry)
        ctx.order, ctx.causal, ctx.cfg, ctx.per_chunk = order, causal, cfg, per_chunk
        if state is None:
            state = q.new_zeros((0,), dtype=torch.float32)
        ctx.mark_non_differentiable(state)
        return o, state

    @staticmethod
    def backward(ctx, grad_o, _grad_state):
        q, k, v, o, z, keep8, carry = ctx.saved_tensors
        order, causal, cfg = ctx.order, ctx.causal, ctx.cfg
        g = grad_o.contiguous()
        dq = _launch_fwd(q, k, v, keep8, carry, ctx.per_chunk, order, causal, cfg, g=g)
        sums = _chunk_sums(1, q, g, o, z, None, order, causal, cfg)
        if causal:
            carry_gh, per_chunk = _exclusive_suffix(sums).contiguous(), True
        else:
            carry_gh, per_chunk = sums.sum(1, keepdim=True).contiguous(), False
        dk, dv = _launch_dkdv(q, k, v, keep8, o, z, g, carry_gh, per_chunk, order, causal, cfg)
        return dq, dk, dv, None, None, None, None, None, None, None, None


def ea_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: int, causal: bool,
              key_padding_mask: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
              output_final_state: bool = False, num_splits: int | None = None,
              block_l: int | None = None, block_c: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton path: (o [B, L, H, D] in v's dtype, final state [B, H, 2, t+1, D] fp32 or None).

    ``num_splits``, ``block_l`` and ``block_c`` override the launcher's choices (``launch_config``); the tests use
    them to cover every code path and gpu-check's launch sweep to time them. Without a gradient to compute (no
    grad mode, or no input requiring grad) no autograd node is built and Z is never written.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        o, state = EATritonFunction.apply(q, k, v, order, causal, key_padding_mask, initial_state,
                                          output_final_state, num_splits, block_l, block_c)
        return o, (state if output_final_state else None)
    q, k, v, keep8, cfg = _prepare(q, k, v, key_padding_mask, (num_splits, block_l, None, block_c))
    o, _, _, _, state = _forward(q, k, v, order, causal, keep8, initial_state, output_final_state, cfg,
                                 store_z=False)
    return o, state


# -- bytes moved ---------------------------------------------------------------------------------------------

#: per element of [B, L, C], per kernel: (tensors read in the input dtype, of which q, fp32 tensors read,
#: tensors written in the input dtype, fp32 tensors written). At t = 0 no kernel reads q (a_0(q) = 1). The
#: key padding mask adds one byte per row and channel block (left out: it is 1/block_c of a byte per element).
#: tests/test_ea_hopper_compile.py checks each entry against the loads and stores in the compiled kernel.
KERNEL_TENSORS = {
    "chunk sums keys": (2, 0, 0, 0, 0),          # k, v
    "chunk sums queries": (3, 1, 1, 0, 0),       # q, g, o, Z
    "fwd causal": (3, 1, 0, 1, 1),               # q, k, v -> o, Z
    "fwd causal no-Z": (3, 1, 0, 1, 0),          # q, k, v -> o
    "fwd non-causal": (1, 1, 0, 1, 1),           # q -> o, Z
    "fwd non-causal no-Z": (1, 1, 0, 1, 0),      # q -> o
    "dq causal": (4, 1, 0, 1, 0),                # q, k, v, g -> dq
    "dq non-causal": (2, 1, 0, 1, 0),            # q, g -> dq
    "dk/dv causal": (5, 1, 1, 2, 0),             # q, k, v, g, o, Z -> dk, dv
    "dk/dv non-causal": (2, 0, 0, 2, 0),         # k, v -> dk, dv
}


def kernel_bytes_per_element(variant: str, itemsize: int, order: int) -> tuple[float, float]:
    """(bytes read, bytes written) per element of [B, L, C] inside the L loop of ``variant`` (a key of
    ``KERNEL_TENSORS``, " +mask" ignored) for inputs of ``itemsize`` bytes."""
    n_in, n_q, n_f32, w_in, w_f32 = KERNEL_TENSORS[variant.replace(" +mask", "")]
    if order == 0:
        n_in -= n_q
    return float(n_in * itemsize + 4 * n_f32), float(w_in * itemsize + 4 * w_f32)


def launched_kernels(causal: bool, mode: str, cfg: LaunchConfig, want_state: bool = False) -> list[str]:
    """The kernel variants one call launches, in order: ``mode`` is "inference" (no gradient), "fwd" (the forward
    of a training step) or "fwdbwd" (forward and backward)."""
    if mode not in ("inference", "fwd", "fwdbwd"):
        raise ValueError(f"unknown mode {mode!r}")
    kind = "causal" if causal else "non-causal"
    fwd = f"fwd {kind}" + (" no-Z" if mode == "inference" else "")
    out = (["chunk sums keys"] if not causal or cfg.num_splits > 1 or want_state else []) + [fwd]
    if mode == "fwdbwd":
        out += [f"dq {kind}", "chunk sums queries", f"dk/dv {kind}"]
    return out


def traffic(B: int, L: int, H: int, D: int, itemsize: int, order: int, causal: bool, mode: str,
            cfg: LaunchConfig, want_state: bool = False) -> dict[str, float]:
    """Bytes each launched kernel moves for one call (``launched_kernels``), plus "carries": the fp32 sums
    [B, S, 2, t+1, C] written by the chunk-sums kernels, combined in torch (a read and a write) and read by the
    next kernel. The sum over the dict is the call's total: what the bandwidth of a call is computed from."""
    elements = B * L * H * D
    out: dict[str, float] = {}
    for variant in launched_kernels(causal, mode, cfg, want_state):
        read, write = kernel_bytes_per_element(variant, itemsize, order)
        out[variant] = out.get(variant, 0.0) + (read + write) * elements
    sums = B * cfg.num_splits * H * D * 2 * (order + 1) * 4
    out["carries"] = float(sums * 4 * sum(v.startswith("chunk sums") for v in launched_kernels(causal, mode, cfg,
                                                                                               want_state)))
    return out
