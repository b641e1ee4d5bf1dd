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
 *  - inference: a blocked, online-softmax ("flash") kernel. Each task takes
 *    a block of query rows of one head and streams over blocks of keys
 *    j <= i, keeping per row a running maximum, a running sum of
 *    exponentials and an unnormalised output. No T x T matrix is ever
 *    built, every key block is read once per query block, and the inner
 *    loops are vector multiply-adds on tiles of 4 query rows
 *    (csrc/arch/flash_attention.h, compiled once per instruction set). The
 *    same kernel serves the KV cache: new queries at positions past..
 *    attend over cached keys and values.
 *  - training (gptc_attention_forward_train): each head as matrix products
 *    that keep the weights the backward needs, with the dropout noise on
 *    the weights drawn up front in PyTorch's order. A forward with dropout
 *    but without gradients runs it too, keeping nothing.
 * gptc_attention_backward turns the gradient of the output into the
 * gradients of q, k and v. gptc_mha_tokens is the whole module around
 * them (projections, cache, out_proj), for MultiHeadAttention and the
 * model's blocks alike.
 */
#include "gptc.h"
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Inference: blocked online softmax (the derivation and the per-ISA tiles
 * are in csrc/arch/flash_attention.h).
 * ---------------------------------------------------------------------- */
size_t gptc_attention_cached_scratch_floats(int HS, int nthreads)
{
    return (size_t)nthreads * gptc_flash_scratch_floats(HS);
}

static void flash_attention(const gptc_flash_problem *pb, int B, int NH, float *scratch,
                            int nthreads)
{
    const gptc_flash_task_fn fn = gptc_active_kernels()->flash_task;
    const int qblocks = (pb->Tq + GPTC_ATT_Q_BLOCK - 1) / GPTC_ATT_Q_BLOCK;
    const long long tasks = (long long)B * NH * qblocks;
    const size_t per_thread = gptc_flash_scratch_floats(pb->HS);
    const double keys = (double)pb->past + pb->Tq;
    const double work OMP_CLAUSE_ONLY = (double)B * NH * pb->Tq * keys * pb->HS;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && tasks > 1)
    for (long long t = 0; t < tasks; t++) {
        int thread = 0;
#ifdef _OPENMP
        thread = omp_get_thread_num();
#endif
        /* the last query blocks see the most keys: hand them out first so
         * that the cheap early blocks fill the gaps at the end */
        int qb = qblocks - 1 - (int)(t / ((long long)B * NH));
        int bh = (int)(t % ((long long)B * NH));
        int row0 = qb * GPTC_ATT_Q_BLOCK;
        int nrows = pb->Tq - row0 < GPTC_ATT_Q_BLOCK ? pb->Tq - row0 : GPTC_ATT_Q_BLOCK;
        fn(pb, bh / NH, bh % NH, row0, nrows, scratch + (size_t)thread * per_thread);
    }
}

void gptc_attention_cached_forward(float *out, const float *q, const float *k_cache,
                                   const float *v_cache, int B, int Tq, int past,
                                   int capacity, int NH, int HS, float *scratch,
                                   int nthreads)
{
    const int C = NH * HS;
    gptc_flash_problem pb = {
        .out = out, .q = q, .k = k_cache, .v = v_cache, .Tq = Tq, .past = past, .C = C,
        .HS = HS, .kv_batch_stride = (size_t)capacity * C, .divisor = sqrtf((float)HS),
    };
    flash_attention(&pb, B, NH, scratch, nthreads);
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
 * A thread owns a whole (b, h): the slices of out, dq, dk, dv it writes
 * belong to no other head, so there are no races, and every sum runs in
 * the same order for any thread count.
 */

/* Per-thread scratch of the training functions: two T x T squares and the
 * packing buffer of the largest product. */
static size_t train_scratch_floats(int T, int HS)
{
    size_t square = ((size_t)T * T + 15) / 16 * 16;
    size_t w1 = gptc_gemm_serial_floats(T, T, HS), w2 = gptc_gemm_serial_floats(T, HS, T);
    return 2 * square + (w1 > w2 ? w1 : w2);
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

int gptc_attention_forward_train(float *out, float *att, float *noise, const float *q,
                                 const float *k, const float *v, int B, int T, int NH, int HS,
                                 double dropout_p, gptc_generator *g, int nthreads)
{
    const int C = NH * HS;
    const float divisor = sqrtf((float)HS);
    const size_t n = (size_t)B * NH * T * T, square = (size_t)T * T;
    const size_t padded = (square + 15) / 16 * 16;
    const size_t per_thread = train_scratch_floats(T, HS);
    float *scratch = malloc((size_t)nthreads * per_thread * sizeof(float));
    if (scratch == NULL) return -1;
    /* The dropout noise is drawn up front over the whole (B, NH, T, T)
     * tensor, masked positions included, in PyTorch's order. */
    if (noise != NULL) {
        gptc_dropout_noise(noise, n, dropout_p, g);
    }
    const float *drop = dropout_p > 0.0 ? noise : NULL;
    const int heads = B * NH;
    double work OMP_CLAUSE_ONLY = (double)heads * T * T * HS;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && heads > 1)
    for (int bh = 0; bh < heads; bh++) {
        float *mine = scratch + (size_t)THREAD_INDEX() * per_thread;
        float *wbuf = mine, *gemm_work = mine + 2 * padded;
        int b = bh / NH, h = bh % NH;
        size_t base = (size_t)b * T * C + (size_t)h * HS;
        /* the weights are kept in att, or live in this thread's second square */
        float *a = att != NULL ? att + (size_t)bh * square : mine + padded;
        head_weights(a, q + base, k + base, T, C, HS, divisor, gemm_work);
        const float *w = dropped_weights(a, drop == NULL ? NULL : drop + (size_t)bh * square,
                                         square, wbuf);
        gptc_gemm_serial(T, HS, T, w, T, 1, v + base, C, 1, out + base, C, 0, gemm_work);
    }
    free(scratch);
    return 0;
}

int gptc_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *att,
                            const float *noise, int B, int T, int NH, int HS, int nthreads)
{
    const int C = NH * HS;
    const float divisor = sqrtf((float)HS);
    const int need_ds = dq != NULL || dk != NULL;
    if (!need_ds && dv == NULL) {
        return 0;
    }
    const size_t square = (size_t)T * T;
    const size_t per_thread = train_scratch_floats(T, HS);
    float *scratch = malloc((size_t)nthreads * per_thread * sizeof(float));
    if (scratch == NULL) return -1;
    const int heads = B * NH;
    double work OMP_CLAUSE_ONLY = (double)heads * T * T * HS;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && heads > 1)
    for (int bh = 0; bh < heads; bh++) {
        float *mine = scratch + (size_t)THREAD_INDEX() * per_thread;
        float *wbuf = mine, *ds = mine + (square + 15) / 16 * 16;
        float *gemm_work = ds + (square + 15) / 16 * 16;
        int b = bh / NH, h = bh % NH;
        size_t base = (size_t)b * T * C + (size_t)h * HS;
        const float *a = att + (size_t)bh * square;
        const float *nz = noise == NULL ? NULL : noise + (size_t)bh * square;
        const float *dout_h = dout + base;
        if (dv != NULL) {
            /* dV += W^T dO: element (j, i) of W^T is w[i * T + j] */
            const float *w = dropped_weights(a, nz, square, wbuf);
            gptc_gemm_serial(T, HS, T, w, 1, T, dout_h, C, 1, dv + base, C, 1, gemm_work);
        }
        if (!need_ds) {
            continue;
        }
        /* dW = dO V^T, into ds, which then becomes dS row by row */
        gptc_gemm_serial(T, T, HS, dout_h, C, 1, v + base, 1, C, ds, T, 0, gemm_work);
        for (int i = 0; i < T; i++) {
            const float *ai = a + (size_t)i * T;
            float *row = ds + (size_t)i * T;
            if (nz != NULL) {
                const float *nzi = nz + (size_t)i * T;
                for (int j = 0; j <= i; j++) row[j] *= nzi[j];   /* dA: dropout passes what it kept */
            }
            float dot = 0.0f;
            for (int j = 0; j <= i; j++) dot += ai[j] * row[j];
            /* the forward divided the dot product by sqrt(HS) */
            for (int j = 0; j <= i; j++) row[j] = ai[j] * (row[j] - dot) / divisor;
            for (int j = i + 1; j < T; j++) row[j] = 0.0f;
        }
        if (dq != NULL) {
            gptc_gemm_serial(T, HS, T, ds, T, 1, k + base, C, 1, dq + base, C, 1, gemm_work);
        }
        if (dk != NULL) {
            /* dK += dS^T Q: element (j, i) of dS^T is ds[i * T + j] */
            gptc_gemm_serial(T, HS, T, ds, 1, T, q + base, C, 1, dk + base, C, 1, gemm_work);
        }
    }
    free(scratch);
    return 0;
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
    return gptc_attention_cached_scratch_floats(p->d_out / NH, nthreads);
}

/* Copy the keys or values of T new tokens (B * T rows of C) into rows
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
    gptc_linear_forward(w->q, x, p->w_query, p->b_query, M, d_in, d_out, 0);
    gptc_linear_forward(w->k, x, p->w_key, p->b_key, M, d_in, d_out, 0);
    gptc_linear_forward(w->v, x, p->w_value, p->b_value, M, d_in, d_out, 0);
    /* x has been read: from here on context may overwrite it */
    if (p->dropout > 0.0) {
        if (gptc_attention_forward_train(w->context, NULL, w->scratch, w->q, w->k, w->v, B, T,
                                         NH, HS, p->dropout, g, nthreads) != 0)
            return -1;
    } else if (cache == NULL) {
        gptc_attention_cached_forward(w->context, w->q, w->k, w->v, B, T, 0, T, NH, HS,
                                      w->scratch, nthreads);
    } else {
        store_rows(cache->k, w->k, B, T, cache->past, cache->capacity, d_out);
        store_rows(cache->v, w->v, B, T, cache->past, cache->capacity, d_out);
        gptc_attention_cached_forward(w->context, w->q, cache->k, cache->v, B, T, cache->past,
                                      cache->capacity, NH, HS, w->scratch, nthreads);
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
