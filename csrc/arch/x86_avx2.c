/*
 * x86_avx2.c - the kernels in AVX2 + FMA intrinsics (x86-64 CPUs since
 * Intel Haswell and AMD Zen): 16 registers of 8 floats.
 *
 * Every function carries the target attribute, so this file compiles in
 * the default (baseline x86-64) build and runs only after isa.c has seen
 * AVX2 and FMA on the CPU (and AVX-VNNI for the int8 products of the
 * avx2_vnni table). Ragged edges use masked loads and stores, which
 * never touch memory outside the mask: every kernel is tested with its
 * operands ending at a guard page.
 */
#include "../internal.h"
#include "../kernels.h"

#if defined(GPTC_HAVE_X86_KERNELS)
#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx2,fma")))
/* the int8 products of the avx2_vnni table */
#define TARGET_VNNI __attribute__((target("avx2,fma,avxvnni")))
/* the int8 products of the avx512_vnni table (x86_avx512.c) */
#define TARGET_VNNI_EVEX __attribute__((target("avx2,fma,avx512f,avx512vl,avx512vnni")))

/* lanes 0 .. n - 1 set */
TARGET static inline __m256i lane_mask(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

TARGET static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- the vector mapping of rows_simd.h ---- */
typedef __m256 vf;
#define VF_LANES 8

/* bfloat16 widened: each value becomes the top half of a float */
TARGET static inline __m256 widen_bf16x8(__m128i h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

TARGET static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
TARGET static inline vf vf_loadu(const float *p) { return _mm256_loadu_ps(p); }
TARGET static inline vf vf_load_part(const float *p, int n)
{
    return _mm256_maskload_ps(p, lane_mask(n));
}
TARGET static inline vf vf_load_bf16(const uint16_t *p)
{
    return widen_bf16x8(_mm_loadu_si128((const __m128i *)p));
}
TARGET static inline vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
TARGET static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
TARGET static inline float vf_hsum(vf v) { return hsum(v); }

/* The int8 tiles (rows.h, rows_int8_simd.h): 4 x rows by 2 W rows, and
 * for one or two rows 2 by 4 (eight accumulators, which with the four W
 * vectors fill the 16 registers). With one x row the multiply-add chains,
 * one per W row, are what bound a step: the wider tile, one prefetch pair
 * per line instead of per block, no call in the loop and the shape chosen
 * once per run of tiles took a one-thread decode-shaped product ([1, 768]
 * x [512, 768], in L2; best of 300) from 13.6 to 7.0 us (avx512_vnni),
 * 15.7 to 6.9 (avx2_vnni) and 10.9 to 7.4 (avx2) on a 2-core Zen 5 class
 * EPYC VM, 2026-12-02. */
#define ROWS_INT8_FEW_NR 4
/* The float tiles: 4 x rows by 3 W rows, twelve accumulators + three W
 * vectors + one x vector of the sixteen registers. Against 4 by 2, seven
 * loads per twelve multiply-adds instead of six per eight: a one-thread
 * product of 4 or 8 rows with W in L2 ([8, 768] x [96, 768], best of
 * 5000) went from 64-67 to 91-97 GFLOP/s on this Zen 4 class EPYC VM,
 * 2026-12-03. */
#define ROWS_NR 3
#include "rows_simd.h"

/* ---- the integer mapping of rows_int8_simd.h: one block per vector ---- */
typedef __m256i qv;

TARGET static inline qv qv_load(const int8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
/* Whole 4-byte lanes by a masked load, the last 0-3 bytes gathered into
 * the lane after them: no call (a memcpy here spilled the int8 tile's
 * accumulators) and no byte read past p + n. */
TARGET static inline qv qv_load_part(const int8_t *p, int n)
{
    const int whole = n / 4;
    const __m256i v = _mm256_maskload_epi32((const int *)p, lane_mask(whole));
    uint32_t tail = 0;
    for (int i = 0; i < n % 4; i++) tail |= (uint32_t)(uint8_t)p[4 * whole + i] << (8 * i);
    const __m256i at = _mm256_cmpeq_epi32(_mm256_set1_epi32(whole),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_blendv_epi8(v, _mm256_set1_epi32((int)tail), at);
}
TARGET static inline qv qv_abs(qv x) { return _mm256_abs_epi8(x); }
TARGET static inline qv qv_signed(qv w, qv x) { return _mm256_sign_epi8(w, x); }
TARGET static inline vf vf_from_i32(qv v) { return _mm256_cvtepi32_ps(v); }
TARGET static inline vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
TARGET static inline vf vf_set1(float f) { return _mm256_set1_ps(f); }
TARGET static inline vf vf_widen_int8(const int8_t *p, int n)
{
    int8_t tmp[8] = {0};
    if (n < 8) memcpy(tmp, p, (size_t)n);
    __m128i v = _mm_loadl_epi64((const __m128i *)(n < 8 ? tmp : p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

/* The int8 dot products: vpmaddubsw (pairs, 16 bits) then vpmaddwd by
 * ones (pairs of those, 32 bits); or AVX-VNNI's vpdpbusd, both in one. */
TARGET static inline __attribute__((always_inline)) qv dot_maddubs(qv u, qv s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

TARGET_VNNI static inline __attribute__((always_inline)) qv dot_vnni(qv u, qv s)
{
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
}

/* The same instruction in its AVX512-VNNI form (EVEX, on 256-bit vectors
 * with AVX512-VL): the avx512_vnni table's, for CPUs with AVX512-VNNI but
 * not AVX-VNNI (Cascade Lake, Ice Lake). */
TARGET_VNNI_EVEX static inline __attribute__((always_inline)) qv dot_vnni_evex(qv u, qv s)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

#include "rows_int8_simd.h"

ROWS_INT8_KERNEL(TARGET, gptc_x86_rows_int8_256, dot_maddubs)
ROWS_INT8_KERNEL(TARGET_VNNI, gptc_x86_rows_int8_256_avx_vnni, dot_vnni)
ROWS_INT8_KERNEL(TARGET_VNNI_EVEX, gptc_x86_rows_int8_256_avx512_vnni, dot_vnni_evex)
#include "pack_int8_simd.h"

/* ---- packed GEMM: a 6 x 16 tile, twelve accumulators + two B vectors +
 * one broadcast of the sixteen registers. The accumulators are named
 * variables, not an array: with an array GCC 12 keeps them in registers but
 * also stores ten of the twelve to the stack at every step of the loop
 * (objdump shows it), which cost a third of the speed. ---- */
#define MR 6
#define NR 16

/* One row of the finished tile into C: c[0..15] = (or +=) lo, hi. */
TARGET static inline void store_row(float *c, __m256 lo, __m256 hi, int add)
{
    if (add) {
        lo = _mm256_add_ps(_mm256_loadu_ps(c), lo);
        hi = _mm256_add_ps(_mm256_loadu_ps(c + 8), hi);
    }
    _mm256_storeu_ps(c, lo);
    _mm256_storeu_ps(c + 8, hi);
}

TARGET static void tile(int kc, const float *ap, const float *bp, float *c, ptrdiff_t ldc,
                        int add)
{
    /* C's sixteen floats of each row span at most two cache lines; asking
     * for them now lets them arrive while the loop below runs */
    for (int i = 0; i < MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
    }
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int p = 0; p < kc; p++, ap += MR, bp += NR) {
        const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        __m256 a = _mm256_broadcast_ss(ap + 0);
        c00 = _mm256_fmadd_ps(a, b0, c00);
        c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(ap + 1);
        c10 = _mm256_fmadd_ps(a, b0, c10);
        c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(ap + 2);
        c20 = _mm256_fmadd_ps(a, b0, c20);
        c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(ap + 3);
        c30 = _mm256_fmadd_ps(a, b0, c30);
        c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(ap + 4);
        c40 = _mm256_fmadd_ps(a, b0, c40);
        c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(ap + 5);
        c50 = _mm256_fmadd_ps(a, b0, c50);
        c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    store_row(c + 0 * ldc, c00, c01, add);
    store_row(c + 1 * ldc, c10, c11, add);
    store_row(c + 2 * ldc, c20, c21, add);
    store_row(c + 3 * ldc, c30, c31, add);
    store_row(c + 4 * ldc, c40, c41, add);
    store_row(c + 5 * ldc, c50, c51, add);
}

/* The packing transposes in 8 x 8 squares held in registers: whole-vector
 * loads and stores instead of one float at a time. A masked store only for
 * a width other than the B panels' 8 and the A panels' 6: on AMD's cores
 * vmaskmovps to memory is microcoded, and with it packing B took 13-14% of
 * a 256-row product's time on one thread (Zen 4 class EPYC VM, 2026-12-02). */
TARGET static inline void transpose8_store(__m256 r[8], float *dst, ptrdiff_t ld, int n,
                                           int width)
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
    if (width == 8) {
        for (int k = 0; k < n; k++) _mm256_storeu_ps(dst + k * ld, t[k]);
    } else if (width == 6) {
        for (int k = 0; k < n; k++) {
            _mm_storeu_ps(dst + k * ld, _mm256_castps256_ps128(t[k]));
            _mm_storel_pi((__m64 *)(dst + k * ld + 4), _mm256_extractf128_ps(t[k], 1));
        }
    } else {
        const __m256i store_mask = lane_mask(width);
        for (int k = 0; k < n; k++) _mm256_maskstore_ps(dst + k * ld, store_mask, t[k]);
    }
}

TARGET static inline __attribute__((always_inline)) void pack_body(
    float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride, int rows, int width, int len,
    pack_load_fn load)
{
    for (int p = 0; p < len; p += 8) {
        int n = len - p < 8 ? len - p : 8;
        __m256 r[8];
        for (int i = 0; i < 8; i++) {
            r[i] = i < rows ? load(src, stride, i, p, n) : _mm256_setzero_ps();
        }
        transpose8_store(r, dst + p * ld, ld, n, width);
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

/* ---- inference attention: 8-float vectors ---- */
#define ATT_VEC 8
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

/* ---- the arithmetic peak: 12 chains of 8-float FMAs, enough to cover
 * the FMA latency (4 cycles) on two FMA ports ---- */
TARGET static float fma_loop(long iterations)
{
    __m256 acc[12];
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < iterations; n++) {
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    __m256 s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
    return hsum(s);
}

/* Everything but the name and the int8 products, which the two tables of
 * this file share. */
#define AVX2_KERNELS                                 \
    .mr = MR,                                        \
    .nr = NR,                                        \
    .pack_width = 8,                                 \
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
    .fma_flops_per_iteration = 12 * 8 * 2,           \
    .read_sum = read_sum

const gptc_kernels gptc_kernels_avx2 = {
    .name = "avx2",
    AVX2_KERNELS,
    .rows_int8 = gptc_x86_rows_int8_256,
};

const gptc_kernels gptc_kernels_avx2_vnni = {
    .name = "avx2_vnni",
    AVX2_KERNELS,
    .rows_int8 = gptc_x86_rows_int8_256_avx_vnni,
};

#endif /* GPTC_HAVE_X86_KERNELS */
