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
 * Two forwards live here:
 *  - inference (no dropout): a blocked, online-softmax ("flash") kernel.
 *    Each task takes a block of query rows of one head and streams over
 *    blocks of keys j <= i, keeping per row a running maximum, a running
 *    sum of exponentials and an unnormalised output. No T x T matrix is
 *    ever built, every key block is read once per query block, and the
 *    inner loops are vector multiply-adds on tiles of 4 query rows
 *    (csrc/arch/flash_attention.h, compiled once per instruction set).
 *    The same kernel serves the KV cache (gptc_attention_cached_forward):
 *    new queries at positions past.. attend over cached keys and values.
 *  - with dropout: one query row at a time (attend_row), after drawing the
 *    (B, NH, T, T) dropout mask in PyTorch's order.
 *
 * For training, gptc_attention_forward_train computes each head as matrix
 * products and keeps the weights the backward needs, and
 * gptc_attention_backward turns the gradient of the output into the
 * gradients of q, k and v.
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
size_t gptc_attention_scratch_floats(int B, int T, int NH, int HS, double dropout_p,
                                     int nthreads)
{
    if (dropout_p > 0.0) {
        /* one row of scores per thread, plus the whole dropout mask */
        return (size_t)nthreads * T + (size_t)B * NH * T * T;
    }
    return (size_t)nthreads * gptc_flash_scratch_floats(HS);
}

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
 * With dropout, and for training: one query row at a time.
 * ---------------------------------------------------------------------- */

/* One query row of the forward with dropout: scores, softmax, dropout,
 * weighted sum of v. scores is one row of scratch; dropout is applied to
 * each weight as it is used. (Without dropout gptc_attention_forward runs
 * the blocked kernel above, and training runs the per-head matrix products
 * below: the three sum in different orders and agree to rounding.) */
static void attend_row(
    float *out, const float *q, const float *k, const float *v, int i, int C, int HS,
    float divisor, const float *drop_mask, float drop_scale, float *scores)
{
    float maxval = -INFINITY;
    for (int j = 0; j <= i; j++) {
        const float *kj = k + (size_t)j * C;
        float s = 0.0f;
        for (int d = 0; d < HS; d++) {
            s += q[d] * kj[d];
        }
        /* divided, not multiplied by a reciprocal, as the book writes it */
        s = s / divisor;
        scores[j] = s;
        if (s > maxval) {
            maxval = s;
        }
    }
    float sum = 0.0f;
    for (int j = 0; j <= i; j++) {
        scores[j] = expf(scores[j] - maxval);
        sum += scores[j];
    }
    float inv_sum = 1.0f / sum;
    for (int j = 0; j <= i; j++) {
        scores[j] *= inv_sum;
    }
    for (int d = 0; d < HS; d++) {
        out[d] = 0.0f;
    }
    for (int j = 0; j <= i; j++) {
        const float *vj = v + (size_t)j * C;
        float w = drop_mask == NULL ? scores[j] : scores[j] * (drop_mask[j] * drop_scale);
        for (int d = 0; d < HS; d++) {
            out[d] += w * vj[d];
        }
    }
}

void gptc_attention_forward(float *out, const float *q, const float *k, const float *v,
                            int B, int T, int NH, int HS, double dropout_p,
                            gptc_generator *g, float *scratch, int nthreads)
{
    if (dropout_p <= 0.0) {
        gptc_attention_cached_forward(out, q, k, v, B, T, 0, T, NH, HS, scratch, nthreads);
        return;
    }
    const int C = NH * HS;
    const float divisor = sqrtf((float)HS);
    /* PyTorch draws one value per element of the full (B, NH, T, T)
     * weight tensor, masked positions included, so the whole mask is
     * drawn up front in that order; keep it bit-identical. */
    float *drop_mask = scratch + (size_t)nthreads * T;
    float drop_scale = 1.0f;
    size_t n = (size_t)B * NH * T * T;
    if (dropout_p >= 1.0) {
        for (size_t i = 0; i < n; i++) drop_mask[i] = 0.0f;
    } else {
        double keep = 1.0 - dropout_p;
        gptc_bernoulli_f32(g, drop_mask, n, keep);
        drop_scale = 1.0f / (float)keep;
    }
    long long rows = (long long)B * NH * T;
    double work OMP_CLAUSE_ONLY = (double)B * NH * T * T * HS;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1)
    for (long long r = 0; r < rows; r++) {
        int thread = 0;
#ifdef _OPENMP
        thread = omp_get_thread_num();
#endif
        int i = (int)(r % T);
        int h = (int)((r / T) % NH);
        int b = (int)(r / ((long long)T * NH));
        size_t base = (size_t)b * T * C + (size_t)h * HS;
        const float *mask_row = drop_mask + (((size_t)b * NH + h) * T + i) * T;
        attend_row(out + base + (size_t)i * C, q + base + (size_t)i * C,
                   k + base, v + base, i, C, HS, divisor, mask_row, drop_scale,
                   scratch + (size_t)thread * T);
    }
}

/*
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
    const size_t per_thread = train_scratch_floats(T, HS);
    float *scratch = malloc((size_t)nthreads * per_thread * sizeof(float));
    if (scratch == NULL) return -1;
    /* The dropout noise is drawn up front over the whole (B, NH, T, T)
     * tensor, masked positions included, in PyTorch's order. */
    const float *drop = NULL;
    if (dropout_p > 0.0) {
        if (dropout_p >= 1.0) {
            for (size_t i = 0; i < n; i++) noise[i] = 0.0f;
        } else {
            double keep = 1.0 - dropout_p;
            float scale = 1.0f / (float)keep;
            gptc_bernoulli_f32(g, noise, n, keep);
            /* mask * scale, the factor gptc_attention_forward multiplies by */
            for (size_t i = 0; i < n; i++) noise[i] *= scale;
        }
        drop = noise;
    } else if (noise != NULL) {
        for (size_t i = 0; i < n; i++) noise[i] = 1.0f;
    }
    const int heads = B * NH;
    double work OMP_CLAUSE_ONLY = (double)heads * T * T * HS;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && heads > 1)
    for (int bh = 0; bh < heads; bh++) {
        float *mine = scratch + (size_t)THREAD_INDEX() * per_thread;
        float *wbuf = mine, *gemm_work = mine + 2 * ((square + 15) / 16 * 16);
        int b = bh / NH, h = bh % NH;
        size_t base = (size_t)b * T * C + (size_t)h * HS;
        float *a = att + (size_t)bh * square;
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

int gptc_mha_forward(float *out, const float *x, const gptc_attention_params *p,
                     int B, int T, int d_in, int d_out, int NH, double dropout_p,
                     gptc_generator *g)
{
    const int M = B * T;
    const int nthreads = gptc_get_num_threads();
    size_t act = (size_t)M * d_out;
    size_t total = 4 * act + gptc_attention_scratch_floats(B, T, NH, d_out / NH, dropout_p,
                                                           nthreads);
    float *buf = malloc(total * sizeof(float));
    if (buf == NULL) {
        return -1;
    }
    float *q = buf, *k = q + act, *v = k + act, *ctx = v + act, *scratch = ctx + act;
    gptc_linear_forward(q, x, p->w_query, p->b_query, M, d_in, d_out, 0);
    gptc_linear_forward(k, x, p->w_key, p->b_key, M, d_in, d_out, 0);
    gptc_linear_forward(v, x, p->w_value, p->b_value, M, d_in, d_out, 0);
    gptc_attention_forward(ctx, q, k, v, B, T, NH, d_out / NH, dropout_p, g, scratch,
                           nthreads);
    gptc_linear_forward(out, ctx, p->w_out, p->b_out, M, d_out, d_out, 0);
    free(buf);
    return 0;
}
