/*
 * x86_avx512.c - the kernels in AVX-512F and BW intrinsics (Intel
 * Skylake-SP and later Xeons, Ice Lake and later, AMD Zen 4): 32 registers
 * of 16 floats.
 *
 * Every function carries the target attribute, so this file compiles in
 * the default (baseline x86-64) build and runs only after isa.c has seen
 * AVX-512F and BW on the CPU (and AVX512-VNNI for the int8 products of the
 * avx512_vnni table). Ragged edges use masked loads and stores, which
 * never touch memory outside the mask: every kernel is tested with its
 * operands ending at a guard page.
 */
#include "../internal.h"
#include "../kernels.h"

#if defined(GPTC_HAVE_X86_KERNELS)
#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx2,fma")))

/* lanes 0 .. n - 1 set, for 0 <= n <= 16 */
TARGET static inline __mmask16 lane_mask(int n)
{
    return (__mmask16)((1u << n) - 1u);
}

/* ---- the vector mapping of rows_simd.h ---- */
typedef __m512 vf;
#define VF_LANES 16

/* bfloat16 widened: each value becomes the top half of a float */
TARGET static inline __m512 widen_bf16x16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

TARGET static inline vf vf_zero(void) { return _mm512_setzero_ps(); }
TARGET static inline vf vf_loadu(const float *p) { return _mm512_loadu_ps(p); }
TARGET static inline vf vf_load_part(const float *p, int n)
{
    return _mm512_maskz_loadu_ps(lane_mask(n), p);
}
TARGET static inline vf vf_load_bf16(const uint16_t *p)
{
    return widen_bf16x16(_mm256_loadu_si256((const __m256i *)p));
}
TARGET static inline vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
TARGET static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
TARGET static inline float vf_hsum(vf v) { return _mm512_reduce_add_ps(v); }

/* 4 x 4 few-rows tiles: 16 accumulators + 4 W vectors + 1 x vector of the
 * 32 registers */
#define ROWS_NR 4
#include "rows_simd.h"

/* ---- the mapping of pack_int8_simd.h. The int8 few-rows products of
 * both tables are x86_avx2.c's 256-bit kernels (kernels.h says why). ---- */
TARGET static inline vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
TARGET static inline vf vf_set1(float f) { return _mm512_set1_ps(f); }
TARGET static inline vf vf_widen_int8(const int8_t *p, int n)
{
    int8_t tmp[16] = {0};
    if (n < 16) memcpy(tmp, p, (size_t)n);
    __m128i v = _mm_loadu_si128((const __m128i *)(n < 16 ? tmp : p));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
}

#include "pack_int8_simd.h"

/* ---- packed GEMM: a 12 x 32 tile, twenty-four accumulators + two B
 * vectors + one broadcast of the thirty-two registers ---- */
#define MR 12
#define NR 32

TARGET static void tile(int kc, const float *ap, const float *bp, float *c, ptrdiff_t ldc,
                        int add)
{
    /* C's 32 floats of each row span at most three cache lines; asking for
     * the first and last now lets them arrive while the loop below runs */
    for (int i = 0; i < MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
    }
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
        for (int i = 0; i < MR; i++) {
            __m512 a = _mm512_set1_ps(ap[i]);
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
        }
        ap += MR;
        bp += NR;
    }
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        if (add) {
            acc[i][0] = _mm512_add_ps(_mm512_loadu_ps(ci), acc[i][0]);
            acc[i][1] = _mm512_add_ps(_mm512_loadu_ps(ci + 16), acc[i][1]);
        }
        _mm512_storeu_ps(ci, acc[i][0]);
        _mm512_storeu_ps(ci + 16, acc[i][1]);
    }
}

/* The packing transposes in 16 x 16 squares held in registers. */
TARGET static inline void transpose16_store(__m512 r[16], float *dst, ptrdiff_t ld, int n,
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

TARGET static inline __attribute__((always_inline)) void pack_body(
    float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride, int rows, int width, int len,
    pack_load_fn load)
{
    const __mmask16 store_mask = lane_mask(width);
    for (int p = 0; p < len; p += 16) {
        int n = len - p < 16 ? len - p : 16;
        __m512 r[16];
        for (int i = 0; i < 16; i++) {
            r[i] = i < rows ? load(src, stride, i, p, n) : _mm512_setzero_ps();
        }
        transpose16_store(r, dst + p * ld, ld, n, store_mask);
    }
}

TARGET static void pack_f32(float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride,
                            int rows, int width, int len)
{
    pack_body(dst, ld, src, stride, rows, width, len, f32_pack_load);
}

TARGET static void pack_bf16(float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride,
                             int rows, int width, int len)
{
    pack_body(dst, ld, src, stride, rows, width, len, bf16_pack_load);
}

TARGET static void pack_int8(float *dst, ptrdiff_t ld, gptc_int8_rows src, int rows, int width,
                             int len)
{
    pack_body(dst, ld, &src, 0, rows, width, len, int8_pack_load);
}

/* ---- inference attention: 16-float vectors ---- */
#define ATT_VEC 16
#define ATT_TARGET TARGET
#include "flash_attention.h"

/* ---- GELU, as wide as the vectors ---- */
#define GELU_TARGET TARGET
#include "gelu_simd.h"

/* ---- cross-entropy's passes over a row ---- */
#define LOSS_TARGET TARGET
#include "loss_simd.h"

/* ---- the streaming read ---- */
#include "read_simd.h"

/* ---- the arithmetic peak: 16 chains of 16-float FMAs ---- */
TARGET static float fma_loop(long iterations)
{
    __m512 acc[16];
    const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iterations; n++) {
        for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

/* Everything but the name and the int8 products, which the two tables of
 * this file share. */
#define AVX512_KERNELS                               \
    .mr = MR,                                        \
    .nr = NR,                                        \
    .pack_width = 16,                                \
    .tile = tile,                                    \
    .pack_f32 = pack_f32,                            \
    .pack_bf16 = pack_bf16,                          \
    .pack_int8 = pack_int8,                          \
    .rows_f32 = rows_f32,                            \
    .rows_bf16 = rows_bf16,                          \
    .packed_min_rows = 20,                           \
    .flash_task = att_flash_task,                    \
    .gelu = gelu_kernel,                             \
    .gelu_backward = gelu_backward_kernel,           \
    .row_logsumexp = row_logsumexp_kernel,           \
    .softmax_add = softmax_add_kernel,               \
    .fma_loop = fma_loop,                            \
    .fma_flops_per_iteration = 16 * 16 * 2,          \
    .read_sum = read_sum

const gptc_kernels gptc_kernels_avx512 = {
    .name = "avx512",
    AVX512_KERNELS,
    .rows_int8 = gptc_x86_rows_int8_256,
};

const gptc_kernels gptc_kernels_avx512_vnni = {
    .name = "avx512_vnni",
    AVX512_KERNELS,
    .rows_int8 = gptc_x86_rows_int8_256_avx512_vnni,
};

#endif /* GPTC_HAVE_X86_KERNELS */
