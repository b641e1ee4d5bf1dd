/*
 * internal.h - helpers shared by the C files of gptc, not part of its API.
 */
#ifndef GPTC_INTERNAL_H
#define GPTC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Which thread of the current parallel region is running (0 outside one),
 * to pick that thread's slice of a scratch buffer. A build without OpenMP
 * (setup.py) ignores the #pragma omp lines and runs every loop on the
 * calling thread, thread 0; any other omp_* call needs #ifdef _OPENMP. */
#ifdef _OPENMP
#include <omp.h>
#define THREAD_INDEX() omp_get_thread_num()
#else
#define THREAD_INDEX() 0
#endif

/* Marks a variable that only a #pragma omp clause reads (a thread count,
 * the work that decides whether to go parallel): a build without OpenMP
 * ignores the pragma and would warn that the variable is unused. */
#define OMP_CLAUSE_ONLY __attribute__((unused))

/* Loops with less work than this many multiply-adds stay on one thread:
 * waking a team costs a few microseconds, more than small ops take. */
#define GPTC_PARALLEL_MIN_WORK (1 << 16)

/* Bits of a float and back, without breaking strict aliasing. */
static inline __attribute__((always_inline)) uint32_t gptc_float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline __attribute__((always_inline)) float gptc_bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* bfloat16 is the top half of a float32: widening is exact, a shift. */
static inline __attribute__((always_inline)) float gptc_bf16_to_f32(uint16_t h)
{
    return gptc_bits_float((uint32_t)h << 16);
}

/* e^x within about 1 ulp, in straight-line arithmetic so that a loop of
 * them vectorises (a call to expf would keep the loop scalar).
 * e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln(2) / 2; e^r is its
 * Taylor series to r^7 (the next term is below 5e-9), 2^n is built in the
 * exponent bits. x < -87.3 (e^x near the smallest normal float) gives 0,
 * x > 88 gives +inf (e^88.7 is the largest float); NaN stays NaN. The
 * selects are done on bits, not with branches, so the compiler need not
 * keep them as control flow; there is no float-to-int conversion, so no
 * value of x is undefined behaviour. */
static inline __attribute__((always_inline)) float gptc_exp(float x)
{
    const float lowest = -87.3f, highest = 88.0f;
    const uint32_t keep = x < lowest ? 0u : 0xffffffffu;   /* 0: e^x underflows */
    const uint32_t big = x > highest ? 0xffffffffu : 0u;    /* e^x overflows to inf */
    float xc = x < lowest ? lowest : x;
    xc = xc > highest ? highest : xc;
    /* adding 1.5 * 2^23 rounds x / ln 2 to an integer n held in the low
     * mantissa bits: bits(t) = bits(1.5 * 2^23) + n for |n| < 2^22 */
    const float round_magic = 12582912.0f;
    const float t = xc * 1.44269504088896341f + round_magic;
    const float n = t - round_magic;
    /* r = x - n ln 2, with ln 2 split in two so that n * ln2_hi is exact */
    float r = xc - n * 0.693145751953125f;
    r = r - n * 1.42860682030941723212e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^n for n in [-126, 127]: biased exponent n + 127 in [1, 254] */
    const uint32_t e = (gptc_float_bits(t) - gptc_float_bits(round_magic) + 127u) << 23;
    const uint32_t value = gptc_float_bits(p * gptc_bits_float(e)) & keep;
    return gptc_bits_float((value & ~big) | (0x7f800000u & big));
}

/* GELU, the tanh approximation GPT-2 was trained with (gelu.c explains it),
 * computed through the identity 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)):
 *   gelu(x) = x / (1 + e^(-2u)),   u = sqrt(2 / pi) (x + 0.044715 x^3)
 * which needs one exponential and no tanh, so loops of it vectorise. For
 * x far below 0, e^(-2u) is +inf and the result -0, the limit. Shared by
 * the activation layer and the matmul epilogue that fuses it, so both give
 * the same value for the same input. */
#define GPTC_GELU_SQRT_2_OVER_PI 0.7978845608028654f

static inline __attribute__((always_inline)) float gptc_gelu_scalar(float v)
{
    float u = GPTC_GELU_SQRT_2_OVER_PI * (v + 0.044715f * v * v * v);
    return v / (1.0f + gptc_exp(-2.0f * u));
}

/* d gelu(x) / dx, in terms of s = 1 / (1 + e^(-2u)) (gelu.c derives it):
 *   s + 2 x s (1 - s) du/dx,   du/dx = sqrt(2 / pi) (1 + 3 * 0.044715 x^2) */
static inline __attribute__((always_inline)) float gptc_gelu_grad_scalar(float x)
{
    float u = GPTC_GELU_SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
    float s = 1.0f / (1.0f + gptc_exp(-2.0f * u));
    float du = GPTC_GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * x * x);
    return s + 2.0f * x * s * (1.0f - s) * du;
}

/* matmul.c: C[M, N] (= or += when accumulate) A . B, where element (i, p)
 * of A is a[i * a_rs + p * a_cs] and element (p, j) of B is
 * b[p * b_rs + j * b_cs]: any transposition is a choice of strides. It runs
 * on the calling thread only, for products that are themselves one task of
 * a parallel loop (a head of attention), and allocates nothing: work holds
 * gptc_gemm_serial_floats(M, N, K) floats. */
size_t gptc_gemm_serial_floats(int M, int N, int K);
void gptc_gemm_serial(int M, int N, int K, const float *a, ptrdiff_t a_rs, ptrdiff_t a_cs,
                      const float *b, ptrdiff_t b_rs, ptrdiff_t b_cs, float *c, ptrdiff_t ldc,
                      int accumulate, float *work);

#endif /* GPTC_INTERNAL_H */
