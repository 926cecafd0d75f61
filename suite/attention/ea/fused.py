"""The fused CPU path of the torch backend: §2's forward and backward as one C kernel per call.

The op-by-op path (reference.py) makes about a hundred memory-bound passes over [B, L, H, D] per call, each a
small parallel op whose threads wait for each other. Here each (batch, chunk of up to 64 channels) is one work
item that walks its rows once per pass and keeps the 2(t+1) sums per channel in cache, exactly the recurrent
form of DESIGN.md §2:

- forward, causal: per row, add φ_n(k) v and φ_n(k) to the running A_n, B_n (unless the key is masked), then
  read out o = N/Z by Horner's rule in q; non-causal: sum A_n, B_n over all rows, then read out every row.
- backward: the same forward sweep recomputes A_n, B_n (nothing of size [t+1, L, H, D] is ever stored) and
  gives dq; g/Z and g·o/Z go into the dk, dv buffers; a reverse sweep (causal) or a total (non-causal) of
  a_n(q) g/Z and a_n(q) g·o/Z gives G_n, H_n and with them dk, dv.

Work items are handed out dynamically to torch.get_num_threads() threads in one parallel region per call, so a
core that the machine gives to someone else slows only the items it holds. The region is OpenMP, which on Linux
shares torch's own libgomp (same soname): the threads that torch's ops just used take the items, instead of
spinning beside new ones; a compiler without OpenMP gets plain pthreads. Within an item, groups of 8 channels
live in vector registers (GCC/Clang vector extensions, AVX2 with -march=native) across the loop over n.

fp32 inputs (and bf16/fp16, converted) run in fp32, fp64 inputs in fp64. The kernel is C99 compiled once per
machine with the system C compiler (``$CC``, else cc/gcc/clang) into ``$EA_SUITE_CACHE/cpu-kernels`` (default
``~/.cache/ea-suite/cpu-kernels``), keyed by the source, the flags, the compiler and the CPU; later processes
load the cached library. Without a compiler (or with ``EA_SUITE_CPU_FUSED=0``) the torch backend runs the
op-by-op path, and ``backend_used`` says so: ``FUSED`` ("torch") for this kernel, ``UNFUSED`` ("torch-unfused")
for the op-by-op path; ``unavailable_reason()`` says why.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.autograd.function import once_differentiable

from suite import settings
from suite.attention.base import compute_dtype

FUSED = "torch"            # backend_used of the fused CPU kernel (the torch backend's normal path on a CPU)
UNFUSED = "torch-unfused"  # backend_used of the op-by-op PyTorch path (no compiler, disabled, or not a CPU tensor)
ENV_SWITCH = settings.CPU_FUSED_ENV

# -- the C source ----------------------------------------------------------------------------------------

_COMMON = r"""
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WMAX 64
#define VL 8      /* lanes per group: one AVX2 vector of floats */
#define AHEAD 8   /* rows prefetched ahead: an item reads a strided column of rows, which hardware prefetchers miss */

static inline void ea_prefetch(const void *p, int64_t bytes) {
    for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch((const char *)p + i, 0, 3);
}

typedef struct {
    const void *q, *k, *v, *g;      /* [B, L, H, D]: rows of H*D contiguous values, strides below        */
    const uint8_t *keep;            /* [B, L] contiguous, 0 = masked-out key; NULL = keep all            */
    const void *state_in;           /* [B, H, 2, t+1, D] contiguous or NULL (empty prefix)               */
    void *state_out;                /* [B, H, 2, t+1, D] contiguous or NULL                              */
    void *o, *dq, *dk, *dv;         /* [B, L, H, D] contiguous outputs                                   */
    int64_t B, L, H, D;
    int64_t q_sb, q_sl, k_sb, k_sl, v_sb, v_sl, g_sb, g_sl;   /* element strides of dims 0 and 1      */
    int64_t order, causal, nthreads, width;
} ea_args;

typedef int (*ea_item_fn)(const ea_args *, int64_t b, int64_t c0, int64_t cw);

typedef struct {
    const ea_args *a;
    ea_item_fn fn;
    int64_t chunks, items, next;
    int err;
} ea_job;

static void *ea_worker(void *p) {
    ea_job *j = (ea_job *)p;
    const int64_t C = j->a->H * j->a->D;
    for (;;) {
        int64_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (i >= j->items) break;
        int64_t b = i / j->chunks, c0 = (i % j->chunks) * j->a->width;
        int64_t cw = C - c0 < j->a->width ? C - c0 : j->a->width;
        if (j->fn(j->a, b, c0, cw)) __atomic_store_n(&j->err, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* Runs fn over every (batch, channel chunk) on up to nthreads threads; returns nonzero if an item failed. */
static int ea_run(const ea_args *a, ea_item_fn fn) {
    const int64_t C = a->H * a->D;
    ea_job j;
    j.a = a; j.fn = fn; j.chunks = (C + a->width - 1) / a->width; j.items = a->B * j.chunks; j.next = 0; j.err = 0;
    int64_t nt = a->nthreads < j.items ? a->nthreads : j.items;
    if (nt > 256) nt = 256;
#ifdef _OPENMP
    /* torch's own OpenMP runtime where it is libgomp (same soname): its threads, already awake after the ops
       before this one, take the items, instead of spinning while other threads do */
    #pragma omp parallel num_threads((int)nt)
    ea_worker(&j);
#else
    pthread_t th[256];
    int started = 0;
    for (int64_t t = 1; t < nt; ++t)
        if (pthread_create(&th[started], NULL, ea_worker, &j) == 0) ++started;
    ea_worker(&j);
    for (int t = 0; t < started; ++t) pthread_join(th[t], NULL);
#endif
    return j.err;
}

/* VL lanes of float or double (GCC/Clang vector extensions; AVX2 registers where the CPU has them) */
typedef float vec_f32 __attribute__((vector_size(VL * sizeof(float))));
typedef double vec_f64 __attribute__((vector_size(VL * sizeof(double))));
typedef int32_t ivec_f32 __attribute__((vector_size(VL * sizeof(int32_t))));
typedef __typeof__((vec_f64){0} == (vec_f64){0}) ivec_f64;

/* exp(x) for x <= 0 (x = -k*k/2) in float, about 1 ulp (Cephes' expf); NaN stays NaN; below -87.3 (|k| > 13.2)
   gives 0 */
static inline vec_f32 ea_vexpneg_f32(vec_f32 x) {
    const vec_f32 lo = (vec_f32){0} - 87.33654f, zero = (vec_f32){0};
    ivec_f32 under = x < lo;                                   /* false for NaN */
    vec_f32 xc = (vec_f32)(((ivec_f32)lo & under) | ((ivec_f32)x & ~under));
    vec_f32 fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round(x / ln 2) */
    fn = (vec_f32)((ivec_f32)fn & (fn == fn));                 /* NaN -> 0, so the exponent bits stay sane */
    vec_f32 r = xc - fn * 0.693359375f - fn * -2.12194440e-4f;
    vec_f32 z = r * r;
    vec_f32 p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                  + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    ivec_f32 e = (__builtin_convertvector(fn, ivec_f32) + 127) << 23;
    vec_f32 y = p * (vec_f32)e;                                /* NaN input: p is NaN, so y is NaN */
    return (vec_f32)(((ivec_f32)zero & under) | ((ivec_f32)y & ~under));
}

/* exp in double lane by lane (libm): the fp64 path is for exact checks, not speed */
static inline vec_f64 ea_vexpneg_f64(vec_f64 x) {
    for (int u = 0; u < VL; ++u) x[u] = exp(x[u]);
    return x;
}
"""

# one body per compute type: REAL is the type, SFX the suffix of its functions
_BODY = r"""
/* The per-row work runs on groups of VL lanes (channels) held in GCC vector types (VEC), so a group's values
   stay in registers across the loop over the powers n. pw: the item's width rounded up to VL (an item of
   cw < pw channels works on zero-padded copies of its rows). A state array is [t+1][pw]. */

static inline VEC ea_ld_SFX(const REAL *p) { VEC x; memcpy(&x, p, sizeof x); return x; }
static inline void ea_st_SFX(REAL *p, VEC x) { memcpy(p, &x, sizeof x); }
static inline VEC ea_sel_SFX(IVEC m, VEC a, VEC b) { return (VEC)(((IVEC)a & m) | ((IVEC)b & ~m)); }
static inline VEC ea_phi0_SFX(VEC k) { return ea_vexpneg_SFX(k * k * (REAL)-0.5); }   /* exp(-k^2/2) */

static void ea_state_load_SFX(const ea_args *a, REAL *A, REAL *S, int64_t b, int64_t c0, int64_t cw, int64_t pw) {
    const int64_t T1 = a->order + 1, D = a->D;
    memset(A, 0, sizeof(REAL) * T1 * pw);
    memset(S, 0, sizeof(REAL) * T1 * pw);
    if (!a->state_in) return;
    const REAL *st = (const REAL *)a->state_in;
    for (int64_t w = 0; w < cw; ++w) {
        int64_t c = c0 + w, h = c / D, d = c % D;
        const REAL *base = st + (b * a->H + h) * 2 * T1 * D + d;
        for (int64_t n = 0; n < T1; ++n) {
            A[n * pw + w] = base[n * D];
            S[n * pw + w] = base[(T1 + n) * D];
        }
    }
}

static void ea_state_store_SFX(const ea_args *a, const REAL *A, const REAL *S, int64_t b, int64_t c0, int64_t cw,
                               int64_t pw) {
    const int64_t T1 = a->order + 1, D = a->D;
    REAL *st = (REAL *)a->state_out;
    for (int64_t w = 0; w < cw; ++w) {
        int64_t c = c0 + w, h = c / D, d = c % D;
        REAL *base = st + (b * a->H + h) * 2 * T1 * D + d;
        for (int64_t n = 0; n < T1; ++n) {
            base[n * D] = A[n * pw + w];
            base[(T1 + n) * D] = S[n * pw + w];
        }
    }
}

/* A_n += phi_n(k) v, S_n += phi_n(k) for n = 0..t, phi_n(k) = k^n exp(-k^2/2) */
static inline void ea_accumulate_SFX(REAL *restrict A, REAL *restrict S, const REAL *restrict k,
                                     const REAL *restrict v, int64_t T1, int64_t pw) {
    for (int64_t g = 0; g < pw; g += VL) {
        VEC kk = ea_ld_SFX(k + g), vv = ea_ld_SFX(v + g), ph = ea_phi0_SFX(kk);
        for (int64_t n = 0; n < T1; ++n) {
            REAL *An = A + n * pw + g, *Sn = S + n * pw + g;
            ea_st_SFX(An, ea_ld_SFX(An) + ph * vv);
            ea_st_SFX(Sn, ea_ld_SFX(Sn) + ph);
            ph = ph * kk;
        }
    }
}

/* o = N/Z (0 where Z == 0) with N = sum_n q^n/n! A_n and Z likewise, by Horner's rule; inv[n] = 1/n */
static inline void ea_readout_SFX(const REAL *restrict A, const REAL *restrict S, const REAL *restrict q,
                                  const REAL *restrict inv, int64_t t, int64_t pw, REAL *restrict o) {
    for (int64_t g = 0; g < pw; g += VL) {
        VEC qq = ea_ld_SFX(q + g), N = ea_ld_SFX(A + t * pw + g), Z = ea_ld_SFX(S + t * pw + g);
        for (int64_t n = t - 1; n >= 0; --n) {
            VEC qn = qq * inv[n + 1];
            N = ea_ld_SFX(A + n * pw + g) + N * qn;
            Z = ea_ld_SFX(S + n * pw + g) + Z * qn;
        }
        const VEC zero = (VEC){0};
        IVEC empty = Z == zero;
        ea_st_SFX(o + g, ea_sel_SFX(empty, zero, N / ea_sel_SFX(empty, zero + (REAL)1, Z)));
    }
}

/* dq of one row, and gz = g/Z, gzo = g o/Z; dN = sum_{n>=1} q^{n-1}/(n-1)! A_n and dZ likewise */
static inline void ea_query_grads_SFX(const REAL *restrict A, const REAL *restrict S, const REAL *restrict q,
                                      const REAL *restrict gr, const REAL *restrict inv, int64_t t, int64_t pw,
                                      REAL *restrict dq, REAL *restrict gz_out, REAL *restrict gzo_out) {
    for (int64_t g = 0; g < pw; g += VL) {
        VEC qq = ea_ld_SFX(q + g), N = ea_ld_SFX(A + t * pw + g), Z = ea_ld_SFX(S + t * pw + g);
        const VEC zero = (VEC){0};
        VEC dN = t >= 1 ? N : zero, dZ = t >= 1 ? Z : zero;
        for (int64_t n = t - 1; n >= 0; --n) {   /* dN's Horner step for power n uses A_{n+1}, from n = t-2 */
            VEC qn = qq * inv[n + 1];
            N = ea_ld_SFX(A + n * pw + g) + N * qn;
            Z = ea_ld_SFX(S + n * pw + g) + Z * qn;
            if (n <= t - 2) {
                dN = ea_ld_SFX(A + (n + 1) * pw + g) + dN * qn;
                dZ = ea_ld_SFX(S + (n + 1) * pw + g) + dZ * qn;
            }
        }
        IVEC empty = Z == zero;   /* a query with no usable key: 1/Z taken as 0 */
        VEC iz = ea_sel_SFX(empty, zero, (zero + (REAL)1) / ea_sel_SFX(empty, zero + (REAL)1, Z));
        VEC o = N * iz, gz = ea_ld_SFX(gr + g) * iz;
        ea_st_SFX(dq + g, gz * (dN - o * dZ));
        ea_st_SFX(gz_out + g, gz);
        ea_st_SFX(gzo_out + g, gz * o);
    }
}

/* G_n += a_n(q) gz, H_n += a_n(q) gzo with a_n(q) = q^n/n! */
static inline void ea_add_query_SFX(REAL *restrict G, REAL *restrict Hs, const REAL *restrict q,
                                    const REAL *restrict gz, const REAL *restrict gzo, const REAL *restrict inv,
                                    int64_t T1, int64_t pw) {
    for (int64_t g = 0; g < pw; g += VL) {
        VEC qq = ea_ld_SFX(q + g), x = ea_ld_SFX(gz + g), y = ea_ld_SFX(gzo + g);
        for (int64_t n = 0; n < T1; ++n) {
            REAL *Gn = G + n * pw + g, *Hn = Hs + n * pw + g;
            ea_st_SFX(Gn, ea_ld_SFX(Gn) + x);
            ea_st_SFX(Hn, ea_ld_SFX(Hn) + y);
            VEC qn = qq * inv[n + 1];
            x = x * qn;
            y = y * qn;
        }
    }
}

/* dv = sum_n phi_n(k) G_n, dk = sum_n phi_n'(k) (v G_n - H_n), phi_n' = n phi_{n-1} - k phi_n */
static inline void ea_key_grads_SFX(const REAL *restrict G, const REAL *restrict Hs, const REAL *restrict k,
                                    const REAL *restrict v, int64_t T1, int64_t pw, REAL *restrict dk,
                                    REAL *restrict dv) {
    for (int64_t g = 0; g < pw; g += VL) {
        VEC kk = ea_ld_SFX(k + g), vv = ea_ld_SFX(v + g), ph = ea_phi0_SFX(kk);
        VEC prev = (VEC){0}, sv = (VEC){0}, sk = (VEC){0};
        for (int64_t n = 0; n < T1; ++n) {
            VEC Gn = ea_ld_SFX(G + n * pw + g), Hn = ea_ld_SFX(Hs + n * pw + g);
            sv = sv + ph * Gn;
            sk = sk + (prev * (REAL)n - kk * ph) * (vv * Gn - Hn);
            prev = ph;
            ph = ph * kk;
        }
        ea_st_SFX(dk + g, sk);
        ea_st_SFX(dv + g, sv);
    }
}

/* A row of an item: the input itself when the item is a whole number of groups, else a zero-padded copy */
static inline const REAL *ea_row_SFX(const REAL *p, int64_t cw, int64_t pw, REAL *pad) {
    if (cw == pw) return p;
    memcpy(pad, p, sizeof(REAL) * cw);
    return pad;
}

static inline void ea_put_SFX(REAL *dst, const REAL *src, int64_t cw) {
    if (dst != src) memcpy(dst, src, sizeof(REAL) * cw);
}

static inline int ea_keeps_SFX(const ea_args *a, int64_t b, int64_t l) {
    return !a->keep || a->keep[b * a->L + l];
}

/* Key row l of an item into the sums A_n, B_n (a masked key is skipped), prefetching AHEAD rows of k and v */
static inline void ea_add_key_SFX(const ea_args *a, REAL *A, REAL *S, const REAL *k, const REAL *v, int64_t b,
                                  int64_t l, int64_t cw, int64_t pw, REAL *pk, REAL *pv) {
    const int64_t bytes = cw * (int64_t)sizeof(REAL);
    ea_prefetch(k + (l + AHEAD) * a->k_sl, bytes);
    ea_prefetch(v + (l + AHEAD) * a->v_sl, bytes);
    if (ea_keeps_SFX(a, b, l))
        ea_accumulate_SFX(A, S, ea_row_SFX(k + l * a->k_sl, cw, pw, pk), ea_row_SFX(v + l * a->v_sl, cw, pw, pv),
                          a->order + 1, pw);
}

/* forward of one item: o, and the state after the last row when state_out is set */
static int ea_fwd_item_SFX(const ea_args *a, int64_t b, int64_t c0, int64_t cw) {
    const int64_t t = a->order, T1 = t + 1, L = a->L, C = a->H * a->D, pw = (cw + VL - 1) / VL * VL;
    REAL *buf = (REAL *)malloc(sizeof(REAL) * (2 * T1 * pw + T1 + 1 + 4 * pw));
    if (!buf) return 1;
    REAL *A = buf, *S = A + T1 * pw, *inv = S + T1 * pw, *pq = inv + T1 + 1, *pk = pq + pw, *pv = pk + pw,
         *po = pv + pw;
    memset(pq, 0, sizeof(REAL) * 4 * pw);
    for (int64_t n = 1; n <= T1; ++n) inv[n] = (REAL)1 / (REAL)n;
    const REAL *q = (const REAL *)a->q + b * a->q_sb + c0;
    const REAL *k = (const REAL *)a->k + b * a->k_sb + c0;
    const REAL *v = (const REAL *)a->v + b * a->v_sb + c0;
    REAL *o = (REAL *)a->o + b * L * C + c0;
    const int64_t bytes = cw * (int64_t)sizeof(REAL);
    ea_state_load_SFX(a, A, S, b, c0, cw, pw);
    if (!a->causal)
        for (int64_t l = 0; l < L; ++l) ea_add_key_SFX(a, A, S, k, v, b, l, cw, pw, pk, pv);
    for (int64_t l = 0; l < L; ++l) {
        ea_prefetch(q + (l + AHEAD) * a->q_sl, bytes);
        if (a->causal) ea_add_key_SFX(a, A, S, k, v, b, l, cw, pw, pk, pv);
        REAL *ol = cw == pw ? o + l * C : po;
        ea_readout_SFX(A, S, ea_row_SFX(q + l * a->q_sl, cw, pw, pq), inv, t, pw, ol);
        ea_put_SFX(o + l * C, ol, cw);
    }
    if (a->state_out) ea_state_store_SFX(a, A, S, b, c0, cw, pw);
    free(buf);
    return 0;
}

/* backward of one item: dq, dk, dv */
static int ea_bwd_item_SFX(const ea_args *a, int64_t b, int64_t c0, int64_t cw) {
    const int64_t t = a->order, T1 = t + 1, L = a->L, C = a->H * a->D, pw = (cw + VL - 1) / VL * VL;
    REAL *buf = (REAL *)malloc(sizeof(REAL) * (4 * T1 * pw + T1 + 1 + 9 * pw));
    if (!buf) return 1;
    REAL *A = buf, *S = A + T1 * pw, *G = S + T1 * pw, *Hs = G + T1 * pw, *inv = Hs + T1 * pw;
    REAL *pq = inv + T1 + 1, *pk = pq + pw, *pv = pk + pw, *pg = pv + pw, *pdq = pg + pw, *pdk = pdq + pw,
         *pdv = pdk + pw, *gz = pdv + pw, *gzo = gz + pw;
    memset(pq, 0, sizeof(REAL) * 9 * pw);
    memset(G, 0, sizeof(REAL) * 2 * T1 * pw);
    for (int64_t n = 1; n <= T1; ++n) inv[n] = (REAL)1 / (REAL)n;
    const REAL *q = (const REAL *)a->q + b * a->q_sb + c0;
    const REAL *k = (const REAL *)a->k + b * a->k_sb + c0;
    const REAL *v = (const REAL *)a->v + b * a->v_sb + c0;
    const REAL *g = (const REAL *)a->g + b * a->g_sb + c0;
    REAL *dq = (REAL *)a->dq + b * L * C + c0;
    REAL *dk = (REAL *)a->dk + b * L * C + c0;
    REAL *dv = (REAL *)a->dv + b * L * C + c0;
    const int64_t bytes = cw * (int64_t)sizeof(REAL);
    const int full = cw == pw;
    ea_state_load_SFX(a, A, S, b, c0, cw, pw);
    if (!a->causal)
        for (int64_t l = 0; l < L; ++l) ea_add_key_SFX(a, A, S, k, v, b, l, cw, pw, pk, pv);
    for (int64_t l = 0; l < L; ++l) {   /* forward sweep: dq; causal: gz, gzo parked where dk, dv go */
        ea_prefetch(q + (l + AHEAD) * a->q_sl, bytes);
        ea_prefetch(g + (l + AHEAD) * a->g_sl, bytes);
        if (a->causal) ea_add_key_SFX(a, A, S, k, v, b, l, cw, pw, pk, pv);
        const REAL *ql = ea_row_SFX(q + l * a->q_sl, cw, pw, pq);
        REAL *dql = full ? dq + l * C : pdq;
        REAL *gzl = a->causal && full ? dk + l * C : gz, *gzol = a->causal && full ? dv + l * C : gzo;
        ea_query_grads_SFX(A, S, ql, ea_row_SFX(g + l * a->g_sl, cw, pw, pg), inv, t, pw, dql, gzl, gzol);
        ea_put_SFX(dq + l * C, dql, cw);
        if (a->causal) {
            ea_put_SFX(dk + l * C, gzl, cw);
            ea_put_SFX(dv + l * C, gzol, cw);
        } else {   /* the totals of G_n, H_n need gz, gzo only here */
            ea_add_query_SFX(G, Hs, ql, gzl, gzol, inv, T1, pw);
        }
    }
    for (int64_t l = L - 1; l >= 0; --l) {   /* reverse sweep (causal: suffix sums; non-causal: the totals) */
        REAL *dkl = dk + l * C, *dvl = dv + l * C;
        ea_prefetch(k + (l - AHEAD) * a->k_sl, bytes);
        ea_prefetch(v + (l - AHEAD) * a->v_sl, bytes);
        if (a->causal) {
            ea_prefetch(q + (l - AHEAD) * a->q_sl, bytes);
            ea_prefetch(dkl - AHEAD * C, bytes);
            ea_prefetch(dvl - AHEAD * C, bytes);
            ea_add_query_SFX(G, Hs, ea_row_SFX(q + l * a->q_sl, cw, pw, pq), ea_row_SFX(dkl, cw, pw, gz),
                             ea_row_SFX(dvl, cw, pw, gzo), inv, T1, pw);
        }
        if (ea_keeps_SFX(a, b, l)) {
            REAL *dkw = full ? dkl : pdk, *dvw = full ? dvl : pdv;
            ea_key_grads_SFX(G, Hs, ea_row_SFX(k + l * a->k_sl, cw, pw, pk), ea_row_SFX(v + l * a->v_sl, cw, pw, pv),
                             T1, pw, dkw, dvw);
            ea_put_SFX(dkl, dkw, cw);
            ea_put_SFX(dvl, dvw, cw);
        } else {
            memset(dkl, 0, sizeof(REAL) * cw);
            memset(dvl, 0, sizeof(REAL) * cw);
        }
    }
    free(buf);
    return 0;
}

int ea_forward_SFX(const ea_args *a) { return ea_run(a, ea_fwd_item_SFX); }
int ea_backward_SFX(const ea_args *a) { return ea_run(a, ea_bwd_item_SFX); }
"""


SOURCE = _COMMON + "".join(_BODY.replace("IVEC", f"ivec_{s}").replace("VEC", f"vec_{s}").replace("REAL", t)
                           .replace("_SFX", f"_{s}") for t, s in (("float", "f32"), ("double", "f64")))
FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-pthread", "-std=gnu99", "-fno-math-errno", "-fno-trapping-math"]
_WIDTH = 64  # channels per work item at most (the WMAX of the C source)


class _Args(ctypes.Structure):
    _fields_ = ([(name, ctypes.c_void_p) for name in ("q", "k", "v", "g", "keep", "state_in", "state_out",
                                                       "o", "dq", "dk", "dv")]
                + [(name, ctypes.c_int64) for name in ("B", "L", "H", "D", "q_sb", "q_sl", "k_sb", "k_sl", "v_sb",
                                                       "v_sl", "g_sb", "g_sl", "order", "causal", "nthreads",
                                                       "width")])


# -- building and loading ----------------------------------------------------------------------------------

_lock = threading.Lock()
_lib: Any = None
_reason: str | None = None     # why the kernel is unavailable (None: not tried yet, or available)
_tried = False
_enabled = True
BUILD_INFO: dict[str, Any] = {}  # compiler, path, whether this process compiled it, seconds to build or load


def cache_dir() -> Path:
    """Where compiled kernels live: ``$EA_SUITE_CACHE/cpu-kernels`` (default ``~/.cache/ea-suite/cpu-kernels``)."""
    return settings.cache_dir() / "cpu-kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name.split()[0]):
            return name
    return None


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() + platform.machine()


def _target(cc: str, flags: list[str], version: str) -> Path:
    key = hashlib.sha256("\0".join([SOURCE, " ".join(flags), cc, version, _cpu_signature()]).encode()).hexdigest()
    return cache_dir() / f"ea_cpu_{key[:20]}.so"


def _compile(cc: str, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "ea_cpu.c"
        src.write_text(SOURCE)
        out = Path(tmp) / "ea_cpu.so"
        res = subprocess.run([*cc.split(), *flags, "-o", str(out), str(src), "-lm"], capture_output=True, text=True,
                             timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {' '.join((res.stderr or res.stdout).split())[:300]}")
        os.replace(out, target)  # atomic: a process that races us loads one complete library or the other


# tried in this order: OpenMP (torch's runtime), plain pthreads, and without -march=native for a compiler that
# does not know it
_VARIANTS = (("openmp", FLAGS + ["-fopenmp"]), ("pthreads", FLAGS),
             ("pthreads-generic", [f for f in FLAGS if f != "-march=native"]))


def _build(cc: str) -> Path:
    """The cached library (the first variant already on disk), else the first variant that compiles."""
    version = subprocess.run([*cc.split(), "--version"], capture_output=True, text=True, timeout=60).stdout
    targets = [(name, flags, _target(cc, flags, version)) for name, flags in _VARIANTS]
    for name, _, target in targets:
        if target.exists():
            BUILD_INFO.update(compiled=False, threads=name)
            return target
    errors = []
    for name, flags, target in targets:
        try:
            _compile(cc, flags, target)
        except RuntimeError as err:
            errors.append(str(err))
            continue
        BUILD_INFO.update(compiled=True, threads=name)
        return target
    raise RuntimeError(errors[-1])


def _load() -> Any:
    """The compiled library, building it on first use; None (and ``_reason`` set) when it cannot be had."""
    global _lib, _reason, _tried
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        start = time.perf_counter()
        if settings.cpu_fused_disabled():
            _reason = settings.cpu_fused_disabled()
        elif (cc := _compiler()) is None:
            _reason = "no C compiler found ($CC, cc, gcc or clang) to build the fused CPU kernel"
        else:
            try:
                path = _build(cc)
                lib = ctypes.CDLL(str(path))
                for name in ("ea_forward_f32", "ea_backward_f32", "ea_forward_f64", "ea_backward_f64"):
                    fn = getattr(lib, name)
                    fn.argtypes = [ctypes.POINTER(_Args)]
                    fn.restype = ctypes.c_int
                _lib = lib
                BUILD_INFO.update(compiler=cc, path=str(path), seconds=time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001 - any failure means: run the op-by-op path, and say why
                _reason = f"building the fused CPU kernel failed ({type(err).__name__}: {err})"
        if _reason is not None and not _reason.startswith("disabled"):
            warnings.warn(f"ea: {_reason}; the torch backend runs the op-by-op path (backend_used={UNFUSED!r})",
                          RuntimeWarning, stacklevel=3)
        _tried = True
        return _lib


def unavailable_reason() -> str | None:
    """Why the fused CPU kernel cannot run (None when it can); builds it on first call."""
    if not _enabled:
        return "disabled by suite.attention.ea.fused.disabled()"
    _load()
    return _reason


def build_report() -> str | None:
    """One line on this process's fused CPU kernel for a benchmark's notes (None when no EA ran on a CPU here):
    built or loaded from the cache, in how long (paid once per process, never inside a timed call), or why
    the op-by-op path ran instead."""
    if not _tried:
        return None
    if _lib is None:
        return f"EA's fused CPU kernel did not run: {_reason} (backend_used={UNFUSED!r})"
    how = "compiled" if BUILD_INFO.get("compiled") else "loaded from its cache"
    return (f"EA's fused CPU kernel ({BUILD_INFO.get('threads')}): {how} in {BUILD_INFO.get('seconds', 0.0):.3g} s "
            "by this process before the first call, outside every timing")


def usable(x: torch.Tensor | torch.device | str) -> bool:
    """Whether the torch backend runs the fused kernel for tensors like ``x`` (or on device ``x``): on a CPU, when
    the kernel is available."""
    device = x.device if isinstance(x, torch.Tensor) else torch.device(x)
    return device.type == "cpu" and _enabled and _load() is not None


def path_name(x: torch.Tensor | torch.device | str) -> str:
    """``backend_used`` of the torch backend for tensors like ``x`` (or on device ``x``): FUSED or UNFUSED."""
    return FUSED if usable(x) else UNFUSED


@contextmanager
def disabled() -> Iterator[None]:
    """Run the op-by-op path inside the block (tests, comparisons)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


# -- the op ------------------------------------------------------------------------------------------------

def _new_output(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An output buffer the kernel fills completely (tests poison it with NaN to prove that)."""
    return torch.empty(shape, dtype=dtype)


def _rows(t: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """t in dtype dt with each row of H*D values contiguous (batch and row strides are free)."""
    t = t.to(dt)
    if t.stride(3) != 1 or t.stride(2) != t.shape[3]:
        t = t.contiguous()
    return t


def _args(q, k, v, g, keep, order, causal, **out) -> _Args:
    B, L, H, D = q.shape
    a = _Args(B=B, L=L, H=H, D=D, order=order, causal=int(causal), nthreads=max(1, torch.get_num_threads()))
    a.width = _WIDTH
    while a.width > 8 and B * -(-(H * D) // a.width) < 4 * a.nthreads:
        a.width //= 2  # more, narrower items when there are few: every thread gets work, and a busy core less
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g)):
        if t is not None:
            setattr(a, name, t.data_ptr())
            setattr(a, f"{name}_sb", t.stride(0))
            setattr(a, f"{name}_sl", t.stride(1))
    if keep is not None:
        a.keep = keep.data_ptr()
    for name, t in out.items():
        if t is not None:
            setattr(a, name, t.data_ptr())
    return a


def _call(name: str, dt: torch.dtype, args: _Args) -> None:
    lib = _load()
    if lib is None:
        raise RuntimeError(f"ea fused CPU kernel unavailable: {_reason}")
    fn = getattr(lib, f"{name}_{'f64' if dt == torch.float64 else 'f32'}")
    if fn(ctypes.byref(args)) != 0:
        raise MemoryError("ea fused CPU kernel: out of memory for its per-thread sums")


class EAFusedFunction(torch.autograd.Function):
    """§2's forward and analytic backward as one C kernel each; saves only q, k, v (O(LHD)) for the backward."""

    @staticmethod
    def forward(ctx, q, k, v, order: int, causal: bool, keep, initial_state):
        dt = compute_dtype(q)
        qf, kf, vf = (_rows(t, dt) for t in (q, k, v))
        keep8 = keep.contiguous() if keep is not None else None
        init = initial_state.to(dt).contiguous() if initial_state is not None else None
        B, L, H, D = q.shape
        o = _new_output((B, L, H, D), dt)
        state = _new_output((B, H, 2, order + 1, D), dt)
        args = _args(qf, kf, vf, None, keep8, order, causal, o=o, state_out=state)
        args.state_in = init.data_ptr() if init is not None else None
        _call("ea_forward", dt, args)
        ctx.save_for_backward(q, k, v, keep, initial_state)
        ctx.order, ctx.causal = order, causal
        ctx.set_materialize_grads(False)  # no zero-filled gradient for an unused state (nor for o)
        return o.to(v.dtype), state.float()

    @staticmethod
    @once_differentiable  # the kernel's gradients carry no graph: a double backward raises instead of going quiet
    def backward(ctx, grad_o, grad_state):
        q, k, v, keep, initial_state = ctx.saved_tensors
        if grad_state is not None and bool(grad_state.ne(0).any()):
            raise RuntimeError("ea_attention: gradients through output_final_state are not supported")
        if grad_o is None:
            return None, None, None, None, None, None, None
        dt = compute_dtype(q)
        qf, kf, vf, g = (_rows(t, dt) for t in (q, k, v, grad_o))
        keep8 = keep.contiguous() if keep is not None else None
        init = initial_state.to(dt).contiguous() if initial_state is not None else None
        dq, dk, dv = (_new_output(tuple(q.shape), dt) for _ in range(3))
        args = _args(qf, kf, vf, g, keep8, ctx.order, ctx.causal, dq=dq, dk=dk, dv=dv)
        args.state_in = init.data_ptr() if init is not None else None
        _call("ea_backward", dt, args)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def ea_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: int, causal: bool,
             key_padding_mask: torch.Tensor | None = None,
             initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused CPU path (call only when ``usable(q)``): (o [B, L, H, D] in v's dtype, final state fp32)."""
    return EAFusedFunction.apply(q, k, v, order, causal, key_padding_mask, initial_state)
