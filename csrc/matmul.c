/*
 * matmul.c - every matrix product of the model: the Linear layer
 *   out[M, N] = x[M, K] . W[N, K]^T + bias[N]
 * and its gradients, which are products of the same three matrices.
 *
 * Two algorithms, chosen by the number of rows M:
 *
 *  - Many rows (a prompt, a batch, training): a cache-blocked matrix
 *    multiply with packed panels, the structure of BLIS and OpenBLAS. The
 *    operands are first copied ("packed") into the exact order a small
 *    register-tiled kernel reads them: MR rows of A interleaved, NR columns
 *    of B interleaved, KC steps of the reduction at a time. The kernel then
 *    keeps an MR x NR tile of the result in vector registers for the whole
 *    KC steps, doing MR * NR multiply-adds for every MR + NR values it
 *    loads, and streams both panels from cache in order. Packing also
 *    absorbs the layouts: W is stored one output feature per row (PyTorch's
 *    layout), the gradients read dout transposed, a bfloat16 weight is
 *    widened, and after packing every case is the same kernel.
 *
 *  - A few rows (one-token decode steps, the book's small batches): each
 *    weight is used by a few rows only, so there is nothing to block for,
 *    and packing W would read it twice. Each output is a dot product of an
 *    x row and a W row (csrc/arch/rows.h), every weight read once.
 *
 * This file is the driver of both: blocking, threading, epilogues. The
 * register tiles, packing transposes and dot products are the kernels of
 * the selected instruction set (kernels.h, csrc/arch/).
 */
#include "gptc.h"
#include "internal.h"
#include "kernels.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================
 * The blocked, packed matrix multiply.
 *
 *   C[i, j] (= or +=) sum_p A(i, p) * B(p, j)     i < M, j < N, p < K
 *
 * A and B are strided views, so one routine serves the forward and both
 * gradients without transposed copies:
 *   forward   out   = x . W^T      A(i, p) = x[i, p]      B(p, j) = W[j, p]
 *   backward  dinp += dout . W     A(i, p) = dout[i, p]   B(p, j) = W[p, j]
 *             dW   += dout^T . x   A(i, p) = dout[p, i]   B(p, j) = x[p, j]
 *
 * Loop nest, outermost first (the sizes are for GPT-2's shapes):
 *   tasks  the N columns cut into chunks of a few NR panels, taken by the
 *          threads as they come free and smaller towards the end
 *          (next_task), so a busy vCPU simply takes fewer;
 *   p0     KC steps of the reduction: the task packs its KC x chunk slice
 *          of B (at most KC x NC_MAX floats, in L2);
 *   i0     MC rows at a time: that MC x KC block of the packed A, shared
 *          by all tasks and packed once up front, stays in L2;
 *   jr/ir  NR-wide B panels, then MR-tall A panels: the KC x NR panel of B
 *          stays in L1 while every A panel of the block meets it.
 * Every C element is summed by one task in a fixed order (each KC block's
 * sum from zero, then added to C), so the result does not depend on the
 * number of threads.
 * ===================================================================== */
#define KC 256          /* reduction steps per packed block (a multiple of GPTC_INT8_BLOCK) */
#define MC 192          /* rows of A per L2 block (a multiple of every MR) */
#define NC_MAX 512      /* widest column chunk a task packs */
#define PACK_ALIGN 64   /* packed panels start on a cache line */

/* Element (r, c) of a strided matrix view is p[r * rs + c * cs], of type
 * dtype: float32, or bfloat16 or int8 for the weight of a forward (B),
 * whose int8 block scales are then scales[c * scale_stride + r / 32]. */
typedef struct {
    const void *p;
    ptrdiff_t rs, cs;
    gptc_dtype dtype;
    const uint16_t *scales;
    ptrdiff_t scale_stride;
} matrix_view;

/* Bytes of one element of a view. */
static size_t elem_bytes(gptc_dtype dtype)
{
    return dtype == GPTC_BFLOAT16 ? sizeof(uint16_t)
           : dtype == GPTC_INT8   ? sizeof(int8_t) : sizeof(float);
}

static inline const float *f32_at(matrix_view v, ptrdiff_t r, ptrdiff_t c)
{
    return (const float *)v.p + r * v.rs + c * v.cs;
}

/* What happens to C after the product: nothing, or + bias[j] and then
 * optionally GELU, applied to each finished block while it is in cache. */
typedef struct {
    const float *bias;   /* N values or NULL */
    int gelu;
} epilogue;

/* Pack rows [i0, i0 + rows) of A, all K columns, as one MR panel:
 * ap[p * mr + i] = A(i0 + i, p); rows past the end are zeros, so the tile
 * kernel never needs a ragged case. */
static void pack_a_panel(float *ap, matrix_view a, int i0, int rows, int K,
                         const gptc_kernels *kern)
{
    const int mr = kern->mr;
    if (a.cs == 1) {
        kern->pack_f32(ap, mr, f32_at(a, i0, 0), a.rs, rows, mr, K);
        return;
    }
    for (int p = 0; p < K; p++) {
        const float *src = f32_at(a, i0, p);
        for (int i = 0; i < rows; i++) ap[(size_t)p * mr + i] = src[i * a.rs];
        for (int i = rows; i < mr; i++) ap[(size_t)p * mr + i] = 0.0f;
    }
}

/* Pack columns [j0, j0 + cols) of B over reduction steps [p0, p0 + kc) as
 * one NR panel: bp[p * nr + j] = B(p0 + p, j0 + j), zeros past the end. */
static void pack_b_panel(float *bp, matrix_view b, int p0, int kc, int j0, int cols,
                         const gptc_kernels *kern)
{
    const int nr = kern->nr, tw = kern->pack_width;
    if (b.rs == 1) {
        /* W rows in the forward: the panel is nr / tw transposes side by side */
        const size_t elem = elem_bytes(b.dtype);
        const gptc_pack_fn pack = b.dtype == GPTC_BFLOAT16 ? kern->pack_bf16 : kern->pack_f32;
        for (int h = 0; h < nr; h += tw) {
            int n = cols - h < 0 ? 0 : (cols - h < tw ? cols - h : tw);
            const char *src = (const char *)b.p + ((size_t)(j0 + h) * b.cs + p0) * elem;
            if (b.dtype == GPTC_INT8) {
                /* p0 is a multiple of KC, so the panel starts on a block */
                gptc_int8_rows rows = {(const int8_t *)src,
                                       b.scales + (size_t)(j0 + h) * b.scale_stride +
                                           p0 / GPTC_INT8_BLOCK,
                                       b.cs, b.scale_stride};
                kern->pack_int8(bp + h, nr, rows, n, tw, kc);
            } else {
                pack(bp + h, nr, src, b.cs, n, tw, kc);
            }
        }
        return;
    }
    if (b.cs == 1) {
        for (int p = 0; p < kc; p++) {
            const float *src = f32_at(b, p0 + p, j0);
            float *dst = bp + (size_t)p * nr;
            memcpy(dst, src, (size_t)cols * sizeof(float));
            for (int j = cols; j < nr; j++) dst[j] = 0.0f;
        }
        return;
    }
    for (int p = 0; p < kc; p++) {
        for (int j = 0; j < nr; j++) {
            bp[(size_t)p * nr + j] = j < cols ? *f32_at(b, p0 + p, j0 + j) : 0.0f;
        }
    }
}

/* One product of the shared A: C[M, N] (= or +=) A . B, then the epilogue. */
typedef struct {
    matrix_view b;
    float *c;
    ptrdiff_t ldc;
    int N, accumulate;
    epilogue ep;
} gemm_part;

typedef struct {
    int M, K;
    const gptc_kernels *kern;
    const float *apack;   /* every MR panel of A, each over all K */
} gemm_problem;

/* Bias, then GELU, on rows [i0, i1) and columns [j0, j1) of C. */
static void apply_epilogue(const gemm_problem *g, const gemm_part *part, int i0, int i1, int j0,
                           int j1)
{
    if (part->ep.bias == NULL && !part->ep.gelu) return;
    for (int i = i0; i < i1; i++) {
        float *row = part->c + i * part->ldc;
        if (part->ep.bias != NULL) {
            for (int j = j0; j < j1; j++) row[j] += part->ep.bias[j];
        }
        if (part->ep.gelu) g->kern->gelu(row + j0, row + j0, (size_t)(j1 - j0));
    }
}

/* The cache lines of W that one B panel packs, when B is W's rows (b.rs
 * == 1, a forward): `rows` W rows, `stride` bytes apart, the first row's
 * lines from address `first`, `per_row` lines per row. Addresses are
 * integers: the line holding a row's first byte may begin before W. */
typedef struct {
    uintptr_t first;
    ptrdiff_t stride;
    int rows, per_row;
} w_lines;

static w_lines panel_w_lines(matrix_view b, int p0, int kc, int j, int cols)
{
    const size_t elem = elem_bytes(b.dtype);
    const uintptr_t start = (uintptr_t)b.p + ((size_t)j * b.cs + (size_t)p0) * elem;
    const uintptr_t line = start / PACK_ALIGN * PACK_ALIGN;
    const int per_row = (int)((start + (size_t)kc * elem - 1) / PACK_ALIGN -
                              start / PACK_ALIGN + 1);
    return (w_lines){line, (ptrdiff_t)(b.cs * elem), cols, per_row};
}

/* Ask for lines [from, to) of a panel's lines, counted row by row. */
static void prefetch_w_lines(w_lines w, int from, int to)
{
    for (int l = from; l < to; l++) {
        const int row = l / w.per_row;
        __builtin_prefetch((const void *)(w.first + (uintptr_t)(row * w.stride) +
                                          (uintptr_t)(l - row * w.per_row) * PACK_ALIGN));
    }
}

/* One task: every row of one part's C, columns [j0, j1). bpack holds KC x
 * (j1 - j0) floats, rounded up to whole panels.
 *
 * Each B panel is packed just before the first rows of A meet it, and while
 * they do, the W lines of the next panel are asked for a few per tile: a
 * panel's W rows are short runs (a KC-step row of W is 16 lines), too short
 * for the hardware prefetchers, so packing them waited on memory. Packing
 * B all at once before the tiles took 9% of a one-thread [256, 768] x
 * [768, 2304] product (1.0 of 11.3 ms) on this Zen 4 class EPYC VM. */
static void gemm_task(const gemm_problem *g, const gemm_part *part, int j0, int j1,
                      float *bpack)
{
    const int mr = g->kern->mr, nr = g->kern->nr, M = g->M, K = g->K;
    const ptrdiff_t ldc = part->ldc;
    const int from_w_rows = part->b.rs == 1;
    float tmp[GPTC_MAX_MR * GPTC_MAX_NR] __attribute__((aligned(PACK_ALIGN)));
    for (int p0 = 0; p0 < K; p0 += KC) {
        const int kc = K - p0 < KC ? K - p0 : KC;
        const int add = part->accumulate || p0 > 0;
        const int last = p0 + kc == K;
        for (int i0 = 0; i0 < M; i0 += MC) {
            const int i1 = M - i0 < MC ? M : i0 + MC;
            const int tiles = (i1 - i0 + mr - 1) / mr;
            for (int j = j0; j < j1; j += nr) {
                const int cols = j1 - j < nr ? j1 - j : nr;
                float *bp = bpack + (size_t)(j - j0) * kc;
                /* the first rows pack the panel and ask for the next one's
                 * W: (j + nr, p0), or the task's first panel of the next
                 * reduction block */
                w_lines ahead = {0, 0, 0, 0};
                if (i0 == 0) {
                    pack_b_panel(bp, part->b, p0, kc, j, cols, g->kern);
                    if (from_w_rows && j + nr < j1) {
                        ahead = panel_w_lines(part->b, p0, kc, j + nr,
                                              j1 - j - nr < nr ? j1 - j - nr : nr);
                    } else if (from_w_rows && !last) {
                        const int kc_next = K - p0 - kc < KC ? K - p0 - kc : KC;
                        ahead = panel_w_lines(part->b, p0 + kc, kc_next, j0,
                                              j1 - j0 < nr ? j1 - j0 : nr);
                    }
                }
                const int ahead_lines = ahead.rows * ahead.per_row;
                for (int i = i0, t = 0; i < i1; i += mr, t++) {
                    const int rows = i1 - i < mr ? i1 - i : mr;
                    const float *ap = g->apack + (size_t)i * K + (size_t)p0 * mr;
                    float *c = part->c + i * ldc + j;
                    prefetch_w_lines(ahead, t * ahead_lines / tiles,
                                     (t + 1) * ahead_lines / tiles);
                    if (rows == mr && cols == nr) {
                        g->kern->tile(kc, ap, bp, c, ldc, add);
                        continue;
                    }
                    /* a ragged edge: compute the full tile aside, keep its
                     * valid part */
                    g->kern->tile(kc, ap, bp, tmp, nr, 0);
                    for (int r = 0; r < rows; r++) {
                        float *cr = c + r * ldc;
                        for (int s = 0; s < cols; s++) {
                            cr[s] = add ? cr[s] + tmp[r * nr + s] : tmp[r * nr + s];
                        }
                    }
                }
            }
            if (last) apply_epilogue(g, part, i0, i1, j0, j1);
        }
    }
    if (K == 0) {
        /* an empty reduction: C = 0 (or unchanged), then the epilogue */
        if (!part->accumulate) {
            for (int i = 0; i < M; i++) {
                memset(part->c + i * ldc + j0, 0, (size_t)(j1 - j0) * sizeof(float));
            }
        }
        apply_epilogue(g, part, 0, M, j0, j1);
    }
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

#define GEMM_MAX_PARTS 4   /* per parallel loop; more take several */

/* How gemm shares out the work of its parts. The parts' NR panels are
 * numbered one after another (part i's end before part_end[i]), so the
 * tasks of all the parts share one loop: A is packed once, and the
 * threads wait for each other once. */
typedef struct {
    int count, part_end[GEMM_MAX_PARTS];
    int nthreads;
    int max_panels;   /* the widest task */
} gemm_plan;

/* The next task: columns [*j0, *j1) of part *part, or 0 when none are left.
 * Guided self-scheduling: each task takes a 1 / (2 threads) share of the
 * panels left, at most max_panels and never past its part's end, so the
 * tasks shrink towards the end and the threads finish together even when
 * one core runs slower. On this 2-vCPU VM one core often did run 10%
 * slower than the other for seconds at a time; with eight equal tasks the
 * faster thread then waited 600-900 us of a 5.4 ms [256, 768] x
 * [768, 2304] product at the final barrier. */
static int next_task(atomic_int *next, const gemm_plan *plan, const gemm_part *parts, int nr,
                     int *part, int *j0, int *j1)
{
    const int *end = plan->part_end;
    int start = atomic_load(next), take, i;
    do {
        const int left = end[plan->count - 1] - start;
        if (left <= 0) return 0;
        take = (left + 2 * plan->nthreads - 1) / (2 * plan->nthreads);
        if (take > plan->max_panels) take = plan->max_panels;
        for (i = 0; start >= end[i]; i++) continue;
        if (start + take > end[i]) take = end[i] - start;
    } while (!atomic_compare_exchange_weak(next, &start, start + take));
    const int first = start - (i > 0 ? end[i - 1] : 0);
    *part = i;
    *j0 = first * nr;
    *j1 = (first + take) * nr < parts[i].N ? (first + take) * nr : parts[i].N;
    return 1;
}

/* Floats of the packed B of one thread's widest task. */
static size_t b_pack_floats(const gemm_plan *plan, int nr)
{
    return round_up((size_t)KC * plan->max_panels * nr, PACK_ALIGN / sizeof(float));
}

/* One band of rows and slab of reduction steps of the parts (see gemm
 * below), with buf sized by gemm. */
static void gemm_band(int M, int K, matrix_view a, const gemm_part *parts,
                      const gemm_plan *plan, const gptc_kernels *kern, float *buf)
{
    const int mr = kern->mr, nr = kern->nr;
    const size_t panels = (size_t)(M + mr - 1) / mr;
    const size_t a_floats = round_up(panels * mr * (size_t)K, PACK_ALIGN / sizeof(float));
    const gemm_problem g = {M, K, kern, buf};
    const long long npanels = (long long)panels;
    atomic_int next_panel = 0;
#pragma omp parallel num_threads(plan->nthreads) if (plan->nthreads > 1)
    {
#pragma omp for schedule(static)
        for (long long q = 0; q < npanels; q++) {
            int i0 = (int)q * mr;
            int rows = M - i0 < mr ? M - i0 : mr;
            pack_a_panel(buf + (size_t)q * mr * K, a, i0, rows, K, kern);
        }
        /* the implicit barrier: all of A is packed before any task starts */
        float *bpack = buf + a_floats + b_pack_floats(plan, nr) * THREAD_INDEX();
        int part, j0, j1;
        while (next_task(&next_panel, plan, parts, nr, &part, &j0, &j1)) {
            gemm_task(&g, &parts[part], j0, j1, bpack);
        }
    }
}

/* A taller than BAND rows is done a band at a time, so the packed copy of
 * A stays a few MB (a (1, 1024) forward, or the out_head gradient with
 * 50257 rows, would otherwise copy all of A); each band packs B again,
 * which is little next to the band's arithmetic. */
#define BAND (4 * MC)
/* Reduction steps per slab (a multiple of KC, so slabs split K exactly where
 * the kc blocks do). */
#define KSLAB (16 * KC)

/* B from reduction step p0 on (p0 a multiple of KC, hence of the int8 block). */
static matrix_view b_from_step(matrix_view b, int p0)
{
    const size_t elem = elem_bytes(b.dtype);
    b.p = (const char *)b.p + (ptrdiff_t)p0 * b.rs * (ptrdiff_t)elem;
    if (b.scales != NULL) b.scales += p0 / GPTC_INT8_BLOCK;
    return b;
}

/* For each of `count` parts (at most GEMM_MAX_PARTS): C = A[M, K] . B
 * (+ epilogue), or C += A . B when the part accumulates. Returns 0, or -1
 * with every C unchanged if the packing buffers could not be allocated.
 *
 * A reduction longer than KSLAB is done a slab at a time too (the later
 * slabs accumulate, the epilogue comes with the last), so the packed band
 * stays at most BAND x KSLAB floats (12 MB) whatever K is: the out_head's
 * input gradient (K = 50257) would otherwise pack 100 MB afresh per call,
 * memory the C library maps anew each time and the kernel faults in page
 * by page. The kc blocks and their order are the same, so is the result. */
static int gemm(int M, int K, matrix_view a, const gemm_part *parts, int count,
                const gptc_kernels *kern)
{
    const int mr = kern->mr, nr = kern->nr;
    gemm_plan plan = {.count = count};
    int col_panels = 0;
    double work = 0.0;
    for (int i = 0; i < count; i++) {
        col_panels += (parts[i].N + nr - 1) / nr;
        plan.part_end[i] = col_panels;
        work += (double)M * parts[i].N * K;
    }
    if (M == 0 || col_panels == 0) return 0;
    plan.nthreads = work < GPTC_PARALLEL_MIN_WORK ? 1 : gptc_get_num_threads();
    if (col_panels < plan.nthreads) plan.nthreads = col_panels;
    /* about a quarter of a thread's share of the columns, at least one
     * panel, at most NC_MAX columns */
    plan.max_panels = (col_panels + 4 * plan.nthreads - 1) / (4 * plan.nthreads);
    if (plan.max_panels > NC_MAX / nr) plan.max_panels = NC_MAX / nr;

    /* one buffer for every band and slab, allocated before any C changes */
    const int band_rows = M < BAND ? M : BAND, slab_steps = K < KSLAB ? K : KSLAB;
    const size_t a_floats = round_up((size_t)(band_rows + mr - 1) / mr * mr * (size_t)slab_steps,
                                     PACK_ALIGN / sizeof(float));
    float *buf = aligned_alloc(PACK_ALIGN, (a_floats + b_pack_floats(&plan, nr) * plan.nthreads) *
                                               sizeof(float));
    if (buf == NULL) return -1;
    for (int i0 = 0; i0 < M; i0 += BAND) {
        const int rows = M - i0 < BAND ? M - i0 : BAND;
        int p0 = 0;
        do {
            const int steps = K - p0 < KSLAB ? K - p0 : KSLAB;
            const int last = p0 + steps == K;
            matrix_view band = a;
            band.p = f32_at(a, i0, p0);
            gemm_part slab[GEMM_MAX_PARTS];
            for (int i = 0; i < count; i++) {
                const gemm_part *part = &parts[i];
                slab[i] = (gemm_part){b_from_step(part->b, p0), part->c + i0 * part->ldc,
                                      part->ldc, part->N, part->accumulate || p0 > 0,
                                      last ? part->ep : (epilogue){NULL, 0}};
            }
            gemm_band(rows, steps, band, slab, &plan, kern, buf);
            p0 += steps;
        } while (p0 < K);
    }
    free(buf);
    return 0;
}

/* ========================================================================
 * The public functions.
 * ===================================================================== */

size_t gptc_gemm_serial_floats(int M, int N, int K)
{
    /* sized for the largest tile of any kernel set, so a buffer sized
     * before a switch of gptc_set_isa still fits */
    size_t panels = (size_t)(M + GPTC_MAX_MR - 1) / GPTC_MAX_MR + 1;
    size_t a_floats = round_up(panels * GPTC_MAX_MR * (size_t)K, PACK_ALIGN / sizeof(float));
    size_t b_floats = round_up((size_t)KC * round_up((size_t)N, GPTC_MAX_NR),
                               PACK_ALIGN / sizeof(float));
    /* plus the slack to start the panels on a cache line */
    return a_floats + b_floats + PACK_ALIGN / sizeof(float);
}

void gptc_gemm_serial(int M, int N, int K, const float *a, ptrdiff_t a_rs, ptrdiff_t a_cs,
                      const float *b, ptrdiff_t b_rs, ptrdiff_t b_cs, float *c, ptrdiff_t ldc,
                      int accumulate, float *work)
{
    const gptc_kernels *kern = gptc_active_kernels();
    if (M == 0 || N == 0) return;
    uintptr_t addr = (uintptr_t)work;
    float *apack = work + (round_up(addr, PACK_ALIGN) - addr) / sizeof(float);
    size_t panels = (size_t)(M + kern->mr - 1) / kern->mr;
    float *bpack = apack + round_up(panels * kern->mr * (size_t)K, PACK_ALIGN / sizeof(float));
    matrix_view av = {a, a_rs, a_cs, GPTC_FLOAT32, NULL, 0};
    matrix_view bv = {b, b_rs, b_cs, GPTC_FLOAT32, NULL, 0};
    const gemm_problem g = {M, K, kern, apack};
    const gemm_part part = {bv, c, ldc, N, accumulate, {NULL, 0}};
    for (size_t q = 0; q < panels; q++) {
        int i0 = (int)q * kern->mr;
        int rows = M - i0 < kern->mr ? M - i0 : kern->mr;
        pack_a_panel(apack + q * kern->mr * K, av, i0, rows, K, kern);
    }
    gemm_task(&g, &part, 0, N, bpack);
}

/* One few-rows product: x float32 with a float32 or bfloat16 weight, or x
 * quantised with an int8 weight; into out[M, N] (+ bias, then GELU or
 * accumulated as the flags say). */
typedef struct {
    gptc_rows_fn rows;        /* NULL for int8 */
    const float *x;
    const void *w;
    gptc_rows_int8_fn rows_int8;
    gptc_int8_rows xq, wq;
    float *out;
    const float *bias;
    int N, accumulate, gelu;
} rows_product;

/* The columns of a product per chunk: N / (4 threads), at least 16,
 * rounded up to whole tiles of every width. */
static int rows_chunk(int N, int nthreads)
{
    int chunk = N / (nthreads * 4);
    if (chunk < 16) chunk = 16;
    return (chunk + GPTC_ROWS_MAX_NR - 1) / GPTC_ROWS_MAX_NR * GPTC_ROWS_MAX_NR;
}

#define ROWS_MAX_PRODUCTS 4   /* per loop; a larger group takes several */

/* The few-rows path splits each product's output columns into chunks of W
 * rows and hands out the chunks of all the products of a group (that share
 * x: attention's query, key and value projections) in one dynamically
 * scheduled loop, so a slower core simply takes fewer chunks. A decode
 * step's products are short next to the cost of starting a parallel loop
 * and of the memory stream each chunk starts, so fewer loops and fewer
 * chunks are faster: 4 chunks per thread instead of 8 took an int8 decode
 * step of GPT-2 124M from 4.2-4.4 to 3.8-3.85 ms and a bfloat16 one from
 * 6.3-6.35 to 5.1-6.2 ms (2 threads, 2-core Zen 5 class EPYC VM,
 * 2026-12-02; 2 per thread was no better). Each output is computed as it
 * would be alone. Each chunk is finished (GELU included) by the thread
 * that computed it. */
static void rows_in_chunks(const rows_product *p, int count, int M, int K,
                           const gptc_kernels *kern)
{
    const int nthreads = gptc_get_num_threads();
    int first[ROWS_MAX_PRODUCTS + 1] = {0};   /* product i's chunks: first[i] .. first[i + 1] - 1 */
    double work OMP_CLAUSE_ONLY = 0.0;
    for (int i = 0; i < count; i++) {
        const int chunk = rows_chunk(p[i].N, nthreads);
        first[i + 1] = first[i] + (p[i].N + chunk - 1) / chunk;
        work += (double)M * K * p[i].N;
    }
    const int nchunks = first[count];
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) \
    if (nthreads > 1 && work >= GPTC_PARALLEL_MIN_WORK && nchunks > 1)
    for (int c = 0; c < nchunks; c++) {
        int i = 0;
        while (c >= first[i + 1]) i++;
        const rows_product *q = &p[i];
        const int chunk = rows_chunk(q->N, nthreads);
        const int n0 = (c - first[i]) * chunk, n1 = n0 + chunk < q->N ? n0 + chunk : q->N;
        if (q->rows != NULL) {
            q->rows(q->out, q->x, q->w, q->bias, M, K, q->N, n0, n1, q->accumulate);
        } else {
            q->rows_int8(q->out, q->xq, q->wq, q->bias, M, K, q->N, n0, n1, q->accumulate);
        }
        if (q->gelu) {
            for (int m = 0; m < M; m++) {
                float *o = q->out + (size_t)m * q->N + n0;
                kern->gelu(o, o, (size_t)(n1 - n0));
            }
        }
    }
}

static int part_accumulates(const gptc_linear_part *part)
{
    return (part->flags & GPTC_LINEAR_ACCUMULATE) != 0;
}

static int part_gelu(const gptc_linear_part *part)
{
    return (part->flags & GPTC_LINEAR_GELU) != 0;
}

/* The quantised x of the int8 few-rows path lives on the stack, so the
 * path needs no allocation and cannot fail: x is taken Q8_ROWS rows and
 * Q8_SEGMENT values (a multiple of the block) at a time, the segments of
 * one output summed into it in order, each piece quantised once for every
 * int8 product of the group. A decode step (fewer rows than the table's
 * packed_min_rows, K up to 4096) is one piece. */
#define Q8_ROWS 8
#define Q8_SEGMENT 4096

static void linear_rows_int8(const gptc_linear_part *parts, int count, const float *x, int M,
                             int K, const gptc_kernels *kern)
{
    int8_t xq[Q8_ROWS * Q8_SEGMENT];
    uint16_t xs[Q8_ROWS * (Q8_SEGMENT / GPTC_INT8_BLOCK)];
    const int nb = gptc_int8_blocks(K);
    for (int m0 = 0; m0 < M; m0 += Q8_ROWS) {
        const int rows = M - m0 < Q8_ROWS ? M - m0 : Q8_ROWS;
        for (int k0 = 0; k0 < K || k0 == 0; k0 += Q8_SEGMENT) {
            const int len = K - k0 < Q8_SEGMENT ? K - k0 : Q8_SEGMENT;
            const int last = k0 + len >= K;
            gptc_quantize_int8(xq, xs, x + (size_t)m0 * K + k0, (size_t)rows, len, K);
            rows_product p[ROWS_MAX_PRODUCTS];
            int n = 0;
            for (int i = 0; i < count; i++) {
                const gptc_linear_part *part = &parts[i];
                if (part->weight.dtype != GPTC_INT8) continue;
                p[n++] = (rows_product){
                    .rows_int8 = kern->rows_int8,
                    .xq = {xq, xs, len, gptc_int8_blocks(len)},
                    .wq = {(const int8_t *)part->weight.data + k0,
                           part->weight.scales + k0 / GPTC_INT8_BLOCK, K, nb},
                    .out = part->out + (size_t)m0 * part->N,
                    .bias = k0 == 0 ? part->bias : NULL,
                    .N = part->N,
                    .accumulate = part_accumulates(part) || k0 > 0,
                    .gelu = part_gelu(part) && last,
                };
            }
            rows_in_chunks(p, n, rows, len, kern);
        }
    }
}

/* The few-rows products of a group of at most ROWS_MAX_PRODUCTS: the
 * float32 and bfloat16 ones in one loop, the int8 ones in another (per
 * piece of x). */
static void linear_rows(const gptc_linear_part *parts, int count, const float *x, int M, int K,
                        const gptc_kernels *kern)
{
    rows_product p[ROWS_MAX_PRODUCTS];
    int n = 0, int8 = 0;
    for (int i = 0; i < count; i++) {
        const gptc_linear_part *part = &parts[i];
        if (part->weight.dtype == GPTC_INT8) {
            int8 = 1;
            continue;
        }
        p[n++] = (rows_product){
            .rows = part->weight.dtype == GPTC_BFLOAT16 ? kern->rows_bf16 : kern->rows_f32,
            .x = x,
            .w = part->weight.data,
            .out = part->out,
            .bias = part->bias,
            .N = part->N,
            .accumulate = part_accumulates(part),
            .gelu = part_gelu(part),
        };
    }
    if (n > 0) rows_in_chunks(p, n, M, K, kern);
    if (int8) linear_rows_int8(parts, count, x, M, K, kern);
}

void gptc_linear_forward_parts(const gptc_linear_part *parts, int count, const float *x, int M,
                               int K)
{
    const gptc_kernels *kern = gptc_active_kernels();
    if (M >= kern->packed_min_rows) {
        const matrix_view a = {x, K, 1, GPTC_FLOAT32, NULL, 0};
        for (int first = 0; first < count; first += GEMM_MAX_PARTS) {
            const int n = count - first < GEMM_MAX_PARTS ? count - first : GEMM_MAX_PARTS;
            gemm_part group[GEMM_MAX_PARTS];
            for (int i = 0; i < n; i++) {
                const gptc_linear_part *part = &parts[first + i];
                const matrix_view b = {part->weight.data, 1, K, part->weight.dtype,
                                       part->weight.scales, gptc_int8_blocks(K)};
                group[i] = (gemm_part){b, part->out, part->N, part->N, part_accumulates(part),
                                       {part->bias, part_gelu(part)}};
            }
            if (gemm(M, K, a, group, n, kern) != 0) {
                /* no memory for the packed panels: the few-rows path
                 * needs none */
                linear_rows(parts + first, n, x, M, K, kern);
            }
        }
        return;
    }
    for (int i = 0; i < count; i += ROWS_MAX_PRODUCTS) {
        linear_rows(parts + i, count - i < ROWS_MAX_PRODUCTS ? count - i : ROWS_MAX_PRODUCTS, x,
                    M, K, kern);
    }
}

void gptc_linear_forward(float *out, const float *x, gptc_weight weight, const float *bias,
                         int M, int K, int N, int flags)
{
    const gptc_linear_part part = {out, weight, bias, N, flags};
    gptc_linear_forward_parts(&part, 1, x, M, K);
}

void gptc_f32_to_bf16(uint16_t *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = gptc_float_bits(in[i]);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
            out[i] = (uint16_t)((u >> 16) | 0x0040u);   /* NaN stays a (quiet) NaN */
        } else {
            /* round to nearest, ties to even, as PyTorch's .to(torch.bfloat16) */
            out[i] = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
        }
    }
}

int gptc_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int M, int K, int N)
{
    const gptc_kernels *kern = gptc_active_kernels();
    epilogue none = {NULL, 0};
    if (dinp != NULL) {
        /* dinp[m, k] += sum_n dout[m, n] W[n, k] */
        const matrix_view a = {dout, N, 1, GPTC_FLOAT32, NULL, 0};
        const gemm_part part = {{weight, K, 1, GPTC_FLOAT32, NULL, 0}, dinp, K, K, 1, none};
        if (gemm(M, N, a, &part, 1, kern) != 0) return -1;
    }
    if (dweight != NULL) {
        /* dweight[n, k] += sum_m dout[m, n] inp[m, k] */
        const matrix_view a = {dout, 1, N, GPTC_FLOAT32, NULL, 0};
        const gemm_part part = {{inp, K, 1, GPTC_FLOAT32, NULL, 0}, dweight, K, K, 1, none};
        if (gemm(N, M, a, &part, 1, kern) != 0) return -1;
    }
    if (dbias != NULL) {
        /* Column sums of dout, 256 columns at a time in double: a bias
         * gradient sums over every row of the batch, which may be many. */
        int nchunks = (N + 255) / 256;
        double work OMP_CLAUSE_ONLY = (double)M * N;
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (work >= GPTC_PARALLEL_MIN_WORK && nchunks > 1)
        for (int c = 0; c < nchunks; c++) {
            int n0 = c * 256, len = N - n0 < 256 ? N - n0 : 256;
            double acc[256];
            for (int j = 0; j < len; j++) acc[j] = 0.0;
            for (int m = 0; m < M; m++) {
                const float *row = dout + (size_t)m * N + n0;
                for (int j = 0; j < len; j++) acc[j] += row[j];
            }
            for (int j = 0; j < len; j++) dbias[n0 + j] += (float)acc[j];
        }
    }
    return 0;
}
