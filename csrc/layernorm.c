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
#include <stdlib.h>

/* The row sums below run in LANES independent double sums, value c going
 * to sum c % LANES, added up in a fixed tree at the end: one sum is a chain
 * of dependent adds that waits out the add latency at every value, and
 * took 150 us of a [256, 768] forward on 2 threads (3.6 ms of a (4, 64)
 * GPT-2 forward's 186, 2-vCPU Zen 5 class EPYC VM, 2026-12-04); the lanes
 * are independent, so the compiler vectorises them. The order is fixed, so
 * a row's result does not depend on anything but the row. */
#define LANES 8

static double lanes_total(const double *acc)
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Mean and 1 / sqrt(var + eps) of one row; the forward and the backward
 * both call this, so the backward differentiates exactly what ran. */
static void row_stats(const float *x, int C, float eps, float *mean_out, float *rstd_out)
{
    double acc[LANES] = {0.0};
    int c = 0;
    for (; c + LANES <= C; c += LANES) {
        for (int j = 0; j < LANES; j++) acc[j] += x[c + j];
    }
    for (int j = 0; c + j < C; j++) acc[j] += x[c + j];
    float mean = (float)(lanes_total(acc) / C);
    double sq[LANES] = {0.0};
    for (c = 0; c + LANES <= C; c += LANES) {
        for (int j = 0; j < LANES; j++) {
            double d = (double)x[c + j] - mean;
            sq[j] += d * d;
        }
    }
    for (int j = 0; c + j < C; j++) {
        double d = (double)x[c + j] - mean;
        sq[j] += d * d;
    }
    float var = (float)(lanes_total(sq) / C);
    *mean_out = mean;
    *rstd_out = 1.0f / sqrtf(var + eps);
}

static void layernorm_row(float *out, const float *x, const float *scale,
                          const float *shift, int C, float eps)
{
    float mean, rstd;
    row_stats(x, C, eps, &mean, &rstd);
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

/*
 * Backward. With xhat = (x - mean) * rstd and y = scale * xhat + shift,
 *   dshift += dy,  dscale += dy * xhat   (summed over rows),
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * scale,
 * the two means being the paths through mean and variance (both depend on
 * every value of the row). The statistics are recomputed from the input
 * rather than kept from the forward: one extra pass over a row is cheaper
 * than threading two more buffers through every caller.
 */
static void layernorm_backward_row(float *dinp, const float *dout, const float *x,
                                   const float *scale, int C, float mean, float rstd)
{
    double sum_g[LANES] = {0.0}, sum_gx[LANES] = {0.0};
    int c = 0;
    for (; c + LANES <= C; c += LANES) {
        for (int j = 0; j < LANES; j++) {
            float g = dout[c + j] * scale[c + j];
            sum_g[j] += g;
            sum_gx[j] += (double)g * ((x[c + j] - mean) * rstd);
        }
    }
    for (int j = 0; c + j < C; j++) {
        float g = dout[c + j] * scale[c + j];
        sum_g[j] += g;
        sum_gx[j] += (double)g * ((x[c + j] - mean) * rstd);
    }
    float mean_g = (float)(lanes_total(sum_g) / C), mean_gx = (float)(lanes_total(sum_gx) / C);
    for (c = 0; c < C; c++) {
        float xhat = (x[c] - mean) * rstd;
        float g = dout[c] * scale[c];
        dinp[c] += rstd * (g - mean_g - xhat * mean_gx);
    }
}

/* dscale / dshift for columns [c0, c0 + len), len <= 64, summed over all
 * rows in double; the row statistics come from stats (mean, rstd pairs). */
static void layernorm_backward_params(float *dscale, float *dshift, const float *dout,
                                      const float *x, const float *stats, size_t N, int C,
                                      int c0, int len)
{
    double acc_s[64], acc_b[64];
    for (int j = 0; j < len; j++) acc_s[j] = acc_b[j] = 0.0;
    for (size_t i = 0; i < N; i++) {
        const float *xr = x + i * C + c0, *dr = dout + i * C + c0;
        float mean = stats[2 * i], rstd = stats[2 * i + 1];
        for (int j = 0; j < len; j++) {
            acc_s[j] += (double)dr[j] * ((xr[j] - mean) * rstd);
            acc_b[j] += dr[j];
        }
    }
    for (int j = 0; j < len; j++) {
        if (dscale != NULL) dscale[c0 + j] += (float)acc_s[j];
        if (dshift != NULL) dshift[c0 + j] += (float)acc_b[j];
    }
}

void gptc_layernorm_backward(float *dinp, float *dscale, float *dshift, const float *dout,
                             const float *inp, const float *scale, size_t N, int C, float eps)
{
    long long rows = (long long)N;
    int nthreads = gptc_get_num_threads();
    int parallel OMP_CLAUSE_ONLY = nthreads > 1 && rows * C >= GPTC_PARALLEL_MIN_WORK;
    /* The parameter gradients sum over rows, so splitting rows among
     * threads would need partial sums per thread. Instead the first pass
     * (rows split among threads) keeps each row's statistics, 2 floats a
     * row, and the second pass splits the columns. The same two passes run
     * on one thread, so the result does not depend on the thread count. */
    float *stats = NULL;
    if (dscale != NULL || dshift != NULL) {
        stats = malloc((N > 0 ? N : 1) * 2 * sizeof(float));
        if (stats == NULL) {
            /* out of memory: one pass, the sums kept in float */
            for (size_t i = 0; i < N; i++) {
                const float *xr = inp + i * C, *dr = dout + i * C;
                float mean, rstd;
                row_stats(xr, C, eps, &mean, &rstd);
                if (dinp != NULL) {
                    layernorm_backward_row(dinp + i * C, dr, xr, scale, C, mean, rstd);
                }
                for (int c = 0; c < C; c++) {
                    if (dscale != NULL) dscale[c] += dr[c] * ((xr[c] - mean) * rstd);
                    if (dshift != NULL) dshift[c] += dr[c];
                }
            }
            return;
        }
    }
#pragma omp parallel num_threads(nthreads) if (parallel)
    {
#pragma omp for schedule(static)
        for (long long i = 0; i < rows; i++) {
            const float *xr = inp + i * C;
            float mean, rstd;
            row_stats(xr, C, eps, &mean, &rstd);
            if (stats != NULL) {
                stats[2 * i] = mean;
                stats[2 * i + 1] = rstd;
            }
            if (dinp != NULL) {
                layernorm_backward_row(dinp + i * C, dout + i * C, xr, scale, C, mean, rstd);
            }
        }
        /* (the implicit barrier of the loop above: every row's statistics
         * are written before any column sum reads them) */
        if (stats != NULL) {
            int nchunks = (C + 63) / 64;
#pragma omp for schedule(static)
            for (int ch = 0; ch < nchunks; ch++) {
                int c0 = ch * 64, len = C - c0 < 64 ? C - c0 : 64;
                layernorm_backward_params(dscale, dshift, dout, inp, stats, N, C, c0, len);
            }
        }
    }
    free(stats);
}
