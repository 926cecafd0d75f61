"""The chunkwise scans of the linear-attention family, shared by ``linear``, ``based`` and ``retention``.

- ``causal_linear_scan``: S_t = exp(g_t) S_{t-1} + k_t v_tᵀ, o_t = q_t S_t, chunkwise (quadratic inside a chunk,
  a carried state across chunks), O(L·C) memory for chunk size C.
- ``normalised_feature_attention``: o_i = φ(q_i)·Σ_j φ(k_j) v_j / φ(q_i)·Σ_j φ(k_j), non-causal or causal.
"""
from __future__ import annotations

import torch

from suite.attention.base import compute_dtype, safe_divide


def causal_linear_scan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None = None,
                       initial_state: torch.Tensor | None = None,
                       chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise causal linear attention with an optional per-position decay.

    q, k: [B, L, H, F] (already feature-mapped and scaled); v: [B, L, H, V]; log_decay: [B, L, H], ≤ 0, or None
    (no decay); initial_state: [B, H, F, V] or None. The recurrence it computes is
        S_t = exp(g_t) S_{t-1} + k_t v_tᵀ,    o_t = q_t S_t
    Returns (o [B, L, H, V] in the compute dtype, S_L [B, H, F, V]). Every exponent is ≤ 0, so nothing overflows.
    """
    B, L, H, Fd = q.shape
    dt = compute_dtype(v)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    state = (torch.zeros(B, H, Fd, v.shape[-1], device=v.device, dtype=dt)
             if initial_state is None else initial_state.to(dt))
    outs = []
    for start in range(0, L, chunk_size):
        qc, kc, vc = (t[:, start:start + chunk_size] for t in (q, k, v))
        c = qc.shape[1]
        scores = torch.einsum("bihf,bjhf->bhij", qc, kc)
        below = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
        if log_decay is None:
            scores = scores.masked_fill(~below, 0.0)
            o = torch.einsum("bhij,bjhv->bihv", scores, vc) + torch.einsum("bihf,bhfv->bihv", qc, state)
            state = state + torch.einsum("bjhf,bjhv->bhfv", kc, vc)
        else:
            G = torch.cumsum(log_decay[:, start:start + chunk_size].to(dt), dim=1)      # [B, c, H]
            Gh = G.transpose(1, 2)                                                       # [B, H, c]
            exponent = (Gh[:, :, :, None] - Gh[:, :, None, :]).masked_fill(~below, float("-inf"))
            scores = scores * torch.exp(exponent)
            o = (torch.einsum("bhij,bjhv->bihv", scores, vc)
                 + torch.einsum("bihf,bhfv->bihv", qc * torch.exp(G)[..., None], state))
            to_end = torch.exp(G[:, -1:] - G)                                            # [B, c, H]
            state = (torch.exp(G[:, -1])[:, :, None, None] * state
                     + torch.einsum("bjhf,bjhv->bhfv", kc * to_end[..., None], vc))
        outs.append(o)
    return torch.cat(outs, dim=1), state


def normalised_feature_attention(qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, causal: bool,
                                 chunk_size: int, want_state: bool = False
                                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """o_i = φ(q_i)·Σ_j φ(k_j) v_j / φ(q_i)·Σ_j φ(k_j) over all j (non-causal) or j <= i (causal).

    qf, kf: features [B, L, H, F]; v [B, L, H, D]. Returns (o [B, L, H, D] like v, {S [B, H, F, D], z [B, H, F]}
    after the last position when causal and want_state, else None). Rows with a zero denominator give 0.
    """
    dt = compute_dtype(v)
    qf, kf, vd = qf.to(dt), kf.to(dt), v.to(dt)
    if not causal:
        S = torch.einsum("bjhf,bjhv->bhfv", kf, vd)
        num = torch.einsum("bihf,bhfv->bihv", qf, S)
        den = torch.einsum("bihf,bhf->bih", qf, kf.sum(1))[..., None]
        return safe_divide(num, den).to(v.dtype), None
    ones = torch.ones_like(vd[..., :1])
    o, S_aug = causal_linear_scan(qf, kf, torch.cat([vd, ones], dim=-1), chunk_size=chunk_size)
    out = safe_divide(o[..., :-1], o[..., -1:]).to(v.dtype)
    state = {"S": S_aug[..., :-1], "z": S_aug[..., -1]} if want_state else None
    return out, state
