"""The EA layer: ``EAAttention`` (registered as ``ea``), x [B, L, dim] -> qkv -> per-head RMS-normalised q, k ->
the EA op -> proj, with its recurrent decoding (``init_state``, ``step``, ``prefill``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from suite.attention.base import AttentionModule
from suite.attention.ea.naive import ea_naive
from suite.attention.ea.op import check_order, ea_attention, ea_step, empty_state, path_used, resolve_backend
from suite.attention.registry import register_attention


@register_attention("ea", "element-wise attention, order-t Taylor, O(tLD) (Triton on CUDA)")
class EAAttention(AttentionModule):
    """Multi-head element-wise attention: x -> qkv -> per-head RMS-normalised q, k -> EA -> proj.

    q and k are RMS-normalised over each head's channels (with a learned per-channel gain, initialised to
    1) before EA, so each channel of q and k starts near unit scale. Why: the Taylor polynomial T_t(x) is a
    good stand-in for exp(x) only while |x| = |q_c k_c| stays a few units, and the key weight exp(-k²/2)
    vanishes for |k| >> 1; unnormalised projections drift out of that range during training. The gains
    stay learnable so the model can sharpen attention deliberately. ``qk_norm=False`` turns this off.
    """

    backends: tuple[str, ...] = ("naive", "torch", "triton")

    def __init__(self, dim: int, num_heads: int, causal: bool = False, order: int = 6, backend: str = "auto",
                 qk_norm: bool = True, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__(dim, num_heads, causal, backend)
        check_order(order)
        self.order = order
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.init_qk_norm(qk_norm)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, dim] -> q, k, v [B, L, H, D] (q and k RMS-normalised per head, with learned gains)."""
        q, k, v = super().project_qkv(x)
        return self.q_norm(q), self.k_norm(k), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """EA over q, k, v [B, L, H, D]."""
        backend = resolve_backend(self.backend, q.device)
        self.backend_used = path_used(backend, q)
        return ea_attention(q, k, v, self.order, self.causal, key_padding_mask, backend=backend)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x)
        return self.proj(self.merge_heads(self.attend(q, k, v, key_padding_mask)))

    def reference_forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                          rows: torch.Tensor | None = None) -> torch.Tensor:
        """The naive O(L²) formula in fp64 on the same projections, for query positions ``rows``."""
        q, k, v = (t.double() for t in self.project_qkv(x))
        B, L, H, D = q.shape
        rows = torch.arange(L, device=x.device) if rows is None else rows.to(x.device)
        per_chunk = max(1, (1 << 24) // max(1, B * L * H * D))
        outs = [ea_naive(q, k, v, self.order, self.causal, key_padding_mask, rows=rows[i:i + per_chunk])
                for i in range(0, len(rows), per_chunk)]
        return self.proj(self.merge_heads(torch.cat(outs, dim=1).to(x.dtype)))

    # the decoding state is Any, as in AttentionModule: EA's is a tensor, ``ea_exact``'s (a subclass) a KV cache
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> Any:
        """The empty recurrent state [B, H, 2, order+1, D] fp32 (its size does not depend on L)."""
        self.check_step_allowed()
        return empty_state(batch, self.num_heads, self.head_dim, self.order, device)

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """x_t [B, dim] -> (y_t [B, dim], state)."""
        self.check_step_allowed()
        q, k, v = (t[:, 0] for t in self.project_qkv(x_t[:, None]))
        o, state = ea_step(q, k, v, state, self.order)
        self.backend_used = "torch-step"
        return self.proj(self.merge_heads(o)), state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Parallel causal forward over x [B, L, dim] that also returns the state after the last token."""
        self.check_step_allowed()
        q, k, v = self.project_qkv(x)
        backend = resolve_backend(self.backend, q.device)
        self.backend_used = path_used(backend, q)
        o, state = ea_attention(q, k, v, self.order, True, output_final_state=True, backend=backend)
        return self.proj(self.merge_heads(o)), state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", order={self.order}"
