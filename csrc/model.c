/*
 * model.c - the whole GPTModel forward (section 4.6) in one call:
 *
 *   x = drop_emb(tok_emb[idx] + pos_emb[0..T))
 *   for each block:  x = x + drop_shortcut(att(norm1(x)))
 *                    x = x + drop_shortcut(ff(norm2(x)))
 *   logits = out_head(final_norm(x))
 *
 * and the same forward with a KV cache, for generation (gptc_decoder).
 *
 * The weights are read where the Python parameters already live (the
 * struct holds pointers into them; nothing is copied). Inference keeps no
 * per-layer activations: one residual stream and the buffers of a single
 * block are allocated once and reused by every layer.
 *
 * Both forwards run the same block loop (forward_tokens). It takes T new
 * tokens at positions past .. past + T - 1 and runs each block's attention
 * half through gptc_mha_tokens (attention.c), the function behind
 * MultiHeadAttention too, which writes their keys and values into the
 * layer's cache and lets them attend over everything cached so far. The
 * plain forward has no cache: past = 0 and each layer's keys and values
 * live in the work buffers only as long as that layer needs them.
 */
#include "gptc.h"

#include <stdlib.h>
#include <string.h>

/* The activation buffers of one forward over up to M = B * T tokens. */
typedef struct work_buffers {
    float *x;        /* the residual stream */
    float *normed;   /* norm1 / norm2 / final_norm output, then merged heads */
    float *q, *k, *v;
    float *branch;   /* output of att or ff before the shortcut */
    float *scratch;  /* attention scratch (with dropout: its noise), or ff hidden */
} work_buffers;

/* Floats of scratch the widest block needs, for T tokens of B rows. */
static size_t scratch_floats(const gptc_model_params *m, int B, int T, int nthreads)
{
    size_t need = 0;
    for (int l = 0; l < m->n_layers; l++) {
        const gptc_block_params *blk = &m->blocks[l];
        size_t ff = (size_t)B * T * blk->hidden;
        size_t att = gptc_mha_scratch_floats(&blk->att, B, T, nthreads);
        if (ff > need) need = ff;
        if (att > need) need = att;
    }
    return need;
}

/* Carve the buffers out of one allocation: 6 activations of M * C floats
 * and the scratch. Returns the allocation (to free) or NULL. */
static float *alloc_work(work_buffers *w, size_t act, size_t scratch)
{
    float *buf = malloc((6 * act + scratch) * sizeof(float));
    if (buf == NULL) {
        return NULL;
    }
    w->x = buf;
    w->normed = w->x + act;
    w->q = w->normed + act;
    w->k = w->q + act;
    w->v = w->k + act;
    w->branch = w->v + act;
    w->scratch = w->branch + act;
    return buf;
}

/* The caches of every layer: layer l's keys at k + l * k_stride (blocks,
 * gptc_store_key_blocks), its values at v + l * v_stride (B rows of
 * `capacity` positions each). */
typedef struct {
    float *k, *v;
    size_t k_stride, v_stride;
    int capacity;
} layer_caches;

/*
 * The blocks over T new tokens per batch row at positions past ..
 * past + T - 1; on return w->x holds the residual stream after the last
 * block. With caches NULL this is the plain forward (past = 0); else each
 * layer's keys and values go to its caches. Returns 0, or -1 if the
 * attention's scratch could not be allocated (only possible with dropout,
 * which the cached forward never has).
 */
static int forward_tokens(const gptc_model_params *m, const int64_t *idx, int B, int T,
                          int past, const layer_caches *caches, const work_buffers *w,
                          gptc_generator *g, int nthreads)
{
    const int C = m->emb_dim, M = B * T;
    const size_t act = (size_t)M * C;
    /* the merged heads go to `normed`, which the projections have read by then */
    const gptc_mha_buffers att = {.q = w->q, .k = w->k, .v = w->v, .context = w->normed,
                                  .scratch = w->scratch};

    gptc_encoder_forward(w->x, idx, m->tok_emb, m->pos_emb + (size_t)past * C, B, T, C);
    gptc_dropout_forward(w->x, w->x, act, m->emb_dropout, g);

    for (int l = 0; l < m->n_layers; l++) {
        const gptc_block_params *blk = &m->blocks[l];
        gptc_kv_cache cache = {0};
        if (caches != NULL) {
            cache = (gptc_kv_cache){caches->k + (size_t)l * caches->k_stride,
                                    caches->v + (size_t)l * caches->v_stride, caches->capacity,
                                    past};
        }
        /* In inference (no shortcut dropout) out_proj and the feed-forward
         * output accumulate straight into the residual stream. */
        const int fused = blk->shortcut_dropout == 0.0;

        /* attention half of the block */
        gptc_layernorm_forward(w->normed, w->x, blk->norm1_scale, blk->norm1_shift, M, C,
                               blk->norm1_eps);
        if (gptc_mha_tokens(fused ? w->x : w->branch, w->normed, &blk->att, B, T,
                            caches != NULL ? &cache : NULL, g, &att,
                            fused ? GPTC_LINEAR_ACCUMULATE : 0, nthreads) != 0)
            return -1;
        if (!fused) {
            gptc_dropout_forward(w->branch, w->branch, act, blk->shortcut_dropout, g);
            gptc_residual_forward(w->x, w->x, w->branch, act);
        }

        /* feed-forward half of the block */
        gptc_layernorm_forward(w->normed, w->x, blk->norm2_scale, blk->norm2_shift, M, C,
                               blk->norm2_eps);
        gptc_feedforward_forward(fused ? w->x : w->branch, w->normed, blk, M, C, w->scratch,
                                 fused);
        if (!fused) {
            gptc_dropout_forward(w->branch, w->branch, act, blk->shortcut_dropout, g);
            gptc_residual_forward(w->x, w->x, w->branch, act);
        }
    }
    return 0;
}

int gptc_gpt_forward(float *logits, const int64_t *idx, const gptc_model_params *m,
                     int B, int T, gptc_generator *g)
{
    const int C = m->emb_dim, M = B * T;
    const int nthreads = gptc_get_num_threads();
    const size_t act = (size_t)M * C;
    work_buffers w;
    float *buf = alloc_work(&w, act, scratch_floats(m, B, T, nthreads));
    if (buf == NULL) {
        return -1;
    }
    int rc = forward_tokens(m, idx, B, T, 0, NULL, &w, g, nthreads);
    if (rc == 0) {
        gptc_layernorm_forward(w.normed, w.x, m->final_scale, m->final_shift, M, C,
                               m->final_eps);
        gptc_linear_forward(logits, w.normed, m->out_head_w, m->out_head_b, M, C,
                            m->vocab_size, 0);
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------
 * Generation with a KV cache.
 * ---------------------------------------------------------------------- */
struct gptc_decoder {
    const gptc_model_params *m;
    int B, capacity, length;
    int max_threads;            /* the thread count the scratch was sized for */
    layer_caches caches;        /* one allocation: the key blocks, then the values */
    work_buffers w;             /* sized for a prefill of `capacity` tokens */
    float *work;                /* the allocation behind w */
};

gptc_decoder *gptc_decoder_new(const gptc_model_params *m, int B, int capacity)
{
    gptc_decoder *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return NULL;
    }
    const int C = m->emb_dim;
    d->m = m;
    d->B = B;
    d->capacity = capacity;
    /* The attention scratch is per thread: sized for today's count, and a
     * call never uses more threads than that (gptc_set_num_threads may
     * raise the count while the decoder lives). */
    d->max_threads = gptc_get_num_threads();
    d->work = alloc_work(&d->w, (size_t)B * capacity * C,
                         scratch_floats(m, B, capacity, d->max_threads));
    const size_t k_stride = gptc_key_blocks_floats(B, capacity, C);
    const size_t v_stride = (size_t)B * capacity * C;
    const size_t cache = (k_stride + v_stride) * m->n_layers;
    /* zeroed although the kernel masks the positions not yet stored of
     * the key blocks it reads whole: no read of memory never written */
    float *k = calloc(cache > 0 ? cache : 1, sizeof(float));
    d->caches = (layer_caches){k, k + k_stride * m->n_layers, k_stride, v_stride, capacity};
    if (d->work == NULL || k == NULL) {
        gptc_decoder_free(d);
        return NULL;
    }
    return d;
}

void gptc_decoder_free(gptc_decoder *d)
{
    if (d == NULL) {
        return;
    }
    free(d->work);
    free(d->caches.k);
    free(d);
}

int gptc_decoder_length(const gptc_decoder *d)
{
    return d->length;
}

static int decoder_threads(const gptc_decoder *d)
{
    int n = gptc_get_num_threads();
    return n < d->max_threads ? n : d->max_threads;
}

/* Logits (B, V) of the last of the T tokens just run through the blocks:
 * final_norm and out_head on one row per batch row only. */
static void last_logits(gptc_decoder *d, float *logits, int T)
{
    const gptc_model_params *m = d->m;
    const int C = m->emb_dim;
    float *last = d->w.branch;   /* free after the blocks */
    for (int b = 0; b < d->B; b++) {
        memcpy(last + (size_t)b * C, d->w.x + ((size_t)b * T + T - 1) * C,
               (size_t)C * sizeof(float));
    }
    gptc_layernorm_forward(d->w.normed, last, m->final_scale, m->final_shift, d->B, C,
                           m->final_eps);
    gptc_linear_forward(logits, d->w.normed, m->out_head_w, m->out_head_b, d->B, C,
                        m->vocab_size, 0);
}

/* Without dropout (a decoder has none) forward_tokens cannot fail. */
void gptc_decoder_prefill(gptc_decoder *d, float *logits, const int64_t *idx, int T)
{
    (void)forward_tokens(d->m, idx, d->B, T, 0, &d->caches, &d->w, NULL, decoder_threads(d));
    d->length = T;
    last_logits(d, logits, T);
}

void gptc_decoder_step(gptc_decoder *d, float *logits, const int64_t *next)
{
    (void)forward_tokens(d->m, next, d->B, 1, d->length, &d->caches, &d->w, NULL,
                         decoder_threads(d));
    d->length += 1;
    last_logits(d, logits, 1);
}
