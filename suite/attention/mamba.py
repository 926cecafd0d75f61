"""A Mamba-1 style selective state-space block (Gu & Dao 2023) in PyTorch, as an attention replacement.

    x, z = in_proj(u)                                  (d_inner = expand · dim each)
    x = silu(causal depthwise conv1d(x))               (kernel d_conv)
    Δ = softplus(dt_proj(x W_Δ)),  B = x W_B,  C = x W_C        (input-dependent, the "selective" part)
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t,   y_t = C_t · h_t + D ⊙ x_t     (S6, per channel, state [d_inner, N])
    out = out_proj(y ⊙ silu(z))

The SSM is per channel: ``num_heads`` is accepted for the common constructor and unused. The scan runs in
chunks of C positions (``chunk_size``, default 32): stepped position by position inside a chunk, with the
elementwise work for the whole chunk done in single ops, a carried state across chunks, and a hand-written
backward that recomputes one chunk at a time, so training memory is O(L/C · d_inner·N + C · d_inner·N) for
the scan. C trades speed for memory and does not change the result.
Non-causal = bidirectional as in Vision Mamba: a second conv + SSM branch scans the reversed sequence, and
the two branch outputs are averaged before the gate.
Key padding: padded positions enter the conv as 0, their conv output is 0 and their Δ is 0, so exp(0·A) = 1
passes the state through unchanged and the position adds nothing (the conv window still spans them).
Decoding state: {"conv": [B, d_inner, d_conv-1], "ssm": [B, d_inner, N]}.

Backends: ``torch`` and ``mamba_ssm`` (``selective_scan_fn`` from mamba-ssm, CUDA tensors only).
"""
from __future__ import annotations

import importlib.util
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from suite.attention.base import AttentionModule, compute_dtype, wants_fast_path
from suite.attention.registry import register_attention


def _time_major(t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Positions start:stop of a [B, L, F] tensor as a contiguous [stop - start, B, F] tensor."""
    return t[:, start:stop].transpose(0, 1).contiguous()


def _chunk_states(u: torch.Tensor, delta: torch.Tensor, A_t: torch.Tensor, Bm: torch.Tensor, h0: torch.Tensor,
                  a: torch.Tensor, H: torch.Tensor) -> None:
    """The S6 recurrence over one chunk of c positions, time-major with the state laid out [N, Di].

    u, delta: [c, B, Di]; A_t: [N, Di] (Aᵀ, < 0); Bm: [c, B, N]; h0: [B, N, Di] (the state before the chunk).
    Fills a and H, both [c, B, N, Di] (reused buffers): the decays a_t = exp(Δ_t A) ∈ [0, 1] and the states
    H_t = a_t ⊙ H_{t-1} + Δ_t u_t B_t. Every a_t and input is built for the whole chunk at once; the loop
    is one in-place multiply-add per position on a contiguous [B, N, Di] slice.
    """
    torch.mul(delta[:, :, None, :], A_t, out=a).exp_()
    torch.mul(Bm[..., None], (delta * u)[:, :, None, :], out=H)
    H[0].addcmul_(a[0], h0)
    for t in range(1, H.shape[0]):
        H[t].addcmul_(a[t], H[t - 1])


def _chunk_buffers(u: torch.Tensor, A: torch.Tensor, chunk_size: int, count: int) -> list[torch.Tensor]:
    """``count`` [C, B, N, Di] work buffers, reused by every chunk (fresh large tensors cost page faults)."""
    Bsz, L, Di = u.shape
    return [u.new_empty(min(chunk_size, L), Bsz, A.shape[1], Di) for _ in range(count)]


def _scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
          D: torch.Tensor, h0: torch.Tensor, chunk_size: int,
          keep_chunk_starts: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The forward pass of ``selective_scan`` (same shapes, one dtype, h0 given).

    Returns (y [B, L, Di], h_L [B, Di, N], the state before every chunk [⌈L/C⌉, B, N, Di] or None).
    """
    Bsz, L, Di = u.shape
    A_t = A.t().contiguous()
    y = torch.empty_like(u)
    h = h0.transpose(1, 2).contiguous()
    starts = u.new_empty(-(-L // chunk_size), Bsz, A.shape[1], Di) if keep_chunk_starts else None
    a_buf, H_buf = _chunk_buffers(u, A, chunk_size, 2)
    for k, s in enumerate(range(0, L, chunk_size)):
        e = min(s + chunk_size, L)
        if starts is not None:
            starts[k] = h
        a, H = a_buf[:e - s], H_buf[:e - s]
        _chunk_states(_time_major(u, s, e), _time_major(delta, s, e), A_t, _time_major(Bm, s, e), h, a, H)
        y[:, s:e] = torch.matmul(_time_major(Cm, s, e)[:, :, None, :], H).squeeze(2).transpose(0, 1)  # C_t · H_t
        h = H[-1].clone()
    y.addcmul_(u, D)
    return y, h.transpose(1, 2).contiguous(), starts


class _SelectiveScan(torch.autograd.Function):
    """``selective_scan`` with a hand-written backward that recomputes one chunk's states at a time.

    Saved for backward: the inputs and the [B, N, Di] state before each chunk, i.e. N·Di/C numbers per
    position and batch row on top of the inputs; the backward holds three [C, B, N, Di] buffers for the
    chunk it is working on. The state gradient runs the recurrence backwards:
    G_t = ∂loss/∂h_t = ȳ_t C_t + a_{t+1} ⊙ G_{t+1}; then ∂/∂(Δ_t u_t B_t) = G_t, ∂/∂(Δ_t A) = G_t ⊙ a_t ⊙ h_{t-1}.
    """

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor,
                Cm: torch.Tensor, D: torch.Tensor, h0: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
        y, h, starts = _scan(u, delta, A, Bm, Cm, D, h0, chunk_size, keep_chunk_starts=True)
        ctx.save_for_backward(u, delta, A, Bm, Cm, D, starts)
        ctx.chunk_size = chunk_size
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor, dh: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, delta, A, Bm, Cm, D, starts = ctx.saved_tensors
        c, L, A_t = ctx.chunk_size, u.shape[1], A.t().contiguous()
        du, ddelta, dBm, dCm = dy * D, torch.empty_like(delta), torch.empty_like(Bm), torch.empty_like(Cm)
        dA_t, dD = torch.zeros_like(A_t), (dy * u).sum((0, 1))
        g = dh.transpose(1, 2).contiguous()                                        # ∂loss/∂h at the chunk end
        a_buf, H_buf, G_buf = _chunk_buffers(u, A, c, 3)
        for k in range(starts.shape[0] - 1, -1, -1):
            s, e = k * c, min((k + 1) * c, L)
            uc, dc, dyc = _time_major(u, s, e), _time_major(delta, s, e), _time_major(dy, s, e)
            Bc, Cc = _time_major(Bm, s, e), _time_major(Cm, s, e)
            a, H, G = a_buf[:e - s], H_buf[:e - s], G_buf[:e - s]
            _chunk_states(uc, dc, A_t, Bc, starts[k], a, H)
            dCm[:, s:e] = torch.matmul(H, dyc[..., None]).squeeze(-1).transpose(0, 1)
            torch.mul(Cc[..., None], dyc[:, :, None, :], out=G)
            G[-1] += g
            for t in range(e - s - 2, -1, -1):
                G[t].addcmul_(a[t + 1], G[t + 1])
            d_bx = torch.matmul(Bc[:, :, None, :], G).squeeze(2)                   # ∂/∂(Δ u)  [c, B, Di]
            dBm[:, s:e] = torch.matmul(G, (dc * uc)[..., None]).squeeze(-1).transpose(0, 1)
            dlog = a.mul_(G)
            g = dlog[0].clone()                                                    # a_s G_s: ∂/∂(state before)
            dlog[1:].mul_(H[:-1])
            dlog[0].mul_(starts[k])                                                # ∂/∂(Δ_t A)
            dA_t += torch.mul(dlog, dc[:, :, None, :], out=H).sum((0, 1))          # H is free by now
            ddelta[:, s:e] = (dlog.mul_(A_t).sum(2) + d_bx * uc).transpose(0, 1)
            du[:, s:e] += (d_bx * dc).transpose(0, 1)
        return du, ddelta, dA_t.t(), dBm, dCm, dD, g.transpose(1, 2), None


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                   D: torch.Tensor, initial_state: torch.Tensor | None = None,
                   chunk_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked S6 scan. u, delta: [B, L, Di]; A: [Di, N] (< 0); Bm, Cm: [B, L, N]; D: [Di];
    initial_state: [B, Di, N] or None. Returns (y [B, L, Di], h_L [B, Di, N]), in the compute dtype.

        h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t,   y_t = C_t · h_t + D ⊙ u_t

    This recurrence, stepped one position after the other like ``MambaBlock.step``, with every elementwise
    product built for a chunk of C positions at once and a hand-written backward (``_SelectiveScan``).
    Training memory of the scan: the inputs plus N·Di/C numbers per position and batch row (chunk-start
    states), plus O(C·N·Di) per batch row while one chunk is differentiated. The chunk size changes speed
    and memory only, not the result. (A log-space parallel form inside a chunk needs either exp(-ΣΔA), which
    overflows for the Δ and A this module can learn, or [C, C] pairwise decays per channel and state; on a
    CPU the stepped loop over [B, N, Di] slices costs less.)
    """
    Bsz, L, Di = u.shape
    dt = compute_dtype(u)
    h0 = torch.zeros(Bsz, Di, A.shape[1], device=u.device, dtype=dt) if initial_state is None else initial_state
    args = (u.to(dt), delta.to(dt), A.to(dt), Bm.to(dt), Cm.to(dt), D.to(dt), h0.to(dt))
    with torch.autocast(u.device.type, enabled=False):                         # keep the matmuls in dt
        if torch.is_grad_enabled() and any(t.requires_grad for t in args):
            return _SelectiveScan.apply(*args, chunk_size)
        y, h, _ = _scan(*args, chunk_size, keep_chunk_starts=False)
    return y, h


class SSMBranch(nn.Module):
    """One direction of the block: causal depthwise conv, x_proj, dt_proj and the S6 parameters A_log, D."""

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int,
                 dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        super().__init__()
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = d_inner, d_state, d_conv, dt_rank
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        nn.init.uniform_(self.dt_proj.weight, -dt_rank ** -0.5, dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp_min(1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))               # softplus⁻¹(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))

    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())

    def selection(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., Di] (after the conv) -> Δ [..., Di], B [..., N], C [..., N]."""
        dt_low, Bm, Cm = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt_low)), Bm, Cm

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None, use_kernel: bool, chunk_size: int,
                want_state: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """x [B, L, Di] (in_proj output, x half) -> (y [B, L, Di], decoding state when want_state)."""
        L = x.shape[1]
        mask = None if keep is None else keep[:, :, None].to(x.dtype)
        if mask is not None:
            x = x * mask
        xc = self.conv(x.transpose(1, 2))[..., :L].transpose(1, 2)
        xc = F.silu(xc if use_kernel else xc.contiguous())     # the kernel reads [B, Di, L]; the torch scan [B, L, Di]
        delta, Bm, Cm = self.selection(xc)
        if mask is not None:
            xc, delta = xc * mask, delta * mask
        if use_kernel:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            result = selective_scan_fn(xc.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(),
                                       self.A(), Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous(),
                                       self.D.float(), z=None, delta_bias=None, delta_softplus=False,
                                       return_last_state=want_state)
            y, h = (result if want_state else (result, None))
            y = y.transpose(1, 2)
        else:
            y, h = selective_scan(xc, delta, self.A(), Bm, Cm, self.D, chunk_size=chunk_size)
        state = None
        if want_state:
            assert h is not None  # the kernel returns the last state when want_state
            need = self.d_conv - 1
            window = F.pad(x.transpose(1, 2), (max(0, need - L), 0))
            state = {"conv": window[..., window.shape[-1] - need:], "ssm": h.to(compute_dtype(x))}
        return y, state

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t [B, Di] -> (y_t [B, Di], state) with state {"conv": [B, Di, d_conv-1], "ssm": [B, Di, N]}."""
        window = torch.cat([state["conv"], x_t[:, :, None].to(state["conv"].dtype)], dim=-1)   # [B, Di, d_conv]
        assert self.conv.bias is not None  # built with bias=True
        xc = F.silu((window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias).to(x_t.dtype)
        delta, Bm, Cm = self.selection(xc)
        h = state["ssm"]
        dt = h.dtype
        h = torch.exp(delta.to(dt)[..., None] * self.A().to(dt)) * h + (delta * xc).to(dt)[..., None] * Bm.to(dt)[:,
                                                                                                                  None]
        y = (h * Cm.to(dt)[:, None]).sum(-1) + self.D.to(dt) * xc.to(dt)
        return y, {"conv": window[..., 1:], "ssm": h}


@register_attention("mamba", "Mamba-1 style selective SSM block (S6 scan; bidirectional when non-causal)")
class MambaBlock(AttentionModule):
    """Mamba-1 block; ``num_heads`` unused (the SSM is per channel)."""

    backends = ("torch", "mamba_ssm")

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int = 0,
                 chunk_size: int = 32, qkv_bias: bool = False, proj_bias: bool = False) -> None:
        super().__init__(dim, num_heads, causal, backend)
        if min(d_state, d_conv, expand, chunk_size) < 1 or dt_rank < 0:
            raise ValueError("d_state, d_conv, expand and chunk_size must be >= 1 and dt_rank >= 0 (0 = ceil(dim/16))")
        self.d_inner = expand * dim
        self.dt_rank = dt_rank or math.ceil(dim / 16)
        self.chunk_size = chunk_size
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=qkv_bias)  # plays q/k/v's part (timm's qkv_bias)
        self.forward_branch = SSMBranch(self.d_inner, d_state, d_conv, self.dt_rank)
        self.backward_branch = None if causal else SSMBranch(self.d_inner, d_state, d_conv, self.dt_rank)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=proj_bias)

    def _use_kernel(self, x: torch.Tensor) -> bool:
        reason = None
        if x.device.type != "cuda":
            reason = f"the tensors are on {x.device.type}, and mamba-ssm's kernels need CUDA"
        elif importlib.util.find_spec("mamba_ssm") is None:
            reason = "mamba-ssm is not installed (pip install -e '.[gpu]')"
        use = wants_fast_path(self, x, reason, fast="mamba_ssm")
        self.backend_used = "mamba_ssm-selective-scan" if use else "torch"
        return use

    def _mix(self, x: torch.Tensor, keep: torch.Tensor | None,
             want_state: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """x [B, L, dim] -> (gated SSM output [B, L, d_inner], state)."""
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        use_kernel = self._use_kernel(x)
        y, state = self.forward_branch(xs, keep, use_kernel, self.chunk_size, want_state)
        if self.backward_branch is not None:
            y_back, _ = self.backward_branch(xs.flip(1), None if keep is None else keep.flip(1), use_kernel,
                                             self.chunk_size)
            y = (y + y_back.flip(1)) / 2
        return y.to(x.dtype) * F.silu(z), state

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        y, _ = self._mix(x, key_padding_mask)
        return self.out_proj(y)

    # -- decoding ------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Empty state: conv window [B, d_inner, d_conv-1] (dtype) and SSM state [B, d_inner, N] (fp32/fp64) zeros."""
        self.check_step_allowed()
        branch = self.forward_branch
        dtype = dtype or self.in_proj.weight.dtype
        return {"conv": torch.zeros(batch, self.d_inner, branch.d_conv - 1, device=device, dtype=dtype),
                "ssm": torch.zeros(batch, self.d_inner, branch.d_state, device=device,
                                   dtype=torch.promote_types(dtype, torch.float32))}

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t [B, dim] -> (y_t [B, dim], state)."""
        self.check_step_allowed()
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)
        y, state = self.forward_branch.step(xs, state)
        self.backend_used = "torch-recurrent"
        return self.out_proj(y.to(x_t.dtype) * F.silu(z)), state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Parallel causal forward over a prompt x [B, L, dim] that also returns the decoding state after it."""
        self.check_step_allowed()
        y, state = self._mix(x, None, want_state=True)
        assert state is not None  # want_state=True
        return self.out_proj(y), state
