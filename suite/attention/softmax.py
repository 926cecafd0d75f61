"""Softmax attention through ``F.scaled_dot_product_attention`` (FlashAttention where torch picks or is told to).

Backends: ``auto`` lets torch choose; ``flash``, ``efficient``, ``cudnn`` and ``math`` force one SDPA kernel
(``torch.nn.attention.sdpa_kernel``); ``torch`` is the explicit fp32 softmax(QK^T/sqrt(d))V reference.
Decoding keeps a KV cache (``suite.attention.kv_cache``) that grows by one key and value per token, written in
place.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from suite.attention.base import AttentionModule
from suite.attention.kv_cache import KVCache
from suite.attention.registry import register_attention

_SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def sdpa_backend_name(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                      mask: torch.Tensor | None) -> str:
    """The SDPA kernel torch would pick for these inputs (first usable in its priority order)."""
    if q.device.type != "cuda":
        return "cpu-" + ("math" if mask is not None else "flash")
    from torch.backends.cuda import (
        SDPAParams,
        can_use_cudnn_attention,
        can_use_efficient_attention,
        can_use_flash_attention,
    )

    try:
        params = SDPAParams(q, k, v, mask, 0.0, causal, False)
    except TypeError:  # older signature without enable_gqa
        params = SDPAParams(q, k, v, mask, 0.0, causal)  # type: ignore[call-arg]  # older torch; stubs have the new form
    checks = {"flash": can_use_flash_attention, "efficient": can_use_efficient_attention,
              "cudnn": can_use_cudnn_attention}
    for backend in torch._C._get_sdp_priority_order():
        name = {1: "flash", 2: "efficient", 3: "cudnn", 0: "math"}.get(int(backend))
        if name == "math":
            return "math"
        if name in checks and checks[name](params, False):
            return name
    return "math"


def softmax_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                      key_padding_mask: torch.Tensor | None = None,
                      q_positions: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for q [B, Lq, H, D], k, v [B, Lk, H, D]; query i sits at q_positions[i]
    (default 0..Lq-1), which matters for the causal mask. A query with no usable key outputs 0.
    """
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if causal:
        pos_q = torch.arange(q.shape[1], device=q.device) if q_positions is None else q_positions.to(q.device)
        allowed = pos_q[:, None] >= torch.arange(k.shape[1], device=q.device)[None, :]
    allowed = allowed[None, None]
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhij,bjhd->bihd", weights, v)


@register_attention("softmax", "multi-head softmax attention via F.scaled_dot_product_attention")
class SoftmaxAttention(AttentionModule):
    """Multi-head softmax attention. ``qk_norm=True`` RMS-normalises q and k per head with learnable gains, exactly
    as EA does (the control that tells EA's effect from QK-norm's); off by default, as in standard softmax."""

    backends = ("torch", "auto-sdpa", "flash", "efficient", "cudnn", "math")

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 qkv_bias: bool = True, proj_bias: bool = True, qk_norm: bool = False) -> None:
        super().__init__(dim, num_heads, causal, backend)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.init_qk_norm(qk_norm)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., dim] -> q, k, v [..., H, D]; with ``qk_norm``, q and k RMS-normalised per head as EA's are."""
        q, k, v = super().project_qkv(x)
        return self.q_norm(q), self.k_norm(k), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, H, D] in and out."""
        if self.backend == "torch":
            self.backend_used = "torch-reference"
            return softmax_reference(q.float(), k.float(), v.float(), self.causal, key_padding_mask).to(v.dtype)
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        mask = None
        if key_padding_mask is not None:
            mask = key_padding_mask[:, None, None, :]
            if self.causal:
                L = q.shape[1]
                mask = mask & torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        causal = self.causal and mask is None
        if self.backend in _SDPA_BACKENDS:
            self.backend_used = f"sdpa-{self.backend}"
            with sdpa_kernel(_SDPA_BACKENDS[self.backend]):
                out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, is_causal=causal)
        else:
            self.backend_used = "sdpa-" + sdpa_backend_name(qt, kt, vt, causal, mask)
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, is_causal=causal)
        out = out.transpose(1, 2)
        if key_padding_mask is not None:  # rows with no usable key: 0, as in the reference
            assert mask is not None  # built above from key_padding_mask
            usable = mask.any(-1).squeeze(1)  # [B, Lq]
            out = out * usable[..., None, None].to(out.dtype)
        return out

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x)
        return self.proj(self.merge_heads(self.attend(q, k, v, key_padding_mask)))

    def reference_forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                          rows: torch.Tensor | None = None) -> torch.Tensor:
        """fp64 softmax attention on the same projections, only for query positions ``rows``."""
        q, k, v = (t.double() for t in self.project_qkv(x))
        rows = torch.arange(x.shape[1], device=x.device) if rows is None else rows.to(x.device)
        out = softmax_reference(q[:, rows], k, v, self.causal, key_padding_mask, q_positions=rows)
        return self.proj(self.merge_heads(out.to(x.dtype)))

    # -- decoding with a KV cache ------------------------------------------------------------------
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for keys and values [B, L, H, D] that grow by one position per step."""
        self.check_step_allowed()
        return KVCache.empty(batch, self.num_heads, self.head_dim, device, dtype or self.proj.weight.dtype)

    def step(self, x_t: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """x_t [B, dim] -> y_t [B, dim]; the cache with this token's key and value written at its end."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x_t[:, None])
        state = state.append(k, v)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), state.k.transpose(1, 2).to(q.dtype),
                                             state.v.transpose(1, 2).to(q.dtype))
        self.backend_used = "sdpa-kvcache"
        y = self.proj(self.merge_heads(out.transpose(1, 2)))[:, 0]
        return y, state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """Parallel forward over a prompt x [B, L, dim] that also returns the filled KV cache."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x)
        return self.proj(self.merge_heads(self.attend(q, k, v))), KVCache(k.detach(), v.detach())
