/*
 * attention.c - causal multi-head attention (chapter 3, used by section 4.5).
 *
 * For every head, position i attends to positions j <= i:
 *   w[i, j] = softmax_j(q_i . k_j / sqrt(head_dim)),   out_i = sum_j w[i, j] v_j
 * The book builds the full T x T score matrix, fills the positions above the
 * diagonal with -inf and lets softmax turn them into zeros. Here the masked
 * half is never computed, and the result is the same because exp(-inf) is
 * exactly 0.
 *
 * Heads are not transposed into a separate tensor: head h of token t is
 * simply the slice [h * HS, (h + 1) * HS) of row t of q, k and v.
 *
 * One forward per purpose lives here:
 *  - inference: a blocked kernel that never builds the T x T matrix. Each
 *    task takes a block of query rows of one head, four rows at a time:
 *    their scores over the keys j <= i (blocks of keys stored transposed),
 *    the softmax of each row, then the weighted sum of the values. The
 *    inner loops are vector multiply-adds on tiles of 4 query rows
 *    (csrc/arch/flash_attention.h, compiled once per instruction set). The
 *    same kernel serves the KV cache: new queries at positions past..
 *    attend over cached keys and values.
 *  - training (gptc_attention_forward_train): each head as matrix products
 *    that keep the weights the backward needs, with the dropout noise on
 *    the weights drawn up front in PyTorch's order. A forward with dropout
 *    but without gradients runs it too, keeping nothing.
 *  - the same in two halves, for a hook on MultiHeadAttention.dropout that
 *    must see (and may replace) the weights between them, as the book's
 *    forward has them: gptc_attention_weights (q, k -> the weights) and
 *    gptc_attention_context (weights, v -> out).
 * gptc_attention_backward turns the gradient of the output into the
 * gradients of q, k and v; each half has its backward too. gptc_mha_tokens
 * is the whole module around them (projections, cache, out_proj), for
 * MultiHeadAttention and the model's blocks alike.
 */
#include "gptc.h"
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Inference: the blocked kernel (its passes and the per-ISA tiles are in
 * csrc/arch/flash_attention.h).
 * ---------------------------------------------------------------------- */
static int key_block_count(int positions)
{
    return (positions + GPTC_ATT_K_BLOCK - 1) / GPTC_ATT_K_BLOCK;
}

size_t gptc_attention_cached_scratch_floats(int B, int capacity, int C, int nthreads)
{
    /* a tile's scores per thread; when the keys and values come as rows,
     * the keys in blocks and the values of each head side by side */
    return (size_t)nthreads * gptc_flash_scratch_floats(capacity) +
           gptc_key_blocks_floats(B, capacity, C) + (size_t)B * capacity * C;
}

/* Tasks of query blocks, one head after another, each head's last (and
 * largest) block first: the cheap early blocks fill the gaps at the end,
 * and the threads work on the same head's keys and values at a time. */
static void flash_attention(const gptc_flash_problem *pb, int B, int NH, float *scratch,
                            size_t per_thread, int nthreads)
{
    const gptc_flash_task_fn fn = gptc_active_kernels()->flash_task;
    const int qblocks = (pb->Tq + GPTC_ATT_Q_BLOCK - 1) / GPTC_ATT_Q_BLOCK;
    const long long tasks = (long long)B * NH * qblocks;
    const double keys = (double)pb->past + pb->Tq;
    const double work OMP_CLAUSE_ONLY = (double)B * NH * pb->Tq * keys * pb->HS;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && tasks > 1)
    for (long long t = 0; t < tasks; t++) {
        int thread = 0;
#ifdef _OPENMP
        thread = omp_get_thread_num();
#endif
        const int bh = (int)(t / qblocks);
        const int qb = qblocks - 1 - (int)(t % qblocks);
        const int row0 = qb * GPTC_ATT_Q_BLOCK;
        const int nrows = pb->Tq - row0 < GPTC_ATT_Q_BLOCK ? pb->Tq - row0 : GPTC_ATT_Q_BLOCK;
        fn(pb, bh / NH, bh % NH, row0, nrows, scratch + (size_t)thread * per_thread);
    }
}

/* Key rows of `count` positions first, first + 1, ... into the blocks of
 * their batch row and head (nblocks per pair): position p's feature d of
 * head h at column p % K_BLOCK of row d of block p / K_BLOCK. Row t of batch
 * row b is at k + b * batch_stride + t * C. One (b, h) per task. */
static void keys_to_blocks(float *blocks, int nblocks, const float *k, size_t batch_stride,
                           int B, int first, int count, int NH, int HS, int nthreads)
{
    const int C = NH * HS, K = GPTC_ATT_K_BLOCK;
    const double work OMP_CLAUSE_ONLY = (double)B * count * C;
#pragma omp parallel for schedule(static) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && B * NH > 1)
    for (int bh = 0; bh < B * NH; bh++) {
        const int b = bh / NH, h = bh % NH;
        float *own = blocks + (size_t)bh * nblocks * HS * K;
        for (int t = 0; t < count; t++) {
            const int pos = first + t;
            const float *row = k + (size_t)b * batch_stride + (size_t)t * C + (size_t)h * HS;
            float *col = own + (size_t)(pos / K) * HS * K + pos % K;
            for (int d = 0; d < HS; d++) col[(size_t)d * K] = row[d];
        }
    }
}

/* The value rows of positions 0 .. count - 1 (row t of batch row b at
 * v + b * batch_stride + t * C) copied head by head: head h of batch row b
 * into count rows of HS floats at by_head + (b * NH + h) * count * HS. The
 * kernel reads a head's values a few features at a time down the
 * positions; rows C floats apart (3 KB for GPT-2) fall into a few sets of
 * the L1 cache, and that walk missed it at almost every step. */
static void values_by_head(float *by_head, const float *v, size_t batch_stride, int B,
                           int count, int NH, int HS, int nthreads)
{
    const int C = NH * HS;
    const double work OMP_CLAUSE_ONLY = (double)B * count * C;
#pragma omp parallel for schedule(static) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && B * NH > 1)
    for (int bh = 0; bh < B * NH; bh++) {
        const int b = bh / NH, h = bh % NH;
        float *own = by_head + (size_t)bh * count * HS;
        for (int t = 0; t < count; t++) {
            memcpy(own + (size_t)t * HS, v + (size_t)b * batch_stride + (size_t)t * C + (size_t)h * HS,
                   (size_t)HS * sizeof(float));
        }
    }
}

void gptc_attention_cached_forward(float *out, const float *q, const float *k_cache,
                                   const float *v_cache, int B, int Tq, int past,
                                   int capacity, gptc_key_layout key_layout, int NH, int HS,
                                   float *scratch, int nthreads)
{
    const int C = NH * HS, keys = past + Tq;
    const size_t per_thread = gptc_flash_scratch_floats(capacity);
    gptc_flash_problem pb = {
        .out = out, .q = q, .k = k_cache, .v = v_cache, .Tq = Tq, .past = past, .C = C,
        .HS = HS, .v_batch_stride = (size_t)capacity * C, .v_head_stride = (size_t)HS,
        .v_row_stride = (size_t)C, .k_blocks = key_block_count(capacity),
        .divisor = sqrtf((float)HS),
    };
    if (key_layout == GPTC_KEYS_AS_ROWS) {
        /* the blocks of the keys in use, after the threads' scores; the
         * last block's columns past them are zeros (their scores are masked,
         * but nothing reads memory never written); then the values in use,
         * head by head */
        float *blocks = scratch + (size_t)nthreads * per_thread;
        const int nblocks = key_block_count(keys);
        const size_t rows_stride = (size_t)capacity * C;
        keys_to_blocks(blocks, nblocks, k_cache, rows_stride, B, 0, keys, NH, HS, nthreads);
        float *by_head = blocks + gptc_key_blocks_floats(B, capacity, C);
        values_by_head(by_head, v_cache, rows_stride, B, keys, NH, HS, nthreads);
        pb.v = by_head;
        pb.v_batch_stride = (size_t)NH * keys * HS;
        pb.v_head_stride = (size_t)keys * HS;
        pb.v_row_stride = (size_t)HS;
        for (int bh = 0; bh < B * NH; bh++) {
            float *last = blocks + ((size_t)bh * nblocks + nblocks - 1) * HS * GPTC_ATT_K_BLOCK;
            for (int d = 0; d < HS; d++) {
                for (int c = keys - (nblocks - 1) * GPTC_ATT_K_BLOCK; c < GPTC_ATT_K_BLOCK; c++)
                    last[(size_t)d * GPTC_ATT_K_BLOCK + c] = 0.0f;
            }
        }
        pb.k = blocks;
        pb.k_blocks = nblocks;
    }
    flash_attention(&pb, B, NH, scratch, per_thread, nthreads);
}

size_t gptc_key_blocks_floats(int B, int capacity, int C)
{
    return (size_t)B * key_block_count(capacity) * GPTC_ATT_K_BLOCK * C;
}

void gptc_store_key_blocks(float *blocks, const float *k, int B, int T, int past, int capacity,
                           int NH, int HS)
{
    keys_to_blocks(blocks, key_block_count(capacity), k, (size_t)T * NH * HS, B, past, T, NH,
                   HS, gptc_get_num_threads());
}

/* ------------------------------------------------------------------------
 * Training: forward and backward as matrix products, one head per task.
 *
 * For one head, with Q, K, V its (T, HS) slices (row stride C):
 *   forward    S = Q K^T / sqrt(HS),  A = causal softmax of S (rows),
 *              W = A * noise,         O = W V
 *   backward   dW = dO V^T,  dA = dW * noise,  dV += W^T dO,
 *              dS = A * (dA - rowsum(A * dA)) / sqrt(HS)   (softmax Jacobian),
 *              dQ += dS K,   dK += dS^T Q
 * Every product is gptc_gemm_serial with strides choosing the transposes.
 * The products run over the full T x T square: the entries above the
 * diagonal are computed and then replaced by zeros (A and dS are zero
 * there), which costs less than splitting the products into triangles.
 *
 * The fused pair (gptc_attention_forward_train, gptc_attention_backward)
 * and the two halves the module calls when a hook on its dropout must see
 * A (gptc_attention_weights: Q, K -> A; gptc_attention_context: W, V -> O,
 * and their backwards) are built from the same per-head steps below, run
 * by one driver, for_each_head.
 *
 * A thread owns a whole (b, h): the slices of the outputs it writes belong
 * to no other head, so there are no races, and every sum runs in the same
 * order for any thread count.
 * ---------------------------------------------------------------------- */

/* A, S and their gradients are T x T squares; scratch squares are padded
 * to 16 floats so that each one starts aligned like the first. */
static size_t padded_square(int T)
{
    return ((size_t)T * T + 15) / 16 * 16;
}

/* A (T x T, row stride T) = the causal softmax weights of one head:
 * S = Q K^T, then each row i divided by sqrt(HS), softmaxed over j <= i,
 * and zeroed for j > i. */
static void head_weights(float *a, const float *qh, const float *kh, int T, int C, int HS,
                         float divisor, float *work)
{
    gptc_gemm_serial(T, T, HS, qh, C, 1, kh, 1, C, a, T, 0, work);
    for (int i = 0; i < T; i++) {
        float *row = a + (size_t)i * T;
        float maxval = -INFINITY;
        for (int j = 0; j <= i; j++) {
            /* divided, not multiplied by a reciprocal, as the book writes it */
            row[j] = row[j] / divisor;
            maxval = row[j] > maxval ? row[j] : maxval;
        }
        float sum = 0.0f;
        for (int j = 0; j <= i; j++) {
            row[j] = expf(row[j] - maxval);
            sum += row[j];
        }
        float inv_sum = 1.0f / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv_sum;
        for (int j = i + 1; j < T; j++) row[j] = 0.0f;   /* the causal mask: exp(-inf) = 0 */
    }
}

/* The weights the forward multiplied V by: A itself, or A * noise in buf. */
static const float *dropped_weights(const float *a, const float *nz, size_t n, float *buf)
{
    if (nz == NULL) return a;
    for (size_t i = 0; i < n; i++) buf[i] = a[i] * nz[i];
    return buf;
}

/* O = W V for one head, written into its slice of out (row stride C). All
 * of W counts: weights a hook replaced need not be causal. */
static void head_context(float *outh, const float *w, const float *vh, int T, int C, int HS,
                         float *work)
{
    gptc_gemm_serial(T, HS, T, w, T, 1, vh, C, 1, outh, C, 0, work);
}

/* The gradients of O = W V for one head: dV += W^T dO (dvh NULL: skipped)
 * and dW = dO V^T, or dW += dO V^T with accumulate (dw NULL: skipped). */
static void head_context_backward(float *dw, int accumulate, float *dvh, const float *douth,
                                  const float *w, const float *vh, int T, int C, int HS,
                                  float *work)
{
    if (dvh != NULL) {
        /* element (j, i) of W^T is w[i * T + j] */
        gptc_gemm_serial(T, HS, T, w, 1, T, douth, C, 1, dvh, C, 1, work);
    }
    if (dw != NULL) {
        gptc_gemm_serial(T, T, HS, douth, C, 1, vh, 1, C, dw, T, accumulate, work);
    }
}

/* dS of one head from dW, the gradient of the weights V was multiplied by:
 * dA = dW * noise (dropout passes what it kept; nz NULL: no dropout), then
 * the softmax Jacobian. ds may be dw itself. Entries of dW above the
 * diagonal do not count: A is constant 0 there. */
static void head_scores_backward(float *ds, const float *dw, const float *a, const float *nz,
                                 int T, float divisor)
{
    for (int i = 0; i < T; i++) {
        const float *ai = a + (size_t)i * T, *dwi = dw + (size_t)i * T;
        float *row = ds + (size_t)i * T;
        if (nz != NULL) {
            const float *nzi = nz + (size_t)i * T;
            for (int j = 0; j <= i; j++) row[j] = dwi[j] * nzi[j];
        } else if (row != dwi) {
            for (int j = 0; j <= i; j++) row[j] = dwi[j];
        }
        float dot = 0.0f;
        for (int j = 0; j <= i; j++) dot += ai[j] * row[j];
        /* the forward divided the dot product by sqrt(HS) */
        for (int j = 0; j <= i; j++) row[j] = ai[j] * (row[j] - dot) / divisor;
        for (int j = i + 1; j < T; j++) row[j] = 0.0f;
    }
}

/* dQ += dS K and dK += dS^T Q for one head (NULL skips either). */
static void head_qk_backward(float *dqh, float *dkh, const float *ds, const float *qh,
                             const float *kh, int T, int C, int HS, float *work)
{
    if (dqh != NULL) {
        gptc_gemm_serial(T, HS, T, ds, T, 1, kh, C, 1, dqh, C, 1, work);
    }
    if (dkh != NULL) {
        /* element (j, i) of dS^T is ds[i * T + j] */
        gptc_gemm_serial(T, HS, T, ds, 1, T, qh, C, 1, dkh, C, 1, work);
    }
}

/* The arrays of one call of a training function, by role; each function
 * sets the ones it uses and leaves the others NULL. (B, T, NH * HS)
 * tensors hold head h of token t at [h * HS, (h + 1) * HS) of row t;
 * (B, NH, T, T) ones hold one T x T square per head. */
typedef struct attention_call {
    int T, NH, HS;
    float divisor;                        /* sqrt(HS) */
    const float *q, *k, *v, *dout;        /* (B, T, C), read */
    float *out, *dq, *dk, *dv;            /* (B, T, C), written or accumulated */
    const float *att;                     /* (B, NH, T, T), read: A, or the W of O = W V */
    const float *noise;                   /* the dropout noise on att; NULL: none */
    const float *datt;                    /* the gradient of att, read */
    float *att_out;                       /* A, written (NULL in a forward that keeps none) */
    float *datt_out;                      /* the gradient of att, accumulated */
} attention_call;

/* What a task of for_each_head gets: the slices of its head and its
 * thread's scratch. */
typedef struct head_view {
    size_t slice;        /* where the head starts in the (B, T, C) tensors */
    size_t square;       /* where its square starts in the (B, NH, T, T) ones */
    float *scratch[2];   /* T x T each, those the function asked for */
    float *gemm_work;
} head_view;

typedef void (*head_task)(const attention_call *c, const head_view *h);

/* Run task on every (b, h) of B * NH heads on nthreads threads, each with
 * `squares` (at most 2) T x T scratch squares and the packing buffer of the
 * largest product. Returns 0, or -1 if the scratch could not be
 * allocated. */
static int for_each_head(head_task task, const attention_call *c, int B, int squares,
                         int nthreads)
{
    const int T = c->T, HS = c->HS, C = c->NH * c->HS, heads = B * c->NH;
    if (heads == 0 || T == 0) {
        return 0;   /* no head has anything to compute */
    }
    const size_t padded = padded_square(T);
    const size_t w1 = gptc_gemm_serial_floats(T, T, HS), w2 = gptc_gemm_serial_floats(T, HS, T);
    const size_t per_thread = (size_t)squares * padded + (w1 > w2 ? w1 : w2);
    float *scratch = malloc((size_t)nthreads * per_thread * sizeof(float));
    if (scratch == NULL) return -1;
    double work OMP_CLAUSE_ONLY = (double)heads * T * T * HS;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && heads > 1)
    for (int bh = 0; bh < heads; bh++) {
        float *mine = scratch + (size_t)THREAD_INDEX() * per_thread;
        int b = bh / c->NH, h = bh % c->NH;
        head_view view = {
            .slice = (size_t)b * T * C + (size_t)h * HS,
            .square = (size_t)bh * T * T,
            /* (a square not asked for would point past this thread's slice) */
            .scratch = {squares > 0 ? mine : NULL, squares > 1 ? mine + padded : NULL},
            .gemm_work = mine + (size_t)squares * padded,
        };
        task(c, &view);
    }
    free(scratch);
    return 0;
}

/* The slice at offset `at` of an optional output (NULL stays NULL). */
static float *slice_of(float *a, size_t at)
{
    return a == NULL ? NULL : a + at;
}

static void forward_train_head(const attention_call *c, const head_view *h)
{
    const int T = c->T, C = c->NH * c->HS;
    /* the weights are kept in att_out, or live in the second scratch square */
    float *a = c->att_out != NULL ? c->att_out + h->square : h->scratch[1];
    head_weights(a, c->q + h->slice, c->k + h->slice, T, C, c->HS, c->divisor, h->gemm_work);
    const float *nz = c->noise == NULL ? NULL : c->noise + h->square;
    const float *w = dropped_weights(a, nz, (size_t)T * T, h->scratch[0]);
    head_context(c->out + h->slice, w, c->v + h->slice, T, C, c->HS, h->gemm_work);
}

int gptc_attention_forward_train(float *out, float *att, float *noise, const float *q,
                                 const float *k, const float *v, int B, int T, int NH, int HS,
                                 double dropout_p, gptc_generator *g, int nthreads)
{
    /* The dropout noise is drawn up front over the whole (B, NH, T, T)
     * tensor, masked positions included, in PyTorch's order. */
    if (noise != NULL) {
        gptc_dropout_noise(noise, (size_t)B * NH * T * T, dropout_p, g);
    }
    attention_call c = {.T = T, .NH = NH, .HS = HS, .divisor = sqrtf((float)HS),
                        .q = q, .k = k, .v = v, .out = out, .att_out = att,
                        .noise = dropout_p > 0.0 ? noise : NULL};
    return for_each_head(forward_train_head, &c, B, 2, nthreads);
}

static void backward_head(const attention_call *c, const head_view *h)
{
    const int T = c->T, C = c->NH * c->HS;
    const float *a = c->att + h->square;
    const float *nz = c->noise == NULL ? NULL : c->noise + h->square;
    float *dvh = slice_of(c->dv, h->slice), *dqh = slice_of(c->dq, h->slice);
    float *dkh = slice_of(c->dk, h->slice);
    /* dW goes into the second scratch square, which then becomes dS */
    float *ds = dqh != NULL || dkh != NULL ? h->scratch[1] : NULL;
    const float *w = dvh == NULL ? NULL : dropped_weights(a, nz, (size_t)T * T, h->scratch[0]);
    head_context_backward(ds, 0, dvh, c->dout + h->slice, w, c->v + h->slice, T, C, c->HS,
                          h->gemm_work);
    if (ds == NULL) return;
    head_scores_backward(ds, ds, a, nz, T, c->divisor);
    head_qk_backward(dqh, dkh, ds, c->q + h->slice, c->k + h->slice, T, C, c->HS,
                     h->gemm_work);
}

int gptc_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *att,
                            const float *noise, int B, int T, int NH, int HS, int nthreads)
{
    if (dq == NULL && dk == NULL && dv == NULL) {
        return 0;
    }
    attention_call c = {.T = T, .NH = NH, .HS = HS, .divisor = sqrtf((float)HS),
                        .q = q, .k = k, .v = v, .dout = dout, .dq = dq, .dk = dk, .dv = dv,
                        .att = att, .noise = noise};
    return for_each_head(backward_head, &c, B, 2, nthreads);
}

static void weights_head(const attention_call *c, const head_view *h)
{
    head_weights(c->att_out + h->square, c->q + h->slice, c->k + h->slice, c->T,
                 c->NH * c->HS, c->HS, c->divisor, h->gemm_work);
}

int gptc_attention_weights(float *att, const float *q, const float *k, int B, int T, int NH,
                           int HS, int nthreads)
{
    attention_call c = {.T = T, .NH = NH, .HS = HS, .divisor = sqrtf((float)HS),
                        .q = q, .k = k, .att_out = att};
    return for_each_head(weights_head, &c, B, 0, nthreads);
}

static void weights_backward_head(const attention_call *c, const head_view *h)
{
    float *ds = h->scratch[0];
    head_scores_backward(ds, c->datt + h->square, c->att + h->square, NULL, c->T, c->divisor);
    head_qk_backward(slice_of(c->dq, h->slice), slice_of(c->dk, h->slice), ds,
                     c->q + h->slice, c->k + h->slice, c->T, c->NH * c->HS, c->HS,
                     h->gemm_work);
}

int gptc_attention_weights_backward(float *dq, float *dk, const float *datt, const float *q,
                                    const float *k, const float *att, int B, int T, int NH,
                                    int HS, int nthreads)
{
    if (dq == NULL && dk == NULL) {
        return 0;
    }
    attention_call c = {.T = T, .NH = NH, .HS = HS, .divisor = sqrtf((float)HS),
                        .q = q, .k = k, .dq = dq, .dk = dk, .att = att, .datt = datt};
    return for_each_head(weights_backward_head, &c, B, 1, nthreads);
}

static void context_head(const attention_call *c, const head_view *h)
{
    head_context(c->out + h->slice, c->att + h->square, c->v + h->slice, c->T,
                 c->NH * c->HS, c->HS, h->gemm_work);
}

int gptc_attention_context(float *out, const float *weights, const float *v, int B, int T,
                           int NH, int HS, int nthreads)
{
    attention_call c = {.T = T, .NH = NH, .HS = HS, .v = v, .out = out, .att = weights};
    return for_each_head(context_head, &c, B, 0, nthreads);
}

static void context_backward_head(const attention_call *c, const head_view *h)
{
    head_context_backward(slice_of(c->datt_out, h->square), 1, slice_of(c->dv, h->slice),
                          c->dout + h->slice, c->att + h->square, c->v + h->slice, c->T,
                          c->NH * c->HS, c->HS, h->gemm_work);
}

int gptc_attention_context_backward(float *dweights, float *dv, const float *dout,
                                    const float *weights, const float *v, int B, int T,
                                    int NH, int HS, int nthreads)
{
    if (dweights == NULL && dv == NULL) {
        return 0;
    }
    attention_call c = {.T = T, .NH = NH, .HS = HS, .v = v, .dout = dout, .dv = dv,
                        .att = weights, .datt_out = dweights};
    return for_each_head(context_backward_head, &c, B, 0, nthreads);
}

/* ------------------------------------------------------------------------
 * The MultiHeadAttention module around the kernels.
 * ---------------------------------------------------------------------- */
size_t gptc_mha_scratch_floats(const gptc_attention_params *p, int B, int T, int nthreads)
{
    const int NH = p->num_heads;
    if (p->dropout > 0.0) {
        return (size_t)B * NH * T * T;   /* the dropout noise of the weights */
    }
    return gptc_attention_cached_scratch_floats(B, T, p->d_out, nthreads);
}

/* Copy the values of T new tokens (B * T rows of C) into rows
 * past .. past + T - 1 of each batch row's cache. */
static void store_rows(float *cache, const float *rows, int B, int T, int past, int capacity,
                       int C)
{
    for (int b = 0; b < B; b++) {
        memcpy(cache + ((size_t)b * capacity + past) * C, rows + (size_t)b * T * C,
               (size_t)T * C * sizeof(float));
    }
}

int gptc_mha_tokens(float *out, const float *x, const gptc_attention_params *p, int B, int T,
                    const gptc_kv_cache *cache, gptc_generator *g, const gptc_mha_buffers *w,
                    int flags, int nthreads)
{
    const int M = B * T, d_in = p->d_in, d_out = p->d_out, NH = p->num_heads;
    const int HS = d_out / NH;
    const gptc_linear_part qkv[3] = {{w->q, p->w_query, p->b_query, d_out, 0},
                                     {w->k, p->w_key, p->b_key, d_out, 0},
                                     {w->v, p->w_value, p->b_value, d_out, 0}};
    gptc_linear_forward_parts(qkv, 3, x, M, d_in);
    /* x has been read: from here on context may overwrite it */
    if (p->dropout > 0.0) {
        if (gptc_attention_forward_train(w->context, NULL, w->scratch, w->q, w->k, w->v, B, T,
                                         NH, HS, p->dropout, g, nthreads) != 0)
            return -1;
    } else if (cache == NULL) {
        gptc_attention_cached_forward(w->context, w->q, w->k, w->v, B, T, 0, T,
                                      GPTC_KEYS_AS_ROWS, NH, HS, w->scratch, nthreads);
    } else {
        gptc_store_key_blocks(cache->k, w->k, B, T, cache->past, cache->capacity, NH, HS);
        store_rows(cache->v, w->v, B, T, cache->past, cache->capacity, d_out);
        gptc_attention_cached_forward(w->context, w->q, cache->k, cache->v, B, T, cache->past,
                                      cache->capacity, GPTC_KEYS_IN_BLOCKS, NH, HS, w->scratch,
                                      nthreads);
    }
    gptc_linear_forward(out, w->context, p->w_out, p->b_out, M, d_out, d_out, flags);
    return 0;
}

int gptc_mha_forward(float *out, const float *x, const gptc_attention_params *p, int B, int T,
                     gptc_generator *g)
{
    const int nthreads = gptc_get_num_threads();
    const size_t act = (size_t)B * T * p->d_out;
    float *buf = malloc((4 * act + gptc_mha_scratch_floats(p, B, T, nthreads)) * sizeof(float));
    if (buf == NULL) {
        return -1;
    }
    gptc_mha_buffers w = {.q = buf, .k = buf + act, .v = buf + 2 * act, .context = buf + 3 * act,
                          .scratch = buf + 4 * act};
    int rc = gptc_mha_tokens(out, x, p, B, T, NULL, g, &w, 0, nthreads);
    free(buf);
    return rc;
}
