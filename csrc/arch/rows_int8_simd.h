/*
 * rows_int8_simd.h - the int8 few-rows products (gptc_rows_int8_fn) written
 * once for x86 vectors. Included after rows_simd.h by x86_avx2.c, whose
 * 256-bit kernels serve the AVX-512 tables too (kernels.h says why), with
 * these names mapped besides rows_simd.h's:
 *
 *   qv                     an integer vector of one block (GPTC_INT8_BLOCK bytes)
 *   qv_load(p)             those bytes from p (any alignment)
 *   qv_load_part(p, n)     the first n (< GPTC_INT8_BLOCK) of them,
 *                          zeros after, reading nothing past p + n
 *   qv_abs(x)              |x| of each int8 (at most 127: q is never -128)
 *   qv_signed(w, x)        w with the sign of x applied: -w where x < 0
 *   vf_from_i32(v)         int32 lanes to float32 (VF_LANES of them: 8 per block)
 *   vf_set1(f)             f in every lane
 *   dot_maddubs(u, s)      the int32 sums of each 4 adjacent products u[i] * s[i]
 *                          (u unsigned, s signed) with vpmaddubsw + vpmaddwd
 *
 * ROWS_INT8_KERNEL(attr, name, dot) then defines the kernel `name` with the
 * target attribute attr and one of the file's dot products.
 *
 * The integer dot products use the sign trick: x . w = |x| . (w * sign(x)),
 * an unsigned-by-signed product as vpmaddubsw and vpdpbusd take it. With
 * |q| <= 127 each pair of products sums to at most 2 * 127^2 = 32258, so
 * vpmaddubsw's 16-bit saturation is never reached, and the sums are exact.
 */
#ifndef GPTC_ARCH_ROWS_INT8_SIMD_H
#define GPTC_ARCH_ROWS_INT8_SIMD_H

/* dot_maddubs or dot_vnni */
typedef qv (*qv_dot_fn)(qv u, qv s);

/* One step of the tile: block b of each x row and W row meet. `full` and
 * `prefetch` are constants at each call: `full` says that the block lies
 * wholly inside K (only the last block of a row may not, and only that one
 * takes qv_load_part); `prefetch` asks for W ahead, once per 64-byte line.
 * Each pair's exact integer sums, as float32 lanes, meet the product of
 * the two blocks' scales (exact: two bfloat16 values), formed as a scalar
 * and broadcast, in one multiply-add. */
TARGET static inline __attribute__((always_inline)) void int8_tile_step(
    vf acc[ROWS_MR][ROWS_INT8_FEW_NR], gptc_int8_rows x, gptc_int8_rows w, const int rows,
    const int wrows, int K, int b, const int full, const int prefetch, qv_dot_fn dot)
{
    const int k = b * GPTC_INT8_BLOCK, left = K - k;
    qv wv[ROWS_INT8_FEW_NR];
    float dw[ROWS_INT8_FEW_NR];
    for (int j = 0; j < wrows; j++) {
        const int8_t *p = w.values + (size_t)j * w.stride + k;
        if (prefetch) rows_w_prefetch(p);
        wv[j] = full ? qv_load(p) : qv_load_part(p, left);
        dw[j] = gptc_bf16_to_f32(w.scales[(size_t)j * w.scale_stride + b]);
    }
    for (int i = 0; i < rows; i++) {
        const int8_t *p = x.values + (size_t)i * x.stride + k;
        const qv xv = full ? qv_load(p) : qv_load_part(p, left);
        const qv ax = qv_abs(xv);
        const float dx = gptc_bf16_to_f32(x.scales[(size_t)i * x.scale_stride + b]);
        for (int j = 0; j < wrows; j++) {
            const vf sums = vf_from_i32(dot(ax, qv_signed(wv[j], xv)));
            acc[i][j] = vf_fma(sums, vf_set1(dx * dw[j]), acc[i][j]);
        }
    }
}

/* res[i * ROWS_INT8_FEW_NR + j] = x_i . w_j for `rows` x rows and `wrows` W
 * rows, compile-time constants at each call: the sum over blocks, in
 * order, of step's multiply-adds, then of the lanes. Whole blocks go two
 * at a time (one prefetch pair per 64-byte line); the block holding the
 * end of K, if it is short, takes the general step. */
TARGET static inline __attribute__((always_inline)) void int8_tile_body(
    float *res, gptc_int8_rows x, gptc_int8_rows w, const int rows, const int wrows, int K,
    qv_dot_fn dot)
{
    const int nb = gptc_int8_blocks(K);
    vf acc[ROWS_MR][ROWS_INT8_FEW_NR];
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < wrows; j++) acc[i][j] = vf_zero();
    }
    int b = 0;
    for (; (b + 2) * GPTC_INT8_BLOCK <= K; b += 2) {
        int8_tile_step(acc, x, w, rows, wrows, K, b, 1, 1, dot);
        int8_tile_step(acc, x, w, rows, wrows, K, b + 1, 1, 0, dot);
    }
    for (; b < nb; b++) {
        int8_tile_step(acc, x, w, rows, wrows, K, b, (b + 1) * GPTC_INT8_BLOCK <= K, 1, dot);
    }
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < wrows; j++) res[i * ROWS_INT8_FEW_NR + j] = vf_hsum(acc[i][j]);
    }
}

/* A gptc_rows_int8_fn called `name` (and its tiles, tiles_##name) with the
 * integer dot product `dot` (dot_maddubs or a vpdpbusd), compiled for the
 * target attribute `attr`. */
#define ROWS_INT8_KERNEL(attr, name, dot)                                                 \
    attr static void tiles_##name(float *out, gptc_int8_rows x, gptc_int8_rows w,           \
                                  const float *bias, int N, int accumulate, int rows,       \
                                  int wrows, int K, int n0, int n1)                         \
    {                                                                                      \
        ROWS_INT8_BY_SHAPE(int8_tile_body, dot, out, x, w, bias, N, accumulate, rows,      \
                           wrows, K, n0, n1);                                              \
    }                                                                                      \
    attr void name(float *out, gptc_int8_rows x, gptc_int8_rows w, const float *bias,     \
                   int M, int K, int N, int n0, int n1, int accumulate)                    \
    {                                                                                      \
        rows_int8_body(out, x, w, bias, M, K, N, n0, n1, accumulate, tiles_##name);       \
    }

#endif /* GPTC_ARCH_ROWS_INT8_SIMD_H */
