/*
 * rows.h - the loops of the few-rows products (gptc_rows_fn and
 * gptc_rows_int8_fn in kernels.h), shared by the files of csrc/arch/: each
 * gives them its own dot-product tile and single dot product, for each
 * weight type, and gets a kernel.
 *
 * Each output is a dot product of an x row and a W row, both contiguous.
 * A tile of ROWS_MR x rows by ROWS_NR W rows loads each weight vector once
 * for four rows; W rows are the outer loop, so a pair of W rows is read
 * from memory once and then stays in L1 while every x row meets it. With
 * a few dozen rows or fewer this streams each weight exactly once, which
 * is what a product bound by memory bandwidth needs (packing W into panels
 * first would read it twice).
 */
#ifndef GPTC_ARCH_ROWS_H
#define GPTC_ARCH_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "../kernels.h"

/* The tiles: up to ROWS_MR x rows by ROWS_NR W rows, and for a product of
 * two rows 2 by ROWS_FEW_NR W rows (two x vectors per step to share, so
 * more W rows per tile need fewer loads per multiply-add). A file of
 * csrc/arch/ may define others (widths that divide GPTC_ROWS_MAX_NR)
 * before including this, to fit its register file. A product of one row
 * takes a dot product per W row instead (rows_dot_fn). */
#define ROWS_MR 4
#ifndef ROWS_NR
#define ROWS_NR 2
#endif
#ifndef ROWS_FEW_NR
#define ROWS_FEW_NR 4
#endif
_Static_assert(GPTC_ROWS_MAX_NR % ROWS_NR == 0 && GPTC_ROWS_MAX_NR % ROWS_FEW_NR == 0,
               "the driver's column chunks hold whole tiles");
#define ROWS_WIDEST (ROWS_NR > ROWS_FEW_NR ? ROWS_NR : ROWS_FEW_NR)

/* For the x rows i < rows at x + i * K and the W rows j < wrows of w
 * (element type known to the kernel), with (rows, wrows) one of the shapes
 * rows_body asks for (2 by ROWS_FEW_NR, rows <= ROWS_MR by ROWS_NR, or
 * rows by 1):
 *   out[i * N + j] (= or +=) x_i . w_j + bias[j]      (bias may be NULL)
 * The tile stores its own results, where the shape is a constant and the
 * stores are unrolled: with a loop over a variable shape the stores took
 * about a twentieth of a 4-row product held in L2. */
typedef void (*rows_tile_fn)(float *out, int N, const float *bias, int accumulate,
                             const float *x, const void *w, int K, int rows, int wrows);
/* x . w for one row of each. */
typedef float (*rows_dot_fn)(const float *x, const void *w, int K);

/* out[i * N + j] (= or +=) value + bias[j]: how every tile stores. */
static inline __attribute__((always_inline)) void rows_store(float *out, int N, int i, int j,
                                                             float value, const float *bias,
                                                             int accumulate)
{
    float *o = out + (size_t)i * N + j;
    float v = value + (bias != NULL ? bias[j] : 0.0f);
    *o = accumulate ? *o + v : v;
}

/* The kernel. One row: a dot product per W row, each W row streamed once,
 * in order. More rows: tiles of W rows across the columns n0 .. n1 (the
 * chunks hold whole tiles; a W row short of one, only at the end of W,
 * goes alone), and within each tile the x rows ROWS_MR at a time, so that
 * a tile of W rows is read from memory once and stays in L1 while every x
 * row meets it. With a few dozen rows or fewer this streams each weight
 * exactly once, which is what a product bound by memory bandwidth needs
 * (packing W into panels first would read it twice). Each output of a
 * tile is the same chain of operations in every tile shape, so with two
 * rows or more a row gets the same bits whatever the count of rows; a
 * lone row's dot product sums in another order. w_elem is the byte size
 * of one weight. */
static inline __attribute__((always_inline)) void rows_body(
    float *out, const float *x, const void *w, size_t w_elem, const float *bias, int M, int K,
    int N, int n0, int n1, int accumulate, rows_tile_fn tile, rows_dot_fn dot)
{
    const size_t row_bytes = (size_t)K * w_elem;
    if (M == 1) {
        for (int n = n0; n < n1; n++) {
            rows_store(out, N, 0, n, dot(x, (const char *)w + (size_t)n * row_bytes, K), bias,
                       accumulate);
        }
        return;
    }
    const int nr = M == 2 ? ROWS_FEW_NR : ROWS_NR;
    const int n_whole = n0 + (n1 - n0) / nr * nr;   /* whole tiles end here */
    for (int n = n0; n < n1;) {
        const int wrows = n < n_whole ? nr : 1;
        const char *wn = (const char *)w + (size_t)n * row_bytes;
        for (int m = 0; m < M; m += ROWS_MR) {
            const int rows = M - m < ROWS_MR ? M - m : ROWS_MR;
            tile(out + (size_t)m * N + n, N, bias != NULL ? bias + n : NULL, accumulate,
                 x + (size_t)m * K, wn, K, rows, wrows);
        }
        n += wrows;
    }
}

/* A tile function's body: body(rows, wrows), a macro expanding to an
 * always-inline call with the shape as constants, unrolled for each of the
 * shapes rows_body asks for, chosen once per tile. */
#define ROWS_TILE_BY_SHAPE(body, rows, wrows)                                  \
    do {                                                                       \
        if ((wrows) == 1) {                                                    \
            switch (rows) {                                                    \
            case 1: body(1, 1); break;                                         \
            case 2: body(2, 1); break;                                         \
            case 3: body(3, 1); break;                                         \
            default: body(ROWS_MR, 1); break;                                  \
            }                                                                  \
        } else if (ROWS_FEW_NR != ROWS_NR && (wrows) == ROWS_FEW_NR) {         \
            body(2, ROWS_FEW_NR);                                              \
        } else {                                                               \
            switch (rows) {                                                    \
            case 1: body(1, ROWS_NR); break;                                   \
            case 2: body(2, ROWS_NR); break;                                   \
            case 3: body(3, ROWS_NR); break;                                   \
            default: body(ROWS_MR, ROWS_NR); break;                            \
            }                                                                  \
        }                                                                      \
    } while (0)
_Static_assert(ROWS_MR == 4, "ROWS_TILE_BY_SHAPE has a case for each count of rows");

/* ---- int8 weights (gptc_rows_int8_fn): x quantised like W ---- */

/* Row r of a view of int8 rows. */
static inline __attribute__((always_inline)) gptc_int8_rows rows_int8_at(gptc_int8_rows v,
                                                                         int r)
{
    v.values += (size_t)r * v.stride;
    v.scales += (size_t)r * v.scale_stride;
    return v;
}

/* The int8 tiles, their own shapes (a file may define others before
 * including this, at most GPTC_ROWS_MAX_NR W rows): up to ROWS_MR x rows
 * by ROWS_INT8_NR W rows, and for a product of one or two rows (a decode
 * step) up to 2 x rows by ROWS_INT8_FEW_NR W rows. The integer steps hold
 * more registers than the float ones, and with one x row each W row is
 * one chain of multiply-adds, so a decode step wants as many W rows per
 * tile as the registers hold. */
#ifndef ROWS_INT8_NR
#define ROWS_INT8_NR 2
#endif
#ifndef ROWS_INT8_FEW_NR
#define ROWS_INT8_FEW_NR ROWS_INT8_NR
#endif
_Static_assert(GPTC_ROWS_MAX_NR % ROWS_INT8_NR == 0 && GPTC_ROWS_MAX_NR % ROWS_INT8_FEW_NR == 0,
               "the driver's column chunks hold whole tiles");
_Static_assert(ROWS_INT8_FEW_NR >= ROWS_INT8_NR, "a tile's results are ROWS_INT8_FEW_NR apart");

/* How far ahead of its loads a few-rows kernel asks for W: a decode step
 * or a few-token forward streams every weight once, and the hardware
 * prefetchers alone leave the loads waiting on memory. Two requests per
 * line: into L1 some latency times bandwidth ahead, and into L2 four times
 * as far, so that the first finds its line on its way. Measured first on
 * the int8 decoder, one row, on a 2-core Sapphire Rapids VM: the L1 request
 * alone took one thread from 66 to 92 tokens/s; adding the L2 one, 73 -> 87
 * steps/s on one thread and 133 -> 160 on two. The same requests in the
 * float32 and bfloat16 kernels (rows_simd.h) took the book's (2, 4) batch
 * through GPT-2 124M from 25.5-28.8 to 18.3-18.5 ms (avx512_vnni) and from
 * 35.5-36.3 to 19.6-20.0 ms (avx2), medians of 60 calls on 2 threads on a
 * 2-core Zen 5 class EPYC VM. The NEON kernels ask as far ahead, untimed
 * (no ARM64 machine has run them, only qemu). */
#define ROWS_PREFETCH_BYTES 3072
#define ROWS_PREFETCH_L2_BYTES (4 * ROWS_PREFETCH_BYTES)

/* Both requests for the W bytes that far past p. The addresses are
 * computed as integers: near the end of W they lie past it, where no
 * pointer may point, and a prefetch there is harmless (it never faults). */
static inline __attribute__((always_inline)) void rows_w_prefetch(const void *p)
{
    const uintptr_t at = (uintptr_t)p;
    __builtin_prefetch((const void *)(at + ROWS_PREFETCH_BYTES));
    __builtin_prefetch((const void *)(at + ROWS_PREFETCH_L2_BYTES), 0, 2);
}

/* For W rows n0 .. n1 (whole tiles of wrows), the tiles of `rows` x rows
 * from x: out[i * N + n] (= or +=) x_i . w_n + bias[n], with rows <= 2 and
 * wrows ROWS_INT8_FEW_NR, or rows <= ROWS_MR and wrows ROWS_INT8_NR or 1. */
typedef void (*rows_int8_tiles_fn)(float *out, gptc_int8_rows x, gptc_int8_rows w,
                                   const float *bias, int N, int accumulate, int rows,
                                   int wrows, int K, int n0, int n1);

/* The loop of a rows_int8_tiles_fn over its tiles, each computed by
 * body(res, x, w, rows, wrows, K, dot) into res[i * ROWS_INT8_FEW_NR + j]
 * and stored. */
#define ROWS_INT8_TILES(body, dot, out, x, w, bias, N, accumulate, rows, wrows, K, n0, n1)   \
    do {                                                                                      \
        for (int n_ = (n0); n_ < (n1); n_ += (wrows)) {                                      \
            float res_[ROWS_MR * ROWS_INT8_FEW_NR];                                           \
            body(res_, x, rows_int8_at(w, n_), rows, wrows, K, dot);                          \
            for (int i_ = 0; i_ < (rows); i_++) {                                             \
                for (int j_ = 0; j_ < (wrows); j_++) {                                        \
                    rows_store(out, N, i_, n_ + j_, res_[i_ * ROWS_INT8_FEW_NR + j_], bias,   \
                               accumulate);                                                   \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    } while (0)

/* That loop with the runtime shape (rows, wrows) as compile-time
 * constants: an always-inline body is unrolled for each shape, and the
 * shape is chosen once per run of tiles rather than once per tile (a
 * decode step's tiles are short: the choice and the call took about a
 * quarter of the time). */
#define ROWS_INT8_ROWS(body, dot, out, x, w, bias, N, acc, rows, wrows, K, n0, n1)        \
    do {                                                                                  \
        switch (rows) {                                                                   \
        case 1: ROWS_INT8_TILES(body, dot, out, x, w, bias, N, acc, 1, wrows, K, n0, n1); break; \
        case 2: ROWS_INT8_TILES(body, dot, out, x, w, bias, N, acc, 2, wrows, K, n0, n1); break; \
        case 3: ROWS_INT8_TILES(body, dot, out, x, w, bias, N, acc, 3, wrows, K, n0, n1); break; \
        default:                                                                          \
            ROWS_INT8_TILES(body, dot, out, x, w, bias, N, acc, ROWS_MR, wrows, K, n0, n1); \
            break;                                                                        \
        }                                                                                 \
    } while (0)
#define ROWS_INT8_BY_SHAPE(body, dot, out, x, w, bias, N, acc, rows, wrows, K, n0, n1)    \
    do {                                                                                  \
        if (ROWS_INT8_FEW_NR != ROWS_INT8_NR && (wrows) == ROWS_INT8_FEW_NR) {            \
            if ((rows) == 1) {                                                            \
                ROWS_INT8_TILES(body, dot, out, x, w, bias, N, acc, 1, ROWS_INT8_FEW_NR, K, n0, n1); \
            } else {                                                                      \
                ROWS_INT8_TILES(body, dot, out, x, w, bias, N, acc, 2, ROWS_INT8_FEW_NR, K, n0, n1); \
            }                                                                             \
        } else if ((wrows) == ROWS_INT8_NR) {                                             \
            ROWS_INT8_ROWS(body, dot, out, x, w, bias, N, acc, rows, ROWS_INT8_NR, K, n0, n1); \
        } else {                                                                          \
            ROWS_INT8_ROWS(body, dot, out, x, w, bias, N, acc, rows, 1, K, n0, n1);       \
        }                                                                                 \
    } while (0)
_Static_assert(ROWS_MR == 4, "ROWS_INT8_ROWS has a case for each count of rows");

/* The int8 kernel: a tile takes any number of rows up to its height, so a
 * decode step (one row) still loads each x block once for a whole tile of
 * W rows; W rows short of a tile (only at the end of W: the chunks hold
 * whole tiles) go one at a time. Up to ROWS_MR rows are one run of tiles
 * across the columns; with more, the W rows of each tile stay in L1 while
 * each group of x rows meets them. Each output is the same chain of
 * operations in every tile shape, so a row computed alone equals the same
 * row computed among others. */
static inline __attribute__((always_inline)) void rows_int8_body(
    float *out, gptc_int8_rows x, gptc_int8_rows w, const float *bias, int M, int K, int N,
    int n0, int n1, int accumulate, rows_int8_tiles_fn tiles)
{
    const int nr = M <= 2 ? ROWS_INT8_FEW_NR : ROWS_INT8_NR;
    const int n_whole = n0 + (n1 - n0) / nr * nr;   /* whole tiles end here */
    if (M <= ROWS_MR) {
        tiles(out, x, w, bias, N, accumulate, M, nr, K, n0, n_whole);
        tiles(out, x, w, bias, N, accumulate, M, 1, K, n_whole, n1);
        return;
    }
    for (int n = n0; n < n1;) {
        const int wrows = n < n_whole ? nr : 1;
        for (int m = 0; m < M; m += ROWS_MR) {
            const int rows = M - m < ROWS_MR ? M - m : ROWS_MR;
            tiles(out + (size_t)m * N, rows_int8_at(x, m), w, bias, N, accumulate, rows, wrows,
                  K, n, n + wrows);
        }
        n += wrows;
    }
}

#endif /* GPTC_ARCH_ROWS_H */
