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
