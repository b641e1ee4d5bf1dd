/*
 * feedforward.c - the FeedForward module (section 4.3):
 *   Linear(C, 4C) -> GELU -> Linear(4C, C)
 * The hidden layer is four times wider than the embedding: the block gets
 * room to mix features before projecting back to the residual width.
 */
#include "gptc.h"

void gptc_feedforward_forward(float *out, const float *x,
                              const float *w_fc, const float *b_fc,
                              const float *w_proj, const float *b_proj,
                              int N, int C, int H, float *hidden, int accumulate)
{
    /* GELU is applied by the matmul as each block of the hidden layer is
     * finished, while it is still in cache */
    gptc_linear_forward_fused(hidden, x, w_fc, b_fc, N, C, H, 0, 1);
    gptc_linear_forward_fused(out, hidden, w_proj, b_proj, N, H, C, accumulate, 0);
}
