/* EA's fused CPU kernel: DESIGN.md §2's forward and analytic backward, one C kernel per call (cpu_fused.py builds
   and loads it; docs/kernels.md, "The CPU path"). The per-type body, cpu_fused_body.inc, is compiled twice below:
   REAL is the compute type, VEC/IVEC its vector types, SFX(name) the name of its functions. Build macros (-D):
   EA_WMAX, the channels per work item at most. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef EA_WMAX
#error "build with -DEA_WMAX=<channels per work item> (cpu_fused.py passes it)"
#endif
#define WMAX EA_WMAX
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

#define SFX_CAT(name, sfx) name##_##sfx
#define SFX_XCAT(name, sfx) SFX_CAT(name, sfx)
#define SFX(name) SFX_XCAT(name, EA_SFX)

#define REAL float
#define VEC vec_f32
#define IVEC ivec_f32
#define EA_SFX f32
#include "cpu_fused_body.inc"
#undef REAL
#undef VEC
#undef IVEC
#undef EA_SFX

#define REAL double
#define VEC vec_f64
#define IVEC ivec_f64
#define EA_SFX f64
#include "cpu_fused_body.inc"
#undef REAL
#undef VEC
#undef IVEC
#undef EA_SFX
