/*
 * flash_attention.h - the per-instruction-set half of the inference
 * attention kernel (attention.c has the driver). Included once by each file
 * of csrc/arch/, after it defines
 *   ATT_VEC     floats per vector: 4 (SSE2 / NEON), 8 (AVX2), 16 (AVX-512)
 *   ATT_TARGET  the target attribute of the functions, or nothing
 * and gets flash_task, one task of the kernel (gptc_flash_task_fn).
 *
 * A task takes query rows of one head, four at a time (a tile), and for
 * each tile makes two passes over the keys the rows see:
 *   1. the scores s_j = q . k_j of every key j <= i, into a row of the
 *      scratch per query row; then, per row, the book's softmax on it in
 *      place: divided by sqrt(head_dim), the maximum m subtracted, p_j =
 *      exp(s_j - m) and their sum l;
 *   2. out_i = (sum_j p_j v_j) / l.
 * No T x T matrix is built: a tile's rows of scores are 4 x T floats, which
 * stay in L1 or L2. The keys are read in blocks of K_BLOCK positions, each
 * block stored transposed (a feature's values for the block's positions side
 * by side: gptc_store_key_blocks), so that a row of scores is a sum of
 * K_BLOCK-wide multiply-adds. An earlier version streamed the key blocks
 * once per task with an online softmax (a running maximum, sum and output
 * rescaled after every block); its per-block corrections and reductions
 * took a third of the time of a (1, 1024) attention, and the exact
 * maximum of the two passes is also the softmax exactly as the book writes
 * it.
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
 * its task or its tile: the row-tiled and the single-row loops apply the
 * same operations to each value in the same order, and the softmax of a row
 * of n scores always runs over the same ceil(n / K_BLOCK) blocks, so the
 * two are bit for bit equal.
 */
#ifndef GPTC_FLASH_ATTENTION_H
#define GPTC_FLASH_ATTENTION_H

#include <math.h>
#include <string.h>

#include "../internal.h"
#include "../kernels.h"

#define K_BLOCK GPTC_ATT_K_BLOCK
#define ROW_TILE GPTC_ATT_ROW_TILE
#define LANES 8         /* partial results of the row maximum and sum */
_Static_assert(K_BLOCK % LANES == 0, "K_BLOCK must be a multiple of LANES");

typedef gptc_flash_problem flash_problem;

/* The softmax of a row of n scores, in place: s_j / divisor, minus their
 * maximum, exponentiated; returns their sum. The row is padded to whole
 * blocks (its scratch row holds them) with scores of masked keys, -inf,
 * whose exponential is exactly 0: the maximum and the sum run over LANES
 * interleaved partial results combined in a fixed order, vectorisable and
 * the same for every row of n keys. */
static inline __attribute__((always_inline)) float softmax_row(float *s, int n, float divisor)
{
    const int width = (n + K_BLOCK - 1) / K_BLOCK * K_BLOCK;
    /* divided, not multiplied by a reciprocal, as the book writes it */
    for (int c = 0; c < n; c++) s[c] = s[c] / divisor;
    /* overwritten, not masked by arithmetic: a key not yet stored may hold
     * NaN, and its score must not reach the maximum */
    for (int c = n; c < width; c++) s[c] = -INFINITY;
    float lane[LANES];
    for (int u = 0; u < LANES; u++) lane[u] = s[u];
    for (int c = LANES; c < width; c += LANES) {
        for (int u = 0; u < LANES; u++) lane[u] = s[c + u] > lane[u] ? s[c + u] : lane[u];
    }
    float m = lane[0];
    for (int u = 1; u < LANES; u++) m = lane[u] > m ? lane[u] : m;
    /* e^x for x <= 0 (gptc_exp, internal.h, whose straight-line arithmetic
     * vectorises); the masked -inf gives 0 */
    for (int c = 0; c < width; c++) s[c] = gptc_exp(s[c] - m);
    for (int u = 0; u < LANES; u++) lane[u] = s[u];
    for (int c = LANES; c < width; c += LANES) {
        for (int u = 0; u < LANES; u++) lane[u] += s[c + u];
    }
    float sum = lane[0];
    for (int u = 1; u < LANES; u++) sum += lane[u];
    return sum;
}

static inline __attribute__((always_inline)) void zero_row(float *o, int HS)
{
    for (int d = 0; d < HS; d++) o[d] = 0.0f;
}

static inline __attribute__((always_inline)) void divide_row(float *o, float l, int HS)
{
    for (int d = 0; d < HS; d++) o[d] /= l;
}

/* The vector parts of a task, defined below once per instruction set (on
 * vectors of ATT_VEC floats): scores of a 4-row tile over one key block
 * (rows lds floats apart) and of one row; output sums of a 4-row tile (its
 * p rows lds floats apart) and of one row. */
typedef void (*scores_tile_fn)(float *s, size_t lds, const float *const *q, const float *kt,
                               int HS);
typedef void (*scores_row_fn)(float *s, const float *q, const float *kt, int HS);
typedef void (*values_tile_fn)(float *const *o, const float *p, size_t lds, const float *v,
                               size_t ldv, int n, int HS);
typedef void (*values_row_fn)(float *o, const float *p, const float *v, size_t ldv, int c0,
                              int n, int HS);

/* One task: query rows [row0, row0 + nrows) of batch b, head h. The tile
 * functions are constants at every call site, so they are inlined. */
static inline __attribute__((always_inline)) void flash_task_body(
    const flash_problem *pb, int b, int h, int row0, int nrows, float *scratch,
    scores_tile_fn scores_tile, scores_row_fn scores_row, values_tile_fn values_tile,
    values_row_fn values_row)
{
    const int C = pb->C, HS = pb->HS, NH = C / HS;
    const int first = pb->past + row0;   /* position of the first row */
    /* a row of scores per row of the tile, as wide as the blocks of keys
     * the last position sees */
    const size_t lds = gptc_flash_score_stride(pb->past + pb->Tq);
    const size_t block_floats = (size_t)HS * K_BLOCK;
    const float *kb = pb->k + ((size_t)b * NH + h) * (size_t)pb->k_blocks * block_floats;
    const float *vb = pb->v + (size_t)b * pb->v_batch_stride + (size_t)h * pb->v_head_stride;
    const size_t ldv = pb->v_row_stride;
    const float *q0 = pb->q + ((size_t)b * pb->Tq + row0) * C + (size_t)h * HS;
    float *o0 = pb->out + ((size_t)b * pb->Tq + row0) * C + (size_t)h * HS;

    int r = 0;
    for (; r + ROW_TILE <= nrows; r += ROW_TILE) {
        int n[ROW_TILE];   /* row rr sees keys 0 .. n[rr] - 1 */
        const float *qt[ROW_TILE];
        float *ot[ROW_TILE];
        for (int rr = 0; rr < ROW_TILE; rr++) {
            n[rr] = first + r + rr + 1;
            qt[rr] = q0 + (size_t)(r + rr) * C;
            ot[rr] = o0 + (size_t)(r + rr) * C;
        }
        const int blocks = (n[ROW_TILE - 1] + K_BLOCK - 1) / K_BLOCK;
        for (int j = 0; j < blocks; j++) {
            scores_tile(scratch + (size_t)j * K_BLOCK, lds, qt, kb + (size_t)j * block_floats,
                        HS);
        }
        float l[ROW_TILE];
        for (int rr = 0; rr < ROW_TILE; rr++) {
            l[rr] = softmax_row(scratch + (size_t)rr * lds, n[rr], pb->divisor);
            zero_row(ot[rr], HS);
        }
        /* the keys all four rows see together, then each row's rest */
        values_tile(ot, scratch, lds, vb, ldv, n[0], HS);
        for (int rr = 1; rr < ROW_TILE; rr++) {
            values_row(ot[rr], scratch + (size_t)rr * lds, vb, ldv, n[0], n[rr], HS);
        }
        for (int rr = 0; rr < ROW_TILE; rr++) divide_row(ot[rr], l[rr], HS);
    }
    for (; r < nrows; r++) {
        const int n = first + r + 1;
        const float *q = q0 + (size_t)r * C;
        float *o = o0 + (size_t)r * C;
        const int blocks = (n + K_BLOCK - 1) / K_BLOCK;
        for (int j = 0; j < blocks; j++) {
            scores_row(scratch + (size_t)j * K_BLOCK, q, kb + (size_t)j * block_floats, HS);
        }
        const float l = softmax_row(scratch, n, pb->divisor);
        zero_row(o, HS);
        values_row(o, scratch, vb, ldv, 0, n, HS);
        divide_row(o, l, HS);
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
 * r of s at s + r * lds; kt is [HS][K_BLOCK]). */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(scores_tile)(
    float *s, size_t lds, const float *const *q, const float *kt, int HS)
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
        VSTORE(s + lds + c0, a1);
        VSTORE(s + lds + c0 + ATT_VEC, b1);
        VSTORE(s + 2 * lds + c0, a2);
        VSTORE(s + 2 * lds + c0 + ATT_VEC, b2);
        VSTORE(s + 3 * lds + c0, a3);
        VSTORE(s + 3 * lds + c0 + ATT_VEC, b3);
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

/* o_r += sum_{c < n} p_r[c] v_c for the 4 rows o[0..3] (p_r at p + r * lds;
 * value c at v + c * ldv). */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(values_tile)(
    float *const *o, const float *p, size_t lds, const float *v, size_t ldv, int n, int HS)
{
    float *o0 = o[0], *o1 = o[1], *o2 = o[2], *o3 = o[3];
    const float *p0 = p, *p1 = p + lds, *p2 = p + 2 * lds, *p3 = p + 3 * lds;
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
