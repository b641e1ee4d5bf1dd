/*
 * loss.c - the losses a training step ends with: cross-entropy over the
 * vocabulary (next-token prediction) and the mean squared error.
 *
 * Cross-entropy of one row of logits l against its target t is
 *   loss = -log softmax(l)_t = logsumexp(l) - l_t,
 * computed with the row maximum subtracted (no overflow for large logits)
 * and the sum of exponentials in double, since a GPT-2 row has 50257
 * terms. Its gradient is the softmax minus the one-hot target: the
 * probability mass the model put anywhere but on the right token.
 */
#include "gptc.h"
#include "internal.h"

#include <math.h>

/* max and log(sum exp(l - max)) of one row, in double */
static void row_logsumexp(const float *l, int V, float *maxval, double *log_sum)
{
    float m = -INFINITY;
    for (int j = 0; j < V; j++) {
        if (l[j] > m) {
            m = l[j];
        }
    }
    double sum = 0.0;
    for (int j = 0; j < V; j++) {
        sum += exp((double)l[j] - m);
    }
    *maxval = m;
    *log_sum = log(sum);
}

void gptc_crossentropy_forward(float *losses, const float *logits, const int64_t *targets,
                               size_t N, int V)
{
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
    long long rows = (long long)N;
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (rows * V >= GPTC_PARALLEL_MIN_WORK)
    for (long long i = 0; i < rows; i++) {
        const float *l = logits + (size_t)i * V;
        float *dl = dlogits + (size_t)i * V;
        float m;
        double log_sum;
        row_logsumexp(l, V, &m, &log_sum);
        double shift = (double)m + log_sum;   /* softmax_j = exp(l_j - shift) */
        double dloss = dlosses[i];
        int64_t t = targets[i];
        for (int j = 0; j < V; j++) {
            double grad = exp((double)l[j] - shift);
            if (j == t) {
                grad -= 1.0;   /* in double: p_t - 1 loses nothing when p_t is near 1 */
            }
            dl[j] += (float)(dloss * grad);
        }
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
