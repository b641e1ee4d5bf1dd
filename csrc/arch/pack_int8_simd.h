/*
 * pack_int8_simd.h - the load of the int8 packing transpose
 * (gptc_pack_int8_fn: int8 rows widened to float32 as they are packed for
 * the GEMM), written once for the x86 vector instruction sets. Included by
 * a file that maps TARGET, vf, VF_LANES, vf_mul(a, b), vf_set1(f) and
 *
 *   vf_widen_int8(p, n)    the first n (<= VF_LANES) int8 at p as float32,
 *                          zeros after, reading nothing past p + n
 *
 * and passes int8_pack_load to its pack_body.
 */
#ifndef GPTC_ARCH_PACK_INT8_SIMD_H
#define GPTC_ARCH_PACK_INT8_SIMD_H

/* Values p .. p + n - 1 of row `row` of int8 rows (src: a gptc_int8_rows)
 * as float32, times their block's scale; p is a multiple of VF_LANES, so
 * they share one block. */
TARGET static inline vf int8_pack_load(const void *src, ptrdiff_t stride, int row, int p, int n)
{
    const gptc_int8_rows *v = (const gptc_int8_rows *)src;
    const uint16_t bits = v->scales[(size_t)row * v->scale_stride + p / GPTC_INT8_BLOCK];
    return vf_mul(vf_widen_int8(v->values + (size_t)row * v->stride + p, n),
                  vf_set1(gptc_bf16_to_f32(bits)));
}

#endif /* GPTC_ARCH_PACK_INT8_SIMD_H */
