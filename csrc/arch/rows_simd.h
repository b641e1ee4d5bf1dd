/*
 * rows_simd.h - the few-rows kernels (gptc_rows_fn) written once for every
 * vector instruction set. Included by a file of csrc/arch/ after it maps
 * its intrinsics onto these names:
 *
 *   TARGET                 the target attribute of its functions
 *   vf, VF_LANES           a vector of VF_LANES floats
 *   vf_zero()              all zeros
 *   vf_loadu(p)            VF_LANES floats from p (any alignment)
 *   vf_load_part(p, n)     the first n (< VF_LANES) floats from p, zeros after,
 *                          reading nothing past p + n
 *   vf_load_bf16(p)        VF_LANES bfloat16 values from p, widened to float32
 *   vf_fma(a, b, c)        a * b + c, fused
 *   vf_add(a, b)
 *   vf_hsum(v)             the sum of the lanes, as a float
 *
 * and gets rows_f32 and rows_bf16 for its kernel table.
 */
#ifndef GPTC_ARCH_ROWS_SIMD_H
#define GPTC_ARCH_ROWS_SIMD_H

#include <string.h>

#include "rows.h"

/* ---- a weight vector from float32 or bfloat16: all VF_LANES values,
 * or the first n and zeros ---- */
typedef vf (*w_load_fn)(const void *w, size_t i);
typedef vf (*w_load_part_fn)(const void *w, size_t i, int n);

TARGET static inline vf f32_load(const void *w, size_t i)
{
    return vf_loadu((const float *)w + i);
}

TARGET static inline vf f32_load_part(const void *w, size_t i, int n)
{
    return vf_load_part((const float *)w + i, n);
}

TARGET static inline vf bf16_load(const void *w, size_t i)
{
    return vf_load_bf16((const uint16_t *)w + i);
}

TARGET static inline vf bf16_load_part(const void *w, size_t i, int n)
{
    uint16_t tmp[VF_LANES] = {0};
    memcpy(tmp, (const uint16_t *)w + i, (size_t)n * sizeof(uint16_t));
    return vf_load_bf16(tmp);
}

/* The loads of the packing transposes: values p .. p + n - 1 of row `row`
 * of a float32 or bfloat16 matrix with rows `stride` elements apart. Only
 * a row's last piece takes the partial load: AVX2's masked load, and the
 * bfloat16 copy through the stack, cost more than a plain load. */
typedef vf (*pack_load_fn)(const void *src, ptrdiff_t stride, int row, int p, int n);

TARGET static inline vf f32_pack_load(const void *src, ptrdiff_t stride, int row, int p, int n)
{
    const size_t i = (size_t)(row * stride + p);
    return n == VF_LANES ? f32_load(src, i) : f32_load_part(src, i, n);
}

TARGET static inline vf bf16_pack_load(const void *src, ptrdiff_t stride, int row, int p, int n)
{
    const size_t i = (size_t)(row * stride + p);
    return n == VF_LANES ? bf16_load(src, i) : bf16_load_part(src, i, n);
}

/* One row by one W row, for a product of one row (a decode step), four
 * independent sums: one chain of dependent multiply-adds would wait out
 * the FMA latency at every step, and in a decode step nothing else hides
 * that wait. (A tile of four W rows, one chain each, streamed W more
 * slowly: [1, 3072] x [768, 3072] from memory on 2 threads, avx2 medians
 * of 5, this dot product 287 us against the tile's 325 in float32, 135
 * against 182 in bfloat16, on this Zen 4 class EPYC VM, 2026-12-03.) */
TARGET static inline __attribute__((always_inline)) float dot_body(
    const float *x, const void *w, size_t elem, int K, w_load_fn load, w_load_part_fn load_part)
{
    const int L = VF_LANES;
    vf acc0 = vf_zero(), acc1 = vf_zero(), acc2 = vf_zero(), acc3 = vf_zero();
    int k = 0;
    for (; k + 4 * L <= K; k += 4 * L) {
        /* one request per 64-byte line of W (rows.h) */
        for (size_t b = 0; b < 4 * L * elem; b += 64)
            rows_w_prefetch((const char *)w + (size_t)k * elem + b);
        acc0 = vf_fma(vf_loadu(x + k), load(w, (size_t)k), acc0);
        acc1 = vf_fma(vf_loadu(x + k + L), load(w, (size_t)(k + L)), acc1);
        acc2 = vf_fma(vf_loadu(x + k + 2 * L), load(w, (size_t)(k + 2 * L)), acc2);
        acc3 = vf_fma(vf_loadu(x + k + 3 * L), load(w, (size_t)(k + 3 * L)), acc3);
    }
    for (; k + L <= K; k += L) acc0 = vf_fma(vf_loadu(x + k), load(w, (size_t)k), acc0);
    if (k < K) acc1 = vf_fma(vf_load_part(x + k, K - k), load_part(w, (size_t)k, K - k), acc1);
    return vf_hsum(vf_add(vf_add(acc0, acc1), vf_add(acc2, acc3)));
}

/* rows x rows by wrows W rows (constants where it is inlined): each weight
 * vector loaded once for all the x rows, each x vector once for all the W
 * rows. Each output is one chain: a vector of sums over the steps, then
 * its lanes summed. */
TARGET static inline __attribute__((always_inline)) void tile_body(
    float *out, int N, const float *bias, int accumulate, const float *x, const void *w,
    size_t elem, int K, w_load_fn load, w_load_part_fn load_part, const int rows,
    const int wrows)
{
    vf acc[ROWS_MR][ROWS_WIDEST];
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < wrows; j++) acc[i][j] = vf_zero();
    }
    int k = 0;
    for (; k + VF_LANES <= K; k += VF_LANES) {
        vf wv[ROWS_WIDEST];
        for (int j = 0; j < wrows; j++) {
            /* one request per 64-byte step along each W row (rows.h) */
            if ((k * elem) % 64 == 0)
                rows_w_prefetch((const char *)w + ((size_t)j * K + k) * elem);
            wv[j] = load(w, (size_t)j * K + k);
        }
        for (int i = 0; i < rows; i++) {
            vf xi = vf_loadu(x + (size_t)i * K + k);
            for (int j = 0; j < wrows; j++) acc[i][j] = vf_fma(xi, wv[j], acc[i][j]);
        }
    }
    if (k < K) {
        const int n = K - k;
        vf wv[ROWS_WIDEST];
        for (int j = 0; j < wrows; j++) wv[j] = load_part(w, (size_t)j * K + k, n);
        for (int i = 0; i < rows; i++) {
            vf xi = vf_load_part(x + (size_t)i * K + k, n);
            for (int j = 0; j < wrows; j++) acc[i][j] = vf_fma(xi, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < wrows; j++)
            rows_store(out, N, i, j, vf_hsum(acc[i][j]), bias, accumulate);
    }
}

#define TILE_F32_SHAPE(rows, wrows)                                                    \
    tile_body(out, N, bias, accumulate, x, w, sizeof(float), K, f32_load, f32_load_part, \
              rows, wrows)
#define TILE_BF16_SHAPE(rows, wrows)                                                     \
    tile_body(out, N, bias, accumulate, x, w, sizeof(uint16_t), K, bf16_load,             \
              bf16_load_part, rows, wrows)

TARGET static float dot_f32(const float *x, const void *w, int K)
{
    return dot_body(x, w, sizeof(float), K, f32_load, f32_load_part);
}

TARGET static float dot_bf16(const float *x, const void *w, int K)
{
    return dot_body(x, w, sizeof(uint16_t), K, bf16_load, bf16_load_part);
}

TARGET static void tile_f32(float *out, int N, const float *bias, int accumulate,
                            const float *x, const void *w, int K, int rows, int wrows)
{
    ROWS_TILE_BY_SHAPE(TILE_F32_SHAPE, rows, wrows);
}

TARGET static void tile_bf16(float *out, int N, const float *bias, int accumulate,
                             const float *x, const void *w, int K, int rows, int wrows)
{
    ROWS_TILE_BY_SHAPE(TILE_BF16_SHAPE, rows, wrows);
}

TARGET static void rows_f32(float *out, const float *x, const void *w, const float *bias,
                            int M, int K, int N, int n0, int n1, int accumulate)
{
    rows_body(out, x, w, sizeof(float), bias, M, K, N, n0, n1, accumulate, tile_f32,
              dot_f32);
}

TARGET static void rows_bf16(float *out, const float *x, const void *w, const float *bias,
                             int M, int K, int N, int n0, int n1, int accumulate)
{
    rows_body(out, x, w, sizeof(uint16_t), bias, M, K, N, n0, n1, accumulate, tile_bf16,
              dot_bf16);
}

#endif /* GPTC_ARCH_ROWS_SIMD_H */
