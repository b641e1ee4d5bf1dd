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

typedef struct {
    const char *name;
    linear_rows_fn fn;
} isa_kernel;

enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512 };

static const isa_kernel kernels[] = {
    [ISA_GENERIC] = {"generic", linear_rows_generic},
#ifdef GPTC_HAVE_X86_KERNELS
    [ISA_AVX2] = {"avx2", linear_rows_avx2},
    [ISA_AVX512] = {"avx512", linear_rows_avx512},
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
