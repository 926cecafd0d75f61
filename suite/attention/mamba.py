"""A Mamba-1 style selective state-space block (Gu & Dao 2023) in PyTorch, as an attention replacement.

    x, z = in_proj(u)                                  (d_inner = expand · dim each)
    x = silu(causal depthwise conv1d(x))               (kernel d_conv)
    Δ = softplus(dt_proj(x W_Δ)),  B = x W_B,  C = x W_C        (input-dependent, the "selective" part)
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t,   y_t = C_t · h_t + D ⊙ x_t     (S6, per channel, state [d_inner, N])
    out = out_proj(y ⊙ silu(z))

The SSM is per channel: ``num_heads`` is accepted for the common constructor and unused. The scan runs in
chunks of C positions (stepped inside a chunk, a carried state across chunks, each chunk checkpointed under
autograd so training memory is O(L/C · d_inner·N + C · d_inner·N) for the scan).
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
from torch.utils.checkpoint import checkpoint

from suite.attention.base import AttentionModule
from suite.attention.linear import compute_dtype, wants_fast_path
from suite.attention.registry import register_attention


def _scan_chunk(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                D: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The S6 recurrence over one chunk: u, delta [B, c, Di]; Bm, Cm [B, c, N]; h [B, Di, N] -> (y, h_c)."""
    decay = torch.exp(delta[..., None] * A)                                        # [B, c, Di, N], ≤ 1
    inputs = (delta * u)[..., None] * Bm[:, :, None, :]                            # [B, c, Di, N]
    ys = []
    for t in range(u.shape[1]):
        h = decay[:, t] * h + inputs[:, t]
        ys.append(torch.einsum("bdn,bn->bd", h, Cm[:, t]))
    return torch.stack(ys, dim=1) + D * u, h


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                   D: torch.Tensor, initial_state: torch.Tensor | None = None,
                   chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked S6 scan. u, delta: [B, L, Di]; A: [Di, N] (< 0); Bm, Cm: [B, L, N]; D: [Di];
    initial_state: [B, Di, N] or None. Returns (y [B, L, Di], h_L [B, Di, N]), in the compute dtype.

        h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t,   y_t = C_t · h_t + D ⊙ u_t

    Each chunk of C positions steps the recurrence (on a CPU far cheaper than a quadratic intra-chunk form,
    whose exp(ΔA) differs per channel and state index). Under autograd every chunk is checkpointed, so the
    backward keeps only the [B, Di, N] state at chunk boundaries plus one chunk's [B, C, Di, N] at a time.
    """
    Bsz, L, Di = u.shape
    dt = compute_dtype(u)
    u, delta, Bm, Cm = u.to(dt), delta.to(dt), Bm.to(dt), Cm.to(dt)
    A, D = A.to(dt), D.to(dt)
    h = torch.zeros(Bsz, Di, A.shape[1], device=u.device, dtype=dt) if initial_state is None else initial_state.to(dt)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, Bm, Cm, D, h))
    ys = []
    for start in range(0, L, chunk_size):
        args = [t[:, start:start + chunk_size] for t in (u, delta)] + [A] + \
               [t[:, start:start + chunk_size] for t in (Bm, Cm)] + [D, h]
        y, h = checkpoint(_scan_chunk, *args, use_reentrant=False) if recompute else _scan_chunk(*args)
        ys.append(y)
    return torch.cat(ys, dim=1), h


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
        xc = F.silu(self.conv(x.transpose(1, 2))[..., :L].transpose(1, 2))
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
            need = self.d_conv - 1
            window = F.pad(x.transpose(1, 2), (max(0, need - L), 0))
            state = {"conv": window[..., window.shape[-1] - need:], "ssm": h.to(compute_dtype(x))}
        return y, state

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t [B, Di] -> (y_t [B, Di], state) with state {"conv": [B, Di, d_conv-1], "ssm": [B, Di, N]}."""
        window = torch.cat([state["conv"], x_t[:, :, None].to(state["conv"].dtype)], dim=-1)   # [B, Di, d_conv]
        xc = F.silu((window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias).to(x_t.dtype)
        delta, Bm, Cm = self.selection(xc)
        h = state["ssm"]
        dt = h.dtype
        h = torch.exp(delta.to(dt)[..., None] * self.A().to(dt)) * h + (delta * xc).to(dt)[..., None] * Bm.to(dt)[:, None]
        y = (h * Cm.to(dt)[:, None]).sum(-1) + self.D.to(dt) * xc.to(dt)
        return y, {"conv": window[..., 1:], "ssm": h}


@register_attention("mamba", "Mamba-1 style selective SSM block (S6 scan; bidirectional when non-causal)")
class MambaBlock(AttentionModule):
    """Mamba-1 block; ``num_heads`` unused (the SSM is per channel)."""

    backends = ("torch", "mamba_ssm")

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int = 0,
                 chunk_size: int = 64) -> None:
        super().__init__(dim, num_heads, causal, backend)
        if min(d_state, d_conv, expand, chunk_size) < 1 or dt_rank < 0:
            raise ValueError("d_state, d_conv, expand and chunk_size must be >= 1 and dt_rank >= 0 (0 = ceil(dim/16))")
        self.d_inner = expand * dim
        self.dt_rank = dt_rank or math.ceil(dim / 16)
        self.chunk_size = chunk_size
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        self.forward_branch = SSMBranch(self.d_inner, d_state, d_conv, self.dt_rank)
        self.backward_branch = None if causal else SSMBranch(self.d_inner, d_state, d_conv, self.dt_rank)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)

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
        return self.out_proj(y), state
