/*
 * softmax.c - row-wise softmax (generation turns logits into probabilities).
 *
 * The row maximum is subtracted before exponentiating so large logits
 * cannot overflow; the result is mathematically unchanged.
 */
#include "gptc.h"

#include <math.h>

void gptc_softmax_forward(float *out, const float *x, size_t N, int C)
{
    for (size_t i = 0; i < N; i++) {
        const float *row = x + i * (size_t)C;
        float *o = out + i * (size_t)C;
        float maxval = -INFINITY;
        for (int c = 0; c < C; c++) {
            if (row[c] > maxval) {
                maxval = row[c];
            }
        }
        double sum = 0.0;
        for (int c = 0; c < C; c++) {
            o[c] = expf(row[c] - maxval);
            sum += o[c];
        }
        float inv = (float)(1.0 / sum);
        for (int c = 0; c < C; c++) {
            o[c] *= inv;
        }
    }
}
