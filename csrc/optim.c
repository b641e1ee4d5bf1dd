/*
 * optim.c - the AdamW update (chapter 5 trains with torch.optim.AdamW).
 *
 * One pass over each parameter does all of PyTorch's steps for one element,
 * in PyTorch's order and float32 arithmetic:
 *   p *= 1 - lr * weight_decay                  decoupled weight decay
 *   m += (1 - beta1) * (g - m)                  first moment (a lerp towards g)
 *   v  = v * beta2 + (1 - beta2) * g * g        second moment
 *   p -= step_size * m / (sqrt(v) / sqrt(bias_correction2) + eps)
 * The update is memory-bound; reading p, g, m, v once instead of once per
 * NumPy operation is what makes it fast.
 */
#include "gptc.h"
#include "internal.h"

#include <math.h>

void gptc_adamw_update(float *param, const float *grad, float *m, float *v, size_t n,
                       double lr, double beta1, double beta2, double eps,
                       double weight_decay, long step)
{
    /* The scalars are computed in double, as Python computes them for
     * PyTorch, then used in float32 like PyTorch's tensor ops. */
    const float decay = (float)(1.0 - lr * weight_decay);
    const float one_minus_beta1 = (float)(1.0 - beta1);
    const float b2 = (float)beta2, one_minus_beta2 = (float)(1.0 - beta2);
    const float step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    const float epsf = (float)eps;
    long long len = (long long)n;
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (len >= GPTC_PARALLEL_MIN_WORK)
    for (long long i = 0; i < len; i++) {
        float g = grad[i];
        float p = param[i] * decay;
        float mi = m[i] + one_minus_beta1 * (g - m[i]);
        float vi = v[i] * b2 + one_minus_beta2 * g * g;
        float denom = sqrtf(vi) / bc2_sqrt + epsf;
        param[i] = p - step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}
