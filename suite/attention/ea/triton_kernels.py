"""Triton kernels for element-wise attention (math in DESIGN.md §2; launch glue in triton_ops.py; the design and
its static GPU profile are in docs/kernels.md).

EA acts on each channel on its own and q, k, v are [B, L, H, D] contiguous, so the kernels see them as
[B, L, C] with C = H*D channels: heads do not matter. A program owns one (batch, L chunk, block of BLOCK_C
channels) and walks its chunk in tiles of [BLOCK_L, BLOCK_C], carrying per channel the 2(t+1) running sums
as two tuples of t+1 [BLOCK_C] vectors (index n = power n). L is split into chunks (grid axis 0) so that
short batches still fill the GPU; the sums at chunk boundaries ("carries") are combined in PyTorch between
launches. Z is fp32 [B, L, C]; carries and chunk sums are fp32 [B, S, 2, t+1, C]; keep is int8 [B, L].

Register layout, which is what keeps the kernels free of spills: the launcher runs BLOCK_C // 32 warps, so
the lanes and the warps all lie along the channels and each thread owns one channel and all BLOCK_L rows of
it. The channel offsets are hinted as aligned to one element (``_channels``); without it Triton vectorises the
loads along C (8 bf16 per thread), which puts 8 channels, so 8 x 2(t+1) running sums, on every thread and
spreads L over lanes and warps. With one channel per thread the cumsums and sums along L and the running sums never
leave the thread: no shared memory, no shuffles, and the registers a tile costs are about
(live [BLOCK_L] columns) x BLOCK_L + 2(t+1), which is why BLOCK_L is small (triton_ops.block_rows).

- ``_ea_chunk_sums_kernel``  per-chunk sums. MODE 0 (keys):   Σ φ_n(k) v and Σ φ_n(k)
                                              MODE 1 (queries): Σ a_n(q) g/Z and Σ a_n(q) g o/Z
- ``_ea_fwd_kernel``         o = N/Z from the carries (+ an in-tile cumsum when causal), and Z (fp32) for the
                             backward only when STORE_Z (an inference forward writes o alone); with COMPUTE_DQ
                             it instead recomputes the same sums and writes dq = g/Z (dN - o dZ)
- ``_ea_bwd_dkdv_kernel``    dk, dv from the query-side suffix sums, walking tiles backwards
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _channels(pid_c, BLOCK_C: tl.constexpr):
    """This program's channel offsets, hinted as contiguous but aligned to one element only, so that the loads
    are laid out with the lanes along the channels and every access stays one element per thread (see the module
    docstring). A contiguity of 1 (the first version's hint) left the order of the tile's dimensions to a tie in
    Triton's coalescing pass, which Triton 3.6 breaks the other way (rows across lanes, shared memory, twice the
    registers); a divisibility of 1 caps the vector width at one element instead, whatever the Triton version."""
    return tl.multiple_of(tl.max_contiguous(pid_c * BLOCK_C + tl.arange(0, BLOCK_C), BLOCK_C), 1)


@triton.jit
def _load_sums(ptr, offs_c, cmask, C, N: tl.constexpr):
    """Rows 0..N-1 of an fp32 [N, C] block at ptr, as a tuple of N [BLOCK_C] vectors."""
    sums = ()
    for n in tl.static_range(N):
        sums = sums + (tl.load(ptr + n * C + offs_c, mask=cmask, other=0.0),)
    return sums


@triton.jit
def _store_sums(ptr, sums, offs_c, cmask, C, N: tl.constexpr):
    for n in tl.static_range(N):
        tl.store(ptr + n * C + offs_c, sums[n], mask=cmask)


@triton.jit
def _zero_sums(BLOCK_C: tl.constexpr, N: tl.constexpr):
    sums = ()
    for n in tl.static_range(N):
        sums = sums + (tl.zeros([BLOCK_C], dtype=tl.float32),)
    return sums


@triton.jit
def _key_weight(k, KEEP, b, L, offs_l, lmask, m2, HAS_KEEP: tl.constexpr):
    """φ_0(k) = exp(-k²/2), zero for masked keys and for rows or channels outside the tile."""
    p = tl.exp(-0.5 * k * k)
    if HAS_KEEP:
        keep = tl.load(KEEP + b * L + offs_l, mask=lmask, other=0)
        p = tl.where(keep[:, None] != 0, p, 0.0)
    return tl.where(m2, p, 0.0)


@triton.jit
def _safe_inverse(z):
    """1/z where z > 0, else 0 (a row with no usable key)."""
    return tl.where(z > 0, 1.0 / tl.where(z > 0, z, 1.0), 0.0)


@triton.jit
def _end_rows(BLOCK_L: tl.constexpr):
    """[BLOCK_L, 1] masks of the tile's first and last row."""
    rows = tl.arange(0, BLOCK_L)[:, None]
    return rows == 0, rows == BLOCK_L - 1


@triton.jit
def _scan_from(carry, x, first):
    """carry [BLOCK_C] + the cumsum of x [BLOCK_L, BLOCK_C] along the rows, as one scan: the carry is added to
    the first row. With the rows inside the thread this is BLOCK_L adds per channel, where a cumsum, a sum for
    the next carry and adding the carry to every row took about three times as many."""
    return tl.cumsum(tl.where(first, x + carry[None, :], x), axis=0)


@triton.jit
def _last_row(x, last):
    """Row BLOCK_L - 1 of x as a [BLOCK_C] vector (a register move when the rows are inside the thread)."""
    return tl.sum(tl.where(last, x, 0.0), axis=0)


@triton.jit
def _ea_chunk_sums_kernel(
    X, Y, W, Z, KEEP, OUT,
    L, C, S, CHUNK,
    MODE: tl.constexpr, HAS_KEEP: tl.constexpr, ORDER: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    offs_c = _channels(pid_c, BLOCK_C)
    cmask = offs_c < C
    base = b.to(tl.int64) * L * C
    sum0 = _zero_sums(BLOCK_C, ORDER + 1)
    sum1 = _zero_sums(BLOCK_C, ORDER + 1)
    start = pid_s * CHUNK
    end = tl.minimum(start + CHUNK, L)
    for l0 in range(start, end, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        lmask = offs_l < end
        m2 = lmask[:, None] & cmask[None, :]
        offs = base + offs_l[:, None].to(tl.int64) * C + offs_c[None, :]
        x = tl.load(X + offs, mask=m2, other=0.0).to(tl.float32)
        y = tl.load(Y + offs, mask=m2, other=0.0).to(tl.float32)
        if MODE == 0:
            p = _key_weight(x, KEEP, b, L, offs_l, lmask, m2, HAS_KEEP)
            y1 = y  # unused: in MODE 0 sum1 is Σ p
        else:
            p = _safe_inverse(tl.load(Z + offs, mask=m2, other=0.0))
            y1 = y * tl.load(W + offs, mask=m2, other=0.0).to(tl.float32)
        new0 = ()
        new1 = ()
        for n in tl.static_range(ORDER + 1):
            new0 = new0 + (sum0[n] + tl.sum(p * y, axis=0),)
            if MODE == 0:
                new1 = new1 + (sum1[n] + tl.sum(p, axis=0),)
                p = p * x
            else:
                new1 = new1 + (sum1[n] + tl.sum(p * y1, axis=0),)
                p = p * x * (1.0 / (n + 1))
        sum0 = new0
        sum1 = new1
    out = OUT + (b * S + pid_s).to(tl.int64) * (2 * (ORDER + 1) * C)
    _store_sums(out, sum0, offs_c, cmask, C, ORDER + 1)
    _store_sums(out + (ORDER + 1) * C, sum1, offs_c, cmask, C, ORDER + 1)


@triton.jit
def _ea_fwd_kernel(
    Q, K, V, KEEP, CARRY, O, Z, G, DQ,
    L, C, CHUNK, carry_stride_b, carry_stride_s,
    CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, COMPUTE_DQ: tl.constexpr, ORDER: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, STORE_Z: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    offs_c = _channels(pid_c, BLOCK_C)
    cmask = offs_c < C
    base = b.to(tl.int64) * L * C
    carry = CARRY + b.to(tl.int64) * carry_stride_b + pid_s * carry_stride_s
    sum_a = _load_sums(carry, offs_c, cmask, C, ORDER + 1)                   # A_n entering the chunk
    sum_b = _load_sums(carry + (ORDER + 1) * C, offs_c, cmask, C, ORDER + 1)  # B_n entering the chunk
    start = pid_s * CHUNK
    end = tl.minimum(start + CHUNK, L)
    for l0 in range(start, end, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        lmask = offs_l < end
        m2 = lmask[:, None] & cmask[None, :]
        offs = base + offs_l[:, None].to(tl.int64) * C + offs_c[None, :]
        q = tl.load(Q + offs, mask=m2, other=0.0).to(tl.float32)
        if CAUSAL:
            k = tl.load(K + offs, mask=m2, other=0.0).to(tl.float32)
            v = tl.load(V + offs, mask=m2, other=0.0).to(tl.float32)
            p = _key_weight(k, KEEP, b, L, offs_l, lmask, m2, HAS_KEEP)
        first, last = _end_rows(BLOCK_L)
        num = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
        den = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
        dnum = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
        dden = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
        a = tl.full([BLOCK_L, BLOCK_C], 1.0, tl.float32)
        a_prev = a
        new_a = ()
        new_b = ()
        for n in tl.static_range(ORDER + 1):
            if CAUSAL:
                big_a = _scan_from(sum_a[n], p * v, first)
                big_b = _scan_from(sum_b[n], p, first)
                new_a = new_a + (_last_row(big_a, last),)
                new_b = new_b + (_last_row(big_b, last),)
                p = p * k
            else:
                big_a = sum_a[n][None, :]
                big_b = sum_b[n][None, :]
            num += a * big_a
            den += a * big_b
            if COMPUTE_DQ:
                if n >= 1:
                    dnum += a_prev * big_a
                    dden += a_prev * big_b
            a_prev = a
            a = a * q * (1.0 / (n + 1))
        if CAUSAL:
            sum_a = new_a
            sum_b = new_b
        inv = _safe_inverse(den)
        o = num * inv
        if COMPUTE_DQ:
            g = tl.load(G + offs, mask=m2, other=0.0).to(tl.float32)
            dq = g * inv * (dnum - o * dden)
            tl.store(DQ + offs, dq.to(DQ.dtype.element_ty), mask=m2)
        else:
            tl.store(O + offs, o.to(O.dtype.element_ty), mask=m2)
            if STORE_Z:
                tl.store(Z + offs, den, mask=m2)


@triton.jit
def _ea_bwd_dkdv_kernel(
    Q, K, V, KEEP, O, Z, G, CARRY, DK, DV,
    L, C, CHUNK, carry_stride_b, carry_stride_s,
    CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, ORDER: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    offs_c = _channels(pid_c, BLOCK_C)
    cmask = offs_c < C
    base = b.to(tl.int64) * L * C
    carry = CARRY + b.to(tl.int64) * carry_stride_b + pid_s * carry_stride_s
    sum_g = _load_sums(carry, offs_c, cmask, C, ORDER + 1)                   # G_n entering from the right
    sum_h = _load_sums(carry + (ORDER + 1) * C, offs_c, cmask, C, ORDER + 1)  # H_n entering from the right
    start = pid_s * CHUNK
    end = tl.minimum(start + CHUNK, L)
    n_tiles = (end - start + BLOCK_L - 1) // BLOCK_L
    for t in range(0, n_tiles):
        # the tile's rows in reverse order (row r is position l1 - r), so that a forward cumsum along the rows
        # is the suffix sum; tl.cumsum(reverse=True) compiles to lane shuffles even with L inside the thread
        l1 = start + (n_tiles - t) * BLOCK_L - 1
        offs_l = l1 - tl.arange(0, BLOCK_L)
        lmask = offs_l < end
        m2 = lmask[:, None] & cmask[None, :]
        offs = base + offs_l[:, None].to(tl.int64) * C + offs_c[None, :]
        k = tl.load(K + offs, mask=m2, other=0.0).to(tl.float32)
        v = tl.load(V + offs, mask=m2, other=0.0).to(tl.float32)
        phi = _key_weight(k, KEEP, b, L, offs_l, lmask, m2, HAS_KEEP)
        if CAUSAL:
            q = tl.load(Q + offs, mask=m2, other=0.0).to(tl.float32)
            g = tl.load(G + offs, mask=m2, other=0.0).to(tl.float32)
            o = tl.load(O + offs, mask=m2, other=0.0).to(tl.float32)
            gz = g * _safe_inverse(tl.load(Z + offs, mask=m2, other=0.0))
            gzo = gz * o
            a = tl.full([BLOCK_L, BLOCK_C], 1.0, tl.float32)
        first, last = _end_rows(BLOCK_L)
        dk = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
        dv = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
        phi_prev = phi
        new_g = ()
        new_h = ()
        for n in tl.static_range(ORDER + 1):
            if CAUSAL:
                big_g = _scan_from(sum_g[n], a * gz, first)
                big_h = _scan_from(sum_h[n], a * gzo, first)
                new_g = new_g + (_last_row(big_g, last),)
                new_h = new_h + (_last_row(big_h, last),)
                a = a * q * (1.0 / (n + 1))
            else:
                big_g = sum_g[n][None, :]
                big_h = sum_h[n][None, :]
            dv += phi * big_g
            if n == 0:
                dphi = -k * phi
            else:
                dphi = n * phi_prev - k * phi
            dk += dphi * (v * big_g - big_h)
            phi_prev = phi
            phi = phi * k
        if CAUSAL:
            sum_g = new_g
            sum_h = new_h
        tl.store(DK + offs, dk.to(DK.dtype.element_ty), mask=m2)
        tl.store(DV + offs, dv.to(DV.dtype.element_ty), mask=m2)
