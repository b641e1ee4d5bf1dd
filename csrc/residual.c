/*
 * residual.c - shortcut connections (section 4.4): x = x + f(x).
 *
 * The shortcut gives the gradient a path around every block, which is what
 * keeps deep stacks trainable; in the forward pass it is an elementwise add.
 */
#include "gptc.h"

void gptc_residual_forward(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = a[i] + b[i];
    }
}
