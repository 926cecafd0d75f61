"""Linear attention with the elu+1 feature map, normalised (Katharopoulos et al. 2020).

    φ(x) = elu(x) + 1      o_i = φ(q_i) S_i / φ(q_i) z_i,   S_i = Σ_{j≤i} φ(k_j) v_jᵀ,  z_i = Σ_{j≤i} φ(k_j)

Non-causal: S, z sum over every usable key (two matmuls). Causal: ``suite.attention.scan.causal_linear_scan``,
a chunkwise form (quadratic inside a chunk, a carried state across chunks) whose memory is O(L·C) for chunk
size C, shared with ``based`` and ``retention``. Decoding state: S [B, H, D, D] and
z [B, H, D], fp32.

Backends: ``torch`` (the reference above) and ``fla`` (flash-linear-attention's ``chunk_linear_attn``, causal
form on CUDA tensors). ``auto`` takes fla when it can run and records which one did in ``backend_used``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from suite.attention.base import AttentionModule, safe_divide, wants_fast_path
from suite.attention.registry import register_attention
from suite.attention.scan import normalised_feature_attention


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1.0


# -- the module ------------------------------------------------------------------------------------------

@register_attention("linear", "linear attention, elu+1 feature map, normalised (Katharopoulos et al. 2020)")
class LinearAttention(AttentionModule):
    """Multi-head normalised linear attention; decoding state S [B, H, D, D] and z [B, H, D] (fp32)."""

    backends = ("torch", "fla")

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 chunk_size: int = 64, qkv_bias: bool = False, proj_bias: bool = True, qk_norm: bool = False) -> None:
        super().__init__(dim, num_heads, causal, backend)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.init_qk_norm(qk_norm)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., dim] -> φ(q), φ(k), v, each [..., H, D] (q and k already feature-mapped; with ``qk_norm``
        RMS-normalised per head before the feature map, as EA's are)."""
        q, k, v = super().project_qkv(x)
        return elu_feature_map(self.q_norm(q)), elu_feature_map(self.k_norm(k)), v

    def attend(self, qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None,
               want_state: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """φ(q), φ(k), v [B, L, H, D] -> (o [B, L, H, D], state {S, z} when want_state)."""
        if key_padding_mask is not None:
            kf = kf * key_padding_mask[:, :, None, None].to(kf.dtype)
        no_kernel = (None if self.causal
                     else "fla has no non-causal linear-attention kernel (it is two matmuls in torch)")
        if wants_fast_path(self, v, no_kernel):
            return self._attend_fla(qf, kf, v, want_state)
        self.backend_used = "torch"
        return normalised_feature_attention(qf, kf, v, self.causal, self.chunk_size, want_state)

    def _attend_fla(self, qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor,
                    want_state: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """fla's chunk kernel for the numerator; the denominator φ(q_i)·Σ_{j≤i} φ(k_j) is a cumsum here."""
        from fla.ops.linear_attn import chunk_linear_attn

        self.backend_used = "fla-chunk"
        num, S = chunk_linear_attn(q=qf, k=kf, v=v, scale=1.0, initial_state=None,
                                   output_final_state=want_state, normalize=False)
        z_run = torch.cumsum(kf.float(), dim=1)
        den = (qf.float() * z_run).sum(-1, keepdim=True)
        out = safe_divide(num.float(), den).to(v.dtype)
        state = {"S": S.float(), "z": z_run[:, -1]} if want_state else None
        return out, state

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        qf, kf, v = self.project_qkv(x)
        out, _ = self.attend(qf, kf, v, key_padding_mask)
        return self.proj(self.merge_heads(out))

    # -- decoding ------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Empty state: S [B, H, D, D] and z [B, H, D] zeros (fp32, fp64 when dtype is fp64)."""
        self.check_step_allowed()
        dt = torch.promote_types(dtype or torch.float32, torch.float32)
        H, D = self.num_heads, self.head_dim
        return {"S": torch.zeros(batch, H, D, D, device=device, dtype=dt),
                "z": torch.zeros(batch, H, D, device=device, dtype=dt)}

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t [B, dim] -> (y_t [B, dim], state with this token's φ(k) vᵀ and φ(k) added)."""
        self.check_step_allowed()
        qf, kf, v = self.project_qkv(x_t)                                   # [B, H, D]
        dt = state["S"].dtype
        S = state["S"] + torch.einsum("bhf,bhv->bhfv", kf.to(dt), v.to(dt))
        z = state["z"] + kf.to(dt)
        num = torch.einsum("bhf,bhfv->bhv", qf.to(dt), S)
        den = (qf.to(dt) * z).sum(-1, keepdim=True)
        self.backend_used = "torch-recurrent"
        y = self.proj(self.merge_heads(safe_divide(num, den).to(x_t.dtype)))
        return y, {"S": S, "z": z}

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Parallel causal forward over a prompt x [B, L, dim] that also returns the state after it."""
        self.check_step_allowed()
        qf, kf, v = self.project_qkv(x)
        out, state = self.attend(qf, kf, v, want_state=True)
        assert state is not None  # want_state=True
        return self.proj(self.merge_heads(out)), state
