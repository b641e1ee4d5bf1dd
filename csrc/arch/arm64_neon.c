/*
 * arm64_neon.c - the kernels in ARMv8 Advanced SIMD (NEON) intrinsics
 * (Apple Silicon, AWS Graviton, Ampere, Raspberry Pi 4/5, ...): 32
 * registers of 4 floats.
 *
 * NEON is part of every ARMv8-A CPU, so this file needs no target
 * attribute and compiles in any aarch64 build; it is empty elsewhere. The
 * one exception is the int8 product of the neon_dotprod table, which uses
 * the dot-product instructions (sdot: optional from ARMv8.2, in every Apple
 * M1 and later and Neoverse N1 and later) under a target attribute, so the
 * default build still needs no -march flag; isa.c selects that table only
 * where the CPU has them.
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
/* The int8 product of the neon_dotprod table. GCC names the extension as
 * part of an architecture ("+dotprod" alone would leave armv8-a below the
 * armv8.2-a its arm_neon.h declares vdotq_s32 for), clang 14 as a feature
 * (it knows no "arch=" here); a build for such a CPU already has it. */
#if defined(__ARM_FEATURE_DOTPROD)
#define TARGET_DOTPROD
#elif defined(__clang__)
#define TARGET_DOTPROD __attribute__((target("dotprod")))
#else
#define TARGET_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

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
 * 32 registers; the int8 tile's 4 W rows are the lanes of one vector */
#define ROWS_NR 4
#define ROWS_INT8_NR 4
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

/* The 4 x 4 square r transposed, its first n rows (<= 4) stored ld apart
 * from dst, w (<= 4) lanes of each. */
static inline void transpose4_store(float *dst, ptrdiff_t ld, float32x4_t r[4], int n, int w)
{
    transpose4(r);
    for (int k = 0; k < n; k++) store_lanes(dst + k * ld, r[k], w);
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
            transpose4_store(dst + p * ld + r0, ld, r, n, w);
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

/* ---- int8 weights (kernels.h: gptc_int8_rows) ---- */
#define HALF_BLOCK (GPTC_INT8_BLOCK / 2)   /* int8 values per vector */

typedef struct {
    int8x16_t lo, hi;
} int8_block;

/* The block at p: all of it, or (n < 32) its first n values and zeros,
 * reading nothing past p + n. */
static inline int8_block int8_block_load(const int8_t *p, int n)
{
    if (n >= GPTC_INT8_BLOCK) return (int8_block){vld1q_s8(p), vld1q_s8(p + HALF_BLOCK)};
    int8_t tmp[GPTC_INT8_BLOCK] = {0};
    memcpy(tmp, p, (size_t)n);
    return (int8_block){vld1q_s8(tmp), vld1q_s8(tmp + HALF_BLOCK)};
}

/* The scales of n (<= 4) consecutive blocks as float32, zeros after. */
static inline float32x4_t int8_scales(const uint16_t *p, int n)
{
    return n == 4 ? vf_load_bf16(p) : bf16_load_part(p, 0, n);
}

/* The packing transpose: 16 values (half a block: one scale) of each of 4
 * rows widened to q * d, then transposed as four 4 x 4 squares. */
static void pack_int8(float *dst, ptrdiff_t ld, gptc_int8_rows src, int rows, int width,
                      int len)
{
    for (int p = 0; p < len; p += HALF_BLOCK) {
        const int n = len - p < HALF_BLOCK ? len - p : HALF_BLOCK;   /* steps in these squares */
        for (int r0 = 0; r0 < width; r0 += 4) {
            const int w = width - r0 < 4 ? width - r0 : 4;   /* destination lanes */
            float32x4_t v[4][4];   /* v[s][i]: values p + 4s .. p + 4s + 3 of row r0 + i */
            for (int i = 0; i < 4; i++) {
                const int row = r0 + i;
                if (row >= rows) {
                    for (int s = 0; s < 4; s++) v[s][i] = vdupq_n_f32(0.0f);
                    continue;
                }
                const int8_t *q = src.values + (size_t)row * src.stride + p;
                const uint16_t d = src.scales[(size_t)row * src.scale_stride + p / GPTC_INT8_BLOCK];
                const int8x16_t b = n == HALF_BLOCK ? vld1q_s8(q) : int8_block_load(q, n).lo;
                const float32x4_t dv = vdupq_n_f32(gptc_bf16_to_f32(d));
                const int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_high_s8(b);
                v[0][i] = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), dv);
                v[1][i] = vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), dv);
                v[2][i] = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), dv);
                v[3][i] = vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), dv);
            }
            for (int s = 0; 4 * s < n; s++) {
                const int steps = n - 4 * s < 4 ? n - 4 * s : 4;
                transpose4_store(dst + (p + 4 * s) * ld + r0, ld, v[s], steps, w);
            }
        }
    }
}

/* acc plus the 16 products x[t] * w[t], summed exactly into its four
 * 32-bit lanes (which product goes to which lane is each variant's own:
 * only a block's total is used). */
typedef int32x4_t (*int8_dot_fn)(int32x4_t acc, int8x16_t x, int8x16_t w);

/* Any ARMv8-A: widening multiplies, two products per 16-bit lane (x[t] w[t]
 * + x[8 + t] w[8 + t], at most 2 * 127^2 = 32258 as |q| <= 127, so no
 * overflow), added pairwise into the 32-bit lanes. */
static inline __attribute__((always_inline)) int32x4_t dot_mull(int32x4_t acc, int8x16_t x,
                                                               int8x16_t w)
{
    const int16x8_t pairs = vmlal_high_s8(vmull_s8(vget_low_s8(x), vget_low_s8(w)), x, w);
    return vpadalq_s16(acc, pairs);
}

/* sdot: four products per 32-bit lane in one instruction. Clang 14's
 * arm_neon.h declares vdotq_s32 only when the whole build has the extension,
 * so there it is the instruction itself. */
TARGET_DOTPROD static inline __attribute__((always_inline)) int32x4_t dot_sdot(int32x4_t acc,
                                                                              int8x16_t x,
                                                                              int8x16_t w)
{
#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD)
    __asm__("sdot %0.4s, %1.16b, %2.16b" : "+w"(acc) : "w"(x), "w"(w));
    return acc;
#else
    return vdotq_s32(acc, x, w);
#endif
}

/* One block, at k, of `rows` x rows and `wrows` W rows (n of its values:
 * all 32, or fewer at the end of a row), into acc: per x row, the exact
 * integer sums of the (up to) four W rows are reduced pairwise into one
 * vector, lane j for W row j, converted to float32 (exact: at most
 * 32 * 127^2 < 2^24) and multiply-added with the block's scale products
 * (scale[i], lane j: d_x_i * d_w_j). Lanes of absent W rows add zeros. */
static inline __attribute__((always_inline)) void int8_block_step(
    float32x4_t acc[ROWS_MR], gptc_int8_rows x, gptc_int8_rows w, const int rows,
    const int wrows, int k, int n, const float32x4_t *scale, int8_dot_fn dot)
{
    int8_block wv[ROWS_INT8_NR];
    for (int j = 0; j < wrows; j++) {
        const int8_t *p = w.values + (size_t)j * w.stride + k;
        rows_w_prefetch(p);
        wv[j] = int8_block_load(p, n);
    }
    for (int i = 0; i < rows; i++) {
        const int8_block xv = int8_block_load(x.values + (size_t)i * x.stride + k, n);
        int32x4_t sum[ROWS_INT8_NR];
        for (int j = 0; j < ROWS_INT8_NR; j++) {
            sum[j] = vdupq_n_s32(0);
            if (j < wrows) sum[j] = dot(dot(sum[j], xv.lo, wv[j].lo), xv.hi, wv[j].hi);
        }
        const int32x4_t total =
            vpaddq_s32(vpaddq_s32(sum[0], sum[1]), vpaddq_s32(sum[2], sum[3]));
        acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(total), scale[4 * i]);
    }
}

/* res[i * 4 + j] = x_i . w_j for `rows` x rows and `wrows` W rows, both
 * compile-time constants at each call: each output the float32 sum over
 * its blocks, in order, of their integer sums times their scales. The
 * scale products are made 4 blocks at a time; a last block shorter than 32
 * takes its own step, so that the loop over whole blocks loads without a
 * branch (with the partial loads in it GCC 12 kept most accumulators in
 * memory, stored back at every block). */
static inline __attribute__((always_inline)) void int8_tile_body(
    float *res, gptc_int8_rows x, gptc_int8_rows w, const int rows, const int wrows, int K,
    int8_dot_fn dot)
{
    const int nb = gptc_int8_blocks(K), whole = K / GPTC_INT8_BLOCK;
    float32x4_t acc[ROWS_MR];
    for (int i = 0; i < rows; i++) acc[i] = vdupq_n_f32(0.0f);
    for (int c = 0; c < nb; c += 4) {
        const int nc = nb - c < 4 ? nb - c : 4;
        /* ws[j]: W row j's scales of blocks c.., then transposed: ws[s] lane j */
        float32x4_t ws[4];
        for (int j = 0; j < 4; j++) {
            ws[j] = j < wrows ? int8_scales(w.scales + (size_t)j * w.scale_stride + c, nc)
                              : vdupq_n_f32(0.0f);
        }
        transpose4(ws);
        float32x4_t scale[ROWS_MR * 4];   /* [4 i + s] lane j: d_x_i * d_w_j of block c + s */
        for (int i = 0; i < rows; i++) {
            const float32x4_t xs = int8_scales(x.scales + (size_t)i * x.scale_stride + c, nc);
            scale[4 * i + 0] = vmulq_laneq_f32(ws[0], xs, 0);
            scale[4 * i + 1] = vmulq_laneq_f32(ws[1], xs, 1);
            scale[4 * i + 2] = vmulq_laneq_f32(ws[2], xs, 2);
            scale[4 * i + 3] = vmulq_laneq_f32(ws[3], xs, 3);
        }
        const int nwhole = whole - c < nc ? whole - c : nc;
        for (int s = 0; s < nwhole; s++) {
            int8_block_step(acc, x, w, rows, wrows, (c + s) * GPTC_INT8_BLOCK, GPTC_INT8_BLOCK,
                            scale + s, dot);
        }
        if (nwhole < nc) {
            const int k = (c + nwhole) * GPTC_INT8_BLOCK;
            int8_block_step(acc, x, w, rows, wrows, k, K - k, scale + nwhole, dot);
        }
    }
    for (int i = 0; i < rows; i++) vst1q_f32(res + i * ROWS_INT8_FEW_NR, acc[i]);
}

static void tiles_int8(float *out, gptc_int8_rows x, gptc_int8_rows w, const float *bias, int N,
                       int accumulate, int rows, int wrows, int K, int n0, int n1)
{
    ROWS_INT8_BY_SHAPE(int8_tile_body, dot_mull, out, x, w, bias, N, accumulate, rows, wrows, K,
                       n0, n1);
}

static void rows_int8(float *out, gptc_int8_rows x, gptc_int8_rows w, const float *bias, int M,
                      int K, int N, int n0, int n1, int accumulate)
{
    rows_int8_body(out, x, w, bias, M, K, N, n0, n1, accumulate, tiles_int8);
}

TARGET_DOTPROD static void tiles_int8_dotprod(float *out, gptc_int8_rows x, gptc_int8_rows w,
                                              const float *bias, int N, int accumulate, int rows,
                                              int wrows, int K, int n0, int n1)
{
    ROWS_INT8_BY_SHAPE(int8_tile_body, dot_sdot, out, x, w, bias, N, accumulate, rows, wrows, K,
                       n0, n1);
}

TARGET_DOTPROD static void rows_int8_dotprod(float *out, gptc_int8_rows x, gptc_int8_rows w,
                                             const float *bias, int M, int K, int N, int n0,
                                             int n1, int accumulate)
{
    rows_int8_body(out, x, w, bias, M, K, N, n0, n1, accumulate, tiles_int8_dotprod);
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

/* ---- the streaming read ---- */
#include "read_simd.h"

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

/* Everything but the name and the int8 product, which the two tables of
 * this file share. pack_width: the B panel in one call (the A panel is MR
 * wide). packed_min_rows: AVX2's crossing, whose GEMM tile is 6 x 16 too;
 * not measured on ARM64 hardware (here the kernels are only tested, under
 * qemu): timing both paths on GPT-2's weight shapes on such a machine would
 * set it. */
#define NEON_KERNELS                                 \
    .mr = MR,                                        \
    .nr = NR,                                        \
    .pack_width = NR,                                \
    .tile = tile,                                    \
    .pack_f32 = pack_f32,                            \
    .pack_bf16 = pack_bf16,                          \
    .pack_int8 = pack_int8,                          \
    .rows_f32 = rows_f32,                            \
    .rows_bf16 = rows_bf16,                          \
    .packed_min_rows = 16,                           \
    .flash_task = att_flash_task,                    \
    .gelu = gelu_kernel,                             \
    .gelu_backward = gelu_backward_kernel,           \
    .row_logsumexp = row_logsumexp_kernel,           \
    .softmax_add = softmax_add_kernel,               \
    .fma_loop = fma_loop,                            \
    .fma_flops_per_iteration = FMA_CHAINS * 4 * 2,   \
    .read_sum = read_sum

const gptc_kernels gptc_kernels_neon = {
    .name = "neon",
    NEON_KERNELS,
    .rows_int8 = rows_int8,
};

const gptc_kernels gptc_kernels_neon_dotprod = {
    .name = "neon_dotprod",
    NEON_KERNELS,
    .rows_int8 = rows_int8_dotprod,
};

#endif /* GPTC_HAVE_NEON_KERNELS */
