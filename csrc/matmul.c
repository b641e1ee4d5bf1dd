/*
 * matmul.c - every matrix product of the model: the Linear layer
 *   out[M, N] = x[M, K] . W[N, K]^T + bias[N]
 * and its gradients, which are products of the same three matrices.
 *
 * Two algorithms, chosen by the number of rows M:
 *
 *  - Many rows (a prompt, a batch, training): a cache-blocked matrix
 *    multiply with packed panels, the structure of BLIS and OpenBLAS. The
 *    operands are first copied ("packed") into the exact order a small
 *    register-tiled kernel reads them: MR rows of A interleaved, NR columns
 *    of B interleaved, KC steps of the reduction at a time. The kernel then
 *    keeps an MR x NR tile of the result in vector registers for the whole
 *    KC steps, doing MR * NR multiply-adds for every MR + NR values it
 *    loads, and streams both panels from cache in order. Packing also
 *    absorbs the layouts: W is stored one output feature per row (PyTorch's
 *    layout), the gradients read dout transposed, and after packing every
 *    case is the same kernel.
 *
 *  - A few rows (one-token decode steps, the book's tiny batches): each
 *    weight is used by at most a few rows, so there is nothing to block
 *    for and packing W would cost as much as the product itself. Each
 *    output is a dot product of an x row and a W row, both contiguous;
 *    a tile of 4 x rows by 2 W rows reads every weight exactly once.
 *
 * Every kernel is written three times: portable C (any CPU), AVX2 + FMA
 * intrinsics and AVX-512 intrinsics. The widest the CPU supports is chosen
 * at run time (GPTC_ISA=generic|avx2|avx512 forces one), so the default
 * build runs on any x86-64 machine with no -march=native. The SIMD kernels
 * are explicit rather than left to the auto-vectoriser: GCC 12 at -O3 once
 * vectorised a portable tile into loads one row past the end of x, a read
 * that faults when x ends at a page boundary.
 */
#include "gptc.h"
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define GPTC_HAVE_X86_KERNELS 1
#include <immintrin.h>
#endif


/* bfloat16 is the top half of a float32: widening is exact, a shift. */
static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ========================================================================
 * Part 1: the few-rows path (dot products of contiguous rows).
 * ===================================================================== */
#define DOT_MR 4        /* rows of x per tile */
#define DOT_NR 2        /* rows of W per tile */
#define LANES 8     /* independent partial sums per dot product */
/* The SIMD tiles below spell out their two W rows. */
_Static_assert(DOT_NR == 2, "the AVX2 and AVX-512 tiles are written for DOT_NR == 2");

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

/* A full DOT_MR x DOT_NR tile of outputs. */
static inline __attribute__((always_inline)) void dot_tile(float *out, int ldo,
                                                           const float *x, const float *w,
                                                           int K)
{
    float acc[DOT_MR][DOT_NR][LANES];
    memset(acc, 0, sizeof(acc));
    int k = 0;
    for (; k + LANES <= K; k += LANES) {
        for (int i = 0; i < DOT_MR; i++) {
            for (int j = 0; j < DOT_NR; j++) {
                for (int u = 0; u < LANES; u++) {
                    acc[i][j][u] += x[(size_t)i * K + k + u] * w[(size_t)j * K + k + u];
                }
            }
        }
    }
    for (int i = 0; i < DOT_MR; i++) {
        for (int j = 0; j < DOT_NR; j++) {
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
    for (; n + DOT_NR <= n_end; n += DOT_NR) {
        const float *w = weight + (size_t)n * K;
        int m = 0;
        for (; m + DOT_MR <= M; m += DOT_MR) {
            dot_tile(out + (size_t)m * N + n, N, x + (size_t)m * K, w, K);
        }
        for (; m < M; m++) {
            for (int j = 0; j < DOT_NR; j++) {
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

/* Four independent sums, as in dot_1x1_avx512 below. */
__attribute__((target("avx2,fma")))
static inline float dot_1x1_avx2(const float *x, const float *w, int K)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w + k), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), _mm256_loadu_ps(w + k + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 16), _mm256_loadu_ps(w + k + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 24), _mm256_loadu_ps(w + k + 24), acc3);
    }
    for (; k + 8 <= K; k += 8) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w + k), acc0);
    }
    float s = hsum_avx2(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; k < K; k++) {
        s += x[k] * w[k];
    }
    return s;
}

__attribute__((target("avx2,fma")))
static inline void dot_tile_avx2(float *out, int ldo, const float *x, const float *w, int K)
{
    __m256 acc[DOT_MR][DOT_NR];
    for (int i = 0; i < DOT_MR; i++) {
        for (int j = 0; j < DOT_NR; j++) acc[i][j] = _mm256_setzero_ps();
    }
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 w0 = _mm256_loadu_ps(w + k), w1 = _mm256_loadu_ps(w + (size_t)K + k);
        for (int i = 0; i < DOT_MR; i++) {
            __m256 xi = _mm256_loadu_ps(x + (size_t)i * K + k);
            acc[i][0] = _mm256_fmadd_ps(xi, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xi, w1, acc[i][1]);
        }
    }
    for (int i = 0; i < DOT_MR; i++) {
        for (int j = 0; j < DOT_NR; j++) {
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

/* Four independent sums: one chain of dependent multiply-adds would wait
 * out the FMA latency at every step, and this is the one-row (decode) path,
 * where each weight row is read once and nothing else hides that wait. */
__attribute__((target("avx512f")))
static inline float dot_1x1_avx512(const float *x, const float *w, int K)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    int k = 0;
    for (; k + 64 <= K; k += 64) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(w + k), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(w + k + 16), acc1);
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32), _mm512_loadu_ps(w + k + 32), acc2);
        acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48), _mm512_loadu_ps(w + k + 48), acc3);
    }
    for (; k < K; k += 16) {
        __mmask16 m = tail_mask(K - k);
        acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + k), _mm512_maskz_loadu_ps(m, w + k),
                               acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1),
                                              _mm512_add_ps(acc2, acc3)));
}

__attribute__((target("avx512f")))
static inline void dot_tile_avx512(float *out, int ldo, const float *x, const float *w, int K)
{
    __m512 acc[DOT_MR][DOT_NR];
    for (int i = 0; i < DOT_MR; i++) {
        for (int j = 0; j < DOT_NR; j++) acc[i][j] = _mm512_setzero_ps();
    }
    for (int k = 0; k < K; k += 16) {
        __mmask16 m = tail_mask(K - k);
        __m512 w0 = _mm512_maskz_loadu_ps(m, w + k);
        __m512 w1 = _mm512_maskz_loadu_ps(m, w + (size_t)K + k);
        for (int i = 0; i < DOT_MR; i++) {
            __m512 xi = _mm512_maskz_loadu_ps(m, x + (size_t)i * K + k);
            acc[i][0] = _mm512_fmadd_ps(xi, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xi, w1, acc[i][1]);
        }
    }
    for (int i = 0; i < DOT_MR; i++) {
        for (int j = 0; j < DOT_NR; j++) out[(size_t)i * ldo + j] = _mm512_reduce_add_ps(acc[i][j]);
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

/* The few-rows path of a weight kept in bfloat16: dot products of an x row
 * (float32) with a W row widened from bfloat16 as it is loaded. Reading
 * half the bytes is the point: one-row products are bound by memory
 * bandwidth, not arithmetic. Accumulation stays in float32. */
typedef float (*bf16_dot_fn)(const float *x, const uint16_t *w, int K);

static float dot_bf16_generic(const float *x, const uint16_t *w, int K)
{
    float acc[LANES] = {0};
    int k = 0;
    for (; k + LANES <= K; k += LANES) {
        for (int u = 0; u < LANES; u++) acc[u] += x[k + u] * bf16_to_f32(w[k + u]);
    }
    float s = sum_lanes(acc);
    for (; k < K; k++) s += x[k] * bf16_to_f32(w[k]);
    return s;
}

#ifdef GPTC_HAVE_X86_KERNELS
/* Widen 8 bfloat16 values to float32: each becomes the top half of a float. */
__attribute__((target("avx2,fma")))
static inline __m256 widen_bf16x8(__m128i h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,fma")))
static float dot_bf16_avx2(const float *x, const uint16_t *w, int K)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(w + k));
        __m256 w0 = widen_bf16x8(_mm256_castsi256_si128(h));
        __m256 w1 = widen_bf16x8(_mm256_extracti128_si256(h, 1));
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), w0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), w1, acc1);
    }
    float s = hsum_avx2(_mm256_add_ps(acc0, acc1));
    for (; k < K; k++) s += x[k] * bf16_to_f32(w[k]);
    return s;
}

/* Widen 16 bfloat16 values to float32: each becomes the top half of a float. */
__attribute__((target("avx512f")))
static inline __m512 widen_bf16x16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Four independent sums, as dot_1x1_avx512: a decode step is a stream of
 * these, and one dependent chain would wait out the FMA latency. */
__attribute__((target("avx512f")))
static float dot_bf16_avx512(const float *x, const uint16_t *w, int K)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    int k = 0;
    for (; k + 64 <= K; k += 64) {
        __m512i h01 = _mm512_loadu_si512((const void *)(w + k));
        __m512i h23 = _mm512_loadu_si512((const void *)(w + k + 32));
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k),
                               widen_bf16x16(_mm512_castsi512_si256(h01)), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16),
                               widen_bf16x16(_mm512_extracti64x4_epi64(h01, 1)), acc1);
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32),
                               widen_bf16x16(_mm512_castsi512_si256(h23)), acc2);
        acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48),
                               widen_bf16x16(_mm512_extracti64x4_epi64(h23, 1)), acc3);
    }
    for (; k + 16 <= K; k += 16) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k),
                               widen_bf16x16(_mm256_loadu_si256((const __m256i *)(w + k))), acc0);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1),
                                                 _mm512_add_ps(acc2, acc3)));
    for (; k < K; k++) s += x[k] * bf16_to_f32(w[k]);
    return s;
}
#endif

/* ========================================================================
 * Part 2: the blocked, packed matrix multiply.
 *
 *   C[i, j] (= or +=) sum_p A(i, p) * B(p, j)     i < M, j < N, p < K
 *
 * A and B are strided views, so one routine serves the forward and both
 * gradients without transposed copies:
 *   forward   out   = x . W^T      A(i, p) = x[i, p]      B(p, j) = W[j, p]
 *   backward  dinp += dout . W     A(i, p) = dout[i, p]   B(p, j) = W[p, j]
 *             dW   += dout^T . x   A(i, p) = dout[p, i]   B(p, j) = x[p, j]
 *
 * Loop nest, outermost first (the sizes are for GPT-2's shapes):
 *   tasks  the N columns cut into chunks of a few NR panels, handed to the
 *          threads dynamically (a busy vCPU simply takes fewer);
 *   p0     KC steps of the reduction: the task packs its KC x chunk slice
 *          of B (at most KC x NC_MAX floats, in L2);
 *   i0     MC rows at a time: that MC x KC block of the packed A, shared
 *          by all tasks and packed once up front, stays in L2;
 *   jr/ir  NR-wide B panels, then MR-tall A panels: the KC x NR panel of B
 *          stays in L1 while every A panel of the block meets it.
 * Every C element is summed by one task in a fixed order (each KC block's
 * sum from zero, then added to C), so the result does not depend on the
 * number of threads.
 * ===================================================================== */
#define KC 256          /* reduction steps per packed block */
#define MC 192          /* rows of A per L2 block (a multiple of every MR) */
#define NC_MAX 512      /* widest column chunk a task packs */
#define MAX_MR 12
#define MAX_NR 32
#define PACK_ALIGN 64   /* packed panels start on a cache line */

/* Element (r, c) of a strided matrix view is p[r * rs + c * cs]. A weight
 * kept in bfloat16 (B of the forward only) is p16 instead, p being NULL. */
typedef struct {
    const float *p;
    ptrdiff_t rs, cs;
    const uint16_t *p16;
} matrix_view;


/* What happens to C after the product: nothing, or + bias[j] and then
 * optionally GELU, applied to each finished block while it is in cache. */
typedef struct {
    const float *bias;   /* N values or NULL */
    int gelu;
} epilogue;

/* The register tile: acc[i][j] = sum over kc of ap[p * MR + i] * bp[p * NR + j];
 * then c[i * ldc + j] = acc (add == 0) or c[i * ldc + j] += acc (add == 1). */
typedef void (*tile_kernel_fn)(int kc, const float *ap, const float *bp, float *c,
                               ptrdiff_t ldc, int add);

/* Portable tile: 4 x 8, small enough for 16 SSE registers. */
#define GENERIC_MR 4
#define GENERIC_NR 8
static void tile_generic(int kc, const float *ap, const float *bp, float *c, ptrdiff_t ldc,
                         int add)
{
    float acc[GENERIC_MR][GENERIC_NR] = {{0}};
    for (int p = 0; p < kc; p++) {
        for (int i = 0; i < GENERIC_MR; i++) {
            float a = ap[i];
            for (int j = 0; j < GENERIC_NR; j++) acc[i][j] += a * bp[j];
        }
        ap += GENERIC_MR;
        bp += GENERIC_NR;
    }
    for (int i = 0; i < GENERIC_MR; i++) {
        for (int j = 0; j < GENERIC_NR; j++) {
            c[i * ldc + j] = add ? c[i * ldc + j] + acc[i][j] : acc[i][j];
        }
    }
}

#ifdef GPTC_HAVE_X86_KERNELS
/* AVX2 + FMA: 6 x 16, twelve accumulators + two B vectors + one broadcast
 * of AVX2's sixteen registers. */
#define AVX2_MR 6
#define AVX2_NR 16
__attribute__((target("avx2,fma")))
static void tile_avx2(int kc, const float *ap, const float *bp, float *c, ptrdiff_t ldc,
                      int add)
{
    __m256 acc[AVX2_MR][2];
    for (int i = 0; i < AVX2_MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        for (int i = 0; i < AVX2_MR; i++) {
            __m256 a = _mm256_broadcast_ss(ap + i);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
        ap += AVX2_MR;
        bp += AVX2_NR;
    }
    for (int i = 0; i < AVX2_MR; i++) {
        float *ci = c + i * ldc;
        if (add) {
            acc[i][0] = _mm256_add_ps(_mm256_loadu_ps(ci), acc[i][0]);
            acc[i][1] = _mm256_add_ps(_mm256_loadu_ps(ci + 8), acc[i][1]);
        }
        _mm256_storeu_ps(ci, acc[i][0]);
        _mm256_storeu_ps(ci + 8, acc[i][1]);
    }
}

/* AVX-512: 12 x 32, twenty-four accumulators + two B vectors + one
 * broadcast of its thirty-two registers. */
#define AVX512_MR 12
#define AVX512_NR 32
__attribute__((target("avx512f")))
static void tile_avx512(int kc, const float *ap, const float *bp, float *c, ptrdiff_t ldc,
                        int add)
{
    __m512 acc[AVX512_MR][2];
    for (int i = 0; i < AVX512_MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
        for (int i = 0; i < AVX512_MR; i++) {
            __m512 a = _mm512_set1_ps(ap[i]);
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
        }
        ap += AVX512_MR;
        bp += AVX512_NR;
    }
    for (int i = 0; i < AVX512_MR; i++) {
        float *ci = c + i * ldc;
        if (add) {
            acc[i][0] = _mm512_add_ps(_mm512_loadu_ps(ci), acc[i][0]);
            acc[i][1] = _mm512_add_ps(_mm512_loadu_ps(ci + 16), acc[i][1]);
        }
        _mm512_storeu_ps(ci, acc[i][0]);
        _mm512_storeu_ps(ci + 16, acc[i][1]);
    }
}
#endif

/* The packing transposes: dst[p * ld + r] = src[r * stride + p] for r < rows
 * and p < len, and lanes rows <= r < width are written as zeros. Rows of W
 * (and of x) are contiguous in p but a packed panel interleaves them, so
 * every pack of the forward is a transpose; done a square of values at a
 * time in registers, it reads whole vectors and writes whole vectors
 * instead of moving one float at a time. */
typedef void (*pack_transpose_fn)(float *dst, ptrdiff_t ld, const float *src,
                                  ptrdiff_t stride, int rows, int width, int len);

static void pack_transpose_generic(float *dst, ptrdiff_t ld, const float *src,
                                   ptrdiff_t stride, int rows, int width, int len)
{
    for (int r = 0; r < rows; r++) {
        const float *s = src + r * stride;
        for (int p = 0; p < len; p++) dst[p * ld + r] = s[p];
    }
    for (int r = rows; r < width; r++) {
        for (int p = 0; p < len; p++) dst[p * ld + r] = 0.0f;
    }
}

/* The same transposes from bfloat16 rows (a weight kept in bfloat16),
 * widened to float32 on the way into the panel. */
typedef void (*pack_transpose_bf16_fn)(float *dst, ptrdiff_t ld, const uint16_t *src,
                                       ptrdiff_t stride, int rows, int width, int len);

static void pack_transpose_bf16_generic(float *dst, ptrdiff_t ld, const uint16_t *src,
                                        ptrdiff_t stride, int rows, int width, int len)
{
    for (int r = 0; r < rows; r++) {
        const uint16_t *s = src + r * stride;
        for (int p = 0; p < len; p++) dst[p * ld + r] = bf16_to_f32(s[p]);
    }
    for (int r = rows; r < width; r++) {
        for (int p = 0; p < len; p++) dst[p * ld + r] = 0.0f;
    }
}

#ifdef GPTC_HAVE_X86_KERNELS
/* n (<= 8) bfloat16 values widened to float32, zeros after them. */
__attribute__((target("avx2,fma")))
static inline __m256 load_bf16x8(const uint16_t *src, int n)
{
    __m128i h;
    if (n == 8) {
        h = _mm_loadu_si128((const __m128i *)src);
    } else {
        uint16_t tmp[8] = {0};
        memcpy(tmp, src, (size_t)n * sizeof(uint16_t));
        h = _mm_loadu_si128((const __m128i *)tmp);
    }
    return widen_bf16x8(h);
}

/* n (<= 16) bfloat16 values widened to float32, zeros after them. */
__attribute__((target("avx512f")))
static inline __m512 load_bf16x16(const uint16_t *src, int n)
{
    __m256i h;
    if (n == 16) {
        h = _mm256_loadu_si256((const __m256i *)src);
    } else {
        uint16_t tmp[16] = {0};
        memcpy(tmp, src, (size_t)n * sizeof(uint16_t));
        h = _mm256_loadu_si256((const __m256i *)tmp);
    }
    return widen_bf16x16(h);
}

/* 8 x 8 blocks (rows, width <= 8). Masked loads and stores never touch
 * memory outside the mask, so ragged edges need no scalar loop. */
__attribute__((target("avx2,fma")))
static inline void transpose8_store_avx2(__m256 r[8], float *dst, ptrdiff_t ld, int n,
                                         __m256i store_mask)
{
    __m256 t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        t[k] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x20);
        t[k + 4] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x31);
    }
    for (int k = 0; k < n; k++) _mm256_maskstore_ps(dst + k * ld, store_mask, t[k]);
}

__attribute__((target("avx2,fma")))
static void pack_transpose_avx2(float *dst, ptrdiff_t ld, const float *src,
                                ptrdiff_t stride, int rows, int width, int len)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i store_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(width), lane);
    for (int p = 0; p < len; p += 8) {
        int n = len - p < 8 ? len - p : 8;
        __m256i load_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
        __m256 r[8];
        for (int i = 0; i < 8; i++) {
            r[i] = i < rows ? _mm256_maskload_ps(src + i * stride + p, load_mask)
                            : _mm256_setzero_ps();
        }
        transpose8_store_avx2(r, dst + p * ld, ld, n, store_mask);
    }
}

__attribute__((target("avx2,fma")))
static void pack_transpose_bf16_avx2(float *dst, ptrdiff_t ld, const uint16_t *src,
                                     ptrdiff_t stride, int rows, int width, int len)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i store_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(width), lane);
    for (int p = 0; p < len; p += 8) {
        int n = len - p < 8 ? len - p : 8;
        __m256 r[8];
        for (int i = 0; i < 8; i++) {
            r[i] = i < rows ? load_bf16x8(src + i * stride + p, n) : _mm256_setzero_ps();
        }
        transpose8_store_avx2(r, dst + p * ld, ld, n, store_mask);
    }
}

/* 16 x 16 blocks (rows, width <= 16). */
__attribute__((target("avx512f")))
static inline void transpose16_store_avx512(__m512 r[16], float *dst, ptrdiff_t ld, int n,
                                            __mmask16 store_mask)
{
    __m512 t[16];
    /* within each 128-bit lane: pairs of rows, then quads of rows */
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* r[4q + k], lane L, now holds rows 4q..4q+3 of column 4L + k;
     * gather the four quads of each column across lanes */
    for (int k = 0; k < 4; k++) {
        __m512 lo01 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
        __m512 hi01 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
        __m512 lo23 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        __m512 hi23 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
        t[k] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
        t[8 + k] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);
        t[4 + k] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
        t[12 + k] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);
    }
    for (int k = 0; k < n; k++) _mm512_mask_storeu_ps(dst + k * ld, store_mask, t[k]);
}

__attribute__((target("avx512f")))
static void pack_transpose_avx512(float *dst, ptrdiff_t ld, const float *src,
                                  ptrdiff_t stride, int rows, int width, int len)
{
    const __mmask16 store_mask = (__mmask16)((1u << width) - 1u);
    for (int p = 0; p < len; p += 16) {
        int n = len - p < 16 ? len - p : 16;
        __mmask16 load_mask = (__mmask16)((1u << n) - 1u);
        __m512 r[16];
        for (int i = 0; i < 16; i++) {
            r[i] = i < rows ? _mm512_maskz_loadu_ps(load_mask, src + i * stride + p)
                            : _mm512_setzero_ps();
        }
        transpose16_store_avx512(r, dst + p * ld, ld, n, store_mask);
    }
}

__attribute__((target("avx512f")))
static void pack_transpose_bf16_avx512(float *dst, ptrdiff_t ld, const uint16_t *src,
                                       ptrdiff_t stride, int rows, int width, int len)
{
    const __mmask16 store_mask = (__mmask16)((1u << width) - 1u);
    for (int p = 0; p < len; p += 16) {
        int n = len - p < 16 ? len - p : 16;
        __m512 r[16];
        for (int i = 0; i < 16; i++) {
            r[i] = i < rows ? load_bf16x16(src + i * stride + p, n) : _mm512_setzero_ps();
        }
        transpose16_store_avx512(r, dst + p * ld, ld, n, store_mask);
    }
}
#endif

/* Pack rows [i0, i0 + rows) of A, all K columns, as one MR panel:
 * ap[p * mr + i] = A(i0 + i, p); rows past the end are zeros, so the tile
 * kernel never needs a ragged case. */
static void pack_a_panel(float *ap, matrix_view a, int i0, int rows, int mr, int K,
                         pack_transpose_fn transpose)
{
    if (a.cs == 1) {
        transpose(ap, mr, a.p + i0 * a.rs, a.rs, rows, mr, K);
        return;
    }
    for (int p = 0; p < K; p++) {
        const float *src = a.p + p * a.cs + i0 * a.rs;
        for (int i = 0; i < rows; i++) ap[(size_t)p * mr + i] = src[i * a.rs];
        for (int i = rows; i < mr; i++) ap[(size_t)p * mr + i] = 0.0f;
    }
}

/* Pack columns [j0, j0 + cols) of B over reduction steps [p0, p0 + kc) as
 * one NR panel: bp[p * nr + j] = B(p0 + p, j0 + j), zeros past the end. */
static void pack_b_panel(float *bp, matrix_view b, int p0, int kc, int j0, int cols, int nr,
                         pack_transpose_fn transpose, pack_transpose_bf16_fn transpose_bf16,
                         int tw)
{
    if (b.p16 != NULL) {
        /* a bfloat16 weight, stored as the forward's W (b.rs == 1) */
        for (int h = 0; h < nr; h += tw) {
            int n = cols - h < 0 ? 0 : (cols - h < tw ? cols - h : tw);
            transpose_bf16(bp + h, nr, b.p16 + (j0 + h) * b.cs + p0, b.cs, n, tw, kc);
        }
        return;
    }
    if (b.cs == 1) {
        for (int p = 0; p < kc; p++) {
            const float *src = b.p + (p0 + p) * b.rs + j0;
            float *dst = bp + (size_t)p * nr;
            memcpy(dst, src, (size_t)cols * sizeof(float));
            for (int j = cols; j < nr; j++) dst[j] = 0.0f;
        }
        return;
    }
    if (b.rs != 1) {
        for (int p = 0; p < kc; p++) {
            for (int j = 0; j < nr; j++) {
                bp[(size_t)p * nr + j] = j < cols ? b.p[(p0 + p) * b.rs + (j0 + j) * b.cs] : 0.0f;
            }
        }
        return;
    }
    /* W rows in the forward: the panel is nr / tw transposes side by side */
    for (int h = 0; h < nr; h += tw) {
        int n = cols - h < 0 ? 0 : (cols - h < tw ? cols - h : tw);
        transpose(bp + h, nr, b.p + (j0 + h) * b.cs + p0 * b.rs, b.cs, n, tw, kc);
    }
}

/* The kernels of one instruction set. */
typedef struct isa_kernel {
    const char *name;
    linear_rows_fn rows;           /* the few-rows forward */
    tile_kernel_fn tile;           /* the packed path's register tile */
    int mr, nr;                    /* its shape */
    pack_transpose_fn transpose;   /* packing rows into panels */
    pack_transpose_bf16_fn transpose_bf16;   /* the same from bfloat16 rows */
    int tw;                        /* the transpose's widest square */
    bf16_dot_fn dot_bf16;          /* the few-rows path of a bfloat16 weight */
} isa_kernel;

typedef struct {
    int M, N, K;
    matrix_view a, b;
    float *c;
    ptrdiff_t ldc;
    int accumulate;
    epilogue ep;
    const isa_kernel *kern;
    const float *apack;   /* every MR panel of A, each over all K */
    int chunk;            /* columns per task, a multiple of nr */
} gemm_problem;

/* Bias, then GELU, on rows [i0, i1) and columns [j0, j1) of C. */
static void apply_epilogue(const gemm_problem *g, int i0, int i1, int j0, int j1)
{
    if (g->ep.bias == NULL && !g->ep.gelu) return;
    for (int i = i0; i < i1; i++) {
        float *row = g->c + i * g->ldc;
        if (g->ep.bias != NULL) {
            for (int j = j0; j < j1; j++) row[j] += g->ep.bias[j];
        }
        if (g->ep.gelu) {
            for (int j = j0; j < j1; j++) row[j] = gptc_gelu_scalar(row[j]);
        }
    }
}

/* One task: every row of C, columns [j0, j1). bpack holds KC x chunk floats. */
static void gemm_task(const gemm_problem *g, int j0, int j1, float *bpack)
{
    const int mr = g->kern->mr, nr = g->kern->nr, M = g->M, K = g->K;
    float tmp[MAX_MR * MAX_NR] __attribute__((aligned(PACK_ALIGN)));
    for (int p0 = 0; p0 < K; p0 += KC) {
        const int kc = K - p0 < KC ? K - p0 : KC;
        const int add = g->accumulate || p0 > 0;
        const int last = p0 + kc == K;
        for (int j = j0; j < j1; j += nr) {
            int cols = j1 - j < nr ? j1 - j : nr;
            pack_b_panel(bpack + (size_t)(j - j0) * kc, g->b, p0, kc, j, cols, nr,
                         g->kern->transpose, g->kern->transpose_bf16, g->kern->tw);
        }
        for (int i0 = 0; i0 < M; i0 += MC) {
            const int i1 = M - i0 < MC ? M : i0 + MC;
            for (int j = j0; j < j1; j += nr) {
                const int cols = j1 - j < nr ? j1 - j : nr;
                const float *bp = bpack + (size_t)(j - j0) * kc;
                for (int i = i0; i < i1; i += mr) {
                    const int rows = i1 - i < mr ? i1 - i : mr;
                    const float *ap = g->apack + (size_t)i * K + (size_t)p0 * mr;
                    float *c = g->c + i * g->ldc + j;
                    if (rows == mr && cols == nr) {
                        g->kern->tile(kc, ap, bp, c, g->ldc, add);
                        continue;
                    }
                    /* a ragged edge: compute the full tile aside, keep its
                     * valid part */
                    g->kern->tile(kc, ap, bp, tmp, nr, 0);
                    for (int r = 0; r < rows; r++) {
                        float *cr = c + r * g->ldc;
                        for (int s = 0; s < cols; s++) {
                            cr[s] = add ? cr[s] + tmp[r * nr + s] : tmp[r * nr + s];
                        }
                    }
                }
            }
            if (last) apply_epilogue(g, i0, i1, j0, j1);
        }
    }
    if (K == 0) {
        /* an empty reduction: C = 0 (or unchanged), then the epilogue */
        if (!g->accumulate) {
            for (int i = 0; i < M; i++) memset(g->c + i * g->ldc + j0, 0, (size_t)(j1 - j0) * sizeof(float));
        }
        apply_epilogue(g, 0, M, j0, j1);
    }
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* One band of at most BAND rows of C = A . B (see gemm below). */
static int gemm_band(int M, int N, int K, matrix_view a, matrix_view b, float *c,
                     ptrdiff_t ldc, int accumulate, epilogue ep, const isa_kernel *kern)
{
    const int mr = kern->mr, nr = kern->nr;
    if (M == 0 || N == 0) return 0;
    int nthreads = gptc_get_num_threads();
    double work = (double)M * N * K;
    if (work < GPTC_PARALLEL_MIN_WORK) nthreads = 1;

    /* Columns per task: about four tasks per thread so a slower core
     * takes fewer, at least one panel, at most NC_MAX. */
    int chunk = (int)round_up((size_t)(N + 4 * nthreads - 1) / (4 * nthreads), (size_t)nr);
    if (chunk > NC_MAX) chunk = NC_MAX / nr * nr;
    int ntasks = (N + chunk - 1) / chunk;
    if (ntasks < nthreads) nthreads = ntasks;

    size_t panels = (size_t)(M + mr - 1) / mr;
    size_t a_floats = round_up(panels * mr * (size_t)K, PACK_ALIGN / sizeof(float));
    size_t b_floats = round_up((size_t)KC * chunk, PACK_ALIGN / sizeof(float));
    float *buf = aligned_alloc(PACK_ALIGN, (a_floats + b_floats * nthreads) * sizeof(float));
    if (buf == NULL) return -1;

    gemm_problem g = {M, N, K, a, b, c, ldc, accumulate, ep, kern, buf, chunk};
    long long npanels = (long long)panels;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
#pragma omp for schedule(static)
        for (long long q = 0; q < npanels; q++) {
            int i0 = (int)q * mr;
            int rows = M - i0 < mr ? M - i0 : mr;
            pack_a_panel(buf + (size_t)q * mr * K, a, i0, rows, mr, K, kern->transpose);
        }
        /* the implicit barrier: all of A is packed before any task starts */
        float *bpack = buf + a_floats + b_floats * THREAD_INDEX();
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntasks; t++) {
            int j0 = t * chunk;
            int j1 = j0 + chunk < N ? j0 + chunk : N;
            gemm_task(&g, j0, j1, bpack);
        }
    }
    free(buf);
    return 0;
}

/* C = A . B (+ epilogue), or C += A . B when accumulate. A taller than BAND
 * rows is done a band at a time, so the packed copy of A stays a few MB
 * (a (1, 1024) forward, or the out_head gradient with 50257 rows, would
 * otherwise copy all of A); each band packs B again, which is little next
 * to the band's arithmetic. Returns the number of rows of C done: M, or
 * fewer if packing buffers could not be allocated (the rows from there on
 * are then unchanged). */
#define BAND (4 * MC)
static int gemm(int M, int N, int K, matrix_view a, matrix_view b, float *c, ptrdiff_t ldc,
                int accumulate, epilogue ep, const isa_kernel *kern)
{
    for (int i0 = 0; i0 < M; i0 += BAND) {
        int rows = M - i0 < BAND ? M - i0 : BAND;
        matrix_view band = a;
        band.p = a.p + i0 * a.rs;
        if (gemm_band(rows, N, K, band, b, c + i0 * ldc, ldc, accumulate, ep, kern) != 0) {
            return i0;
        }
    }
    return M;
}

/* ========================================================================
 * Part 3: choosing the kernels, and the public functions.
 * ===================================================================== */
enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512 };

static const isa_kernel kernels[] = {
    [ISA_GENERIC] = {"generic", linear_rows_generic, tile_generic, GENERIC_MR, GENERIC_NR,
                     pack_transpose_generic, pack_transpose_bf16_generic, GENERIC_NR,
                     dot_bf16_generic},
#ifdef GPTC_HAVE_X86_KERNELS
    [ISA_AVX2] = {"avx2", linear_rows_avx2, tile_avx2, AVX2_MR, AVX2_NR,
                  pack_transpose_avx2, pack_transpose_bf16_avx2, 8, dot_bf16_avx2},
    [ISA_AVX512] = {"avx512", linear_rows_avx512, tile_avx512, AVX512_MR, AVX512_NR,
                    pack_transpose_avx512, pack_transpose_bf16_avx512, 16, dot_bf16_avx512},
#endif
};
_Static_assert(MC % GENERIC_MR == 0, "an L2 block holds whole MR panels");
#ifdef GPTC_HAVE_X86_KERNELS
_Static_assert(MC % AVX2_MR == 0 && MC % AVX512_MR == 0, "an L2 block holds whole MR panels");
_Static_assert(AVX512_MR <= MAX_MR && AVX512_NR <= MAX_NR, "the edge buffer fits every tile");
_Static_assert(AVX2_MR <= 8 && AVX2_NR % 8 == 0 && AVX512_MR <= 16 && AVX512_NR % 16 == 0,
               "panels are whole transposes wide");
#endif

/* Pick the kernels: GPTC_ISA if set (and supported), else the widest the
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

size_t gptc_gemm_serial_floats(int M, int N, int K)
{
    const isa_kernel *kern = selected_kernel();
    size_t panels = (size_t)(M + kern->mr - 1) / kern->mr;
    size_t a_floats = round_up(panels * kern->mr * (size_t)K, PACK_ALIGN / sizeof(float));
    size_t b_floats = round_up((size_t)KC * round_up((size_t)N, (size_t)kern->nr),
                               PACK_ALIGN / sizeof(float));
    /* plus the slack to start the panels on a cache line */
    return a_floats + b_floats + PACK_ALIGN / sizeof(float);
}

void gptc_gemm_serial(int M, int N, int K, const float *a, ptrdiff_t a_rs, ptrdiff_t a_cs,
                      const float *b, ptrdiff_t b_rs, ptrdiff_t b_cs, float *c, ptrdiff_t ldc,
                      int accumulate, float *work)
{
    const isa_kernel *kern = selected_kernel();
    if (M == 0 || N == 0) return;
    uintptr_t addr = (uintptr_t)work;
    float *apack = work + (round_up(addr, PACK_ALIGN) - addr) / sizeof(float);
    size_t panels = (size_t)(M + kern->mr - 1) / kern->mr;
    float *bpack = apack + round_up(panels * kern->mr * (size_t)K, PACK_ALIGN / sizeof(float));
    matrix_view av = {a, a_rs, a_cs}, bv = {b, b_rs, b_cs};
    epilogue none = {NULL, 0};
    gemm_problem g = {M, N, K, av, bv, c, ldc, accumulate, none, kern, apack,
                      (int)round_up((size_t)N, (size_t)kern->nr)};
    for (size_t q = 0; q < panels; q++) {
        int i0 = (int)q * kern->mr;
        int rows = M - i0 < kern->mr ? M - i0 : kern->mr;
        pack_a_panel(apack + q * kern->mr * K, av, i0, rows, kern->mr, K, kern->transpose);
    }
    gemm_task(&g, 0, N, bpack);
}

/* Below this many rows the forward takes the few-rows path: packing W
 * would cost about as much as using it (measured with benchmarks/bench.py
 * --cases 5 on the one-row shapes). */
#define PACKED_MIN_ROWS 8

/* The few-rows paths split the output columns into chunks of W rows handed
 * out dynamically, so a slower core simply takes fewer chunks: about 8 per
 * thread balance the load without making chunks tiny. */
static int rows_chunk(int N, int nthreads)
{
    int chunk = N / (nthreads * 8);
    chunk = chunk < 16 ? 16 : chunk;
    return (chunk + DOT_NR - 1) / DOT_NR * DOT_NR;
}

static void linear_rows_parallel(linear_rows_fn fn, float *out, const float *x,
                                 const float *weight, const float *bias, int M, int K, int N)
{
    double work = (double)M * K * N;
    int nthreads = gptc_get_num_threads();
    if (nthreads <= 1 || work < GPTC_PARALLEL_MIN_WORK || N < 2 * DOT_NR) {
        fn(out, x, weight, bias, M, K, N, 0, N);
        return;
    }
    int chunk = rows_chunk(N, nthreads);
    int nchunks = (N + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int c = 0; c < nchunks; c++) {
        int begin = c * chunk;
        int end = begin + chunk < N ? begin + chunk : N;
        fn(out, x, weight, bias, M, K, N, begin, end);
    }
}

void gptc_linear_forward_fused(float *out, const float *x, const float *weight,
                               const float *bias, int M, int K, int N, int accumulate,
                               int gelu)
{
    const isa_kernel *kern = selected_kernel();
    if (M >= PACKED_MIN_ROWS) {
        matrix_view a = {x, K, 1}, b = {weight, 1, K};
        epilogue ep = {bias, gelu};
        int done = gemm(M, N, K, a, b, out, N, accumulate, ep, kern);
        if (done == M) {
            return;
        }
        /* no memory for the packed panels: the rows left take the few-rows
         * path, which needs none */
        x += (size_t)done * K;
        out += (size_t)done * N;
        M -= done;
    }
    if (!accumulate) {
        linear_rows_parallel(kern->rows, out, x, weight, bias, M, K, N);
    } else {
        /* out += x . W^T + bias without scratch memory: each row in
         * pieces of 256 outputs, the piece's W rows treated as a matrix of
         * their own, computed on the stack and added. */
        float piece[256];
        for (int m = 0; m < M; m++) {
            for (int n0 = 0; n0 < N; n0 += 256) {
                int len = N - n0 < 256 ? N - n0 : 256;
                kern->rows(piece, x + (size_t)m * K, weight + (size_t)n0 * K,
                           bias != NULL ? bias + n0 : NULL, 1, K, len, 0, len);
                float *o = out + (size_t)m * N + n0;
                for (int j = 0; j < len; j++) o[j] += piece[j];
            }
        }
        return;
    }
    if (gelu) {
        size_t n = (size_t)M * N;
        for (size_t i = 0; i < n; i++) out[i] = gptc_gelu_scalar(out[i]);
    }
}

void gptc_f32_to_bf16(uint16_t *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &in[i], sizeof u);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
            out[i] = (uint16_t)((u >> 16) | 0x0040u);   /* NaN stays a (quiet) NaN */
        } else {
            /* round to nearest, ties to even, as PyTorch's .to(torch.bfloat16) */
            out[i] = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
        }
    }
}

/* Output columns [n0, n1) of the few-rows bfloat16 product. */
static void linear_rows_bf16(bf16_dot_fn dot, float *out, const float *x, const uint16_t *w,
                             const float *bias, int M, int K, int N, int accumulate,
                             int n0, int n1)
{
    for (int n = n0; n < n1; n++) {
        const uint16_t *wn = w + (size_t)n * K;
        float b = bias != NULL ? bias[n] : 0.0f;
        for (int m = 0; m < M; m++) {
            float v = dot(x + (size_t)m * K, wn, K) + b;
            float *o = out + (size_t)m * N + n;
            *o = accumulate ? *o + v : v;
        }
    }
}

void gptc_linear_forward_bf16(float *out, const float *x, const uint16_t *weight,
                              const float *bias, int M, int K, int N, int accumulate, int gelu)
{
    const isa_kernel *kern = selected_kernel();
    if (M >= PACKED_MIN_ROWS) {
        matrix_view a = {x, K, 1, NULL}, b = {NULL, 1, K, weight};
        epilogue ep = {bias, gelu};
        int done = gemm(M, N, K, a, b, out, N, accumulate, ep, kern);
        if (done == M) {
            return;
        }
        /* no memory for the packed panels: the rows left take the few-rows
         * path, which needs none */
        x += (size_t)done * K;
        out += (size_t)done * N;
        M -= done;
    }
    int nthreads = gptc_get_num_threads(), chunk = rows_chunk(N, nthreads);
    int nchunks = (N + chunk - 1) / chunk;
    double work = (double)M * K * N;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (nthreads > 1 && work >= GPTC_PARALLEL_MIN_WORK && nchunks > 1)
    for (int c = 0; c < nchunks; c++) {
        int n0 = c * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
        linear_rows_bf16(kern->dot_bf16, out, x, weight, bias, M, K, N, accumulate, n0, n1);
        if (gelu) {
            for (int m = 0; m < M; m++) {
                float *o = out + (size_t)m * N;
                for (int j = n0; j < n1; j++) o[j] = gptc_gelu_scalar(o[j]);
            }
        }
    }
}

void gptc_linear_forward_stored(float *out, const float *x, const float *weight,
                                const uint16_t *weight_bf16, const float *bias, int M, int K,
                                int N, int accumulate, int gelu)
{
    if (weight_bf16 != NULL) {
        gptc_linear_forward_bf16(out, x, weight_bf16, bias, M, K, N, accumulate, gelu);
    } else {
        gptc_linear_forward_fused(out, x, weight, bias, M, K, N, accumulate, gelu);
    }
}

void gptc_linear_forward(float *out, const float *x, const float *weight,
                         const float *bias, int M, int K, int N)
{
    gptc_linear_forward_fused(out, x, weight, bias, M, K, N, 0, 0);
}

int gptc_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int M, int K, int N)
{
    const isa_kernel *kern = selected_kernel();
    epilogue none = {NULL, 0};
    if (dinp != NULL) {
        /* dinp[m, k] += sum_n dout[m, n] W[n, k] */
        matrix_view a = {dout, N, 1}, b = {weight, K, 1};
        if (gemm(M, K, N, a, b, dinp, K, 1, none, kern) != M) {
            return -1;
        }
    }
    if (dweight != NULL) {
        /* dweight[n, k] += sum_m dout[m, n] inp[m, k] */
        matrix_view a = {dout, 1, N}, b = {inp, K, 1};
        if (gemm(N, K, M, a, b, dweight, K, 1, none, kern) != N) {
            return -1;
        }
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
    return 0;
}
