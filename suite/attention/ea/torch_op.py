"""EA's O(tLD) PyTorch path (DESIGN.md §2): blockwise prefix sums and §2's analytic backward, as a custom
autograd.Function that recomputes the prefix sums in the backward instead of saving them, so it keeps only q, k, v
(O(LHD)) whatever t is; and one recurrent decoding step. On a CPU the torch backend runs the fused C kernel
(cpu_fused.py) instead where it can; this path runs elsewhere (it is gpu-check's fp64 reference on a GPU) and
where no C compiler builds that kernel.

Shapes: q, k, v are [B, L, H, D]; a key padding mask is [B, L] bool (True = keep); a recurrent state is
[B, H, 2, t+1, D] fp32 holding A_n = Σ φ_n(k) v (index 0) and B_n = Σ φ_n(k) (index 1) for n = 0..t.

    φ_n(k) = k^n exp(-k²/2)      a_n(q) = q^n / n!      o = Σ_n a_n(q) A_n / Σ_n a_n(q) B_n
"""
from __future__ import annotations

import math

import torch

from suite.attention.base import compute_dtype, safe_divide


def empty_state(batch: int, heads: int, head_dim: int, order: int, device=None) -> torch.Tensor:
    """The state of an empty prefix: zeros [B, H, 2, t+1, D] fp32."""
    return torch.zeros(batch, heads, 2, order + 1, head_dim, device=device, dtype=torch.float32)


def key_features(k: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """exp(-k²/2), zeroed where ``keep`` [B, L] is False; same shape as k, fp32."""
    kc = k.to(compute_dtype(k))
    e = torch.exp(kc * kc * -0.5)
    if keep is not None:
        e = e * keep[:, :, None, None].to(e.dtype)
    return e


def _state_term(state: torch.Tensor, n: int, which: int) -> torch.Tensor:
    """State row (A or B) for power n, shaped to broadcast against [B, L, H, D]: [B, 1, H, D]."""
    return state[:, :, which, n][:, None]


_SCAN_BLOCK = 32


def scan(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Inclusive prefix sum over dim 1 of x [B, L, ...] (suffix sum when ``reverse``).

    torch.cumsum over a non-innermost dimension is slow on CPUs (tens of times slower than a multiply), so
    on a CPU the scan runs blockwise: a triangular matrix product inside blocks of 32 rows (BLAS), and the block
    totals are scanned the same way, recursively, to give each block its carry. Elsewhere (a GPU, where this
    path is the fp64 reference of gpu-check) it is torch.cumsum: one kernel, and no look at the values, so no
    wait for the device.
    """
    B, L = x.shape[:2]
    if x.device.type != "cpu":
        return torch.flip(torch.cumsum(torch.flip(x, [1]), 1), [1]) if reverse else torch.cumsum(x, 1)
    if L <= _SCAN_BLOCK or not bool(torch.isfinite(x).all()):
        # a triangular product multiplies every row by 0 or 1, and 0 * NaN is NaN: a bad number would reach
        # the rows before it; cumsum keeps it where it belongs (the slow path, for bad inputs only)
        return torch.flip(torch.cumsum(torch.flip(x, [1]), 1), [1]) if reverse else torch.cumsum(x, 1)
    flat = x.reshape(B, L, -1)
    pad = (-L) % _SCAN_BLOCK
    if pad:
        zeros = flat.new_zeros(B, pad, flat.shape[2])
        flat = torch.cat([zeros, flat] if reverse else [flat, zeros], 1)
    blocks = flat.view(B, -1, _SCAN_BLOCK, flat.shape[2])
    ones = torch.ones(_SCAN_BLOCK, _SCAN_BLOCK, dtype=x.dtype, device=x.device)
    local = torch.matmul(ones.triu() if reverse else ones.tril(), blocks)   # [B, nb, C, M]
    totals = local[:, :, 0] if reverse else local[:, :, -1]                   # [B, nb, M]
    inclusive = scan(totals, reverse)
    zero = torch.zeros_like(inclusive[:, :1])
    carries = torch.cat([inclusive[:, 1:], zero], 1) if reverse else torch.cat([zero, inclusive[:, :-1]], 1)
    local += carries[:, :, None]
    out = local.view(B, -1, flat.shape[2])
    out = out[:, pad:] if reverse else out[:, :L]
    return out.reshape(x.shape)


def _prefix(x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Inclusive prefix sum over L (causal) or the total broadcast over L (non-causal); x [B, L, H, D]."""
    return scan(x) if causal else x.sum(1, keepdim=True)


def _suffix(x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Inclusive suffix sum over L (causal) or the total (non-causal)."""
    return scan(x, reverse=True) if causal else x.sum(1, keepdim=True)


def _forward_sums(q, k, v, e, order, causal, initial_state, with_grad_terms):
    """One sweep over n = 0..t: N, Z (and dN/dq, dZ/dq when asked), plus the final state.

    N = Σ_n q^n/n! A_n and Z = Σ_n q^n/n! B_n, [B, L, H, D] in q's dtype; dN = Σ_{n>=1} q^{n-1}/(n-1)! A_n
    (likewise dZ); state [B, H, 2, t+1, D]. The 1/n! factors ride on addcmul's scalar, so the loop keeps
    plain powers of q and of k.
    """
    N = torch.zeros_like(q)
    Z = torch.zeros_like(q)
    dN = torch.zeros_like(q) if with_grad_terms else None
    dZ = torch.zeros_like(q) if with_grad_terms else None
    qpow = torch.ones_like(q)   # q^n
    phi = e.clone()             # φ_n(k) = k^n e
    pv = torch.empty_like(q)
    finals = []
    for n in range(order + 1):
        torch.mul(phi, v, out=pv)
        A = _prefix(pv, causal)
        Bn = _prefix(phi, causal)
        if initial_state is not None:
            A = A + _state_term(initial_state, n, 0)
            Bn = Bn + _state_term(initial_state, n, 1)
        if n >= 1:
            if with_grad_terms:
                dN.addcmul_(qpow, A, value=1.0 / math.factorial(n - 1))
                dZ.addcmul_(qpow, Bn, value=1.0 / math.factorial(n - 1))
            qpow.mul_(q)
        N.addcmul_(qpow, A, value=1.0 / math.factorial(n))
        Z.addcmul_(qpow, Bn, value=1.0 / math.factorial(n))
        finals.append(torch.stack([A[:, -1], Bn[:, -1]], dim=1))  # [B, 2, H, D]
        if n < order:
            phi.mul_(k)
    state = torch.stack(finals, dim=2).permute(0, 3, 1, 2, 4).contiguous()
    return N, Z, dN, dZ, state


def _rows_per_block(x: torch.Tensor) -> int:
    """Rows of [B, L, H, D] per block of the causal path: on a CPU about 2^20 elements, so each op's temporaries
    stay cache-sized and no allocation is large enough to be fresh (and page-faulted) memory from the OS; on a
    GPU about 2^27 (the temporaries of an fp64 block stay near 10 GB, and few blocks mean few launches)."""
    B, _, H, D = x.shape
    budget = 1 << 20 if x.device.type == "cpu" else 1 << 27
    return max(64, budget // max(1, B * H * D))


def _blocked_forward_sums(q, k, v, e, order, causal, initial_state, with_grad_terms):
    """``_forward_sums`` over blocks of rows, the state carried from block to block (causal), same result."""
    L = q.shape[1]
    rows = _rows_per_block(q)
    if not causal or rows >= L:
        return _forward_sums(q, k, v, e, order, causal, initial_state, with_grad_terms)
    outs = [torch.empty_like(q) for _ in range(4 if with_grad_terms else 2)]
    state = initial_state
    for start in range(0, L, rows):
        block = slice(start, start + rows)
        *sums, state = _forward_sums(q[:, block], k[:, block], v[:, block], e[:, block], order, True, state,
                                     with_grad_terms)
        for out, part in zip(outs, sums):
            out[:, block] = part
    N, Z, dN, dZ = (outs + [None, None])[:4]
    return N, Z, dN, dZ, state


def _key_grads(q, k, v, e, gz, gzo, order, causal, carry):
    """dk, dv for a block of rows, and the suffix sums entering the block from the left.

    gz = g/Z, gzo = g o/Z [B, L, H, D]; carry [B, 2, t+1, H, D] holds Σ q^n gz and Σ q^n gzo over the rows after
    the block (None: no rows after it). Returns (dk, dv, carry including this block).
    """
    dk = torch.zeros_like(k)
    dv = torch.zeros_like(v)
    qpow = torch.ones_like(q)    # q^n
    phi_prev = None              # φ_{n-1}(k)
    phi = e                      # φ_n(k)
    totals = []
    for n in range(order + 1):
        c = 1.0 / math.factorial(n)
        G = _suffix(qpow * gz, causal)    # n! G_n
        Hn = _suffix(qpow * gzo, causal)  # n! H_n
        if carry is not None:
            G = G + carry[:, 0, n][:, None]
            Hn = Hn + carry[:, 1, n][:, None]
        totals.append(torch.stack([G[:, 0], Hn[:, 0]], dim=1))
        dv.addcmul_(phi, G, value=c)
        dphi = -k * phi if phi_prev is None else n * phi_prev - k * phi   # φ_n'(k)
        dk.addcmul_(dphi, torch.mul(v, G).sub_(Hn), value=c)
        if n < order:
            phi_prev, phi = phi, phi * k
            qpow.mul_(q)
    return dk, dv, torch.stack(totals, dim=2)


class EATorchFunction(torch.autograd.Function):
    """O(tLD) element-wise attention with §2's analytic backward (fp32 math, fp64 for fp64 inputs)."""

    @staticmethod
    def forward(ctx, q, k, v, order: int, causal: bool, keep, initial_state):
        dt = compute_dtype(q)
        # the prefix sums reshape their inputs: contiguous copies once here, not a copy per power n
        qf, kf, vf = (t.to(dt).contiguous() for t in (q, k, v))
        init = initial_state.to(dt) if initial_state is not None else None
        e = key_features(kf, keep)
        N, Z, _, _, state = _blocked_forward_sums(qf, kf, vf, e, order, causal, init, False)
        o = safe_divide(N, Z)
        ctx.save_for_backward(q, k, v, keep, initial_state)
        ctx.order, ctx.causal = order, causal
        return o.to(v.dtype), state.float()

    @staticmethod
    def backward(ctx, grad_o, grad_state):
        q, k, v, keep, initial_state = ctx.saved_tensors
        order, causal = ctx.order, ctx.causal
        dt = compute_dtype(q)
        qf, kf, vf, g = (t.to(dt).contiguous() for t in (q, k, v, grad_o))
        init = initial_state.to(dt) if initial_state is not None else None
        e = key_features(kf, keep)
        N, Z, dN, dZ, _ = _blocked_forward_sums(qf, kf, vf, e, order, causal, init, True)
        inv_z = safe_divide(torch.ones_like(Z), Z)  # 0 for a query with no usable key
        o = N * inv_z
        gz = g * inv_z
        dq = gz * (dN - o * dZ)
        gzo = gz * o
        rows = _rows_per_block(qf)
        if not causal or qf.shape[1] <= rows:
            dk, dv, _ = _key_grads(qf, kf, vf, e, gz, gzo, order, causal, None)
        else:  # blocks from the last to the first, the suffix sums carried leftwards
            dk, dv, carry = torch.empty_like(kf), torch.empty_like(vf), None
            for start in reversed(range(0, qf.shape[1], rows)):
                block = slice(start, start + rows)
                dk[:, block], dv[:, block], carry = _key_grads(
                    qf[:, block], kf[:, block], vf[:, block], e[:, block], gz[:, block], gzo[:, block], order,
                    True, carry)
        if grad_state is not None and grad_state.abs().sum() > 0:
            raise RuntimeError("ea_attention: gradients through output_final_state are not supported")
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def ea_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: int, causal: bool,
             key_padding_mask: torch.Tensor | None = None,
             initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """O(tLD) path: returns (o [B, L, H, D] in v's dtype, final state [B, H, 2, t+1, D] fp32)."""
    return EATorchFunction.apply(q, k, v, order, causal, key_padding_mask, initial_state)


def ea_step_torch(q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, state: torch.Tensor,
                  order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: q_t, k_t, v_t [B, H, D]; state [B, H, 2, t+1, D] -> (o_t [B, H, D], new state)."""
    qf, kf, vf = q_t.float(), k_t.float(), v_t.float()
    n = torch.arange(order + 1, device=q_t.device, dtype=torch.float32)[:, None]       # [t+1, 1]
    phi = kf[:, :, None] ** n * torch.exp(-0.5 * kf ** 2)[:, :, None]                 # [B, H, t+1, D]
    state = state + torch.stack([phi * vf[:, :, None], phi], dim=2)
    fact = torch.tensor([math.factorial(i) for i in range(order + 1)], device=q_t.device, dtype=torch.float32)
    a = qf[:, :, None] ** n / fact[:, None]                                              # [B, H, t+1, D]
    num = (a * state[:, :, 0]).sum(2)
    den = (a * state[:, :, 1]).sum(2)
    o = safe_divide(num, den)
    return o.to(v_t.dtype), state
