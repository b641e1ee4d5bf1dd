/*
 * quantize.c - float32 rows to int8 blocks (gptc.h, gptc_quantize_int8):
 * the weights of Module.to_dtype("int8") once, and the activations of every
 * few-rows product with such a weight (matmul.c) on each call.
 *
 * One quantiser serves both, so the activations a kernel multiplies are
 * exactly what gptc._C.to_int8 returns for them, and the kernels' tests
 * can rebuild every integer sum from it.
 *
 * The scale is bfloat16: 2 bytes per block of 32 (1.0625 bytes a weight
 * with the values), widened to float32 by a shift on every instruction set
 * (fp16 would need F16C or a conversion routine), with float32's range, so
 * no block of tiny values loses its scale to underflow. The values are
 * divided by the rounded scale itself, so they are the nearest multiples
 * of the d that is stored: rounding d costs nothing but the clamp at 127
 * when d rounded down (an error of at most d / 2, as every other value).
 */
#include "gptc.h"
#include "internal.h"

/* 1.5 * 2^23: adding it rounds a float of magnitude below 2^22 to an
 * integer, to nearest even, in the current (default) rounding mode; the
 * integer is then the low bits of the sum. A plain add, so the loop
 * vectorises with baseline SSE2 (rintf would be a library call there). */
#define ROUND_MAGIC 12582912.0f

static inline __attribute__((always_inline)) int8_t round_clamped(float v)
{
    /* |v| is at most 254 here (127 * d / stored, and the stored scale is
     * at least d / 2, even rounded to a subnormal), so the sum's bits are
     * those of the magic number plus the rounded integer */
    int32_t n = (int32_t)gptc_float_bits(v + ROUND_MAGIC) - (int32_t)gptc_float_bits(ROUND_MAGIC);
    n = n > 127 ? 127 : n;
    n = n < -127 ? -127 : n;
    return (int8_t)n;
}

static void quantize_block(int8_t *q, uint16_t *scale, const float *x, int len)
{
    /* max |x| on the bits: |x| orders as its bit pattern, NaN above inf */
    uint32_t amax_bits = 0;
    for (int i = 0; i < len; i++) {
        uint32_t a = gptc_float_bits(x[i]) & 0x7FFFFFFFu;
        amax_bits = a > amax_bits ? a : amax_bits;
    }
    if (amax_bits >= 0x7F800000u) {
        /* inf or NaN: the block's products become NaN */
        *scale = 0x7FC0u;
        memset(q, 0, (size_t)len);
        return;
    }
    float d = gptc_bits_float(amax_bits) / 127.0f;
    gptc_f32_to_bf16(scale, &d, 1);
    const float stored = gptc_bf16_to_f32(*scale);
    if (stored == 0.0f) {
        memset(q, 0, (size_t)len);
        return;
    }
    for (int i = 0; i < len; i++) q[i] = round_clamped(x[i] / stored);
}

void gptc_quantize_int8(int8_t *values, uint16_t *scales, const float *x, size_t rows, int len,
                        ptrdiff_t x_stride)
{
    const int nb = gptc_int8_blocks(len);
    const double work OMP_CLAUSE_ONLY = (double)rows * len;
    const long long nrows = (long long)rows;
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (work >= 16 * GPTC_PARALLEL_MIN_WORK)
    for (long long r = 0; r < nrows; r++) {
        const float *xr = x + (size_t)r * x_stride;
        int8_t *qr = values + (size_t)r * len;
        uint16_t *sr = scales + (size_t)r * nb;
        for (int b = 0; b < nb; b++) {
            int k = b * GPTC_INT8_BLOCK;
            int n = len - k < GPTC_INT8_BLOCK ? len - k : GPTC_INT8_BLOCK;
            quantize_block(qr + k, sr + b, xr + k, n);
        }
    }
}
