/*
 * rows_int8_simd.h - the int8 few-rows products (gptc_rows_int8_fn) written
 * once for x86 vectors. Included after rows_simd.h by x86_avx2.c, whose
 * 256-bit kernels serve the AVX-512 tables too (kernels.h says why), with
 * these names mapped besides rows_simd.h's:
 *
 *   QV_BLOCKS              int8 blocks per integer vector (1: 32 bytes, 2: 64)
 *   qv                     an integer vector of QV_BLOCKS * GPTC_INT8_BLOCK bytes
 *   qv_load(p)             those bytes from p (any alignment)
 *   qv_load_part(p, n)     the first n (< QV_BLOCKS * GPTC_INT8_BLOCK) of them,
 *                          zeros after, reading nothing past p + n
 *   qv_abs(x)              |x| of each int8 (at most 127: q is never -128)
 *   qv_signed(w, x)        w with the sign of x applied: -w where x < 0
 *   vf_from_i32(v)         int32 lanes to float32 (VF_LANES of them: 8 per block)
 *   vf_mul(a, b), vf_set1(f)
 *   vf_load_scales(p, n)   n (<= VF_LANES) bfloat16 scales from p as float32,
 *                          zeros after, reading nothing past p + n
 *   block_scales           VF_LANES scales, kept as the file finds fastest
 *   block_scales_of(v)     ... made from a vector of them
 *   vf_block_scales(t, s)  the scales of the blocks of step s (blocks
 *                          QV_BLOCKS * s, ...) of t, lane for lane: 8 lanes
 *                          per block, as vf_from_i32 puts a block's sums
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

#define QV_BYTES (QV_BLOCKS * GPTC_INT8_BLOCK)

/* dot_maddubs or dot_vnni */
typedef qv (*qv_dot_fn)(qv u, qv s);

/* One step of the tile: the QV_BLOCKS blocks from block b (of the chunk of
 * VF_LANES blocks from c) of each x row and W row meet. `full` and
 * `prefetch` are constants at each call: `full` says that the step lies
 * wholly inside K (only the last step of a row may not, and only that one
 * takes qv_load_part); `prefetch` asks for W ahead, once per 64-byte line. */
TARGET static inline __attribute__((always_inline)) void int8_tile_step(
    vf acc[ROWS_MR][ROWS_INT8_FEW_NR], const block_scales sp[ROWS_MR][ROWS_INT8_FEW_NR],
    gptc_int8_rows x, gptc_int8_rows w, const int rows, const int wrows, int K, int c, int b,
    const int full, const int prefetch, qv_dot_fn dot)
{
    const int k = b * GPTC_INT8_BLOCK, left = K - k;
    qv wv[ROWS_INT8_FEW_NR];
    for (int j = 0; j < wrows; j++) {
        const int8_t *p = w.values + (size_t)j * w.stride + k;
        if (prefetch) rows_w_prefetch(p);
        wv[j] = full ? qv_load(p) : qv_load_part(p, left);
    }
    for (int i = 0; i < rows; i++) {
        const int8_t *p = x.values + (size_t)i * x.stride + k;
        const qv xv = full ? qv_load(p) : qv_load_part(p, left);
        const qv ax = qv_abs(xv);
        for (int j = 0; j < wrows; j++) {
            vf sums = vf_from_i32(dot(ax, qv_signed(wv[j], xv)));
            const vf d = vf_block_scales(&sp[i][j], (b - c) / QV_BLOCKS);
            acc[i][j] = vf_fma(sums, d, acc[i][j]);
        }
    }
}

/* res[i * ROWS_INT8_FEW_NR + j] = x_i . w_j for `rows` x rows and `wrows` W rows,
 * compile-time constants at each call. Per chunk of VF_LANES blocks the
 * scale products d_x * d_w of each pair are computed as a vector; then per
 * step of QV_BLOCKS blocks each pair's exact integer sums, as float32
 * lanes, meet their scales in one multiply-add. The lanes are summed at
 * the end.
 *
 * A chunk wholly inside K is unrolled, with constant offsets and whole
 * loads only; the chunk holding the end of K takes the general steps. */
TARGET static inline __attribute__((always_inline)) void int8_tile_body(
    float *res, gptc_int8_rows x, gptc_int8_rows w, const int rows, const int wrows, int K,
    qv_dot_fn dot)
{
    const int nb = gptc_int8_blocks(K);
    vf acc[ROWS_MR][ROWS_INT8_FEW_NR];
    block_scales sp[ROWS_MR][ROWS_INT8_FEW_NR];
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < wrows; j++) acc[i][j] = vf_zero();
    }
    for (int c = 0; c < nb; c += VF_LANES) {
        const int nc = nb - c < VF_LANES ? nb - c : VF_LANES;
        vf ws[ROWS_INT8_FEW_NR];
        for (int j = 0; j < wrows; j++) {
            ws[j] = vf_load_scales(w.scales + (size_t)j * w.scale_stride + c, nc);
        }
        for (int i = 0; i < rows; i++) {
            vf xs = vf_load_scales(x.scales + (size_t)i * x.scale_stride + c, nc);
            for (int j = 0; j < wrows; j++) sp[i][j] = block_scales_of(vf_mul(xs, ws[j]));
        }
        if ((c + VF_LANES) * GPTC_INT8_BLOCK <= K) {
#pragma GCC unroll 8
            for (int s = 0; s < VF_LANES / QV_BLOCKS; s++) {
                int8_tile_step(acc, sp, x, w, rows, wrows, K, c, c + s * QV_BLOCKS, 1,
                               s * QV_BYTES % 64 == 0, dot);
            }
        } else {
            for (int b = c; b < c + nc; b += QV_BLOCKS) {
                int8_tile_step(acc, sp, x, w, rows, wrows, K, c, b,
                               (b + QV_BLOCKS) * GPTC_INT8_BLOCK <= K, 1, dot);
            }
        }
    }
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < wrows; j++) res[i * ROWS_INT8_FEW_NR + j] = vf_hsum(acc[i][j]);
    }
}

/* A gptc_rows_int8_fn called `name` (and its tile, tile_##name) with the
 * integer dot product `dot` (dot_maddubs or a vpdpbusd), compiled for the
 * target attribute `attr`. */
#define ROWS_INT8_KERNEL(attr, name, dot)                                                 \
    attr static void tile_##name(float *res, gptc_int8_rows x, gptc_int8_rows w, int rows, \
                                 int wrows, int K)                                         \
    {                                                                                      \
        ROWS_INT8_BY_SHAPE(int8_tile_body, res, x, w, rows, wrows, K, dot);               \
    }                                                                                      \
    attr void name(float *out, gptc_int8_rows x, gptc_int8_rows w, const float *bias,     \
                   int M, int K, int N, int n0, int n1, int accumulate)                    \
    {                                                                                      \
        rows_int8_body(out, x, w, bias, M, K, N, n0, n1, accumulate, tile_##name);        \
    }

#endif /* GPTC_ARCH_ROWS_INT8_SIMD_H */
