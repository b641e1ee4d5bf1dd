/*
 * generic.c - the kernels in portable C, for any CPU.
 *
 * The compiler vectorises them for its baseline (SSE2 on x86-64, NEON on
 * arm64): the loops keep LANES independent partial sums so that it can.
 * This is also the reference the SIMD files are tested against.
 */
#include "../internal.h"
#include "../kernels.h"
#include "rows.h"

#include <string.h>

#define LANES 8   /* independent partial sums per dot product */

/* ---- weights as float32 or bfloat16, one value at a time ---- */
typedef float (*weight_at_fn)(const void *w, size_t i);

static inline __attribute__((always_inline)) float f32_at(const void *w, size_t i)
{
    return ((const float *)w)[i];
}

static inline __attribute__((always_inline)) float bf16_at(const void *w, size_t i)
{
    return gptc_bf16_to_f32(((const uint16_t *)w)[i]);
}

/* ---- packed GEMM: a 4 x 8 tile, small enough for 16 SSE registers ---- */
#define MR 4
#define NR 8

static void tile(int kc, const float *ap, const float *bp, float *c, ptrdiff_t ldc, int add)
{
    float acc[MR][NR] = {{0}};
    for (int p = 0; p < kc; p++) {
        for (int i = 0; i < MR; i++) {
            float a = ap[i];
            for (int j = 0; j < NR; j++) acc[i][j] += a * bp[j];
        }
        ap += MR;
        bp += NR;
    }
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NR; j++) {
            c[i * ldc + j] = add ? c[i * ldc + j] + acc[i][j] : acc[i][j];
        }
    }
}

static inline __attribute__((always_inline)) void pack_body(
    float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride, int rows, int width, int len,
    weight_at_fn at)
{
    for (int r = 0; r < rows; r++) {
        for (int p = 0; p < len; p++) dst[p * ld + r] = at(src, (size_t)(r * stride + p));
    }
    for (int r = rows; r < width; r++) {
        for (int p = 0; p < len; p++) dst[p * ld + r] = 0.0f;
    }
}

static void pack_f32(float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride, int rows,
                     int width, int len)
{
    pack_body(dst, ld, src, stride, rows, width, len, f32_at);
}

static void pack_bf16(float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride, int rows,
                      int width, int len)
{
    pack_body(dst, ld, src, stride, rows, width, len, bf16_at);
}

/* ---- few-rows products ---- */
static inline __attribute__((always_inline)) float sum_lanes(const float *acc)
{
    float s = 0.0f;
    for (int u = 0; u < LANES; u++) s += acc[u];
    return s;
}

/* One row by one W row, for a product of one row. */
static inline __attribute__((always_inline)) float dot_body(const float *x, const void *w,
                                                            int K, weight_at_fn at)
{
    float acc[LANES] = {0};
    int k = 0;
    for (; k + LANES <= K; k += LANES) {
        for (int u = 0; u < LANES; u++) acc[u] += x[k + u] * at(w, (size_t)(k + u));
    }
    float s = sum_lanes(acc);
    for (; k < K; k++) s += x[k] * at(w, (size_t)k);
    return s;
}

/* rows x rows by wrows W rows (constants where it is inlined), each output
 * one chain: LANES sums over the steps, then the lanes summed, then the
 * last K % LANES products. */
static inline __attribute__((always_inline)) void tile_body(
    float *out, int N, const float *bias, int accumulate, const float *x, const void *w, int K,
    weight_at_fn at, const int rows, const int wrows)
{
    float acc[ROWS_MR][ROWS_WIDEST][LANES];
    memset(acc, 0, sizeof(acc));
    int k = 0;
    for (; k + LANES <= K; k += LANES) {
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < wrows; j++) {
                for (int u = 0; u < LANES; u++) {
                    acc[i][j][u] += x[(size_t)i * K + k + u] * at(w, (size_t)j * K + k + u);
                }
            }
        }
    }
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < wrows; j++) {
            float s = sum_lanes(acc[i][j]);
            for (int kk = k; kk < K; kk++) s += x[(size_t)i * K + kk] * at(w, (size_t)j * K + kk);
            rows_store(out, N, i, j, s, bias, accumulate);
        }
    }
}

#define TILE_F32_SHAPE(rows, wrows) \
    tile_body(out, N, bias, accumulate, x, w, K, f32_at, rows, wrows)
#define TILE_BF16_SHAPE(rows, wrows) \
    tile_body(out, N, bias, accumulate, x, w, K, bf16_at, rows, wrows)

static float dot_f32(const float *x, const void *w, int K) { return dot_body(x, w, K, f32_at); }
static float dot_bf16(const float *x, const void *w, int K) { return dot_body(x, w, K, bf16_at); }

static void tile_f32(float *out, int N, const float *bias, int accumulate, const float *x,
                     const void *w, int K, int rows, int wrows)
{
    ROWS_TILE_BY_SHAPE(TILE_F32_SHAPE, rows, wrows);
}

static void tile_bf16(float *out, int N, const float *bias, int accumulate, const float *x,
                      const void *w, int K, int rows, int wrows)
{
    ROWS_TILE_BY_SHAPE(TILE_BF16_SHAPE, rows, wrows);
}

static void rows_f32(float *out, const float *x, const void *w, const float *bias, int M,
                     int K, int N, int n0, int n1, int accumulate)
{
    rows_body(out, x, w, sizeof(float), bias, M, K, N, n0, n1, accumulate, tile_f32, dot_f32);
}

static void rows_bf16(float *out, const float *x, const void *w, const float *bias, int M,
                      int K, int N, int n0, int n1, int accumulate)
{
    rows_body(out, x, w, sizeof(uint16_t), bias, M, K, N, n0, n1, accumulate, tile_bf16,
              dot_bf16);
}

/* ---- int8 weights ---- */
static inline __attribute__((always_inline)) float int8_scale(gptc_int8_rows v, int r, int b)
{
    return gptc_bf16_to_f32(v.scales[(size_t)r * v.scale_stride + b]);
}

static void pack_int8(float *dst, ptrdiff_t ld, gptc_int8_rows src, int rows, int width,
                      int len)
{
    for (int r = 0; r < rows; r++) {
        const int8_t *q = src.values + (size_t)r * src.stride;
        for (int p = 0; p < len; p++) {
            dst[p * ld + r] = (float)q[p] * int8_scale(src, r, p / GPTC_INT8_BLOCK);
        }
    }
    for (int r = rows; r < width; r++) {
        for (int p = 0; p < len; p++) dst[p * ld + r] = 0.0f;
    }
}

/* Block by block: the integer dot product, then its scales. */
static void tile_int8(float *res, gptc_int8_rows x, gptc_int8_rows w, int rows, int wrows, int K)
{
    float acc[ROWS_MR][ROWS_INT8_FEW_NR] = {{0}};
    for (int b = 0, k = 0; k < K; b++, k += GPTC_INT8_BLOCK) {
        const int len = K - k < GPTC_INT8_BLOCK ? K - k : GPTC_INT8_BLOCK;
        for (int i = 0; i < rows; i++) {
            const int8_t *xi = x.values + (size_t)i * x.stride + k;
            for (int j = 0; j < wrows; j++) {
                const int8_t *wj = w.values + (size_t)j * w.stride + k;
                int32_t sum = 0;
                for (int t = 0; t < len; t++) sum += xi[t] * wj[t];
                acc[i][j] += (float)sum * (int8_scale(x, i, b) * int8_scale(w, j, b));
            }
        }
    }
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < wrows; j++) res[i * ROWS_INT8_FEW_NR + j] = acc[i][j];
    }
}

/* tile_int8 as the body ROWS_INT8_TILES calls (the shape stays a variable
 * here, and there is one dot product) */
#define TILE_INT8_BODY(res, x, w, rows, wrows, K, dot) tile_int8(res, x, w, rows, wrows, K)

static void tiles_int8(float *out, gptc_int8_rows x, gptc_int8_rows w, const float *bias, int N,
                       int accumulate, int rows, int wrows, int K, int n0, int n1)
{
    ROWS_INT8_TILES(TILE_INT8_BODY, 0, out, x, w, bias, N, accumulate, rows, wrows, K, n0, n1);
}

static void rows_int8(float *out, gptc_int8_rows x, gptc_int8_rows w, const float *bias, int M,
                      int K, int N, int n0, int n1, int accumulate)
{
    rows_int8_body(out, x, w, bias, M, K, N, n0, n1, accumulate, tiles_int8);
}

/* ---- inference attention: 4-float vectors ---- */
#define ATT_VEC 4
#define ATT_TARGET
#include "flash_attention.h"

/* ---- GELU, as wide as the vectors ---- */
#define GELU_TARGET
#include "gelu_simd.h"

/* ---- cross-entropy's passes over a row ---- */
#define LOSS_TARGET
#include "loss_simd.h"

/* ---- the arithmetic peak: 8 chains of 4-float multiply-adds ---- */
typedef float vec4 __attribute__((vector_size(4 * sizeof(float))));

static float fma_loop(long iterations)
{
    vec4 acc[8];
    const vec4 a = {0.999f, 0.999f, 0.999f, 0.999f}, b = {1e-3f, 1e-3f, 1e-3f, 1e-3f};
    for (int i = 0; i < 8; i++) acc[i] = (vec4){(float)i, 1.0f, 2.0f, 3.0f};
    for (long n = 0; n < iterations; n++) {
        /* a dependent chain per accumulator: rounding keeps the compiler
         * from folding the rounds into fewer */
        for (int i = 0; i < 8; i++) acc[i] = acc[i] * a + b;
    }
    vec4 s = acc[0];
    for (int i = 1; i < 8; i++) s += acc[i];
    return s[0] + s[1] + s[2] + s[3];
}

/* ---- the streaming read: four independent sums of 4-float vectors (the
 * copies through memcpy allow any alignment of a), and the requests ahead
 * (rows.h) that the vector sets' read_sum makes, one per 64-byte line ---- */
static float read_sum(const float *a, size_t n)
{
    vec4 s[4] = {{0.0f}};
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        rows_w_prefetch(a + i);
        for (int j = 0; j < 4; j++) {
            vec4 v;
            memcpy(&v, a + i + 4 * j, sizeof v);
            s[j] += v;
        }
    }
    float tail = 0.0f;
    for (; i < n; i++) tail += a[i];
    const vec4 t = (s[0] + s[1]) + (s[2] + s[3]);
    return t[0] + t[1] + t[2] + t[3] + tail;
}

const gptc_kernels gptc_kernels_generic = {
    .name = "generic",
    .mr = MR,
    .nr = NR,
    .pack_width = NR,
    .tile = tile,
    .pack_f32 = pack_f32,
    .pack_bf16 = pack_bf16,
    .pack_int8 = pack_int8,
    .rows_f32 = rows_f32,
    .rows_bf16 = rows_bf16,
    .rows_int8 = rows_int8,
    .packed_min_rows = 8,
    .flash_task = att_flash_task,
    .gelu = gelu_kernel,
    .gelu_backward = gelu_backward_kernel,
    .row_logsumexp = row_logsumexp_kernel,
    .softmax_add = softmax_add_kernel,
    .fma_loop = fma_loop,
    .fma_flops_per_iteration = 8 * 4 * 2,
    .read_sum = read_sum,
};
