/*
 * dropout.c - inverted dropout, as PyTorch's CPU kernel computes it.
 *
 * PyTorch builds a noise tensor with bernoulli(1 - p), divides it by
 * (1 - p) and multiplies the input by it. gptc draws the same mask from the
 * same generator in the same order (one draw per element, row-major), so a
 * training-mode forward after gptc.manual_seed(s) drops exactly the values
 * PyTorch drops after torch.manual_seed(s).
 *
 * gptc_dropout_noise is the one place that draws: the layer below and the
 * attention weights' dropout (attention.c) both call it.
 */
#include "gptc.h"

#include <string.h>

void gptc_dropout_noise(float *noise, size_t n, double p, gptc_generator *g)
{
    if (p <= 0.0 || p >= 1.0) {
        /* PyTorch draws nothing for p == 0 (keep all) or p == 1 (drop all) */
        const float value = p <= 0.0 ? 1.0f : 0.0f;
        for (size_t i = 0; i < n; i++) noise[i] = value;
        return;
    }
    /* p stays a double, as Python hands it to PyTorch, so the keep
     * probability compared against each draw is the same number. Kept
     * values are scaled by 1.0f / float(keep): PyTorch divides its float32
     * noise tensor by the keep probability converted to float32. */
    const double keep = 1.0 - p;
    const float scale = 1.0f / (float)keep;
    gptc_bernoulli_f32(g, noise, n, keep);
    for (size_t i = 0; i < n; i++) {
        noise[i] *= scale;   /* 1 * scale or 0 * scale */
    }
}

void gptc_dropout_forward(float *out, const float *x, size_t n, double p,
                          gptc_generator *g)
{
    if (p <= 0.0) {
        if (out != x) {
            memmove(out, x, n * sizeof(float));
        }
        return;
    }
    /* The noise is drawn in chunks through a small stack buffer (the draws
     * are one per element in order, so chunks do not change them), which
     * lets out alias x. With p == 1 the noise is 0 and x * 0 keeps NaN a
     * NaN, as PyTorch's multiply does. */
    float noise[256];
    for (size_t start = 0; start < n; start += 256) {
        size_t len = n - start < 256 ? n - start : 256;
        gptc_dropout_noise(noise, len, p, g);
        for (size_t i = 0; i < len; i++) {
            out[start + i] = x[start + i] * noise[i];
        }
    }
}

/*
 * Training forward that keeps its noise for the backward: out = x * noise,
 * with the draws of gptc_dropout_forward, so either function leaves the
 * generator in the same state and drops the same values. out may alias x;
 * noise may not.
 */
void gptc_dropout_forward_noise(float *out, float *noise, const float *x, size_t n,
                                double p, gptc_generator *g)
{
    gptc_dropout_noise(noise, n, p, g);
    for (size_t i = 0; i < n; i++) {
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
