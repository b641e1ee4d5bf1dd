/*
 * rows.h - the loop of the few-rows product (gptc_rows_fn in kernels.h),
 * shared by the files of csrc/arch/: each gives it its own dot-product
 * tile and single dot product, for each weight type, and gets a kernel.
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

#include "../kernels.h"

/* The tile: ROWS_MR x rows by ROWS_NR W rows. A file of csrc/arch/ may
 * define a wider ROWS_NR (at most GPTC_ROWS_MAX_NR) before including this,
 * to fit its register file. */
#define ROWS_MR 4
#ifndef ROWS_NR
#define ROWS_NR 2
#endif
_Static_assert(GPTC_ROWS_MAX_NR % ROWS_NR == 0, "the driver's column chunks hold whole tiles");

/* res[i * ROWS_NR + j] = x_i . w_j for x rows x + i * K and W rows j of w
 * (element type known to the kernel). */
typedef void (*rows_tile_fn)(float *res, const float *x, const void *w, int K);
/* x . w for one row of each. */
typedef float (*rows_dot_fn)(const float *x, const void *w, int K);

/* The kernel, with `tile` and `dot` compile-time constants at every call
 * site so that they are inlined; w_elem is the byte size of one weight. */
static inline __attribute__((always_inline)) void rows_body(
    float *out, const float *x, const void *w, size_t w_elem, const float *bias, int M, int K,
    int N, int n0, int n1, int accumulate, rows_tile_fn tile, rows_dot_fn dot)
{
    const char *wb = (const char *)w;
    const size_t row_bytes = (size_t)K * w_elem;
#define ROWS_STORE(m, j, value)                                        \
    do {                                                               \
        float *o_ = out + (size_t)(m) * N + (j);                       \
        float v_ = (value) + (bias != NULL ? bias[(j)] : 0.0f);        \
        *o_ = accumulate ? *o_ + v_ : v_;                              \
    } while (0)
    int n = n0;
    for (; n + ROWS_NR <= n1; n += ROWS_NR) {
        const char *wn = wb + (size_t)n * row_bytes;
        int m = 0;
        for (; m + ROWS_MR <= M; m += ROWS_MR) {
            float res[ROWS_MR * ROWS_NR];
            tile(res, x + (size_t)m * K, wn, K);
            for (int i = 0; i < ROWS_MR; i++) {
                for (int j = 0; j < ROWS_NR; j++) ROWS_STORE(m + i, n + j, res[i * ROWS_NR + j]);
            }
        }
        for (; m < M; m++) {
            for (int j = 0; j < ROWS_NR; j++) {
                ROWS_STORE(m, n + j, dot(x + (size_t)m * K, wn + j * row_bytes, K));
            }
        }
    }
    for (; n < n1; n++) {
        for (int m = 0; m < M; m++) {
            ROWS_STORE(m, n, dot(x + (size_t)m * K, wb + (size_t)n * row_bytes, K));
        }
    }
#undef ROWS_STORE
}

#endif /* GPTC_ARCH_ROWS_H */
