/*
 * feedforward.c - the FeedForward module (section 4.3):
 *   Linear(C, 4C) -> GELU -> Linear(4C, C)
 * The hidden layer is four times wider than the embedding: the block gets
 * room to mix features before projecting back to the residual width.
 */
#include "gptc.h"

void gptc_feedforward_forward(float *out, const float *x, const gptc_block_params *blk,
                              int N, int C, float *hidden, int accumulate)
{
    const int H = blk->hidden;
    /* GELU is applied by the matmul as each block of the hidden layer is
     * finished, while it is still in cache */
    gptc_linear_forward(hidden, x, blk->w_fc, blk->b_fc, N, C, H, GPTC_LINEAR_GELU);
    gptc_linear_forward(out, hidden, blk->w_proj, blk->b_proj, N, H, C,
                        accumulate ? GPTC_LINEAR_ACCUMULATE : 0);
}
