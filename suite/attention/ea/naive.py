"""EA's naive O(L²) reference (DESIGN.md §2): the direct formula o_i = Σ_j ŵ_ij v_j / Σ_j ŵ_ij, differentiable by
autograd, and the state a sequence leaves. What every backend is checked against (in fp64).

Shapes: q, k, v are [B, L, H, D]; a key padding mask is [B, L] bool (True = keep); a recurrent state is
[B, H, 2, t+1, D] fp32 holding A_n = Σ φ_n(k) v (index 0) and B_n = Σ φ_n(k) (index 1) for n = 0..t.
"""
from __future__ import annotations

import math

import torch

from suite.attention.ea.torch_op import key_features


def ea_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: int, causal: bool,
             key_padding_mask: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
             rows: torch.Tensor | None = None) -> torch.Tensor:
    """Direct formula o_i = Σ_j ŵ_ij v_j / Σ_j ŵ_ij in q's dtype (use fp64 for a reference).

    ŵ_ij = T_t(q_i k_j) exp(-k_j²/2) per channel. ``rows`` (LongTensor) restricts the queries computed, for
    checking long sequences; the result is then [B, len(rows), H, D]. ``initial_state`` adds a prefix
    summarised as a state. A query with no usable key (and no state) outputs 0. Differentiable by autograd.
    """
    B, L, H, D = q.shape
    dtype = q.dtype
    qi = q if rows is None else q[:, rows]
    pos_i = torch.arange(L, device=q.device) if rows is None else rows.to(q.device)
    x = qi[:, :, None] * k.to(dtype)[:, None]                    # [B, Li, L, H, D]
    taylor = sum(x ** n / math.factorial(n) for n in range(order + 1))
    w = taylor * torch.exp(-0.5 * k.to(dtype) ** 2)[:, None]
    allowed = torch.ones(len(pos_i), L, dtype=torch.bool, device=q.device)
    if causal:
        allowed = pos_i[:, None] >= torch.arange(L, device=q.device)[None, :]
    allowed = allowed[None].expand(B, -1, -1)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, :]
    allowed5 = allowed[..., None, None]  # a key a query may not see contributes an exact 0, whatever it holds
    num = torch.where(allowed5, w * v.to(dtype)[:, None], torch.zeros_like(w)).sum(2)
    den = torch.where(allowed5, w, torch.zeros_like(w)).sum(2)
    usable = allowed.any(-1)[..., None, None].expand_as(den)
    if initial_state is not None:
        st = initial_state.to(dtype)
        for n in range(order + 1):
            an = qi ** n / math.factorial(n)
            num = num + an * st[:, :, 0, n][:, None]
            den = den + an * st[:, :, 1, n][:, None]
        usable = usable | (st[:, :, 1].abs().sum(2) > 0)[:, None]
    safe = torch.where(usable, den, torch.ones_like(den))
    return torch.where(usable, num / safe, torch.zeros_like(num))


def ea_naive_state(k: torch.Tensor, v: torch.Tensor, order: int, key_padding_mask: torch.Tensor | None = None,
                   initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """State after the whole sequence: initial_state + Σ_j φ_n(k_j)[v_j, 1] -> [B, H, 2, t+1, D] fp32."""
    B, L, H, D = k.shape
    e = key_features(k, key_padding_mask).double()
    kd, vd = k.double(), v.double()
    rows = []
    for n in range(order + 1):
        phi = kd ** n * e
        rows.append(torch.stack([(phi * vd).sum(1), phi.sum(1)], dim=1))  # [B, 2, H, D]
    state = torch.stack(rows, dim=2).permute(0, 3, 1, 2, 4)               # [B, H, 2, t+1, D]
    if initial_state is not None:
        state = state + initial_state.double()
    return state.float()
