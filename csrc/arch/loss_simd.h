/*
 * loss_simd.h - the two passes of cross-entropy over a row of logits, the
 * per-instruction-set half of csrc/loss.c. Included once by each file of
 * csrc/arch/, after it defines
 *   LOSS_TARGET  the target attribute of the functions, or nothing
 * and gets row_logsumexp_kernel and softmax_add_kernel (gptc_logsumexp_fn
 * and gptc_softmax_add_fn in kernels.h).
 *
 * A GPT-2 row has 50257 logits, and a chapter-5 batch (2, 256) has 512 rows:
 * the loss and its gradient take 77M exponentials per training step. They
 * were libm calls in double, one at a time (62 ms for the loss and 113 ms
 * for the gradient of such a batch, 2 threads, 2-vCPU Sapphire Rapids
 * class Xeon VM); here each is gptc_exp in float32 (internal.h, within
 * about 1 ulp), which the compiler vectorises at the target's width, as
 * PyTorch computes them in float32 too. What needs more than float32 stays
 * in double: the sum of the 50257 terms (in LOSS_LANES partial sums, each
 * a chain in a fixed order, combined in a fixed order) and the exponent
 * l - shift of the gradient, whose shift is a double.
 */
#ifndef GPTC_LOSS_SIMD_H
#define GPTC_LOSS_SIMD_H

#include <math.h>

#include "../internal.h"

#define LOSS_LANES 16   /* partial maxima and sums: vectorisable, the same on every set */

/* *maxval = max_j l[j]; *log_sum = log(sum_j e^(l[j] - max)), for V >= 1. */
LOSS_TARGET static void row_logsumexp_kernel(const float *l, int V, float *maxval,
                                             double *log_sum)
{
    float lane_max[LOSS_LANES];
    for (int u = 0; u < LOSS_LANES; u++) lane_max[u] = -INFINITY;
    int j = 0;
    for (; j + LOSS_LANES <= V; j += LOSS_LANES) {
        for (int u = 0; u < LOSS_LANES; u++) {
            lane_max[u] = l[j + u] > lane_max[u] ? l[j + u] : lane_max[u];
        }
    }
    float m = -INFINITY;
    for (int u = 0; u < LOSS_LANES; u++) m = lane_max[u] > m ? lane_max[u] : m;
    for (int k = j; k < V; k++) m = l[k] > m ? l[k] : m;

    double lane_sum[LOSS_LANES] = {0};
    for (j = 0; j + LOSS_LANES <= V; j += LOSS_LANES) {
        for (int u = 0; u < LOSS_LANES; u++) lane_sum[u] += (double)gptc_exp(l[j + u] - m);
    }
    double sum = 0.0;
    for (int u = 0; u < LOSS_LANES; u++) sum += lane_sum[u];
    for (int k = j; k < V; k++) sum += (double)gptc_exp(l[k] - m);
    *maxval = m;
    *log_sum = log(sum);
}

/* dl[j] += scale * e^(l[j] - shift) for j < V: scale times the softmax of
 * the row when shift is its logsumexp. */
LOSS_TARGET static void softmax_add_kernel(float *dl, const float *l, int V, double shift,
                                           float scale)
{
    for (int j = 0; j < V; j++) dl[j] += scale * gptc_exp((float)((double)l[j] - shift));
}

#undef LOSS_LANES

#endif /* GPTC_LOSS_SIMD_H */
