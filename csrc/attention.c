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

/* One query row: scores, softmax, optional dropout, weighted sum of v. */
static void attend_row(float *out, const float *q, const float *k, const float *v,
                       int i, int C, int HS, float divisor,
                       const float *drop_mask, float drop_scale, float *scores)
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
    if (drop_mask != NULL) {
        for (int j = 0; j <= i; j++) {
            scores[j] *= drop_mask[j] * drop_scale;
        }
    }
    for (int d = 0; d < HS; d++) {
        out[d] = 0.0f;
    }
    for (int j = 0; j <= i; j++) {
        const float *vj = v + (size_t)j * C;
        float w = scores[j];
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
