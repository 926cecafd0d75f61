"""Triton kernels for element-wise attention (math in DESIGN.md §2; launch glue in triton_ops.py).

EA acts on each channel on its own, so there is no matrix product: every kernel walks one (batch, head,
channel block) along L in tiles of BLOCK_L rows and keeps, per channel, the 2(t+1) running sums as a
[T1P, BLOCK_D] register tile (row n = power n; T1P = next power of two >= t+1). L is split into chunks
(grid axis 0) so that short batches still fill the GPU; the sums at chunk boundaries ("carries") are
combined in PyTorch between launches. Layout: q, k, v, o, g [B, L, H, D] contiguous; Z fp32 [B, L, H, D];
carries fp32 [B, H, S, 2, t+1, D]; keep int8 [B, L].

- ``_ea_chunk_sums_kernel``  per-chunk sums. MODE 0 (keys):   Σ φ_n(k) v and Σ φ_n(k)
                                              MODE 1 (queries): Σ a_n(q) g/Z and Σ a_n(q) g o/Z
- ``_ea_fwd_kernel``         o = N/Z from the carries (+ an in-tile cumsum when causal); with COMPUTE_DQ it
                             instead recomputes the same sums and writes dq = g/Z (dN - o dZ)
- ``_ea_bwd_dkdv_kernel``    dk, dv from the query-side suffix sums, walking tiles backwards
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _row(acc, rows, n: tl.constexpr):
    """Row n of a [T1P, BLOCK_D] tile as a [BLOCK_D] vector."""
    return tl.sum(tl.where(rows[:, None] == n, acc, 0.0), axis=0)


@triton.jit
def _add_row(acc, rows, n: tl.constexpr, x):
    """acc with x [BLOCK_D] added to row n."""
    return tl.where(rows[:, None] == n, acc + x[None, :], acc)


@triton.jit
def _ea_chunk_sums_kernel(
    X, Y, W, Z, KEEP, OUT,
    L, H, D, S, CHUNK,
    MODE: tl.constexpr, HAS_KEEP: tl.constexpr, ORDER: tl.constexpr, T1P: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    rows = tl.arange(0, T1P)
    base = b.to(tl.int64) * L * H * D + h * D
    acc0 = tl.zeros([T1P, BLOCK_D], dtype=tl.float32)
    acc1 = tl.zeros([T1P, BLOCK_D], dtype=tl.float32)
    start = pid_s * CHUNK
    end = tl.minimum(start + CHUNK, L)
    for l0 in range(start, end, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        lmask = offs_l < end
        m2 = lmask[:, None] & dmask[None, :]
        offs = base + offs_l[:, None] * (H * D) + offs_d[None, :]
        x = tl.load(X + offs, mask=m2, other=0.0).to(tl.float32)
        y = tl.load(Y + offs, mask=m2, other=0.0).to(tl.float32)
        if MODE == 0:
            p = tl.exp(-0.5 * x * x)
            if HAS_KEEP:
                keep = tl.load(KEEP + b * L + offs_l, mask=lmask, other=0)
                p = tl.where(keep[:, None] != 0, p, 0.0)
            p = tl.where(m2, p, 0.0)
            y1 = tl.full([BLOCK_L, BLOCK_D], 1.0, tl.float32)
        else:
            zz = tl.load(Z + offs, mask=m2, other=0.0)
            p = tl.where(zz > 0, 1.0 / tl.where(zz > 0, zz, 1.0), 0.0)
            y1 = y * tl.load(W + offs, mask=m2, other=0.0).to(tl.float32)
        for n in tl.static_range(ORDER + 1):
            acc0 = _add_row(acc0, rows, n, tl.sum(p * y, axis=0))
            acc1 = _add_row(acc1, rows, n, tl.sum(p * y1, axis=0))
            if MODE == 0:
                p = p * x
            else:
                p = p * x / (n + 1)
    out = OUT + ((pid_bh * S + pid_s) * 2 * (ORDER + 1)) * D + rows[:, None] * D + offs_d[None, :]
    smask = (rows[:, None] < ORDER + 1) & dmask[None, :]
    tl.store(out, acc0, mask=smask)
    tl.store(out + (ORDER + 1) * D, acc1, mask=smask)


@triton.jit
def _ea_fwd_kernel(
    Q, K, V, KEEP, CARRY, O, Z, G, DQ,
    L, H, D, CHUNK, carry_stride_bh, carry_stride_s,
    CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, COMPUTE_DQ: tl.constexpr, ORDER: tl.constexpr,
    T1P: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    rows = tl.arange(0, T1P)
    base = b.to(tl.int64) * L * H * D + h * D
    cmask = (rows[:, None] < ORDER + 1) & dmask[None, :]
    carry = CARRY + pid_bh * carry_stride_bh + pid_s * carry_stride_s + rows[:, None] * D + offs_d[None, :]
    acc_a = tl.load(carry, mask=cmask, other=0.0)
    acc_b = tl.load(carry + (ORDER + 1) * D, mask=cmask, other=0.0)
    start = pid_s * CHUNK
    end = tl.minimum(start + CHUNK, L)
    for l0 in range(start, end, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        lmask = offs_l < end
        m2 = lmask[:, None] & dmask[None, :]
        offs = base + offs_l[:, None] * (H * D) + offs_d[None, :]
        q = tl.load(Q + offs, mask=m2, other=0.0).to(tl.float32)
        if CAUSAL:
            k = tl.load(K + offs, mask=m2, other=0.0).to(tl.float32)
            v = tl.load(V + offs, mask=m2, other=0.0).to(tl.float32)
            p = tl.exp(-0.5 * k * k)
            if HAS_KEEP:
                keep = tl.load(KEEP + b * L + offs_l, mask=lmask, other=0)
                p = tl.where(keep[:, None] != 0, p, 0.0)
            p = tl.where(m2, p, 0.0)
        num = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        den = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        dnum = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        dden = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        a = tl.full([BLOCK_L, BLOCK_D], 1.0, tl.float32)
        a_prev = a
        for n in tl.static_range(ORDER + 1):
            if CAUSAL:
                pv = p * v
                big_a = tl.cumsum(pv, axis=0) + _row(acc_a, rows, n)[None, :]
                big_b = tl.cumsum(p, axis=0) + _row(acc_b, rows, n)[None, :]
                acc_a = _add_row(acc_a, rows, n, tl.sum(pv, axis=0))
                acc_b = _add_row(acc_b, rows, n, tl.sum(p, axis=0))
                p = p * k
            else:
                big_a = _row(acc_a, rows, n)[None, :]
                big_b = _row(acc_b, rows, n)[None, :]
            num += a * big_a
            den += a * big_b
            if COMPUTE_DQ:
                if n >= 1:
                    dnum += a_prev * big_a
                    dden += a_prev * big_b
            a_prev = a
            a = a * q / (n + 1)
        inv = tl.where(den > 0, 1.0 / tl.where(den > 0, den, 1.0), 0.0)
        o = num * inv
        if COMPUTE_DQ:
            g = tl.load(G + offs, mask=m2, other=0.0).to(tl.float32)
            dq = g * inv * (dnum - o * dden)
            tl.store(DQ + offs, dq.to(DQ.dtype.element_ty), mask=m2)
        else:
            tl.store(O + offs, o.to(O.dtype.element_ty), mask=m2)
            tl.store(Z + offs, den, mask=m2)


@triton.jit
def _ea_bwd_dkdv_kernel(
    Q, K, V, KEEP, O, Z, G, CARRY, DK, DV,
    L, H, D, CHUNK, carry_stride_bh, carry_stride_s,
    CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, ORDER: tl.constexpr,
    T1P: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    rows = tl.arange(0, T1P)
    base = b.to(tl.int64) * L * H * D + h * D
    cmask = (rows[:, None] < ORDER + 1) & dmask[None, :]
    carry = CARRY + pid_bh * carry_stride_bh + pid_s * carry_stride_s + rows[:, None] * D + offs_d[None, :]
    acc_g = tl.load(carry, mask=cmask, other=0.0)
    acc_h = tl.load(carry + (ORDER + 1) * D, mask=cmask, other=0.0)
    start = pid_s * CHUNK
    end = tl.minimum(start + CHUNK, L)
    n_tiles = (end - start + BLOCK_L - 1) // BLOCK_L
    for t in range(0, n_tiles):
        offs_l = start + (n_tiles - 1 - t) * BLOCK_L + tl.arange(0, BLOCK_L)
        lmask = offs_l < end
        m2 = lmask[:, None] & dmask[None, :]
        offs = base + offs_l[:, None] * (H * D) + offs_d[None, :]
        k = tl.load(K + offs, mask=m2, other=0.0).to(tl.float32)
        v = tl.load(V + offs, mask=m2, other=0.0).to(tl.float32)
        phi = tl.exp(-0.5 * k * k)
        if HAS_KEEP:
            keep = tl.load(KEEP + b * L + offs_l, mask=lmask, other=0)
            phi = tl.where(keep[:, None] != 0, phi, 0.0)
        phi = tl.where(m2, phi, 0.0)
        if CAUSAL:
            q = tl.load(Q + offs, mask=m2, other=0.0).to(tl.float32)
            zz = tl.load(Z + offs, mask=m2, other=0.0)
            g = tl.load(G + offs, mask=m2, other=0.0).to(tl.float32)
            o = tl.load(O + offs, mask=m2, other=0.0).to(tl.float32)
            gz = g * tl.where(zz > 0, 1.0 / tl.where(zz > 0, zz, 1.0), 0.0)
            gzo = gz * o
            a = tl.full([BLOCK_L, BLOCK_D], 1.0, tl.float32)
        dk = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        phi_prev = phi
        for n in tl.static_range(ORDER + 1):
            if CAUSAL:
                xg = a * gz
                xh = a * gzo
                big_g = tl.cumsum(xg, axis=0, reverse=True) + _row(acc_g, rows, n)[None, :]
                big_h = tl.cumsum(xh, axis=0, reverse=True) + _row(acc_h, rows, n)[None, :]
                acc_g = _add_row(acc_g, rows, n, tl.sum(xg, axis=0))
                acc_h = _add_row(acc_h, rows, n, tl.sum(xh, axis=0))
                a = a * q / (n + 1)
            else:
                big_g = _row(acc_g, rows, n)[None, :]
                big_h = _row(acc_h, rows, n)[None, :]
            dv += phi * big_g
            if n == 0:
                dphi = -k * phi
            else:
                dphi = n * phi_prev - k * phi
            dk += dphi * (v * big_g - big_h)
            phi_prev = phi
            phi = phi * k
        tl.store(DK + offs, dk.to(DK.dtype.element_ty), mask=m2)
        tl.store(DV + offs, dv.to(DV.dtype.element_ty), mask=m2)
