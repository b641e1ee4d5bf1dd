/*
 * internal.h - helpers shared by the C files of gptc, not part of its API.
 */
#ifndef GPTC_INTERNAL_H
#define GPTC_INTERNAL_H

#include <stddef.h>

#ifdef _OPENMP
#include <omp.h>
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

#endif /* GPTC_INTERNAL_H */
