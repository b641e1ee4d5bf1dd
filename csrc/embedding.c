/*
 * embedding.c - token and position embeddings (listing 4.x: tok_emb, pos_emb).
 *
 * An embedding is a table lookup: row idx of the weight matrix. The model's
 * input adds the token row and the position row in one pass so the
 * (B, T, C) activation is written once.
 */
#include "gptc.h"
#include "internal.h"

#include <string.h>

void gptc_embedding_forward(float *out, const int64_t *idx, const float *weight,
                            size_t n, int C)
{
    for (size_t i = 0; i < n; i++) {
        memcpy(out + i * (size_t)C, weight + (size_t)idx[i] * (size_t)C,
               (size_t)C * sizeof(float));
    }
}

void gptc_encoder_forward(float *out, const int64_t *idx, const float *tok_emb,
                          const float *pos_emb, int B, int T, int C)
{
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *tok = tok_emb + (size_t)idx[(size_t)b * T + t] * C;
            const float *pos = pos_emb + (size_t)t * C;
            for (int c = 0; c < C; c++) {
                o[c] = tok[c] + pos[c];
            }
        }
    }
}

/*
 * Backward: the gradient of a lookup is a scatter-add, dweight[idx[i]] +=
 * dout[i], and a token that occurs several times collects the gradient of
 * every occurrence. Two rows i may share an id, so the rows cannot be split
 * among threads; the columns can: each thread adds its own slice of every
 * row, in the same order i = 0, 1, ..., n - 1 whatever the thread count.
 */
void gptc_embedding_backward(float *dweight, const float *dout, const int64_t *idx,
                             size_t n, int C)
{
    int nthreads OMP_CLAUSE_ONLY = gptc_get_num_threads();
    int nchunks = (C + 63) / 64;
    double work OMP_CLAUSE_ONLY = (double)n * C;
#pragma omp parallel for schedule(static) num_threads(nthreads) \
    if (nthreads > 1 && nchunks > 1 && work >= GPTC_PARALLEL_MIN_WORK)
    for (int ch = 0; ch < nchunks; ch++) {
        int c0 = ch * 64, c1 = C - c0 < 64 ? C : c0 + 64;
        for (size_t i = 0; i < n; i++) {
            float *w = dweight + (size_t)idx[i] * C;
            const float *d = dout + i * C;
            for (int c = c0; c < c1; c++) {
                w[c] += d[c];
            }
        }
    }
}
