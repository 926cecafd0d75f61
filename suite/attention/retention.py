"""RetNet multi-scale retention (Sun et al. 2023), as fla's ``chunk_retention``: a linear RNN per head.

    S_t = γ_h S_{t-1} + k_t v_tᵀ,   o_t = (q_t / √D) S_t,   γ_h = 1 - 2^(-5-h)  (fixed, one per head h)
    y = W_o (swish(W_g x) ⊙ GroupNorm_H(o))

Causal form: ``causal_linear_scan`` with log-decay log γ_h (chunkwise); decoding state S [B, H, D, D].
Non-causal form: bidirectional decay γ^|i-j|, computed as a forward scan plus a backward scan minus the
diagonal (so it stays O(L) in memory). Key padding: padded positions get k = v = 0 and no decay, so they
leave the state unchanged and the distance |i-j| counts usable positions only.
No xPos/rotary position embedding (RetNet's xPos is left out: the decay alone carries position here), and
no extra score normalisation (the per-head GroupNorm makes the output invariant to a per-token head scale).

Backends: ``torch`` and ``fla`` (``chunk_retention``; ``chunk_simple_gla`` with per-position log-decay when a
key padding mask is given), CUDA tensors only.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from suite.attention.base import AttentionModule, compute_dtype, wants_fast_path
from suite.attention.registry import register_attention
from suite.attention.scan import causal_linear_scan


def retention_log_decays(num_heads: int) -> torch.Tensor:
    """log γ_h = log(1 - 2^(-5-h)) for h = 0..H-1, fp32 [H]."""
    h = torch.arange(num_heads, dtype=torch.float64)
    return torch.log1p(-torch.pow(2.0, -5.0 - h)).float()


@register_attention("retention", "RetNet multi-scale retention, fixed per-head decays, GroupNorm + swish gate")
class Retention(AttentionModule):
    """Multi-scale retention; decoding state S [B, H, D, D] (fp32)."""

    backends = ("torch", "fla")
    log_decay: torch.Tensor  # buffer [H], registered in __init__

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 chunk_size: int = 64, qkv_bias: bool = False, proj_bias: bool = True, qk_norm: bool = False) -> None:
        super().__init__(dim, num_heads, causal, backend)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.group_norm = nn.GroupNorm(num_heads, dim)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.register_buffer("log_decay", retention_log_decays(num_heads), persistent=False)
        self.init_qk_norm(qk_norm)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., dim] -> q (scaled by 1/√D), k, v [..., H, D]; with ``qk_norm``, q and k RMS-normalised per head
        first, as EA's are."""
        q, k, v = super().project_qkv(x)
        return self.q_norm(q) * self.head_dim ** -0.5, self.k_norm(k), v

    def _output(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """Per-head GroupNorm of o [..., H, D] (per token), swish gate from x, output projection."""
        flat = self.merge_heads(o).to(x.dtype)
        normed = self.group_norm(flat.reshape(-1, self.dim)).reshape(flat.shape)
        return self.proj(F.silu(self.gate(x)) * normed)

    # -- retention itself ------------------------------------------------------------------------------
    def _scan(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None, use_fla: bool,
              want_state: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal retention of q, k, v [B, L, H, D]; g [B, L, H] per-position log-decay, None = log γ_h everywhere."""
        if use_fla:
            if g is None:
                from fla.ops.retention import chunk_retention

                self.backend_used = "fla-chunk"
                return chunk_retention(q=q, k=k, v=v, scale=1.0, initial_state=None, output_final_state=want_state)
            from fla.ops.simple_gla import chunk_simple_gla

            self.backend_used = "fla-chunk-gla"
            return chunk_simple_gla(q=q, k=k, v=v, g=g.float(), scale=1.0, initial_state=None,
                                    output_final_state=want_state)
        self.backend_used = "torch"
        if g is None:
            g = self.log_decay.to(compute_dtype(v)).expand(q.shape[0], q.shape[1], -1)
        return causal_linear_scan(q, k, v, g, chunk_size=self.chunk_size)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None,
               want_state: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """q, k, v [B, L, H, D] -> (o [B, L, H, D], S [B, H, D, D] when want_state and causal)."""
        use_fla = wants_fast_path(self, v, None)
        g = None
        if key_padding_mask is not None:
            keep = key_padding_mask[:, :, None, None].to(k.dtype)
            k, v = k * keep, v * keep
            g = self.log_decay.to(compute_dtype(v)) * key_padding_mask[:, :, None].to(compute_dtype(v))
        if self.causal:
            o, state = self._scan(q, k, v, g, use_fla, want_state)
            return o, (state.float() if state is not None and state.dtype != torch.float64 else state)
        forward, _ = self._scan(q, k, v, g, use_fla, False)
        # backward scan over the flipped sequence: the decay between usable i < j becomes Σ_{s=i..j-1} g_s,
        # which counts the same usable positions as Σ_{s=i+1..j} g_s because both ends are usable
        backward, _ = self._scan(q.flip(1), k.flip(1), v.flip(1), None if g is None else g.flip(1), use_fla, False)
        dt = compute_dtype(v)
        diagonal = (q.to(dt) * k.to(dt)).sum(-1, keepdim=True) * v.to(dt)
        if use_fla:
            self.backend_used += "-bidirectional"
        return forward.to(dt) + backward.flip(1).to(dt) - diagonal, None

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x)
        o, _ = self.attend(q, k, v, key_padding_mask)
        return self._output(x, o)

    # -- decoding ------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Empty state S [B, H, D, D] zeros (fp32, fp64 when dtype is fp64)."""
        self.check_step_allowed()
        dt = torch.promote_types(dtype or torch.float32, torch.float32)
        return torch.zeros(batch, self.num_heads, self.head_dim, self.head_dim, device=device, dtype=dt)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t [B, dim] -> (y_t [B, dim], γ S + k_t v_tᵀ)."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x_t)
        dt = state.dtype
        gamma = torch.exp(self.log_decay.to(dt))[None, :, None, None]
        state = gamma * state + torch.einsum("bhf,bhv->bhfv", k.to(dt), v.to(dt))
        o = torch.einsum("bhf,bhfv->bhv", q.to(dt), state)
        self.backend_used = "torch-recurrent"
        return self._output(x_t, o), state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel causal forward over a prompt x [B, L, dim] that also returns S after it."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x)
        o, state = self.attend(q, k, v, want_state=True)
        assert state is not None  # causal with want_state=True
        return self._output(x, o), state
