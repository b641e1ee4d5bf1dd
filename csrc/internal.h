/*
 * internal.h - helpers shared by the C files of gptc, not part of its API.
 */
#ifndef GPTC_INTERNAL_H
#define GPTC_INTERNAL_H

#include <stddef.h>

#ifdef _OPENMP
#include <omp.h>
/* Which thread of the current parallel region is running (0 outside one),
 * to pick that thread's slice of a scratch buffer. */
#define THREAD_INDEX() omp_get_thread_num()
#else
#define THREAD_INDEX() 0
#endif

/* Loops with less work than this many multiply-adds stay on one thread:
 * waking a team costs a few microseconds, more than small ops take. */
#define GPTC_PARALLEL_MIN_WORK (1 << 16)

#include <math.h>

/* GELU, the tanh approximation GPT-2 was trained with (gelu.c explains it).
 * Shared by the activation layer and the matmul epilogue that fuses it,
 * so both give the same value for the same input. */
#define GPTC_GELU_SQRT_2_OVER_PI 0.7978845608028654f

static inline float gptc_gelu_scalar(float v)
{
    float inner = GPTC_GELU_SQRT_2_OVER_PI * (v + 0.044715f * v * v * v);
    return 0.5f * v * (1.0f + tanhf(inner));
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
