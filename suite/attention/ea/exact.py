"""Exact element-wise attention: the quadratic formula that ``ea`` approximates with a Taylor polynomial.

Per channel c:  w_ijc = exp(-(q_ic - k_jc)²/2),   o_ic = Σ_j w_ijc v_jc / Σ_j w_ijc.

Same projections and q/k RMS normalisation as ``ea`` (``EAAttention`` subclass): the only difference is the
exact exp instead of the order-t polynomial, so ``ea`` vs ``ea_exact`` isolates the cost of the
approximation. Computed in query tiles × key tiles with a per-channel running max (online softmax over
s_ij = -(q_i - k_j)²/2), so rows whose keys are all far away do not underflow to 0/0, and memory is
O(tile_q · tile_k · H · D) per step; under autograd each query tile is checkpointed (recomputed in backward),
so training memory stays O(L · tile_k · H · D) too. A row with no usable key outputs 0.
Exact EA has no finite recurrent state: decoding keeps every key and value (a cache, like softmax).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from suite.attention.base import compute_dtype, safe_divide
from suite.attention.ea import EAAttention
from suite.attention.kv_cache import KVCache
from suite.attention.registry import register_attention


def _query_tile(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None,
                q_start: int, causal: bool, k_tile: int) -> torch.Tensor:
    """Exact EA for one tile of queries q [B, Tq, H, D] at positions q_start.. over keys k, v [B, Lk, H, D]."""
    B, Tq, H, D = q.shape
    m = torch.full_like(q, float("-inf"))
    num, den = torch.zeros_like(q), torch.zeros_like(q)
    pos_q = torch.arange(q_start, q_start + Tq, device=q.device)
    k_end = min(k.shape[1], q_start + Tq) if causal else k.shape[1]
    for ks in range(0, k_end, k_tile):
        kt, vt = k[:, ks:ks + k_tile], v[:, ks:ks + k_tile]
        s = -0.5 * (q[:, :, None] - kt[:, None]) ** 2                                 # [B, Tq, Tk, H, D]
        allowed = torch.ones(B, Tq, kt.shape[1], dtype=torch.bool, device=q.device)
        if causal:
            allowed = allowed & (pos_q[:, None] >= torch.arange(ks, ks + kt.shape[1], device=q.device))[None]
        if keep is not None:
            allowed = allowed & keep[:, None, ks:ks + k_tile]
        s = s.masked_fill(~allowed[..., None, None], float("-inf"))
        m_new = torch.maximum(m, s.detach().amax(2))                                   # the shift cancels
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        w = torch.exp(s - shift[:, :, None])
        carry = torch.exp(m - shift)
        num = carry * num + torch.einsum("bijhd,bjhd->bihd", w, vt)
        den = carry * den + w.sum(2)
        m = m_new
    return safe_divide(num, den)


def ea_exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                       key_padding_mask: torch.Tensor | None = None, q_offset: int = 0,
                       q_tile: int = 64, k_tile: int = 64) -> torch.Tensor:
    """Exact element-wise attention, tiled. q [B, Lq, H, D]; k, v [B, Lk, H, D]; key_padding_mask [B, Lk] bool.

    Query i sits at position q_offset + i (for causal masking against a longer key cache). Returns o
    [B, Lq, H, D] in v's dtype (fp32 math, fp64 for fp64 inputs); a query with no usable key outputs 0.
    """
    dt = compute_dtype(v)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outs = []
    for qs in range(0, q.shape[1], q_tile):
        args = (q[:, qs:qs + q_tile], k, v, key_padding_mask, q_offset + qs, causal, k_tile)
        outs.append(checkpoint(_query_tile, *args, use_reentrant=False) if recompute else _query_tile(*args))
    return torch.cat(outs, dim=1)


def ea_exact_direct(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The plain [B, L, L, H, D] formula in q's dtype (use fp64): the reference the tiled path is checked against,
    and the exact weights the Taylor approximation is measured against (``suite.attention.ea.approx``)."""
    w = torch.exp(-0.5 * (q[:, :, None] - k[:, None]) ** 2)
    L = q.shape[1]
    allowed = torch.ones(q.shape[0], L, k.shape[1], dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed & torch.ones(L, k.shape[1], dtype=torch.bool, device=q.device).tril()[None]
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, :]
    w = w * allowed[..., None, None].to(w.dtype)
    return safe_divide((w * v[:, None]).sum(2), w.sum(2))


@register_attention("ea_exact", "exact element-wise attention exp(-(q-k)^2/2), tiled O(L^2) (EA's projections)")
class EAExactAttention(EAAttention):
    """EA with the exact kernel: ``ea``'s projections and q/k normalisation, exp instead of the polynomial."""

    backends = ("torch",)

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 qk_norm: bool = True, qkv_bias: bool = True, proj_bias: bool = True, q_tile: int = 64,
                 k_tile: int = 64) -> None:
        super().__init__(dim, num_heads, causal=causal, order=0, backend=backend, qk_norm=qk_norm, qkv_bias=qkv_bias,
                         proj_bias=proj_bias)
        if q_tile < 1 or k_tile < 1:
            raise ValueError(f"q_tile and k_tile must be >= 1, got {q_tile}, {k_tile}")
        self.q_tile, self.k_tile = q_tile, k_tile

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Exact EA over q, k, v [B, L, H, D]."""
        self.backend_used = "torch-tiled"
        out = ea_exact_attention(q, k, v, self.causal, key_padding_mask, q_tile=self.q_tile, k_tile=self.k_tile)
        return out.to(v.dtype)

    def reference_forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                          rows: torch.Tensor | None = None) -> torch.Tensor:
        """The tiled formula in fp64 on the same projections, for query positions ``rows`` (all when None)."""
        q, k, v = (t.double() for t in self.project_qkv(x))
        if rows is not None:
            rows = rows.to(x.device)
            outs = [ea_exact_attention(q[:, int(r):int(r) + 1], k, v, self.causal, key_padding_mask, q_offset=int(r),
                                       k_tile=self.k_tile) for r in rows]
            o = torch.cat(outs, dim=1)
        else:
            o = ea_exact_attention(q, k, v, self.causal, key_padding_mask, q_tile=self.q_tile, k_tile=self.k_tile)
        return self.proj(self.merge_heads(o.to(x.dtype)))

    # -- decoding with a key/value cache (exact EA has no finite state) ----------------------------------
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty cache of keys (normalised) and values [B, L, H, D] that grow by one position per step."""
        self.check_step_allowed()
        return KVCache.empty(batch, self.num_heads, self.head_dim, device, dtype or self.proj.weight.dtype)

    def step(self, x_t: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """x_t [B, dim] -> (y_t [B, dim], cache with this token's key and value written at its end)."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x_t[:, None])
        state = state.append(k, v)
        o = ea_exact_attention(q, state.k.to(q.dtype), state.v.to(q.dtype), causal=False, k_tile=self.k_tile)
        self.backend_used = "torch-kvcache"
        return self.proj(self.merge_heads(o.to(x_t.dtype)))[:, 0], state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """Parallel causal forward over a prompt x [B, L, dim] that also returns the filled cache."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x)
        return self.proj(self.merge_heads(self.attend(q, k, v))), KVCache(k.detach(), v.detach())

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, causal={self.causal}, backend={self.backend}, "
                f"q_tile={self.q_tile}, k_tile={self.k_tile}")
