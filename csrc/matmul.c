/*
 * matmul.c - the Linear layer: out[M, N] = x[M, K] . W[N, K]^T + bias[N].
 *
 * W is stored as PyTorch stores it, one output feature per row, so row n of
 * W and row m of x are both contiguous in K and every output is a dot
 * product of two contiguous vectors. The kernel computes a tile of 4 x rows
 * by 2 W rows at once: each value loaded from memory feeds several
 * multiply-adds, and the 8 independent lanes per dot product let the
 * compiler keep the accumulators in vector registers.
 *
 * The tile is written three times: in portable C (any CPU), with AVX2 + FMA
 * intrinsics and with AVX-512 intrinsics. The widest one the CPU supports is
 * chosen at run time (GPTC_ISA=generic|avx2|avx512 forces one), so the
 * default build runs on any x86-64 machine, with no -march=native. The SIMD
 * tiles are explicit rather than left to the auto-vectoriser: GCC 12 at -O3
 * vectorised the portable tile for AVX-512 into loads one row past the end
 * of x, a read that faults when x ends at a page boundary.
 *
 * The backward (the gradients of x, W and the bias, for training) is at the
 * end of the file; its kernel is dispatched the same way.
 */
#include "gptc.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define GPTC_HAVE_X86_KERNELS 1
#include <immintrin.h>
#endif

#define MR 4        /* rows of x per tile */
#define NR 2        /* rows of W per tile */
#define LANES 8     /* independent partial sums per dot product */
/* The SIMD tiles below spell out their two W rows. */
_Static_assert(NR == 2, "the AVX2 and AVX-512 tiles are written for NR == 2");

typedef void (*linear_rows_fn)(float *out, const float *x, const float *weight,
                               const float *bias, int M, int K, int N,
                               int n_begin, int n_end);

/* Sum LANES partial sums into one value. */
static inline __attribute__((always_inline)) float sum_lanes(const float *acc)
{
    float s = 0.0f;
    for (int u = 0; u < LANES; u++) {
        s += acc[u];
    }
    return s;
}

/* One output value: the dot product of x row and W row, K long. */
static inline __attribute__((always_inline)) float dot_1x1(const float *x,
                                                           const float *w, int K)
{
    float acc[LANES] = {0};
    int k = 0;
    for (; k + LANES <= K; k += LANES) {
        for (int u = 0; u < LANES; u++) {
            acc[u] += x[k + u] * w[k + u];
        }
    }
    float s = sum_lanes(acc);
    for (; k < K; k++) {
        s += x[k] * w[k];
    }
    return s;
}

/* A full MR x NR tile of outputs. */
static inline __attribute__((always_inline)) void dot_tile(float *out, int ldo,
                                                           const float *x, const float *w,
                                                           int K)
{
    float acc[MR][NR][LANES];
    memset(acc, 0, sizeof(acc));
    int k = 0;
    for (; k + LANES <= K; k += LANES) {
        for (int i = 0; i < MR; i++) {
            for (int j = 0; j < NR; j++) {
                for (int u = 0; u < LANES; u++) {
                    acc[i][j][u] += x[(size_t)i * K + k + u] * w[(size_t)j * K + k + u];
                }
            }
        }
    }
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NR; j++) {
            float s = sum_lanes(acc[i][j]);
            for (int kk = k; kk < K; kk++) {
                s += x[(size_t)i * K + kk] * w[(size_t)j * K + kk];
            }
            out[(size_t)i * ldo + j] = s;
        }
    }
}

typedef void (*tile_fn)(float *out, int ldo, const float *x, const float *w, int K);
typedef float (*dot_fn)(const float *x, const float *w, int K);

/* Output columns [n_begin, n_end) for all M rows. Columns are the outer
 * loop so a pair of W rows is read from memory once and then stays in
 * cache while every x row meets it. dot_tile and dot_1x1 are compile-time
 * constants at every call site, so they are inlined. */
static inline __attribute__((always_inline)) void linear_rows_body(
    float *out, const float *x, const float *weight, const float *bias,
    int M, int K, int N, int n_begin, int n_end, tile_fn dot_tile, dot_fn dot_1x1)
{
    int n = n_begin;
    for (; n + NR <= n_end; n += NR) {
        const float *w = weight + (size_t)n * K;
        int m = 0;
        for (; m + MR <= M; m += MR) {
            dot_tile(out + (size_t)m * N + n, N, x + (size_t)m * K, w, K);
        }
        for (; m < M; m++) {
            for (int j = 0; j < NR; j++) {
                out[(size_t)m * N + n + j] = dot_1x1(x + (size_t)m * K, w + (size_t)j * K, K);
            }
        }
    }
    for (; n < n_end; n++) {
        for (int m = 0; m < M; m++) {
            out[(size_t)m * N + n] = dot_1x1(x + (size_t)m * K, weight + (size_t)n * K, K);
        }
    }
    if (bias != NULL) {
        for (int m = 0; m < M; m++) {
            float *o = out + (size_t)m * N;
            for (int j = n_begin; j < n_end; j++) {
                o[j] += bias[j];
            }
        }
    }
}

static void linear_rows_generic(float *out, const float *x, const float *weight,
                                const float *bias, int M, int K, int N,
                                int n_begin, int n_end)
{
    linear_rows_body(out, x, weight, bias, M, K, N, n_begin, n_end, dot_tile, dot_1x1);
}

#ifdef GPTC_HAVE_X86_KERNELS
/* ---- AVX2 + FMA: 8 lanes per register, scalar tail for K % 8 ---- */
__attribute__((target("avx2,fma")))
static inline float hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma")))
static inline float dot_1x1_avx2(const float *x, const float *w, int K)
{
    __m256 acc = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w + k), acc);
    }
    float s = hsum_avx2(acc);
    for (; k < K; k++) {
        s += x[k] * w[k];
    }
    return s;
}

__attribute__((target("avx2,fma")))
static inline void dot_tile_avx2(float *out, int ldo, const float *x, const float *w, int K)
{
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
    }
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 w0 = _mm256_loadu_ps(w + k), w1 = _mm256_loadu_ps(w + (size_t)K + k);
        for (int i = 0; i < MR; i++) {
            __m256 xi = _mm256_loadu_ps(x + (size_t)i * K + k);
            acc[i][0] = _mm256_fmadd_ps(xi, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xi, w1, acc[i][1]);
        }
    }
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NR; j++) {
            float s = hsum_avx2(acc[i][j]);
            for (int kk = k; kk < K; kk++) {
                s += x[(size_t)i * K + kk] * w[(size_t)j * K + kk];
            }
            out[(size_t)i * ldo + j] = s;
        }
    }
}

__attribute__((target("avx2,fma")))
static void linear_rows_avx2(float *out, const float *x, const float *weight,
                             const float *bias, int M, int K, int N,
                             int n_begin, int n_end)
{
    linear_rows_body(out, x, weight, bias, M, K, N, n_begin, n_end, dot_tile_avx2,
                     dot_1x1_avx2);
}

/* ---- AVX-512: 16 lanes per register; the K tail uses masked loads, which
 * never touch the masked-off memory ---- */
__attribute__((target("avx512f")))
static inline __mmask16 tail_mask(int remaining)
{
    return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1u);
}

__attribute__((target("avx512f")))
static inline float dot_1x1_avx512(const float *x, const float *w, int K)
{
    __m512 acc = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        __mmask16 m = tail_mask(K - k);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + k), _mm512_maskz_loadu_ps(m, w + k),
                              acc);
    }
    return _mm512_reduce_add_ps(acc);
}

__attribute__((target("avx512f")))
static inline void dot_tile_avx512(float *out, int ldo, const float *x, const float *w, int K)
{
    __m512 acc[MR][NR];
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    }
    for (int k = 0; k < K; k += 16) {
        __mmask16 m = tail_mask(K - k);
        __m512 w0 = _mm512_maskz_loadu_ps(m, w + k);
        __m512 w1 = _mm512_maskz_loadu_ps(m, w + (size_t)K + k);
        for (int i = 0; i < MR; i++) {
            __m512 xi = _mm512_maskz_loadu_ps(m, x + (size_t)i * K + k);
            acc[i][0] = _mm512_fmadd_ps(xi, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xi, w1, acc[i][1]);
        }
    }
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NR; j++) out[(size_t)i * ldo + j] = _mm512_reduce_add_ps(acc[i][j]);
    }
}

__attribute__((target("avx512f")))
static void linear_rows_avx512(float *out, const float *x, const float *weight,
                               const float *bias, int M, int K, int N,
                               int n_begin, int n_end)
{
    linear_rows_body(out, x, weight, bias, M, K, N, n_begin, n_end, dot_tile_avx512,
                     dot_1x1_avx512);
}
#endif

/* ------------------------------------------------------------------------
 * Backward. Both gradients of a Linear layer have the same shape of
 * computation, an accumulation into a row-major matrix
 *     G[r, k] += sum_l A(r, l) * Bm[l, k]
 * where Bm is contiguous in k and A is read with arbitrary strides:
 *   dinp[m, k]    += sum_n dout[m, n] * W[n, k]     (A = dout, Bm = W)
 *   dweight[n, k] += sum_m dout[m, n] * inp[m, k]   (A = dout^T, Bm = inp)
 * so neither needs a transposed copy. The inner step broadcasts one A
 * value against 16 consecutive Bm values, which are contiguous, and adds
 * into a 6 x 16 tile of G held in registers (twelve 8-lane vectors).
 *
 * Every element of G is summed in the same order (l = 0, 1, ..., L-1,
 * in blocks of GL added to the old value one after the other) whatever
 * the number of threads: the result is deterministic and independent of
 * the thread count. Written with GCC's vector extensions so one body compiles to SSE
 * (generic) or AVX2 + FMA, dispatched like the forward kernel.
 * ---------------------------------------------------------------------- */
typedef float vec8 __attribute__((vector_size(32)));

#define GR 6        /* rows of G per register tile: 12 accumulators, 2 Bm
                       vectors and a broadcast fit AVX2's 16 registers */
#define GL 128      /* reduction depth per block: the packed 6 x 128 slice
                       of A stays in L1 */
#define GK 256      /* columns per block: a 128 x 256 panel of Bm (128 KB) stays in L2 */

typedef void (*grad_rows_fn)(float *g, const float *a, ptrdiff_t ars, ptrdiff_t als,
                             const float *bm, int K, int L, int r0, int r1, int k0, int k1);

/* An R x (8 * V) tile of G (R <= GR, V <= 2) += A slice . Bm slice, over
 * L. The A slice is packed: ap[l * R + i] is A(row i, l). The products are
 * summed from zero and the block's sum added to G once: G may already hold
 * a large gradient, and adding each small product to it directly would
 * round at G's scale L times instead of once. */
static inline __attribute__((always_inline)) void grad_tile(
    float *g, int ldg, const float *ap, const float *bm, int ldb, int L, const int R,
    const int V)
{
    vec8 acc[GR][2];
    for (int i = 0; i < R; i++) {
        for (int v = 0; v < V; v++) acc[i][v] = (vec8){0};
    }
    for (int l = 0; l < L; l++) {
        vec8 b[2];
        for (int v = 0; v < V; v++) memcpy(&b[v], bm + (size_t)l * ldb + 8 * v, sizeof(vec8));
        for (int i = 0; i < R; i++) {
            float s = ap[l * R + i];
            for (int v = 0; v < V; v++) acc[i][v] += s * b[v];
        }
    }
    for (int i = 0; i < R; i++) {
        for (int v = 0; v < V; v++) {
            vec8 old;
            memcpy(&old, g + (size_t)i * ldg + 8 * v, sizeof(vec8));
            old += acc[i][v];
            memcpy(g + (size_t)i * ldg + 8 * v, &old, sizeof(vec8));
        }
    }
}

/* Columns [k0, k1) of R rows of G: 16-wide tiles, one 8-wide, then scalars.
 * The R x L slice of A is packed first into ap: A may be read with a large
 * stride (dout^T steps a whole row of dout per l, a new page every few
 * values), and once packed every tile of the strip reads it as one short
 * contiguous stream. */
static inline __attribute__((always_inline)) void grad_strip(
    float *g, int ldg, const float *a, ptrdiff_t ars, ptrdiff_t als, const float *bm,
    int ldb, int L, int k0, int k1, const int R)
{
    float ap[GL * GR];
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < R; i++) ap[l * R + i] = a[i * ars + l * als];
    }
    int k = k0;
    for (; k + 16 <= k1; k += 16) grad_tile(g + k, ldg, ap, bm + k, ldb, L, R, 2);
    for (; k + 8 <= k1; k += 8) grad_tile(g + k, ldg, ap, bm + k, ldb, L, R, 1);
    for (; k < k1; k++) {
        for (int i = 0; i < R; i++) {
            float s = 0.0f;
            for (int l = 0; l < L; l++) s += ap[l * R + i] * bm[(size_t)l * ldb + k];
            g[(size_t)i * ldg + k] += s;
        }
    }
}

/* Rows [r0, r1) and columns [k0, k1) of G (row stride K), over all L. The
 * reduction is cut into GL-deep blocks and the columns into GK-wide ones so
 * the slice of Bm being used stays in cache while all the rows meet it. */
static inline __attribute__((always_inline)) void grad_rows_body(
    float *g, const float *a, ptrdiff_t ars, ptrdiff_t als, const float *bm,
    int K, int L, int r0, int r1, int k0, int k1)
{
    for (int l0 = 0; l0 < L; l0 += GL) {
        int lb = L - l0 < GL ? L - l0 : GL;
        const float *al = a + l0 * als;
        const float *bl = bm + (size_t)l0 * K;
        for (int c0 = k0; c0 < k1; c0 += GK) {
            int c1 = k1 - c0 < GK ? k1 : c0 + GK;
            int r = r0;
            for (; r + GR <= r1; r += GR) {
                grad_strip(g + (size_t)r * K, K, al + r * ars, ars, als, bl, K, lb, c0, c1, GR);
            }
            for (; r < r1; r++) {
                grad_strip(g + (size_t)r * K, K, al + r * ars, ars, als, bl, K, lb, c0, c1, 1);
            }
        }
    }
}

static void grad_rows_generic(float *g, const float *a, ptrdiff_t ars, ptrdiff_t als,
                              const float *bm, int K, int L, int r0, int r1, int k0, int k1)
{
    grad_rows_body(g, a, ars, als, bm, K, L, r0, r1, k0, k1);
}

#ifdef GPTC_HAVE_X86_KERNELS
/* Also used when the forward runs AVX-512: this loop is bound by loads of
 * the G tile and Bm, not by the vector width. */
__attribute__((target("avx2,fma")))
static void grad_rows_avx2(float *g, const float *a, ptrdiff_t ars, ptrdiff_t als,
                           const float *bm, int K, int L, int r0, int r1, int k0, int k1)
{
    grad_rows_body(g, a, ars, als, bm, K, L, r0, r1, k0, k1);
}
#endif

typedef struct {
    const char *name;
    linear_rows_fn fn;
    grad_rows_fn grad;
} isa_kernel;

enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512 };

static const isa_kernel kernels[] = {
    [ISA_GENERIC] = {"generic", linear_rows_generic, grad_rows_generic},
#ifdef GPTC_HAVE_X86_KERNELS
    [ISA_AVX2] = {"avx2", linear_rows_avx2, grad_rows_avx2},
    [ISA_AVX512] = {"avx512", linear_rows_avx512, grad_rows_avx2},
#endif
};

/* Pick the kernel: GPTC_ISA if set (and supported), else the widest the
 * CPU has. An unknown or unsupported GPTC_ISA falls back to detection, so
 * a typo never selects an instruction set the CPU lacks. */
static int choose_isa(void)
{
#ifdef GPTC_HAVE_X86_KERNELS
    __builtin_cpu_init();
    int has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f");
    const char *forced = getenv("GPTC_ISA");
    if (forced != NULL) {
        if (strcmp(forced, "generic") == 0) return ISA_GENERIC;
        if (strcmp(forced, "avx2") == 0 && has_avx2) return ISA_AVX2;
        if (strcmp(forced, "avx512") == 0 && has_avx512) return ISA_AVX512;
    }
    if (has_avx512) return ISA_AVX512;
    if (has_avx2) return ISA_AVX2;
#endif
    return ISA_GENERIC;
}

static const isa_kernel *selected_kernel(void)
{
    /* Chosen on first use. Two threads racing here both compute the same
     * index, and the atomic makes the store and the loads well defined. */
    static _Atomic int selected = -1;
    int isa = selected;
    if (isa < 0) {
        isa = choose_isa();
        selected = isa;
    }
    return &kernels[isa];
}

const char *gptc_isa_name(void)
{
    return selected_kernel()->name;
}

void gptc_linear_forward(float *out, const float *x, const float *weight,
                         const float *bias, int M, int K, int N)
{
    linear_rows_fn fn = selected_kernel()->fn;
    double work = (double)M * K * N;
    int nthreads = gptc_get_num_threads();
    if (nthreads <= 1 || work < GPTC_PARALLEL_MIN_WORK || N < 2 * NR) {
        fn(out, x, weight, bias, M, K, N, 0, N);
        return;
    }
    /* Split the output columns into chunks of W rows handed out
     * dynamically, so a slower core simply takes fewer chunks. About 8
     * chunks per thread balance the load without making chunks tiny. */
    int chunk = N / (nthreads * 8);
    chunk = chunk < 16 ? 16 : chunk;
    chunk = (chunk + NR - 1) / NR * NR;
    int nchunks = (N + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int c = 0; c < nchunks; c++) {
        int begin = c * chunk;
        int end = begin + chunk < N ? begin + chunk : N;
        fn(out, x, weight, bias, M, K, N, begin, end);
    }
}

/* G[R, K] += A . Bm over L (see grad_rows_body), on nthreads threads. Each
 * task owns a block of whole rows of G, or of rows and columns when there
 * are too few rows to go round: no element is ever written by two threads. */
static void grad_parallel(grad_rows_fn fn, float *g, const float *a, ptrdiff_t ars,
                          ptrdiff_t als, const float *bm, int R, int K, int L)
{
    int nthreads = gptc_get_num_threads();
    double work = (double)R * K * L;
    if (nthreads <= 1 || work < GPTC_PARALLEL_MIN_WORK) {
        fn(g, a, ars, als, bm, K, L, 0, R, 0, K);
        return;
    }
    /* About two tasks per thread: few enough that each task's rows reuse
     * the cached Bm panel, enough for a busy core to hand work over. */
    int want = 2 * nthreads;
    int rc = (R + want - 1) / want;
    rc = (rc + GR - 1) / GR * GR;
    int nr = (R + rc - 1) / rc;
    int kc = K;
    if (nr < want) {
        int nk = (want + nr - 1) / nr;
        kc = (K + nk - 1) / nk;
        kc = (kc + 15) / 16 * 16;
        kc = kc < 64 ? 64 : kc;
    }
    int nk = K > 0 ? (K + kc - 1) / kc : 1;
    int ntasks = nr * nk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int t = 0; t < ntasks; t++) {
        int r0 = (t / nk) * rc, k0 = (t % nk) * kc;
        int r1 = r0 + rc < R ? r0 + rc : R;
        int k1 = k0 + kc < K ? k0 + kc : K;
        fn(g, a, ars, als, bm, K, L, r0, r1, k0, k1);
    }
}

void gptc_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, int M, int K, int N)
{
    grad_rows_fn fn = selected_kernel()->grad;
    if (dinp != NULL) {
        /* dinp[m, k] += sum_n dout[m, n] W[n, k]: A(m, n) = dout[m * N + n] */
        grad_parallel(fn, dinp, dout, N, 1, weight, M, K, N);
    }
    if (dweight != NULL) {
        /* dweight[n, k] += sum_m dout[m, n] inp[m, k]: A(n, m) = dout[m * N + n] */
        grad_parallel(fn, dweight, dout, 1, N, inp, N, K, M);
    }
    if (dbias != NULL) {
        /* Column sums of dout, 256 columns at a time in double: a bias
         * gradient sums over every row of the batch, which may be many. */
        int nchunks = (N + 255) / 256;
        double work = (double)M * N;
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nchunks > 1)
        for (int c = 0; c < nchunks; c++) {
            int n0 = c * 256, len = N - n0 < 256 ? N - n0 : 256;
            double acc[256];
            for (int j = 0; j < len; j++) acc[j] = 0.0;
            for (int m = 0; m < M; m++) {
                const float *row = dout + (size_t)m * N + n0;
                for (int j = 0; j < len; j++) acc[j] += row[j];
            }
            for (int j = 0; j < len; j++) dbias[n0 + j] += (float)acc[j];
        }
    }
}
