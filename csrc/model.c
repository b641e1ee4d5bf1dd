/*
 * model.c - the whole GPTModel forward (section 4.6) in one call:
 *
 *   x = drop_emb(tok_emb[idx] + pos_emb[0..T))
 *   for each block:  x = x + drop_shortcut(att(norm1(x)))
 *                    x = x + drop_shortcut(ff(norm2(x)))
 *   logits = out_head(final_norm(x))
 *
 * The weights are read where the Python parameters already live (the
 * struct holds pointers into them; nothing is copied). Inference keeps no
 * per-layer activations: one residual stream and the buffers of a single
 * block are allocated once at the start and reused by every layer.
 */
#include "gptc.h"

#include <stdlib.h>

int gptc_gpt_forward(float *logits, const int64_t *idx, const gptc_model_params *m,
                     int B, int T, gptc_generator *g)
{
    const int C = m->emb_dim, NH = m->n_heads, M = B * T;
    const int nthreads = gptc_get_num_threads();
    const size_t act = (size_t)M * C;

    /* The widest hidden layer and the largest attention scratch decide
     * the buffer sizes; blocks may in principle differ in both. */
    int hidden = 0;
    size_t att_scratch = 0;
    for (int l = 0; l < m->n_layers; l++) {
        const gptc_block_params *blk = &m->blocks[l];
        if (blk->hidden > hidden) {
            hidden = blk->hidden;
        }
        size_t s = gptc_attention_scratch_floats(B, T, NH, C / NH, blk->att_dropout,
                                                 nthreads);
        if (s > att_scratch) {
            att_scratch = s;
        }
    }
    size_t ff_scratch = (size_t)M * hidden;
    size_t total = 6 * act + (ff_scratch > att_scratch ? ff_scratch : att_scratch);
    float *buf = malloc(total * sizeof(float));
    if (buf == NULL) {
        return -1;
    }
    float *x = buf;            /* the residual stream */
    float *normed = x + act;   /* norm1 / norm2 / final_norm output */
    float *q = normed + act, *k = q + act, *v = k + act;
    float *branch = v + act;   /* output of att or ff before the shortcut */
    float *scratch = branch + act;  /* attention rows + mask, or ff hidden */

    gptc_encoder_forward(x, idx, m->tok_emb, m->pos_emb, B, T, C);
    gptc_dropout_forward(x, x, act, m->emb_dropout, g);

    for (int l = 0; l < m->n_layers; l++) {
        const gptc_block_params *blk = &m->blocks[l];
        const gptc_attention_params *a = &blk->att;

        /* attention half of the block */
        gptc_layernorm_forward(normed, x, blk->norm1_scale, blk->norm1_shift, M, C,
                               blk->norm1_eps);
        gptc_linear_forward(q, normed, a->w_query, a->b_query, M, C, C);
        gptc_linear_forward(k, normed, a->w_key, a->b_key, M, C, C);
        gptc_linear_forward(v, normed, a->w_value, a->b_value, M, C, C);
        /* the merged heads go to `normed`, which is free again here */
        gptc_attention_forward(normed, q, k, v, B, T, NH, C / NH, blk->att_dropout, g,
                               scratch, nthreads);
        if (blk->shortcut_dropout == 0.0) {
            /* inference: out_proj accumulates straight into the residual stream */
            gptc_linear_forward_fused(x, normed, a->w_out, a->b_out, M, C, C, 1, 0);
        } else {
            gptc_linear_forward(branch, normed, a->w_out, a->b_out, M, C, C);
            gptc_dropout_forward(branch, branch, act, blk->shortcut_dropout, g);
            gptc_residual_forward(x, x, branch, act);
        }

        /* feed-forward half of the block */
        gptc_layernorm_forward(normed, x, blk->norm2_scale, blk->norm2_shift, M, C,
                               blk->norm2_eps);
        if (blk->shortcut_dropout == 0.0) {
            gptc_feedforward_forward(x, normed, blk->w_fc, blk->b_fc, blk->w_proj,
                                     blk->b_proj, M, C, blk->hidden, scratch, 1);
        } else {
            gptc_feedforward_forward(branch, normed, blk->w_fc, blk->b_fc, blk->w_proj,
                                     blk->b_proj, M, C, blk->hidden, scratch, 0);
            gptc_dropout_forward(branch, branch, act, blk->shortcut_dropout, g);
            gptc_residual_forward(x, x, branch, act);
        }
    }

    gptc_layernorm_forward(normed, x, m->final_scale, m->final_shift, M, C, m->final_eps);
    gptc_linear_forward(logits, normed, m->out_head_w, m->out_head_b, M, C, m->vocab_size);
    free(buf);
    return 0;
}
