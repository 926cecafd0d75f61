"""Based: linear attention with the 2nd-order Taylor feature map (Arora et al. 2024; HazyResearch/based, Zoology).

q and k are projected to a small feature dim d (option ``feature_dim``, 16 as in Based) per head, then

    φ(x) = [1, x / d^¼, vec(x xᵀ) / (√2 √d)]          (1 + d + d² features; 273 for d = 16)
    φ(q)·φ(k) = 1 + s + s²/2,  s = q·k / √d          (the Taylor expansion of exp(s), always ≥ 1/2)
    o_i = Σ_j φ(q_i)·φ(k_j) v_j / Σ_j φ(q_i)·φ(k_j)

Causal form: ``causal_linear_scan`` (chunkwise); decoding state S [B, H, 1+d+d², D] and z [B, H, 1+d+d²].

Backends: ``torch`` (the reference above) and ``fla`` (flash-linear-attention's ``parallel_based``, which
computes the same 1 + s + s²/2 scores from the raw d-dim q, k; causal form on CUDA tensors, no key padding
mask: a padded raw key still scores 1 there).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from suite.attention.base import AttentionModule, compute_dtype, safe_divide, wants_fast_path
from suite.attention.registry import register_attention
from suite.attention.scan import normalised_feature_attention


def taylor_features(x: torch.Tensor) -> torch.Tensor:
    """x [..., d] -> φ(x) [..., 1 + d + d²] with φ(x)·φ(y) = 1 + x·y/√d + (x·y)²/(2d)."""
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).flatten(-2) / (math.sqrt(2.0) * math.sqrt(d))
    return torch.cat([torch.ones_like(x[..., :1]), x / d ** 0.25, outer], dim=-1)


@register_attention("based", "Based: 2nd-order Taylor feature-map linear attention (feature_dim=16)")
class BasedAttention(AttentionModule):
    """Multi-head Based linear attention with q, k projected to ``feature_dim`` per head."""

    backends = ("torch", "fla")

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 feature_dim: int = 16, chunk_size: int = 64, qkv_bias: bool = False, proj_bias: bool = True,
                 qk_norm: bool = False) -> None:
        super().__init__(dim, num_heads, causal, backend)
        if feature_dim < 1 or chunk_size < 1:
            raise ValueError(f"feature_dim and chunk_size must be >= 1, got {feature_dim}, {chunk_size}")
        self.feature_dim, self.chunk_size = feature_dim, chunk_size
        self.q_proj = nn.Linear(dim, num_heads * feature_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, num_heads * feature_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.o_proj = nn.Linear(dim, dim, bias=proj_bias)
        self.init_qk_norm(qk_norm, feature_dim)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., dim] -> q, k [..., H, feature_dim] and v [..., H, D] (before the feature map; with ``qk_norm``,
        q and k RMS-normalised per head over their features, as EA's are)."""
        q = self.q_norm(self.q_proj(x).unflatten(-1, (self.num_heads, self.feature_dim)))
        k = self.k_norm(self.k_proj(x).unflatten(-1, (self.num_heads, self.feature_dim)))
        return q, k, self.split_heads(self.v_proj(x))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None,
               want_state: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Raw q, k [B, L, H, d] and v [B, L, H, D] -> (o [B, L, H, D], state {S, z} when want_state)."""
        blocked = None
        if not self.causal:
            blocked = "fla's Based kernels are causal only"
        elif key_padding_mask is not None:
            blocked = "fla's parallel_based takes no key padding mask"
        if wants_fast_path(self, v, blocked):
            return self._attend_fla(q, k, v, want_state)
        self.backend_used = "torch"
        dt = compute_dtype(v)
        qf, kf = taylor_features(q.to(dt)), taylor_features(k.to(dt))
        if key_padding_mask is not None:
            kf = kf * key_padding_mask[:, :, None, None].to(dt)
        return normalised_feature_attention(qf, kf, v, self.causal, self.chunk_size, want_state)

    def _attend_fla(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    want_state: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """fla's quadratic-tiled causal kernel; the decoding state (a plain sum over the prompt) is built here."""
        from fla.ops.based import parallel_based

        self.backend_used = "fla-parallel"
        out = parallel_based(q, k, v, scale=self.feature_dim ** -0.5, use_norm=True)
        state = None
        if want_state:
            kf = taylor_features(k.float())
            state = {"S": torch.einsum("bjhf,bjhv->bhfv", kf, v.float()), "z": kf.sum(1)}
        return out, state

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x)
        out, _ = self.attend(q, k, v, key_padding_mask)
        return self.o_proj(self.merge_heads(out))

    # -- decoding ------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Empty state: S [B, H, 1+d+d², D] and z [B, H, 1+d+d²] zeros (fp32, fp64 when dtype is fp64)."""
        self.check_step_allowed()
        dt = torch.promote_types(dtype or torch.float32, torch.float32)
        n_feat = 1 + self.feature_dim + self.feature_dim ** 2
        return {"S": torch.zeros(batch, self.num_heads, n_feat, self.head_dim, device=device, dtype=dt),
                "z": torch.zeros(batch, self.num_heads, n_feat, device=device, dtype=dt)}

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t [B, dim] -> (y_t [B, dim], state with φ(k_t) v_tᵀ and φ(k_t) added)."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x_t)
        dt = state["S"].dtype
        qf, kf = taylor_features(q.to(dt)), taylor_features(k.to(dt))
        S = state["S"] + torch.einsum("bhf,bhv->bhfv", kf, v.to(dt))
        z = state["z"] + kf
        num = torch.einsum("bhf,bhfv->bhv", qf, S)
        den = (qf * z).sum(-1, keepdim=True)
        self.backend_used = "torch-recurrent"
        return self.o_proj(self.merge_heads(safe_divide(num, den).to(x_t.dtype))), {"S": S, "z": z}

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Parallel causal forward over a prompt x [B, L, dim] that also returns the state after it."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x)
        out, state = self.attend(q, k, v, want_state=True)
        assert state is not None  # want_state=True
        return self.o_proj(self.merge_heads(out)), state
