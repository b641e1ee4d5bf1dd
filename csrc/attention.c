/*
 * attention.c - causal multi-head attention (chapter 3, used by section 4.5).
 *
 * For every head, position i attends to positions j <= i:
 *   w[i, j] = softmax_j(q_i . k_j / sqrt(head_dim)),   out_i = sum_j w[i, j] v_j
 * The book builds the full T x T score matrix, fills the positions above the
 * diagonal with -inf and lets softmax turn them into zeros. Here each query
 * row only ever computes its first i + 1 scores: the masked half is never
 * touched, and the result is the same because exp(-inf) is exactly 0.
 *
 * Heads are not transposed into a separate tensor: head h of token t is
 * simply the slice [h * HS, (h + 1) * HS) of row t of q, k and v.
 *
 * For training, gptc_attention_forward_train also keeps the (B, NH, T, T)
 * weights and dropout noise, and gptc_attention_backward turns the gradient
 * of the output into the gradients of q, k and v.
 */
#include "gptc.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>

size_t gptc_attention_scratch_floats(int B, int T, int NH, double dropout_p,
                                     int nthreads)
{
    /* one row of scores per thread, plus the dropout mask if any */
    size_t n = (size_t)nthreads * T;
    if (dropout_p > 0.0) {
        n += (size_t)B * NH * T * T;
    }
    return n;
}

/* One query row: scores, softmax, optional dropout, weighted sum of v.
 * On return scores[0..i] holds the softmax weights before dropout (what the
 * training forward keeps for the backward): dropout is applied to each
 * weight as it is used, never written back. Not inlined, so the eval and
 * the training forward run the very same instructions and agree bit for
 * bit. */
static __attribute__((noinline)) void attend_row(
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
    const int C = NH * HS;
    const float divisor = sqrtf((float)HS);
    float *drop_mask = NULL;
    float drop_scale = 1.0f;
    if (dropout_p > 0.0) {
        /* PyTorch draws one value per element of the full (B, NH, T, T)
         * weight tensor, masked positions included, so the whole mask is
         * drawn up front in that order; keep it bit-identical. */
        drop_mask = scratch + (size_t)nthreads * T;
        size_t n = (size_t)B * NH * T * T;
        if (dropout_p >= 1.0) {
            for (size_t i = 0; i < n; i++) drop_mask[i] = 0.0f;
        } else {
            double keep = 1.0 - dropout_p;
            gptc_bernoulli_f32(g, drop_mask, n, keep);
            drop_scale = 1.0f / (float)keep;
        }
    }
    long long rows = (long long)B * NH * T;
    double work = (double)B * NH * T * T * HS;
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
        const float *mask_row = drop_mask == NULL ? NULL
            : drop_mask + (((size_t)b * NH + h) * T + i) * T;
        attend_row(out + base + (size_t)i * C, q + base + (size_t)i * C,
                   k + base, v + base, i, C, HS, divisor, mask_row, drop_scale,
                   scratch + (size_t)thread * T);
    }
}

/*
 * Training forward: gptc_attention_forward, keeping what the backward needs.
 * att (B, NH, T, T) receives the softmax weights before dropout, zeros above
 * the diagonal, and noise (B, NH, T, T) the dropout noise: 0 or 1 / (1 - p),
 * drawn up front over the whole tensor exactly as gptc_attention_forward
 * draws its mask. Each query row's scores are computed in its own row of
 * att, so no other scratch is needed.
 */
void gptc_attention_forward_train(float *out, float *att, float *noise, const float *q,
                                  const float *k, const float *v, int B, int T, int NH,
                                  int HS, double dropout_p, gptc_generator *g, int nthreads)
{
    const int C = NH * HS;
    const float divisor = sqrtf((float)HS);
    const size_t n = (size_t)B * NH * T * T;
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
    long long rows = (long long)B * NH * T;
    double work = (double)B * NH * T * T * HS;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1)
    for (long long r = 0; r < rows; r++) {
        int i = (int)(r % T);
        int h = (int)((r / T) % NH);
        int b = (int)(r / ((long long)T * NH));
        size_t base = (size_t)b * T * C + (size_t)h * HS;
        float *att_row = att + (size_t)r * T;   /* rows of att are (b, h, i) in order */
        const float *drop_row = drop == NULL ? NULL : drop + (size_t)r * T;
        /* drop_scale 1: the noise already holds mask * scale */
        attend_row(out + base + (size_t)i * C, q + base + (size_t)i * C, k + base,
                   v + base, i, C, HS, divisor, drop_row, 1.0f, att_row);
        for (int j = i + 1; j < T; j++) {
            att_row[j] = 0.0f;   /* the causal mask: exp(-inf) = 0 */
        }
    }
}

/*
 * Backward, for one head at a time. With s_ij = q_i . k_j / sqrt(HS) for
 * j <= i, a = softmax_j(s), w = a * noise and out_i = sum_j w_ij v_j:
 *   dw_ij = dout_i . v_j                 dv_j += sum_i w_ij dout_i
 *   da_ij = dw_ij * noise_ij             (dropout passes only what it kept)
 *   ds_ij = a_ij (da_ij - sum_k a_ik da_ik)    (the softmax Jacobian)
 *   dq_i += sum_j ds_ij k_j / sqrt(HS)   dk_j += sum_i ds_ij q_i / sqrt(HS)
 * The masked positions j > i have a = 0 and take no part, as in the
 * forward. One thread handles a whole (b, h): every query row of a head
 * adds into the same dk_j and dv_j, and no other head touches that slice of
 * dq, dk, dv, so there are no races and the sums run in a fixed order.
 */
size_t gptc_attention_backward_scratch_floats(int B, int T, int NH, int nthreads)
{
    return (size_t)nthreads * T;   /* one row of da per thread */
}

void gptc_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                             const float *q, const float *k, const float *v, const float *att,
                             const float *noise, int B, int T, int NH, int HS, float *scratch,
                             int nthreads)
{
    const int C = NH * HS;
    const float divisor = sqrtf((float)HS);
    const int need_ds = dq != NULL || dk != NULL;
    if (!need_ds && dv == NULL) {
        return;
    }
    int heads = B * NH;
    double work = (double)B * NH * T * T * HS;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nthreads > 1 && heads > 1)
    for (int bh = 0; bh < heads; bh++) {
        int thread = 0;
#ifdef _OPENMP
        thread = omp_get_thread_num();
#endif
        float *da = scratch + (size_t)thread * T;
        int b = bh / NH, h = bh % NH;
        size_t base = (size_t)b * T * C + (size_t)h * HS;
        for (int i = 0; i < T; i++) {
            const float *a = att + ((size_t)bh * T + i) * T;
            const float *nz = noise == NULL ? NULL : noise + ((size_t)bh * T + i) * T;
            const float *dout_i = dout + base + (size_t)i * C;
            for (int j = 0; j <= i; j++) {
                const float *vj = v + base + (size_t)j * C;
                if (dv != NULL) {
                    /* the weight the forward used: a * (mask * scale) */
                    float w = nz == NULL ? a[j] : a[j] * nz[j];
                    float *dvj = dv + base + (size_t)j * C;
                    for (int d = 0; d < HS; d++) {
                        dvj[d] += w * dout_i[d];
                    }
                }
                if (need_ds) {
                    float dw = 0.0f;
                    for (int d = 0; d < HS; d++) {
                        dw += dout_i[d] * vj[d];
                    }
                    da[j] = nz == NULL ? dw : dw * nz[j];
                }
            }
            if (!need_ds) {
                continue;
            }
            float dot = 0.0f;
            for (int j = 0; j <= i; j++) {
                dot += a[j] * da[j];
            }
            const float *qi = q + base + (size_t)i * C;
            float *dqi = dq == NULL ? NULL : dq + base + (size_t)i * C;
            for (int j = 0; j <= i; j++) {
                /* the forward divided the dot product by sqrt(HS) */
                float ds = a[j] * (da[j] - dot) / divisor;
                if (dqi != NULL) {
                    const float *kj = k + base + (size_t)j * C;
                    for (int d = 0; d < HS; d++) {
                        dqi[d] += ds * kj[d];
                    }
                }
                if (dk != NULL) {
                    float *dkj = dk + base + (size_t)j * C;
                    for (int d = 0; d < HS; d++) {
                        dkj[d] += ds * qi[d];
                    }
                }
            }
        }
    }
}

int gptc_mha_forward(float *out, const float *x, const gptc_attention_params *p,
                     int B, int T, int d_in, int d_out, int NH, double dropout_p,
                     gptc_generator *g)
{
    const int M = B * T;
    const int nthreads = gptc_get_num_threads();
    size_t act = (size_t)M * d_out;
    size_t total = 4 * act + gptc_attention_scratch_floats(B, T, NH, dropout_p, nthreads);
    float *buf = malloc(total * sizeof(float));
    if (buf == NULL) {
        return -1;
    }
    float *q = buf, *k = q + act, *v = k + act, *ctx = v + act, *scratch = ctx + act;
    gptc_linear_forward(q, x, p->w_query, p->b_query, M, d_in, d_out);
    gptc_linear_forward(k, x, p->w_key, p->b_key, M, d_in, d_out);
    gptc_linear_forward(v, x, p->w_value, p->b_value, M, d_in, d_out);
    gptc_attention_forward(ctx, q, k, v, B, T, NH, d_out / NH, dropout_p, g, scratch,
                           nthreads);
    gptc_linear_forward(out, ctx, p->w_out, p->b_out, M, d_out, d_out);
    free(buf);
    return 0;
}
