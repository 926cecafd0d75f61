"""AFT-simple, the Attention Free Transformer without position biases (Zhai et al. 2021).

Per channel c (no heads; ``num_heads`` is accepted for the common constructor and unused):

    y_t = σ(q_t) ⊙ Σ_{t'} softmax_{t'}(k)_{t'} ⊙ v_{t'}      (over every usable t', or t' ≤ t when causal)

The causal form is a running softmax-weighted average with a running max m (the log-sum-exp trick), so no
exp ever overflows; decoding state (num, den, m) is [B, dim] each. The parallel causal form works in chunks
of C positions with an exact per-position running max, O(L·C·dim) work and O(C²·dim) memory per chunk.

AFT-full (learned pairwise position biases w_{t,t'}) is not provided: its weights exp(k_{t'} + w_{t,t'})
change with t for every earlier t', so the causal form has no finite state and needs O(L²) parameters and
O(L²·dim) work; it cannot be kept O(L) in memory.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from suite.attention.base import AttentionModule, compute_dtype, safe_divide
from suite.attention.registry import register_attention


def aft_causal_average(k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None,
                       state: dict[str, torch.Tensor] | None = None, chunk_size: int = 32,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Running Σ_{t'≤t} exp(k_{t'}) v_{t'} / Σ_{t'≤t} exp(k_{t'}) per channel, with a running max.

    k, v: [B, L, C]; keep: [B, L] bool (False positions are skipped: they leave the state unchanged);
    state: {"num", "den", "m"} [B, C] each (sums scaled by exp(-m)), or None for an empty prefix.
    Returns (average [B, L, C] in the compute dtype, 0 where no usable position yet; the state after L).
    """
    B, L, C = k.shape
    dt = compute_dtype(v)
    k, v = k.to(dt), v.to(dt)
    if keep is not None:
        k = k.masked_fill(~keep[:, :, None], float("-inf"))
    if state is None:
        num = torch.zeros(B, C, device=v.device, dtype=dt)
        den = torch.zeros_like(num)
        m = torch.full_like(num, float("-inf"))
    else:
        num, den, m = (state[key].to(dt) for key in ("num", "den", "m"))
    outs = []
    for start in range(0, L, chunk_size):
        kc, vc = k[:, start:start + chunk_size], v[:, start:start + chunk_size]
        c = kc.shape[1]
        # the shift cancels in num/den, so it carries no gradient
        run_max = torch.maximum(torch.cummax(kc.detach(), dim=1).values, m[:, None])   # [B, c, C]
        shift = torch.where(torch.isfinite(run_max), run_max, torch.zeros_like(run_max))
        below = torch.ones(c, c, dtype=torch.bool, device=k.device).tril()[None, :, :, None]
        exponent = torch.where(below, kc[:, None, :, :] - shift[:, :, None, :], float("-inf"))   # [B, t, t', C]
        w = torch.exp(exponent)
        carry = torch.exp(m[:, None] - shift)                                                # [B, c, C]
        num_t = carry * num[:, None] + torch.einsum("btsc,bsc->btc", w, vc)
        den_t = carry * den[:, None] + w.sum(2)
        outs.append(safe_divide(num_t, den_t))
        num, den, m = num_t[:, -1], den_t[:, -1], run_max[:, -1]
    return torch.cat(outs, dim=1), {"num": num, "den": den, "m": m}


def aft_global_average(k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_t softmax_t(k) v_t over every usable position, per channel: k, v [B, L, C] -> [B, 1, C] (0 if none)."""
    dt = compute_dtype(v)
    k, v = k.to(dt), v.to(dt)
    if keep is not None:
        k = k.masked_fill(~keep[:, :, None], float("-inf"))
    peak = k.detach().amax(1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    w = torch.exp(k - peak)
    return safe_divide((w * v).sum(1, keepdim=True), w.sum(1, keepdim=True))


@register_attention("aft", "AFT-simple: per-channel softmax-weighted average gated by sigmoid(q)")
class AFTSimple(AttentionModule):
    """Attention Free Transformer (simple); decoding state (num, den, m) [B, dim] each."""

    backends = ("torch",)

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 chunk_size: int = 32, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__(dim, num_heads, causal, backend)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., dim] -> q, k, v [..., dim] (AFT works per channel: no head split)."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.dim)).movedim(-2, 0)
        return q, k, v

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x)
        self.backend_used = "torch"
        if self.causal:
            avg, _ = aft_causal_average(k, v, key_padding_mask, chunk_size=self.chunk_size)
        else:
            avg = aft_global_average(k, v, key_padding_mask)
        return self.proj(torch.sigmoid(q) * avg.to(x.dtype))

    # -- decoding ------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Empty prefix: num = den = 0 and m = -inf, [B, dim] each (fp32, fp64 when dtype is fp64)."""
        self.check_step_allowed()
        dt = torch.promote_types(dtype or torch.float32, torch.float32)
        zeros = torch.zeros(batch, self.dim, device=device, dtype=dt)
        return {"num": zeros, "den": zeros.clone(), "m": torch.full_like(zeros, float("-inf"))}

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t [B, dim] -> (y_t [B, dim], state with this token folded in under the new running max)."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x_t)
        dt = state["num"].dtype
        k, v = k.to(dt), v.to(dt)
        m = torch.maximum(state["m"], k)
        carry, w = torch.exp(state["m"] - m), torch.exp(k - m)
        num = carry * state["num"] + w * v
        den = carry * state["den"] + w
        self.backend_used = "torch-recurrent"
        y = self.proj(torch.sigmoid(q) * safe_divide(num, den).to(x_t.dtype))
        return y, {"num": num, "den": den, "m": m}

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Parallel causal forward over a prompt x [B, L, dim] that also returns the state after it."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x)
        self.backend_used = "torch"
        avg, state = aft_causal_average(k, v, chunk_size=self.chunk_size)
        return self.proj(torch.sigmoid(q) * avg.to(x.dtype)), state
