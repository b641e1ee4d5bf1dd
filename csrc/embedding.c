/*
 * embedding.c - token and position embeddings (listing 4.x: tok_emb, pos_emb).
 *
 * An embedding is a table lookup: row idx of the weight matrix. The model's
 * input adds the token row and the position row in one pass so the
 * (B, T, C) activation is written once.
 */
#include "gptc.h"

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
