/*
 * dropout.c - inverted dropout, as PyTorch's CPU kernel computes it.
 *
 * PyTorch builds a noise tensor with bernoulli(1 - p), divides it by
 * (1 - p) and multiplies the input by it. gptc draws the same mask from the
 * same generator in the same order (one draw per element, row-major), so a
 * training-mode forward after gptc.manual_seed(s) drops exactly the values
 * PyTorch drops after torch.manual_seed(s). The mask is drawn into `out`
 * itself, which is why out may alias x only through the multiply below.
 */
#include "gptc.h"

#include <stdlib.h>
#include <string.h>

void gptc_dropout_forward(float *out, const float *x, size_t n, double p,
                          gptc_generator *g)
{
    if (p <= 0.0) {
        if (out != x) {
            memmove(out, x, n * sizeof(float));
        }
        return;
    }
    if (p >= 1.0) {
        /* PyTorch multiplies by zero without drawing (so NaN stays NaN) */
        for (size_t i = 0; i < n; i++) {
            out[i] = x[i] * 0.0f;
        }
        return;
    }
    /* p stays a double, as Python hands it to PyTorch, so the keep
     * probability compared against each draw is the same number. Kept
     * values are scaled by 1.0f / float(keep): PyTorch divides its float32
     * noise tensor by the keep probability converted to float32. */
    const double keep = 1.0 - p;
    const float scale = 1.0f / (float)keep;
    /* Draw in chunks through a small stack buffer so out may alias x. */
    float mask[256];
    for (size_t start = 0; start < n; start += 256) {
        size_t len = n - start < 256 ? n - start : 256;
        gptc_bernoulli_f32(g, mask, len, keep);
        for (size_t i = 0; i < len; i++) {
            out[start + i] = x[start + i] * (mask[i] * scale);
        }
    }
}

/*
 * Training forward that keeps its noise for the backward: noise[i] is 0 or
 * 1.0f / float(1 - p), the values of PyTorch's noise tensor, and
 * out = x * noise. The draws are those of gptc_dropout_forward, one per
 * element in order, so either function leaves the generator in the same
 * state and drops the same values. out may alias x; noise may not.
 */
void gptc_dropout_forward_noise(float *out, float *noise, const float *x, size_t n,
                                double p, gptc_generator *g)
{
    if (p <= 0.0) {
        for (size_t i = 0; i < n; i++) noise[i] = 1.0f;
        if (out != x) {
            memmove(out, x, n * sizeof(float));
        }
        return;
    }
    if (p >= 1.0) {
        for (size_t i = 0; i < n; i++) {
            noise[i] = 0.0f;
            out[i] = x[i] * 0.0f;
        }
        return;
    }
    const double keep = 1.0 - p;
    const float scale = 1.0f / (float)keep;
    gptc_bernoulli_f32(g, noise, n, keep);
    for (size_t i = 0; i < n; i++) {
        noise[i] *= scale;   /* 1 * scale or 0 * scale: the forward's mask * scale */
        out[i] = x[i] * noise[i];
    }
}

/* Backward: out = x * noise, so dx = dout * noise (dropped values get none). */
void gptc_dropout_backward(float *dinp, const float *dout, const float *noise, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dinp[i] += dout[i] * noise[i];
    }
}
