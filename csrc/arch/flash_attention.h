/*
 * flash_attention.h - the per-instruction-set half of the inference
 * attention kernel (attention.c has the driver and the derivation).
 * Included once by each file of csrc/arch/, after it defines
 *   ATT_VEC     floats per vector: 4 (SSE2 / NEON), 8 (AVX2), 16 (AVX-512)
 *   ATT_TARGET  the target attribute of the functions, or nothing
 * and gets flash_task, one task of the kernel (gptc_flash_task_fn).
 *
 * For query row i and key blocks J1, J2, ... (in order), with m the largest
 * score seen so far, l the sum of exp(score - m) and o the sum of
 * exp(score - m) v_j:
 *   m' = max(m, max_{j in J} s_j)          c = exp(m - m')
 *   l' = c l + sum_{j in J} exp(s_j - m')  o' = c o + sum_{j in J} exp(s_j - m') v_j
 * and out_i = o / l at the end, which is softmax(s) . v regrouped.
 *
 * The accumulators are explicit vectors (GCC's vector extension, which
 * clang supports too), sized to the registers of the instruction set, so
 * that every value is one multiply-add chain in a fixed order (scores:
 * over d; outputs: over keys c) in the 4-row tile and in the single-row
 * routine alike. Left to the auto-vectoriser, a single-row loop was
 * vectorised along d instead, as products added one by one, which rounds
 * differently from the tile's fused multiply-adds and would break the
 * promise that a row computed alone (a KV-cache decode step) equals the
 * same row of a whole-sequence forward. Vectors are only ever loaded and
 * stored with memcpy of exactly the floats they cover, so nothing is read
 * or written past a row.
 *
 * The arithmetic of one query row never depends on which other rows share
 * its task: key blocks always start at j = 0, and the row-tiled and the
 * single-row loops apply the same operations to each value in the same
 * order, so the two are bit for bit equal.
 */
#ifndef GPTC_FLASH_ATTENTION_H
#define GPTC_FLASH_ATTENTION_H

#include <math.h>
#include <string.h>

#include "../internal.h"
#include "../kernels.h"

#define Q_BLOCK GPTC_ATT_Q_BLOCK
#define K_BLOCK GPTC_ATT_K_BLOCK
#define ROW_TILE GPTC_ATT_ROW_TILE
#define LANES 8         /* partial results of the row maximum and sum */
_Static_assert(K_BLOCK % LANES == 0, "K_BLOCK must be a multiple of LANES");

typedef gptc_flash_problem flash_problem;

/* e^x for x <= 0 (a score minus a running maximum): gptc_exp (internal.h),
 * whose straight-line arithmetic vectorises; x < -87.3, the masked -inf
 * scores included, gives 0. */
static inline __attribute__((always_inline)) float exp_nonpositive(float x)
{
    return gptc_exp(x);
}

/* Turn a row of scores into exp(score - m') in place for the online
 * softmax: n valid keys (the rest are masked), running maximum *m and sum
 * *l updated; returns the factor the row's output must be scaled by. */
static inline __attribute__((always_inline)) float softmax_update(
    float *sr, int n, float divisor, float *m, float *l)
{
    /* divided, not multiplied by a reciprocal, as the book writes it; the
     * masked keys get -inf, whose exponential is exactly 0 */
    for (int c = 0; c < K_BLOCK; c++) sr[c] = sr[c] / divisor;
    for (int c = n; c < K_BLOCK; c++) sr[c] = -INFINITY;
    /* maximum and sum over LANES interleaved partial results combined in
     * a fixed order: vectorisable, and the same for every row */
    float lane[LANES];
    for (int u = 0; u < LANES; u++) lane[u] = sr[u];
    for (int c = LANES; c < K_BLOCK; c += LANES) {
        for (int u = 0; u < LANES; u++) lane[u] = sr[c + u] > lane[u] ? sr[c + u] : lane[u];
    }
    float block_max = lane[0];
    for (int u = 1; u < LANES; u++) block_max = lane[u] > block_max ? lane[u] : block_max;
    const float m_new = block_max > *m ? block_max : *m;
    const float corr = exp_nonpositive(*m - m_new);   /* 0 on the first block */
    for (int c = 0; c < K_BLOCK; c++) sr[c] = exp_nonpositive(sr[c] - m_new);
    for (int u = 0; u < LANES; u++) lane[u] = sr[u];
    for (int c = LANES; c < K_BLOCK; c += LANES) {
        for (int u = 0; u < LANES; u++) lane[u] += sr[c + u];
    }
    float block_sum = lane[0];
    for (int u = 1; u < LANES; u++) block_sum += lane[u];
    *m = m_new;
    *l = *l * corr + block_sum;
    return corr;
}

static inline __attribute__((always_inline)) void scale_row(float *o, float f, int HS)
{
    if (f != 1.0f) {
        for (int d = 0; d < HS; d++) o[d] *= f;
    }
}

/* The vector parts of a task, defined below once per instruction set (on
 * vectors of ATT_VEC floats): scores of a 4-row tile and of one row;
 * output updates of a 4-row tile and of one row. */
typedef void (*scores_tile_fn)(float *s, const float *const *q, const float *kt, int HS);
typedef void (*scores_row_fn)(float *s, const float *q, const float *kt, int HS);
typedef void (*values_tile_fn)(float *const *o, const float *p, const float *v, size_t ldv,
                               int n, int HS);
typedef void (*values_row_fn)(float *o, const float *p, const float *v, size_t ldv, int c0,
                              int n, int HS);

/* One task: query rows [row0, row0 + nrows) of batch b, head h. The tile
 * functions are constants at every call site, so they are inlined. */
static inline __attribute__((always_inline)) void flash_task_body(
    const flash_problem *pb, int b, int h, int row0, int nrows, float *scratch,
    scores_tile_fn scores_tile, scores_row_fn scores_row, values_tile_fn values_tile,
    values_row_fn values_row)
{
    const int C = pb->C, HS = pb->HS;
    const int first = pb->past + row0;          /* position of the first row */
    const int last = first + nrows - 1;         /* and of the last */
    float *kt = scratch;                        /* [HS][K_BLOCK] */
    float *st = kt + (size_t)HS * K_BLOCK;      /* [ROW_TILE][K_BLOCK] scores */
    float *m = st + (size_t)ROW_TILE * K_BLOCK; /* running maximum per row */
    float *l = m + Q_BLOCK;                     /* running sum per row */
    const int NH = C / HS;
    /* the keys of (b, h): rows of C floats, or k_blocks transposed blocks */
    const float *kb = pb->k_blocks > 0
                          ? pb->k + ((size_t)b * NH + h) * (size_t)pb->k_blocks * HS * K_BLOCK
                          : pb->k + (size_t)b * pb->kv_batch_stride + (size_t)h * HS;
    const float *vb = pb->v + (size_t)b * pb->kv_batch_stride + (size_t)h * HS;
    const float *q0 = pb->q + ((size_t)b * pb->Tq + row0) * C + (size_t)h * HS;
    float *o0 = pb->out + ((size_t)b * pb->Tq + row0) * C + (size_t)h * HS;

    for (int r = 0; r < nrows; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        float *o = o0 + (size_t)r * C;
        for (int d = 0; d < HS; d++) o[d] = 0.0f;
    }
    for (int j0 = 0; j0 <= last; j0 += K_BLOCK) {
        const int bk = last + 1 - j0 < K_BLOCK ? last + 1 - j0 : K_BLOCK;
        /* the key block, transposed so that a score row is a sum of
         * K_BLOCK-wide multiply-adds: as the cache holds it, or transposed
         * here with zeros past the block. Either way a column past the
         * keys a row sees only gives a score that softmax_update masks. */
        const float *ktj = kt;
        if (pb->k_blocks > 0) {
            ktj = kb + (size_t)(j0 / K_BLOCK) * HS * K_BLOCK;
        } else {
            for (int d = 0; d < HS; d++) {
                float *ktd = kt + (size_t)d * K_BLOCK;
                for (int c = 0; c < bk; c++) ktd[c] = kb[(size_t)(j0 + c) * C + d];
                for (int c = bk; c < K_BLOCK; c++) ktd[c] = 0.0f;
            }
        }
        /* rows before position j0 see none of this block; row r sees
         * keys j0 .. first + r of it, at most bk */
        const float *vj = vb + (size_t)j0 * C;
        int r = j0 > first ? j0 - first : 0;
        for (; r + ROW_TILE <= nrows; r += ROW_TILE) {
            int n[ROW_TILE];
            for (int rr = 0; rr < ROW_TILE; rr++) {
                int seen = first + r + rr - j0 + 1;
                n[rr] = seen < bk ? seen : bk;
            }
            const float *qt[ROW_TILE];
            float *ot[ROW_TILE];
            for (int rr = 0; rr < ROW_TILE; rr++) {
                qt[rr] = q0 + (size_t)(r + rr) * C;
                ot[rr] = o0 + (size_t)(r + rr) * C;
            }
            scores_tile(st, qt, ktj, HS);
            for (int rr = 0; rr < ROW_TILE; rr++) {
                float corr = softmax_update(st + (size_t)rr * K_BLOCK, n[rr], pb->divisor,
                                            &m[r + rr], &l[r + rr]);
                scale_row(ot[rr], corr, HS);
            }
            /* the keys all four rows see together, then each row's rest
             * (they differ only in the diagonal block) */
            values_tile(ot, st, vj, (size_t)C, n[0], HS);
            for (int rr = 1; rr < ROW_TILE; rr++) {
                values_row(ot[rr], st + (size_t)rr * K_BLOCK, vj, (size_t)C, n[0], n[rr], HS);
            }
        }
        for (; r < nrows; r++) {
            int seen = first + r - j0 + 1;
            int n = seen < bk ? seen : bk;
            float *o = o0 + (size_t)r * C;
            scores_row(st, q0 + (size_t)r * C, ktj, HS);
            float corr = softmax_update(st, n, pb->divisor, &m[r], &l[r]);
            scale_row(o, corr, HS);
            values_row(o, st, vj, (size_t)C, 0, n, HS);
        }
    }
    for (int r = 0; r < nrows; r++) {
        float *o = o0 + (size_t)r * C;
        const float sum = l[r];
        for (int d = 0; d < HS; d++) o[d] /= sum;
    }
}

#define ATT_NAME(n) att_##n
#define VEC ATT_NAME(vec)
#define CHUNK (2 * ATT_VEC)   /* features or keys per step: two vectors */
#define VLOAD(v, ptr) memcpy(&(v), (ptr), sizeof(VEC))
#define VSTORE(ptr, v) memcpy((ptr), &(v), sizeof(VEC))

typedef float VEC __attribute__((vector_size(ATT_VEC * sizeof(float))));
_Static_assert(K_BLOCK % CHUNK == 0, "K_BLOCK must be a multiple of two vectors");
_Static_assert(ROW_TILE == 4, "the tiles are written for 4 rows");

/* s[r][c] = q_r . kt[:, c] for the 4 rows q[0..3], all K_BLOCK columns (row
 * r of s at s + r * K_BLOCK; kt is [HS][K_BLOCK]). */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(scores_tile)(
    float *s, const float *const *q, const float *kt, int HS)
{
    const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3];
    for (int c0 = 0; c0 < K_BLOCK; c0 += CHUNK) {
        VEC a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, b2 = {0}, a3 = {0}, b3 = {0};
        for (int d = 0; d < HS; d++) {
            VEC k, l;
            VLOAD(k, kt + (size_t)d * K_BLOCK + c0);
            VLOAD(l, kt + (size_t)d * K_BLOCK + c0 + ATT_VEC);
            a0 += q0[d] * k;
            b0 += q0[d] * l;
            a1 += q1[d] * k;
            b1 += q1[d] * l;
            a2 += q2[d] * k;
            b2 += q2[d] * l;
            a3 += q3[d] * k;
            b3 += q3[d] * l;
        }
        VSTORE(s + c0, a0);
        VSTORE(s + c0 + ATT_VEC, b0);
        VSTORE(s + K_BLOCK + c0, a1);
        VSTORE(s + K_BLOCK + c0 + ATT_VEC, b1);
        VSTORE(s + 2 * K_BLOCK + c0, a2);
        VSTORE(s + 2 * K_BLOCK + c0 + ATT_VEC, b2);
        VSTORE(s + 3 * K_BLOCK + c0, a3);
        VSTORE(s + 3 * K_BLOCK + c0 + ATT_VEC, b3);
    }
}

/* s[c] = q . kt[:, c] for one row: all K_BLOCK columns at once, each
 * vector its own chain of multiply-adds over d (a decode step has no other
 * rows to hide the latency of one chain behind), lane for lane the
 * operations of scores_tile. */
#define ROW_SCORE_VECS (K_BLOCK / ATT_VEC)
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(scores_row)(
    float *s, const float *q, const float *kt, int HS)
{
    VEC a[ROW_SCORE_VECS];
    for (int u = 0; u < ROW_SCORE_VECS; u++) a[u] = (VEC){0};
    for (int d = 0; d < HS; d++) {
        for (int u = 0; u < ROW_SCORE_VECS; u++) {
            VEC k;
            VLOAD(k, kt + (size_t)d * K_BLOCK + u * ATT_VEC);
            a[u] += q[d] * k;
        }
    }
    for (int u = 0; u < ROW_SCORE_VECS; u++) VSTORE(s + u * ATT_VEC, a[u]);
}
#undef ROW_SCORE_VECS

/* The last w < ATT_VEC features of a row into a vector (the rest zero) and
 * back. Through pointers: a vector passed by value would depend on the ABI
 * of the instruction set. */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(load_part)(
    VEC *v, const float *p, int w)
{
    *v = (VEC){0};
    memcpy(v, p, (size_t)w * sizeof(float));
}

ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(store_part)(
    float *p, const VEC *v, int w)
{
    memcpy(p, v, (size_t)w * sizeof(float));
}

/* o_r += sum_{c < n} p_r[c] v_c for the 4 rows o[0..3] (p_r at
 * p + r * K_BLOCK; value c at v + c * ldv). */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(values_tile)(
    float *const *o, const float *p, const float *v, size_t ldv, int n, int HS)
{
    float *o0 = o[0], *o1 = o[1], *o2 = o[2], *o3 = o[3];
    const float *p0 = p, *p1 = p + K_BLOCK, *p2 = p + 2 * K_BLOCK, *p3 = p + 3 * K_BLOCK;
    int d0 = 0;
    for (; d0 + CHUNK <= HS; d0 += CHUNK) {
        VEC a0, b0, a1, b1, a2, b2, a3, b3;
        VLOAD(a0, o0 + d0);
        VLOAD(b0, o0 + d0 + ATT_VEC);
        VLOAD(a1, o1 + d0);
        VLOAD(b1, o1 + d0 + ATT_VEC);
        VLOAD(a2, o2 + d0);
        VLOAD(b2, o2 + d0 + ATT_VEC);
        VLOAD(a3, o3 + d0);
        VLOAD(b3, o3 + d0 + ATT_VEC);
        for (int c = 0; c < n; c++) {
            VEC x, y;
            VLOAD(x, v + (size_t)c * ldv + d0);
            VLOAD(y, v + (size_t)c * ldv + d0 + ATT_VEC);
            a0 += p0[c] * x;
            b0 += p0[c] * y;
            a1 += p1[c] * x;
            b1 += p1[c] * y;
            a2 += p2[c] * x;
            b2 += p2[c] * y;
            a3 += p3[c] * x;
            b3 += p3[c] * y;
        }
        VSTORE(o0 + d0, a0);
        VSTORE(o0 + d0 + ATT_VEC, b0);
        VSTORE(o1 + d0, a1);
        VSTORE(o1 + d0 + ATT_VEC, b1);
        VSTORE(o2 + d0, a2);
        VSTORE(o2 + d0 + ATT_VEC, b2);
        VSTORE(o3 + d0, a3);
        VSTORE(o3 + d0 + ATT_VEC, b3);
    }
    for (; d0 < HS; d0 += ATT_VEC) {   /* the last HS % CHUNK features */
        const int w = HS - d0 < ATT_VEC ? HS - d0 : ATT_VEC;
        VEC a0, a1, a2, a3, x;
        ATT_NAME(load_part)(&a0, o0 + d0, w);
        ATT_NAME(load_part)(&a1, o1 + d0, w);
        ATT_NAME(load_part)(&a2, o2 + d0, w);
        ATT_NAME(load_part)(&a3, o3 + d0, w);
        for (int c = 0; c < n; c++) {
            ATT_NAME(load_part)(&x, v + (size_t)c * ldv + d0, w);
            a0 += p0[c] * x;
            a1 += p1[c] * x;
            a2 += p2[c] * x;
            a3 += p3[c] * x;
        }
        ATT_NAME(store_part)(o0 + d0, &a0, w);
        ATT_NAME(store_part)(o1 + d0, &a1, w);
        ATT_NAME(store_part)(o2 + d0, &a2, w);
        ATT_NAME(store_part)(o3 + d0, &a3, w);
    }
}

/* o[d0 .. d0 + width * ATT_VEC) += sum_{c0 <= c < n} p[c] v_c[same]: width
 * vectors of features, each its own chain over c. */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(values_row_vecs)(
    float *o, const float *p, const float *v, size_t ldv, int c0, int n, int d0,
    const int width)
{
    VEC a[8];
    for (int u = 0; u < width; u++) VLOAD(a[u], o + d0 + u * ATT_VEC);
    for (int c = c0; c < n; c++) {
        for (int u = 0; u < width; u++) {
            VEC x;
            VLOAD(x, v + (size_t)c * ldv + d0 + u * ATT_VEC);
            a[u] += p[c] * x;
        }
    }
    for (int u = 0; u < width; u++) VSTORE(o + d0 + u * ATT_VEC, a[u]);
}

/* o += sum_{c0 <= c < n} p[c] v_c for one row: features eight, four or two
 * vectors at a time (independent chains, as in scores_row), then the last
 * HS % CHUNK; lane for lane the operations of values_tile. */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(values_row)(
    float *o, const float *p, const float *v, size_t ldv, int c0, int n, int HS)
{
    int d0 = 0;
    for (; d0 + 8 * ATT_VEC <= HS; d0 += 8 * ATT_VEC) {
        ATT_NAME(values_row_vecs)(o, p, v, ldv, c0, n, d0, 8);
    }
    for (; d0 + 4 * ATT_VEC <= HS; d0 += 4 * ATT_VEC) {
        ATT_NAME(values_row_vecs)(o, p, v, ldv, c0, n, d0, 4);
    }
    for (; d0 + CHUNK <= HS; d0 += CHUNK) {
        ATT_NAME(values_row_vecs)(o, p, v, ldv, c0, n, d0, 2);
    }
    for (; d0 < HS; d0 += ATT_VEC) {
        const int w = HS - d0 < ATT_VEC ? HS - d0 : ATT_VEC;
        VEC a, x;
        ATT_NAME(load_part)(&a, o + d0, w);
        for (int c = c0; c < n; c++) {
            ATT_NAME(load_part)(&x, v + (size_t)c * ldv + d0, w);
            a += p[c] * x;
        }
        ATT_NAME(store_part)(o + d0, &a, w);
    }
}

ATT_TARGET static void ATT_NAME(flash_task)(const flash_problem *pb, int b, int h, int row0,
                                            int nrows, float *scratch)
{
    flash_task_body(pb, b, h, row0, nrows, scratch, ATT_NAME(scores_tile),
                    ATT_NAME(scores_row), ATT_NAME(values_tile), ATT_NAME(values_row));
}

#undef VSTORE
#undef VLOAD
#undef CHUNK
#undef VEC
#undef ATT_NAME

#endif /* GPTC_FLASH_ATTENTION_H */
