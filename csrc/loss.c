/*
 * loss.c - the losses a training step ends with: cross-entropy over the
 * vocabulary (next-token prediction) and the mean squared error.
 *
 * Cross-entropy of one row of logits l against its target t is
 *   loss = -log softmax(l)_t = logsumexp(l) - l_t,
 * computed with the row maximum subtracted (no overflow for large logits)
 * and the sum of exponentials in double, since a GPT-2 row has 50257
 * terms. The passes over a row are kernels of the selected set
 * (csrc/arch/loss_simd.h), vectorised at its width. Its gradient is the softmax minus the one-hot target: the
 * probability mass the model put anywhere but on the right token.
 */
#include "gptc.h"
#include "internal.h"
#include "kernels.h"

#include <math.h>

void gptc_crossentropy_forward(float *losses, const float *logits, const int64_t *targets,
                               size_t N, int V)
{
    const gptc_logsumexp_fn row_logsumexp = gptc_active_kernels()->row_logsumexp;
    long long rows = (long long)N;
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (rows * V >= GPTC_PARALLEL_MIN_WORK)
    for (long long i = 0; i < rows; i++) {
        const float *l = logits + (size_t)i * V;
        float m;
        double log_sum;
        row_logsumexp(l, V, &m, &log_sum);
        losses[i] = (float)((double)m + log_sum - (double)l[targets[i]]);
    }
}

void gptc_crossentropy_backward(float *dlogits, const float *dlosses, const float *logits,
                                const int64_t *targets, size_t N, int V)
{
    const gptc_kernels *kern = gptc_active_kernels();
    long long rows = (long long)N;
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (rows * V >= GPTC_PARALLEL_MIN_WORK)
    for (long long i = 0; i < rows; i++) {
        const float *l = logits + (size_t)i * V;
        float *dl = dlogits + (size_t)i * V;
        float m;
        double log_sum;
        kern->row_logsumexp(l, V, &m, &log_sum);
        const double shift = (double)m + log_sum;   /* softmax_j = e^(l_j - shift) */
        const int64_t t = targets[i];
        const float before = dl[t];
        kern->softmax_add(dl, l, V, shift, dlosses[i]);
        /* the target's term again, as p_t - 1 in double: it loses nothing
         * when p_t is near 1, where dl[t] + dloss p_t - dloss would */
        const double p_t = (double)gptc_exp((float)((double)l[t] - shift));
        dl[t] = before + (float)((double)dlosses[i] * (p_t - 1.0));
    }
}

/* mean((pred - target)^2) has gradient 2 (pred - target) / n: the caller
 * folds the upstream gradient and the 1 / n of the mean into dloss_scale. */
void gptc_mse_backward(float *dpred, const float *pred, const float *target,
                       float dloss_scale, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dpred[i] += dloss_scale * 2.0f * (pred[i] - target[i]);
    }
}
