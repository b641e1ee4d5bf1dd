/*
 * layernorm.c - layer normalisation over the last axis (section 4.2).
 *
 * The book's LayerNorm uses the biased variance (divide by C, not C - 1),
 * as GPT-2 did; that is why a normalised row's variance prints as a value
 * close to, but not exactly, 1. The mean and variance are accumulated in
 * double so rows of thousands of values lose no precision to the order of
 * the sum, then everything is applied in float as PyTorch does.
 */
#include "gptc.h"
#include "internal.h"

#include <math.h>

static void layernorm_row(float *out, const float *x, const float *scale,
                          const float *shift, int C, float eps)
{
    double sum = 0.0;
    for (int c = 0; c < C; c++) {
        sum += x[c];
    }
    float mean = (float)(sum / C);
    double sq = 0.0;
    for (int c = 0; c < C; c++) {
        double d = (double)x[c] - mean;
        sq += d * d;
    }
    float var = (float)(sq / C);
    float rstd = 1.0f / sqrtf(var + eps);
    for (int c = 0; c < C; c++) {
        out[c] = scale[c] * ((x[c] - mean) * rstd) + shift[c];
    }
}

void gptc_layernorm_forward(float *out, const float *x, const float *scale,
                            const float *shift, size_t N, int C, float eps)
{
    long long rows = (long long)N;
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (rows * C >= GPTC_PARALLEL_MIN_WORK)
    for (long long i = 0; i < rows; i++) {
        layernorm_row(out + i * C, x + i * C, scale, shift, C, eps);
    }
}
