"""Launch glue and the autograd.Function for the EA Triton kernels (the kernels are in triton_kernels.py).

Forward (causal):     chunk sums of keys -> exclusive cumsum over chunks (+ initial state) -> fwd kernel.
Forward (non-causal): chunk sums of keys -> total                                        -> fwd kernel.
Backward:             fwd kernel in dq mode (recomputes the prefix sums; nothing [t+1, L, H, D] is stored),
                      chunk sums of queries -> suffix carries -> dk/dv kernel walking tiles backwards.
Saved for backward: q, k, v, o, Z (fp32) and the per-chunk carries [B, H, S, 2, t+1, D].
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton

from suite.attention.ea.triton_kernels import _ea_bwd_dkdv_kernel, _ea_chunk_sums_kernel, _ea_fwd_kernel

#: every (BLOCK_L, BLOCK_D, num_warps) the launcher can pick; hopper_compile profiles all of them
LAUNCH_BLOCK_L = 32
LAUNCH_BLOCK_DS = (16, 32, 64)
LAUNCH_NUM_WARPS = 4


@dataclass(frozen=True)
class LaunchConfig:
    block_l: int
    block_d: int
    num_warps: int
    num_splits: int  # S: chunks along L, each handled by its own program
    chunk: int       # rows per chunk, a multiple of block_l


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def launch_config(B: int, L: int, H: int, D: int, device: torch.device,
                  num_splits: int | None = None, block_l: int | None = None, sms: int | None = None) -> LaunchConfig:
    """Block sizes and the L split: enough programs to fill the GPU (about 2 per SM) when B*H is small.

    ``sms`` (the SM count) replaces the query of a CUDA device (hopper_compile records an H100's launches on
    the CPU)."""
    block_d = min(max(16, triton.next_power_of_2(D)), LAUNCH_BLOCK_DS[-1])
    block_l = block_l or LAUNCH_BLOCK_L
    tiles = triton.cdiv(L, block_l)
    if num_splits is None:
        num_splits = 1
        if sms is None and device.type == "cuda" and not interpreting():
            sms = torch.cuda.get_device_properties(device).multi_processor_count
        if sms:
            base = B * H * triton.cdiv(D, block_d)
            num_splits = max(1, min(triton.cdiv(2 * sms, base), triton.cdiv(tiles, 4)))
    num_splits = max(1, min(num_splits, tiles))
    chunk = triton.cdiv(tiles, num_splits) * block_l
    return LaunchConfig(block_l, block_d, LAUNCH_NUM_WARPS, triton.cdiv(L, chunk), chunk)


def _new_output(shape, dtype, device) -> torch.Tensor:
    """Allocation of every kernel output (tests patch this to fill buffers with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _launch(kernel, grid, args, num_warps: int, **constexprs) -> None:
    """The one place a kernel is launched (hopper_compile patches it to record the launches)."""
    kernel[grid](*args, num_warps=num_warps, **constexprs)


def _chunk_sums(mode: int, x, y, w, z, keep, order: int, cfg: LaunchConfig) -> torch.Tensor:
    B, L, H, D = x.shape
    out = _new_output((B, H, cfg.num_splits, 2, order + 1, D), torch.float32, x.device)
    grid = (cfg.num_splits, triton.cdiv(D, cfg.block_d), B * H)
    _launch(_ea_chunk_sums_kernel, grid,
            (x, y, w if w is not None else x, z if z is not None else x, keep if keep is not None else x, out,
             L, H, D, cfg.num_splits, cfg.chunk),
            cfg.num_warps, MODE=mode, HAS_KEEP=keep is not None, ORDER=order, T1P=triton.next_power_of_2(order + 1),
            BLOCK_L=cfg.block_l, BLOCK_D=cfg.block_d)
    return out


def _exclusive_prefix(sums: torch.Tensor) -> torch.Tensor:
    """Carries entering each chunk: Σ of the chunks before it (dim 2)."""
    incl = sums.cumsum(2)
    return torch.cat([torch.zeros_like(incl[:, :, :1]), incl[:, :, :-1]], dim=2)


def _exclusive_suffix(sums: torch.Tensor) -> torch.Tensor:
    """Carries entering each chunk from the right: Σ of the chunks after it (dim 2)."""
    return _exclusive_prefix(sums.flip(2)).flip(2)


def _carry_strides(carry: torch.Tensor, per_chunk: bool) -> tuple[int, int]:
    return carry.stride(1), (carry.stride(2) if per_chunk else 0)


def _launch_fwd(q, k, v, keep, carry, per_chunk: bool, order: int, causal: bool, cfg: LaunchConfig,
                g=None):
    """o and Z (g None) or dq (g given) from carries [B, H, S or 1, 2, t+1, D]."""
    B, L, H, D = q.shape
    if g is None:
        o = _new_output(q.shape, v.dtype, q.device)
        z = _new_output(q.shape, torch.float32, q.device)
        dq = None
    else:
        o = z = None
        dq = _new_output(q.shape, q.dtype, q.device)
    sb, ss = _carry_strides(carry, per_chunk)
    grid = (cfg.num_splits, triton.cdiv(D, cfg.block_d), B * H)
    _launch(_ea_fwd_kernel, grid,
            (q, k, v, keep if keep is not None else q, carry,
             o if o is not None else q, z if z is not None else q, g if g is not None else q,
             dq if dq is not None else q, L, H, D, cfg.chunk, sb, ss),
            cfg.num_warps, CAUSAL=causal, HAS_KEEP=keep is not None, COMPUTE_DQ=g is not None, ORDER=order,
            T1P=triton.next_power_of_2(order + 1), BLOCK_L=cfg.block_l, BLOCK_D=cfg.block_d)
    return (o, z) if g is None else dq


def _launch_dkdv(q, k, v, keep, o, z, g, carry, per_chunk: bool, order: int, causal: bool, cfg: LaunchConfig):
    B, L, H, D = q.shape
    dk = _new_output(k.shape, k.dtype, k.device)
    dv = _new_output(v.shape, v.dtype, v.device)
    sb, ss = _carry_strides(carry, per_chunk)
    grid = (cfg.num_splits, triton.cdiv(D, cfg.block_d), B * H)
    _launch(_ea_bwd_dkdv_kernel, grid,
            (q, k, v, keep if keep is not None else q, o, z, g, carry, dk, dv, L, H, D, cfg.chunk, sb, ss),
            cfg.num_warps, CAUSAL=causal, HAS_KEEP=keep is not None, ORDER=order,
            T1P=triton.next_power_of_2(order + 1), BLOCK_L=cfg.block_l, BLOCK_D=cfg.block_d)
    return dk, dv


class EATritonFunction(torch.autograd.Function):
    """Element-wise attention with Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, order: int, causal: bool, keep, initial_state, want_state: bool,
                num_splits, block_l):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        keep8 = keep.to(torch.int8).contiguous() if keep is not None else None
        B, L, H, D = q.shape
        cfg = launch_config(B, L, H, D, q.device, num_splits, block_l)
        state = None
        if causal:
            init = initial_state.float().contiguous() if initial_state is not None else None
            if cfg.num_splits > 1 or want_state:
                sums = _chunk_sums(0, k, v, None, None, keep8, order, cfg)
                carry = _exclusive_prefix(sums)
                if init is not None:
                    carry = carry + init[:, :, None]
                if want_state:
                    state = carry[:, :, -1] + sums[:, :, -1]
            else:
                carry = (init if init is not None else q.new_zeros((B, H, 2, order + 1, D), dtype=torch.float32))
                carry = carry[:, :, None]
            carry = carry.contiguous()
            per_chunk = True
        else:
            sums = _chunk_sums(0, k, v, None, None, keep8, order, cfg)
            carry = sums.sum(2, keepdim=True).contiguous()
            per_chunk = False
        o, z = _launch_fwd(q, k, v, keep8, carry, per_chunk, order, causal, cfg)
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
        sums = _chunk_sums(1, q, g, o, z, None, order, cfg)
        if causal:
            carry_gh, per_chunk = _exclusive_suffix(sums).contiguous(), True
        else:
            carry_gh, per_chunk = sums.sum(2, keepdim=True).contiguous(), False
        dk, dv = _launch_dkdv(q, k, v, keep8, o, z, g, carry_gh, per_chunk, order, causal, cfg)
        return dq, dk, dv, None, None, None, None, None, None, None


def ea_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: int, causal: bool,
              key_padding_mask: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
              output_final_state: bool = False, num_splits: int | None = None,
              block_l: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton path: (o [B, L, H, D] in v's dtype, final state [B, H, 2, t+1, D] fp32 or None).

    ``num_splits`` and ``block_l`` override the launcher's choice (tests use them to cover every code path).
    """
    o, state = EATritonFunction.apply(q, k, v, order, causal, key_padding_mask, initial_state,
                                      output_final_state, num_splits, block_l)
    return o, (state if output_final_state else None)
