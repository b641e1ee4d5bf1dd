/*
 * arm64_neon.c - the kernels in ARMv8 Advanced SIMD (NEON) intrinsics
 * (Apple Silicon, AWS Graviton, Ampere, Raspberry Pi 4/5, ...): 32
 * registers of 4 floats.
 *
 * NEON is part of every ARMv8-A CPU, so this file needs no target
 * attribute and compiles in any aarch64 build; it is empty elsewhere.
 * Ragged edges go through a zeroed temporary (memcpy of exactly the
 * floats that exist), so no kernel reads or writes past an operand: the
 * C test program (tests/c/) runs every kernel with its operands ending at
 * a guard page, under qemu-aarch64 on x86 machines.
 */
#include "../internal.h"
#include "../kernels.h"

#if defined(GPTC_HAVE_NEON_KERNELS)
#include <arm_neon.h>
#include <string.h>

#define TARGET   /* baseline: nothing to enable */

/* ---- the vector mapping of rows_simd.h ---- */
typedef float32x4_t vf;
#define VF_LANES 4

static inline vf vf_zero(void) { return vdupq_n_f32(0.0f); }
static inline vf vf_loadu(const float *p) { return vld1q_f32(p); }
/* The first n (0..3) floats, by lane loads of exactly those: a memcpy into
 * a temporary here made GCC 12 keep the few-rows tile's accumulators in
 * memory, stored back at every step of its main loop (the tail it sits in
 * was too big to unroll, so the array stayed indexed by loop counters). */
static inline vf vf_load_part(const float *p, int n)
{
    const float32x2_t z = vdup_n_f32(0.0f);
    if (n <= 0) return vdupq_n_f32(0.0f);
    if (n == 1) return vcombine_f32(vld1_lane_f32(p, z, 0), z);
    if (n == 2) return vcombine_f32(vld1_f32(p), z);
    return vcombine_f32(vld1_f32(p), vld1_lane_f32(p + 2, z, 0));
}
/* bfloat16 widened: each value shifted into the top half of a float */
static inline vf vf_load_bf16(const uint16_t *p)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}
static inline vf vf_fma(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
static inline vf vf_add(vf a, vf b) { return vaddq_f32(a, b); }
static inline float vf_hsum(vf v) { return vaddvq_f32(v); }

/* 4 x 4 few-rows tiles: 16 accumulators + 4 W vectors + 1 x vector of the
 * 32 registers */
#define ROWS_NR 4
#include "rows_simd.h"

/* ---- packed GEMM: a 6 x 16 tile, twenty-four accumulators + four B
 * vectors + the six A values in one 4-float and one 2-float register:
 * thirty of the thirty-two. The wider 8 x 12 or 12 x 8 would not fit the
 * layer: the A panel is packed by the transposes (so MR <= pack_width,
 * which must divide NR), and gptc_gemm_serial_floats sizes the B panels
 * for an NR that divides GPTC_MAX_NR (32). ---- */
#define MR 6
#define NR 16

/* acc[i][0..3] += a[lane] * (b0, b1, b2, b3): one row of the tile, with
 * fma_lane the multiply-add by a lane of a 4-float (laneq) or 2-float vector */
#define TILE_ROW(i, fma_lane, a, lane)                     \
    do {                                                   \
        acc[i][0] = fma_lane(acc[i][0], b0, a, lane);      \
        acc[i][1] = fma_lane(acc[i][1], b1, a, lane);      \
        acc[i][2] = fma_lane(acc[i][2], b2, a, lane);      \
        acc[i][3] = fma_lane(acc[i][3], b3, a, lane);      \
    } while (0)

/* row i of the tile to c + i * ldc, added to what is there if add */
#define TILE_STORE_ROW(i)                                                          \
    do {                                                                           \
        float *ci = c + (i) * ldc;                                                 \
        if (add) {                                                                 \
            acc[i][0] = vaddq_f32(vld1q_f32(ci), acc[i][0]);                      \
            acc[i][1] = vaddq_f32(vld1q_f32(ci + 4), acc[i][1]);                  \
            acc[i][2] = vaddq_f32(vld1q_f32(ci + 8), acc[i][2]);                  \
            acc[i][3] = vaddq_f32(vld1q_f32(ci + 12), acc[i][3]);                 \
        }                                                                          \
        vst1q_f32(ci, acc[i][0]);                                                  \
        vst1q_f32(ci + 4, acc[i][1]);                                              \
        vst1q_f32(ci + 8, acc[i][2]);                                              \
        vst1q_f32(ci + 12, acc[i][3]);                                             \
    } while (0)

/* Every index into acc is a constant (the macros above), so the compiler
 * keeps the whole array in registers; a loop over rows or columns would
 * leave it in memory and store it back at every step. */
static void tile(int kc, const float *ap, const float *bp, float *c, ptrdiff_t ldc, int add)
{
    const float32x4_t z = vdupq_n_f32(0.0f);
    float32x4_t acc[MR][4] = {{z, z, z, z}, {z, z, z, z}, {z, z, z, z},
                              {z, z, z, z}, {z, z, z, z}, {z, z, z, z}};
    for (int p = 0; p < kc; p++) {
        const float32x4_t b0 = vld1q_f32(bp), b1 = vld1q_f32(bp + 4);
        const float32x4_t b2 = vld1q_f32(bp + 8), b3 = vld1q_f32(bp + 12);
        const float32x4_t a03 = vld1q_f32(ap);     /* rows 0..3 */
        const float32x2_t a45 = vld1_f32(ap + 4);  /* rows 4, 5: nothing past the step */
        TILE_ROW(0, vfmaq_laneq_f32, a03, 0);
        TILE_ROW(1, vfmaq_laneq_f32, a03, 1);
        TILE_ROW(2, vfmaq_laneq_f32, a03, 2);
        TILE_ROW(3, vfmaq_laneq_f32, a03, 3);
        TILE_ROW(4, vfmaq_lane_f32, a45, 0);
        TILE_ROW(5, vfmaq_lane_f32, a45, 1);
        ap += MR;
        bp += NR;
    }
    TILE_STORE_ROW(0);
    TILE_STORE_ROW(1);
    TILE_STORE_ROW(2);
    TILE_STORE_ROW(3);
    TILE_STORE_ROW(4);
    TILE_STORE_ROW(5);
}

#undef TILE_STORE_ROW
#undef TILE_ROW

/* ---- the packing transposes, in 4 x 4 squares held in registers: rows
 * r0 .. r0 + 3 of the source, four steps of the reduction at a time ---- */
static inline void transpose4(float32x4_t r[4])
{
    /* pairs of rows interleaved, then the halves of the pairs combined */
    const float32x4x2_t t01 = vtrnq_f32(r[0], r[1]), t23 = vtrnq_f32(r[2], r[3]);
    r[0] = vcombine_f32(vget_low_f32(t01.val[0]), vget_low_f32(t23.val[0]));
    r[1] = vcombine_f32(vget_low_f32(t01.val[1]), vget_low_f32(t23.val[1]));
    r[2] = vcombine_f32(vget_high_f32(t01.val[0]), vget_high_f32(t23.val[0]));
    r[3] = vcombine_f32(vget_high_f32(t01.val[1]), vget_high_f32(t23.val[1]));
}

/* The first w (<= 4) lanes of v to p. */
static inline void store_lanes(float *p, float32x4_t v, int w)
{
    if (w == 4) {
        vst1q_f32(p, v);
        return;
    }
    float tmp[4];
    vst1q_f32(tmp, v);
    memcpy(p, tmp, (size_t)w * sizeof(float));
}

static inline __attribute__((always_inline)) void pack_body(
    float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride, int rows, int width, int len,
    w_load_fn load, w_load_part_fn load_part)
{
    for (int p = 0; p < len; p += 4) {
        const int n = len - p < 4 ? len - p : 4;   /* reduction steps in this square */
        for (int r0 = 0; r0 < width; r0 += 4) {
            const int w = width - r0 < 4 ? width - r0 : 4;   /* destination lanes */
            float32x4_t r[4];
            for (int i = 0; i < 4; i++) {
                const int row = r0 + i;
                const size_t at = (size_t)row * (size_t)stride + (size_t)p;
                r[i] = row >= rows ? vdupq_n_f32(0.0f)
                                   : n == 4 ? load(src, at) : load_part(src, at, n);
            }
            transpose4(r);
            for (int k = 0; k < n; k++) store_lanes(dst + (p + k) * ld + r0, r[k], w);
        }
    }
}

static void pack_f32(float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride, int rows,
                     int width, int len)
{
    pack_body(dst, ld, src, stride, rows, width, len, f32_load, f32_load_part);
}

static void pack_bf16(float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride, int rows,
                      int width, int len)
{
    pack_body(dst, ld, src, stride, rows, width, len, bf16_load, bf16_load_part);
}

/* ---- inference attention: 4-float vectors ---- */
#define ATT_VEC 4
#define ATT_TARGET
#include "flash_attention.h"

/* ---- the arithmetic peak: 16 chains of 4-float FMAs, enough to cover a
 * 4-cycle FMA latency on four FMA pipes (Apple's and Neoverse V cores) ---- */
#define FMA_CHAINS 16

static float fma_loop(long iterations)
{
    float32x4_t acc[FMA_CHAINS];
    const float32x4_t a = vdupq_n_f32(0.999f), b = vdupq_n_f32(1e-3f);
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = vdupq_n_f32((float)i);
    for (long n = 0; n < iterations; n++) {
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = vfmaq_f32(b, acc[i], a);
    }
    float32x4_t s = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++) s = vaddq_f32(s, acc[i]);
    return vaddvq_f32(s);
}

const gptc_kernels gptc_kernels_neon = {
    .name = "neon",
    .mr = MR,
    .nr = NR,
    .pack_width = NR,   /* the B panel in one call; the A panel is MR wide */
    .tile = tile,
    .pack_f32 = pack_f32,
    .pack_bf16 = pack_bf16,
    .rows_f32 = rows_f32,
    .rows_bf16 = rows_bf16,
    /* int8 in portable C until NEON kernels (sdot / vmull) are written */
    .pack_int8 = gptc_generic_pack_int8,
    .rows_int8 = gptc_generic_rows_int8,
    /* AVX2's crossing, whose GEMM tile is 6 x 16 too. Not measured on ARM64
     * hardware (here the kernels are only tested, under qemu): timing both
     * paths on GPT-2's weight shapes on such a machine would set it. */
    .packed_min_rows = 16,
    .flash_task = att_flash_task,
    .fma_loop = fma_loop,
    .fma_flops_per_iteration = FMA_CHAINS * 4 * 2,
};

#endif /* GPTC_HAVE_NEON_KERNELS */
