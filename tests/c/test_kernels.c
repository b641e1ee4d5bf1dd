/*
 * test_kernels.c - every kernel of every kernel set (csrc/kernels.h) that
 * this build has and this CPU runs, against plain double-precision
 * references, with no Python: so that the NEON kernels can be tested on an
 * x86 machine, cross-compiled and run under qemu-aarch64 (.ci/cross-aarch64),
 * and the x86 ones natively (.ci/run). The int8 products are checked
 * against exact integer block sums.
 *
 * Shapes are awkward on purpose (M, N, K not multiples of any tile, 1..20
 * rows, K = 1, more rows than one band of the packed GEMM; int8 K shorter
 * than a block and int8 views starting a block into their rows), and every
 * operand ends exactly at a page made inaccessible (the tile's 64-byte
 * aligned panels within 64 bytes of it), so a kernel that reads or writes
 * one element past an array faults instead of passing. A kernel set the
 * CPU cannot run (gptc_supported_isas leaves it out) is not tested; the
 * line "tested kernel sets:" says which were.
 *
 * Prints one line per (kernel set, kernel) with the largest relative error
 * seen (|got - ref| / max |ref| of each case), then "tested kernel sets:"
 * and the summary line "N passed, M failed"; exits 1 on any failure.
 */
#define _DEFAULT_SOURCE   /* mmap's MAP_ANONYMOUS under -std=c11 */
#include "gptc.h"
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Tolerances, as the Python tests have them: float32 sums against double,
 * relative to the largest reference value of the case (for products: to
 * the largest sum of magnitudes an output adds, product_ref). */
#define TOL_SUM 1e-5
#define TOL_EXACT 0.0

/* ------------------------------------------------------------------------
 * Buffers that end at a guard page.
 * ---------------------------------------------------------------------- */
#define MAX_MAPPINGS 64

static struct {
    void *base;
    size_t len;
} mappings[MAX_MAPPINGS];
static int nmappings;

/* `bytes` of fresh memory followed by a PROT_NONE page. With align > 1 the
 * start is rounded down to a multiple of align, leaving fewer than align
 * bytes between the end and the guard. Released by release_buffers. */
static void *guarded(size_t bytes, size_t align)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t len = (bytes + align + page - 1) / page * page + page;
    if (nmappings == MAX_MAPPINGS) {
        fprintf(stderr, "test_kernels: more than %d guarded buffers at once\n", MAX_MAPPINGS);
        exit(2);
    }
    char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mprotect(base + len - page, page, PROT_NONE) != 0) {
        perror("test_kernels: mmap/mprotect");
        exit(2);
    }
    mappings[nmappings].base = base;
    mappings[nmappings].len = len;
    nmappings++;
    uintptr_t start = (uintptr_t)(base + len - page - bytes);
    return (void *)(start / align * align);
}

static float *guarded_floats(size_t n) { return guarded(n * sizeof(float), sizeof(float)); }

/* Unmap the buffers made since nmappings was `mark`. */
static void release_since(int mark)
{
    for (int i = mark; i < nmappings; i++) munmap(mappings[i].base, mappings[i].len);
    nmappings = mark;
}

static void release_buffers(void) { release_since(0); }

/* A fault is a kernel that touched a guard page: say which one ran. */
static const char *running_isa = "-", *running_kernel = "start-up";

static void say(const char *text) { ssize_t r = write(2, text, strlen(text)); (void)r; }

static void on_fault(int sig)
{
    say(sig == SIGSEGV ? "test_kernels: SIGSEGV in " : "test_kernels: SIGBUS in ");
    say(running_isa);
    say(" ");
    say(running_kernel);
    say(" (a read or write past the end of a buffer reaches its guard page)\n");
    _exit(1);
}

/* ------------------------------------------------------------------------
 * Data: a fixed xorshift stream, uniform in [-1, 1).
 * ---------------------------------------------------------------------- */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 40) / (double)(1u << 23) - 1.0);
}

static void fill(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = uniform();
}

/* n weights, bfloat16 (gptc's own rounding of uniform values) or float32,
 * in a guarded buffer; wide (n floats) gets their exact float32 values for
 * the reference. */
static const void *guarded_weights(size_t n, int bf16, float *wide)
{
    fill(wide, n);
    if (!bf16) {
        float *w = guarded_floats(n);
        memcpy(w, wide, n * sizeof(float));
        return w;
    }
    uint16_t *h = guarded(n * sizeof(uint16_t), sizeof(uint16_t));
    gptc_f32_to_bf16(h, wide, n);
    for (size_t i = 0; i < n; i++) wide[i] = gptc_bf16_to_f32(h[i]);
    return h;
}

/* ------------------------------------------------------------------------
 * Errors and the report.
 * ---------------------------------------------------------------------- */
static int passed, failed;

/* max |got - ref| / max |ref| over n values; NaN anywhere gives NaN, which
 * fails every tolerance. */
static double rel_err(const float *got, const double *ref, size_t n)
{
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (isnan(d)) return NAN;
        diff = d > diff ? d : diff;
        scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
    }
    return diff / (scale + 1e-30);
}

static double worse(double a, double b)
{
    if (isnan(a) || isnan(b)) return NAN;
    return a > b ? a : b;
}

static void report(const char *isa, const char *kernel, double err, double tol)
{
    const int ok = err <= tol;   /* false for NaN */
    printf("%-12s %-18s max rel err %-10.3g (tolerance %.0e)  %s\n", isa, kernel, err, tol,
           ok ? "ok" : "FAILED");
    fflush(stdout);
    if (ok) {
        passed++;
    } else {
        failed++;
    }
}

/* A failure that is not an error size (a lane written that must not be):
 * says where, and makes the case's error infinite. */
static double broken(const char *kernel, const char *what, int a, int b, int c)
{
    printf("  %s: %s (%d, %d, %d)\n", kernel, what, a, b, c);
    return INFINITY;
}

/* ------------------------------------------------------------------------
 * The table itself: the shapes the drivers rely on.
 * ---------------------------------------------------------------------- */
static double check_table(const gptc_kernels *t, const char *name)
{
    double err = 0.0;
    if (gptc_active_kernels() != t || strcmp(t->name, name) != 0 ||
        strcmp(gptc_isa_name(), name) != 0) {
        err = broken("table", "gptc_set_isa did not select the table", 0, 0, 0);
    }
    if (t->mr < 1 || t->mr > GPTC_MAX_MR || t->nr < 1 || t->nr > GPTC_MAX_NR) {
        err = broken("table", "tile outside GPTC_MAX_MR x GPTC_MAX_NR", t->mr, t->nr, 0);
    }
    /* the A panel is packed MR wide, the B panel pack_width at a time */
    if (t->mr > t->pack_width || t->nr % t->pack_width != 0) {
        err = broken("table", "mr > pack_width or nr not a multiple of it", t->mr, t->nr,
                     t->pack_width);
    }
    /* gptc_gemm_serial_floats sizes B panels as round_up(N, GPTC_MAX_NR) */
    if (GPTC_MAX_NR % t->nr != 0) {
        err = broken("table", "nr does not divide GPTC_MAX_NR", t->nr, GPTC_MAX_NR, 0);
    }
    if (t->packed_min_rows < 1) {
        err = broken("table", "packed_min_rows below 1", t->packed_min_rows, 0, 0);
    }
    if (t->tile == NULL || t->pack_f32 == NULL || t->pack_bf16 == NULL ||
        t->pack_int8 == NULL || t->rows_f32 == NULL || t->rows_bf16 == NULL ||
        t->rows_int8 == NULL || t->flash_task == NULL || t->gelu == NULL ||
        t->gelu_backward == NULL || t->row_logsumexp == NULL || t->softmax_add == NULL ||
        t->fma_loop == NULL || t->fma_flops_per_iteration <= 0 || t->read_sum == NULL) {
        err = broken("table", "a kernel is missing", 0, 0, 0);
    }
    return err;
}

/* ------------------------------------------------------------------------
 * The register tile on packed panels.
 * ---------------------------------------------------------------------- */
static double check_tile(const gptc_kernels *t)
{
    static const int kcs[] = {1, 2, 3, 7, 16, 33, 256};
    const int mr = t->mr, nr = t->nr, ldc = nr + 3;
    double worst = 0.0;
    for (size_t q = 0; q < sizeof(kcs) / sizeof(kcs[0]); q++) {
        for (int add = 0; add <= 1; add++) {
            const int kc = kcs[q];
            /* panels are 64-byte aligned in the driver, and so here */
            float *ap = guarded((size_t)kc * mr * sizeof(float), 64);
            float *bp = guarded((size_t)kc * nr * sizeof(float), 64);
            const size_t nc = (size_t)(mr - 1) * ldc + nr;
            float *c = guarded_floats(nc);
            double *ref = malloc(nc * sizeof(double));
            fill(ap, (size_t)kc * mr);
            fill(bp, (size_t)kc * nr);
            fill(c, nc);
            for (size_t o = 0; o < nc; o++) ref[o] = c[o];   /* between rows: unchanged */
            for (int i = 0; i < mr; i++) {
                for (int j = 0; j < nr; j++) {
                    double s = add ? (double)c[i * ldc + j] : 0.0;
                    for (int p = 0; p < kc; p++) {
                        s += (double)ap[p * mr + i] * (double)bp[p * nr + j];
                    }
                    ref[i * ldc + j] = s;
                }
            }
            t->tile(kc, ap, bp, c, ldc, add);
            for (int i = 0; i + 1 < mr; i++) {
                for (int j = nr; j < ldc; j++) {
                    if (c[i * ldc + j] != (float)ref[i * ldc + j]) {
                        worst = broken("tile", "wrote between rows (kc, row, col)", kc, i, j);
                    }
                }
            }
            worst = worse(worst, rel_err(c, ref, nc));
            free(ref);
            release_buffers();
        }
    }
    return worst;
}

/* ------------------------------------------------------------------------
 * The packing transposes: exact copies (bfloat16 widened exactly).
 * ---------------------------------------------------------------------- */
static double check_pack(const gptc_kernels *t, int bf16)
{
    static const int lens[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33};
    const gptc_pack_fn pack = bf16 ? t->pack_bf16 : t->pack_f32;
    const char *name = bf16 ? "pack_bf16" : "pack_f32";
    double worst = 0.0;
    for (int width = 1; width <= t->pack_width; width++) {
        for (int rows = 0; rows <= width; rows++) {
            for (size_t q = 0; q < sizeof(lens) / sizeof(lens[0]); q++) {
                const int len = lens[q], stride = len + 5, ld = width + 3;
                /* the source ends with row rows - 1's last value */
                const size_t nsrc = rows == 0 ? 0 : (size_t)(rows - 1) * stride + len;
                float *wide = malloc((nsrc + 1) * sizeof(float));
                const void *src = guarded_weights(nsrc, bf16, wide);
                const size_t ndst = (size_t)(len - 1) * ld + width;
                float *dst = guarded_floats(ndst);
                for (size_t i = 0; i < ndst; i++) dst[i] = NAN;   /* unwritten lanes show */
                pack(dst, ld, src, stride, rows, width, len);
                for (int p = 0; p < len; p++) {
                    for (int r = 0; r < ld && (size_t)(p * ld + r) < ndst; r++) {
                        const float got = dst[p * ld + r];
                        if (r >= width) {
                            if (!isnan(got)) {
                                worst = broken(name, "wrote past width (width, p, lane)",
                                               width, p, r);
                            }
                            continue;
                        }
                        const float want = r < rows ? wide[(size_t)r * stride + p] : 0.0f;
                        if (!(got == want)) {
                            worst = broken(name, "wrong value (rows, p, lane)", rows, p, r);
                        }
                    }
                }
                free(wide);
                release_buffers();
                if (isinf(worst)) return worst;   /* one message per kind is enough */
            }
        }
    }
    return worst;
}

/* ------------------------------------------------------------------------
 * The operands of out[M, N] (+)= x[M, K] . W[N, K]^T + bias, all guarded,
 * and the double reference of each product before any epilogue.
 * ---------------------------------------------------------------------- */
typedef struct {
    int M, K, N;
    float *x, *bias, *out;   /* bias NULL without one; out filled with values */
    const void *w;           /* float32 or bfloat16 */
    float *wide;             /* w's exact float32 values */
    double *ref;             /* M * N, for the check to fill */
    double scale;            /* the largest sum of magnitudes an output adds, for the check
                              * to raise (note_scale) */
} product;

static product make_product(int M, int K, int N, int bf16, int with_bias)
{
    product p = {M, K, N, guarded_floats((size_t)M * K), NULL, guarded_floats((size_t)M * N),
                 NULL, malloc((size_t)N * K * sizeof(float)),
                 malloc((size_t)M * N * sizeof(double)), 0.0};
    fill(p.x, (size_t)M * K);
    p.w = guarded_weights((size_t)N * K, bf16, p.wide);
    if (with_bias) {
        p.bias = guarded_floats((size_t)N);
        fill(p.bias, (size_t)N);
    }
    fill(p.out, (size_t)M * N);
    return p;
}

/* x_m . w_n + bias[n], in double. The sum of the magnitudes it adds, plus
 * `onto` (what the output accumulates onto), raises p->scale: the error of
 * an output is judged against that, since a one-row, one-column case may
 * cancel to near zero, where relative to itself any rounding looks large. */
static double product_ref(product *p, int m, int n, double onto)
{
    double s = p->bias != NULL ? (double)p->bias[n] : 0.0;
    double mag = fabs(s) + fabs(onto);
    for (int k = 0; k < p->K; k++) {
        const double t = (double)p->x[(size_t)m * p->K + k] * (double)p->wide[(size_t)n * p->K + k];
        s += t;
        mag += fabs(t);
    }
    p->scale = mag > p->scale ? mag : p->scale;
    return s;
}

/* The error of out against ref, relative to the case's scale; frees what
 * make_product made. */
static double finish_product(product *p)
{
    double diff = 0.0;
    for (size_t i = 0; i < (size_t)p->M * p->N; i++) {
        const double d = fabs((double)p->out[i] - p->ref[i]);
        if (isnan(d)) diff = NAN;
        else if (!isnan(diff) && d > diff) diff = d;
    }
    double err = diff / (p->scale + 1e-30);
    free(p->wide);
    free(p->ref);
    release_buffers();
    return err;
}

/* ------------------------------------------------------------------------
 * The few-rows products, called as the driver calls them: a column range
 * [n0, n1) of out, the rest of out untouched; and with two rows or more
 * each row the same, bit for bit, in a product of two rows (whatever tile
 * shape each count of rows takes, a small batch gives each row the same).
 * ---------------------------------------------------------------------- */
static double check_rows(const gptc_kernels *t, int bf16)
{
    static const int ks[] = {1, 3, 4, 7, 8, 16, 33, 100, 300};
    static const int ns[] = {1, 2, 4, 5, 9, 13, 26};
    const gptc_rows_fn rows = bf16 ? t->rows_bf16 : t->rows_f32;
    double worst = 0.0;
    for (int M = 1; M <= 20; M++) {
        for (int qk = 0; qk < (int)(sizeof(ks) / sizeof(ks[0])); qk++) {
            for (int qn = 0; qn < (int)(sizeof(ns) / sizeof(ns[0])); qn++) {
                const int K = ks[qk], N = ns[qn];
                /* every combination of accumulate, bias and a column
                 * subrange comes round for every N and every K */
                const int variant = M + qk + qn;
                const int accumulate = variant & 1;
                const int n0 = (variant >> 2) & 1 && N > 2 ? 1 : 0;
                const int n1 = (variant >> 2) & 1 && N > 2 ? N - 1 : N;
                product p = make_product(M, K, N, bf16, (variant >> 1) & 1);
                for (int m = 0; m < M; m++) {
                    for (int n = 0; n < N; n++) {
                        const size_t o = (size_t)m * N + n;
                        const int inside = n >= n0 && n < n1;
                        const double onto = accumulate ? p.out[o] : 0.0;
                        p.ref[o] = inside ? onto + product_ref(&p, m, n, onto) : p.out[o];
                    }
                }
                float *before = malloc((size_t)M * N * sizeof(float));
                float *pair = malloc((size_t)2 * N * sizeof(float));
                memcpy(before, p.out, (size_t)M * N * sizeof(float));
                rows(p.out, p.x, p.w, p.bias, M, K, N, n0, n1, accumulate);
                for (int m = 0; m < M; m++) {
                    /* row m again in a product of two rows: m and the next
                     * (the last row: the previous and m) */
                    const int first = m + 1 < M ? m : m - 1;
                    if (M > 1) {
                        memcpy(pair, before + (size_t)first * N, (size_t)2 * N * sizeof(float));
                        rows(pair, p.x + (size_t)first * K, p.w, p.bias, 2, K, N, n0, n1,
                             accumulate);
                    }
                    for (int n = 0; n < N; n++) {
                        const size_t o = (size_t)m * N + n;
                        if ((n < n0 || n >= n1) && p.out[o] != (float)p.ref[o]) {
                            worst = broken(bf16 ? "rows_bf16" : "rows_f32",
                                           "wrote outside [n0, n1) (M, K, column)", M, K, n);
                        }
                        if (M > 1 && memcmp(&pair[(size_t)(m - first) * N + n], &p.out[o],
                                            sizeof(float)) != 0) {
                            worst = broken(bf16 ? "rows_bf16" : "rows_f32",
                                           "a row differs among 2 and among M (M, K, column)",
                                           M, K, n);
                        }
                    }
                }
                free(before);
                free(pair);
                worst = worse(worst, finish_product(&p));
            }
        }
    }
    return worst;
}

/* ------------------------------------------------------------------------
 * gptc_linear_forward: both paths (few rows, packed GEMM), both weight
 * types, bias or none, GELU and accumulate.
 * ---------------------------------------------------------------------- */
static double gelu_ref(double v)
{
    return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

typedef struct {
    int M, K, N;
} shape;

static const shape linear_shapes[] = {
    {1, 1, 1},   {2, 5, 3},    {3, 64, 7},    {5, 33, 17},   {7, 100, 40},  {8, 1, 5},
    {8, 16, 16}, {9, 17, 33},  {11, 1, 70},   {12, 48, 32},  {13, 40, 31},  {17, 3, 2},
    {19, 77, 5}, {20, 100, 70}, {25, 9, 100}, {37, 300, 19}, {50, 257, 47}, {193, 64, 97},
    {200, 20, 13}, {769, 20, 13}, {770, 270, 35},
};
#define NSHAPES ((int)(sizeof(linear_shapes) / sizeof(linear_shapes[0])))

static double check_linear(const gptc_kernels *t, int bf16)
{
    static const int flag_sets[] = {0, GPTC_LINEAR_GELU, GPTC_LINEAR_ACCUMULATE};
    /* and the two sides of this table's switch to the packed GEMM */
    const shape crossing[2] = {{t->packed_min_rows - 1, 33, 21}, {t->packed_min_rows, 33, 21}};
    double worst = 0.0;
    for (int s = 0; s < NSHAPES + 2; s++) {
        const shape sh = s < NSHAPES ? linear_shapes[s] : crossing[s - NSHAPES];
        for (int f = 0; f < 3 && sh.M > 0; f++) {
            for (int with_bias = 0; with_bias <= 1; with_bias++) {
                const int M = sh.M, K = sh.K, N = sh.N;
                const int flags = flag_sets[f];
                product p = make_product(M, K, N, bf16, with_bias);
                for (int m = 0; m < M; m++) {
                    for (int n = 0; n < N; n++) {
                        const size_t o = (size_t)m * N + n;
                        const double onto = flags & GPTC_LINEAR_ACCUMULATE ? p.out[o] : 0.0;
                        double v = product_ref(&p, m, n, onto);
                        if (flags & GPTC_LINEAR_GELU) v = gelu_ref(v);
                        p.ref[o] = onto + v;
                    }
                }
                const gptc_weight w = {p.w, bf16 ? GPTC_BFLOAT16 : GPTC_FLOAT32};
                gptc_linear_forward(p.out, p.x, w, p.bias, M, K, N, flags);
                worst = worse(worst, finish_product(&p));
            }
        }
    }
    return worst;
}

/* ------------------------------------------------------------------------
 * int8: the quantiser (one function for every set), the packing transpose
 * that widens int8 blocks, the integer few-rows product and both paths of
 * gptc_linear_forward with an int8 weight.
 * ---------------------------------------------------------------------- */
#define BLOCK GPTC_INT8_BLOCK

/* round to nearest even to bfloat16, written again for the reference */
static uint16_t ref_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static double ref_widen(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* gptc.h's definition with libm's rintf (round to nearest even). */
static void ref_quantize(int8_t *q, uint16_t *d, const float *x, int rows, int len)
{
    const int nb = gptc_int8_blocks(len);
    for (int r = 0; r < rows; r++) {
        for (int b = 0; b < nb; b++) {
            const int k0 = b * BLOCK, n = len - k0 < BLOCK ? len - k0 : BLOCK;
            const float *xb = x + (size_t)r * len + k0;
            float amax = 0.0f;
            int finite = 1;
            for (int i = 0; i < n; i++) {
                finite = finite && isfinite(xb[i]);
                amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;
            }
            uint16_t *db = d + (size_t)r * nb + b;
            *db = finite ? ref_bf16(amax / 127.0f) : 0x7FC0u;
            const float stored = (float)ref_widen(*db);
            for (int i = 0; i < n; i++) {
                float v = finite && stored != 0.0f ? rintf(xb[i] / stored) : 0.0f;
                v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
                q[(size_t)r * len + k0 + i] = (int8_t)v;
            }
        }
    }
}

/* Values of magnitudes 1e-30 .. 1e30, exact ties, zeros, subnormals, inf and NaN. */
static double check_quantize(void)
{
    enum { ROWS = 13, LEN = 100 };
    float x[ROWS * LEN];
    int8_t q[ROWS * LEN], qr[ROWS * LEN];
    uint16_t d[ROWS * 4], dr[ROWS * 4];
    fill(x, ROWS * LEN);
    for (int r = 0; r < ROWS; r++) {
        for (int i = 0; i < LEN; i++) x[r * LEN + i] *= powf(10.0f, (float)(5 * r - 30));
    }
    for (int i = 0; i < 32; i++) x[i] = (float)i - 15.5f;   /* ties against d = 1 */
    x[32] = 127.0f;
    x[LEN + 5] = INFINITY;
    x[2 * LEN + 40] = NAN;
    for (int i = 64; i < 96; i++) x[3 * LEN + i] = 0.0f;
    x[3 * LEN + 99] = 1e-45f;
    ref_quantize(qr, dr, x, ROWS, LEN);
    gptc_quantize_int8(q, d, x, ROWS, LEN, LEN);
    if (memcmp(q, qr, sizeof(q)) != 0 || memcmp(d, dr, sizeof(d)) != 0) {
        return broken("quantize_int8", "differs from rintf's rounding", 0, 0, 0);
    }
    return 0.0;
}

/* rows x K int8 blocks in guarded buffers, from uniform values or (exact)
 * from integers in [-127, 127] with 127 in every block, whose scales are 1;
 * wide (rows * K doubles) gets q * d. */
typedef struct {
    gptc_int8_rows v;
    double *wide;
} int8_matrix;

static int8_matrix make_int8(int rows, int K, int exact)
{
    const size_t n = (size_t)rows * K, nb = (size_t)rows * gptc_int8_blocks(K);
    float *x = malloc((n + 1) * sizeof(float));
    fill(x, n);
    for (size_t i = 0; exact && i < n; i++) {
        x[i] = i % K % BLOCK == 0 ? 127.0f : rintf(127.0f * x[i]);
    }
    int8_t *q = guarded(n, 1);
    uint16_t *d = guarded(nb * sizeof(uint16_t), sizeof(uint16_t));
    gptc_quantize_int8(q, d, x, (size_t)rows, K, K);
    int8_matrix m = {{q, d, K, gptc_int8_blocks(K)}, malloc((n + 1) * sizeof(double))};
    for (size_t i = 0; i < n; i++) {
        m.wide[i] = (double)q[i] * ref_widen(d[i / K * gptc_int8_blocks(K) + i % K / BLOCK]);
    }
    free(x);
    return m;
}

/* The view of v's rows from value p0 on (a multiple of the block). */
static gptc_int8_rows int8_view(gptc_int8_rows v, int p0)
{
    v.values += p0;
    v.scales += p0 / BLOCK;
    return v;
}

/* x_m . w_n from the int8 blocks: per block the exact integer sum times
 * both scales, in double; *magnitude (if not NULL) gets the same sum of
 * |products|, which bounds every partial sum a kernel may round. */
static double int8_dot_ref(gptc_int8_rows x, int m, gptc_int8_rows w, int n, int K,
                           double *magnitude)
{
    double s = 0.0, mag = 0.0;
    for (int b = 0; b * BLOCK < K; b++) {
        int64_t isum = 0, iabs = 0;
        for (int k = b * BLOCK; k < K && k < (b + 1) * BLOCK; k++) {
            const int64_t p = (int64_t)x.values[m * x.stride + k] * w.values[n * w.stride + k];
            isum += p;
            iabs += p < 0 ? -p : p;
        }
        const double scale = ref_widen(x.scales[m * x.scale_stride + b]) *
                             ref_widen(w.scales[n * w.scale_stride + b]);
        s += (double)isum * scale;
        mag += (double)iabs * scale;
    }
    if (magnitude != NULL) *magnitude = mag;
    return s;
}

static double check_pack_int8(const gptc_kernels *t)
{
    static const int lens[] = {1, 3, 8, 15, 16, 17, 33, 64, 100, 256};
    double worst = 0.0;
    for (int width = 1; width <= t->pack_width; width++) {
        for (int rows = 0; rows <= width; rows++) {
            for (size_t q = 0; q < sizeof(lens) / sizeof(lens[0]); q++) {
                for (int p0 = 0; p0 <= BLOCK; p0 += BLOCK) {
                    /* the view starts at block p0 / 32 and, with p0 = 0, ends
                     * with the buffer */
                    const int len = lens[q], K = p0 + len + (p0 ? 5 : 0), ld = width + 3;
                    int8_matrix w = make_int8(rows > 0 ? rows : 1, K, 0);
                    const gptc_int8_rows view = int8_view(w.v, p0);
                    const size_t ndst = (size_t)(len - 1) * ld + width;
                    float *dst = guarded_floats(ndst);
                    for (size_t i = 0; i < ndst; i++) dst[i] = NAN;
                    t->pack_int8(dst, ld, view, rows, width, len);
                    for (int p = 0; p < len; p++) {
                        for (int r = 0; r < width; r++) {
                            const double want = r < rows ? w.wide[(size_t)r * K + p0 + p] : 0.0;
                            if (!((double)dst[p * ld + r] == want)) {
                                worst = broken("pack_int8", "wrong value (rows, p, lane)", rows,
                                               p, r);
                            }
                        }
                        for (int r = width; r < ld && (size_t)(p * ld + r) < ndst; r++) {
                            if (!isnan(dst[p * ld + r])) {
                                worst = broken("pack_int8", "wrote past width (width, p, lane)",
                                               width, p, r);
                            }
                        }
                    }
                    free(w.wide);
                    release_buffers();
                    if (isinf(worst)) return worst;
                }
            }
        }
    }
    return worst;
}

/* The few-rows kernel on quantised x and W, called as the driver calls it
 * (a column range, the rest of out untouched); exact: scales of 1, where
 * every sum is an integer the float32 result must equal. The error of each
 * output is relative to the sum of the magnitudes it adds (its products,
 * the bias, what it accumulates onto): a one-row, one-column case may
 * cancel to near zero, where relative to itself any rounding looks large.
 * x and W are views of K values of longer rows, as the driver's segments
 * are: from the second block on, and with values after them that a kernel
 * reading past K would add; or the whole rows, ending with the buffers. */
static double check_rows_int8(const gptc_kernels *t, int exact)
{
    /* within a block, one, several, and across the tiles' chunks of 4 */
    static const int ks[] = {1, 3, 31, 32, 33, 64, 100, 128, 129, 300};
    static const int ns[] = {1, 2, 4, 5, 9};
    double worst = 0.0;
    for (int M = 1; M <= 20; M++) {
        for (int qk = 0; qk < (int)(sizeof(ks) / sizeof(ks[0])); qk++) {
            for (int qn = 0; qn < (int)(sizeof(ns) / sizeof(ns[0])); qn++) {
                const int K = ks[qk], N = ns[qn], variant = M + qk + qn;
                const int accumulate = variant & 1, with_bias = (variant >> 1) & 1 && !exact;
                const int n0 = (variant >> 2) & 1 && N > 2 ? 1 : 0;
                const int n1 = (variant >> 2) & 1 && N > 2 ? N - 1 : N;
                const int p0 = (variant >> 3) & 1 ? BLOCK : 0, rest = p0 ? 5 : 0;
                int8_matrix xm = make_int8(M, p0 + K + rest, exact);
                int8_matrix wm = make_int8(N, p0 + K + rest, exact);
                const gptc_int8_rows x = int8_view(xm.v, p0), w = int8_view(wm.v, p0);
                float *out = guarded_floats((size_t)M * N), *bias = NULL;
                double *ref = malloc((size_t)M * N * sizeof(double));
                double *mag = malloc((size_t)M * N * sizeof(double));
                for (int m = 0; m < M * N; m++) out[m] = exact ? (float)(m % 7) : uniform();
                if (with_bias) {
                    bias = guarded_floats((size_t)N);
                    fill(bias, (size_t)N);
                }
                for (int m = 0; m < M; m++) {
                    for (int n = 0; n < N; n++) {
                        const size_t o = (size_t)m * N + n;
                        const double v = int8_dot_ref(x, m, w, n, K, &mag[o]) +
                                         (bias != NULL ? bias[n] : 0.0);
                        mag[o] += fabs(out[o]) + (bias != NULL ? fabs(bias[n]) : 0.0);
                        ref[o] = n < n0 || n >= n1 ? out[o] : (accumulate ? out[o] : 0.0) + v;
                    }
                }
                t->rows_int8(out, x, w, bias, M, K, N, n0, n1, accumulate);
                for (int o = 0; o < M * N; o++) {
                    if (exact && (double)out[o] != ref[o]) {
                        worst = broken("rows_int8", "not the exact integer sum (M, K, N)", M, K,
                                       N);
                    }
                    const double e = fabs((double)out[o] - ref[o]) / (mag[o] + 1e-30);
                    worst = isnan(e) ? NAN : worse(worst, e);
                }
                free(ref);
                free(mag);
                free(xm.wide);
                free(wm.wide);
                release_buffers();
            }
        }
    }
    return worst;
}

/* gptc_linear_forward with an int8 weight: below packed_min_rows x is
 * quantised (the reference quantises it too, with the same function),
 * from there on the packed product with the widened weight. */
static double check_linear_int8(const gptc_kernels *t)
{
    static const int flag_sets[] = {0, GPTC_LINEAR_GELU, GPTC_LINEAR_ACCUMULATE};
    const shape extra[3] = {{t->packed_min_rows - 1, 33, 21}, {t->packed_min_rows, 33, 21},
                            {3, 4100, 5}};   /* the last: two of the quantiser's segments */
    double worst = 0.0;
    for (int s = 0; s < NSHAPES + 3; s++) {
        const shape sh = s < NSHAPES ? linear_shapes[s] : extra[s - NSHAPES];
        for (int f = 0; f < 3 && sh.M > 0; f++) {
            const int M = sh.M, K = sh.K, N = sh.N, flags = flag_sets[f];
            const int few = M < t->packed_min_rows;
            float *x = guarded_floats((size_t)M * K), *out = guarded_floats((size_t)M * N);
            float *bias = guarded_floats((size_t)N);
            int8_matrix w = make_int8(N, K, 0);
            int8_t *xq = malloc((size_t)M * K + 1);
            uint16_t *xd = malloc(((size_t)M * gptc_int8_blocks(K) + 1) * sizeof(uint16_t));
            double *ref = malloc((size_t)M * N * sizeof(double));
            fill(x, (size_t)M * K);
            fill(out, (size_t)M * N);
            fill(bias, (size_t)N);
            const gptc_int8_rows xv = {xq, xd, K, gptc_int8_blocks(K)};
            if (few) ref_quantize(xq, xd, x, M, K);
            for (int m = 0; m < M; m++) {
                for (int n = 0; n < N; n++) {
                    double v = bias[n];
                    if (few) {
                        v += int8_dot_ref(xv, m, w.v, n, K, NULL);
                    } else {
                        for (int k = 0; k < K; k++) {
                            v += (double)x[(size_t)m * K + k] * w.wide[(size_t)n * K + k];
                        }
                    }
                    if (flags & GPTC_LINEAR_GELU) v = gelu_ref(v);
                    const size_t o = (size_t)m * N + n;
                    ref[o] = flags & GPTC_LINEAR_ACCUMULATE ? out[o] + v : v;
                }
            }
            const gptc_weight wt = {w.v.values, GPTC_INT8, w.v.scales};
            gptc_linear_forward(out, x, wt, bias, M, K, N, flags);
            worst = worse(worst, rel_err(out, ref, (size_t)M * N));
            free(ref);
            free(xq);
            free(xd);
            free(w.wide);
            release_buffers();
        }
    }
    return worst;
}

/* gptc_linear_forward_parts: a group of products of one x, the weight
 * types, widths and flags mixed, five parts (more than one loop takes), is
 * each product as gptc_linear_forward gives it alone, bit for bit, on both
 * sides of the switch to the packed GEMM, and with the packed GEMM's tasks
 * spread over the parts (more rows than one band, reductions longer than
 * one packed block). Returns the largest absolute difference, which must
 * be 0. */
#define NPARTS 5
static double check_linear_parts(const gptc_kernels *t)
{
    static const int flag_sets[NPARTS] = {0, GPTC_LINEAR_GELU, GPTC_LINEAR_ACCUMULATE, 0,
                                          GPTC_LINEAR_ACCUMULATE};
    static const int widths[NPARTS] = {21, 3, 64, 17, 40};
    static const int Ms[] = {1, 2, 4, 9, 40, 777, 0, 0};
    const int nM = (int)(sizeof(Ms) / sizeof(Ms[0]));
    static const int Ks[] = {1, 33, 300};
    double worst = 0.0;
    for (int mi = 0; mi < nM; mi++) {
        /* the last two: the sides of this table's switch to the packed GEMM */
        const int M = mi < nM - 2 ? Ms[mi] : t->packed_min_rows - (nM - 1 - mi);
        for (size_t ki = 0; ki < sizeof(Ks) / sizeof(Ks[0]) && M > 0; ki++) {
            const int K = Ks[ki];
            float *x = guarded_floats((size_t)M * K);
            fill(x, (size_t)M * K);
            gptc_linear_part parts[NPARTS];
            float *alone[NPARTS];
            for (int i = 0; i < NPARTS; i++) {
                const int N = widths[i];
                const gptc_dtype dtype = i % 3 == 0 ? GPTC_FLOAT32 : i % 3 == 1 ? GPTC_BFLOAT16
                                                                                : GPTC_INT8;
                gptc_weight w;
                if (dtype == GPTC_INT8) {
                    int8_matrix q = make_int8(N, K, 0);
                    free(q.wide);
                    w = (gptc_weight){q.v.values, GPTC_INT8, q.v.scales};
                } else {
                    float *wide = malloc((size_t)N * K * sizeof(float));
                    w = (gptc_weight){guarded_weights((size_t)N * K, dtype == GPTC_BFLOAT16, wide),
                                      dtype, NULL};
                    free(wide);
                }
                float *bias = NULL;
                if (i % 2 == 0) {
                    bias = guarded_floats((size_t)N);
                    fill(bias, (size_t)N);
                }
                parts[i] = (gptc_linear_part){guarded_floats((size_t)M * N), w, bias, N,
                                              flag_sets[i]};
                alone[i] = guarded_floats((size_t)M * N);
                fill(parts[i].out, (size_t)M * N);
                memcpy(alone[i], parts[i].out, (size_t)M * N * sizeof(float));
                gptc_linear_forward(alone[i], x, w, bias, M, K, N, flag_sets[i]);
            }
            gptc_linear_forward_parts(parts, NPARTS, x, M, K);
            for (int i = 0; i < NPARTS; i++) {
                for (size_t o = 0; o < (size_t)M * widths[i]; o++) {
                    const double d = fabs((double)parts[i].out[o] - (double)alone[i][o]);
                    worst = isnan(d) ? NAN : worse(worst, d);
                }
            }
            release_buffers();
        }
    }
    return worst;
}
#undef NPARTS

/* ------------------------------------------------------------------------
 * gptc_linear_backward: each gradient accumulated into what is there, and
 * a NULL gradient skipped (each computed alone once as well).
 * ---------------------------------------------------------------------- */
static void check_backward(const char *isa)
{
    double err[3] = {0.0, 0.0, 0.0};
    for (int s = 0; s < NSHAPES; s++) {
        for (int alone = -1; alone < 3; alone++) {   /* -1: all three together */
            const int M = linear_shapes[s].M, K = linear_shapes[s].K, N = linear_shapes[s].N;
            float *dout = guarded_floats((size_t)M * N), *inp = guarded_floats((size_t)M * K);
            float *w = guarded_floats((size_t)N * K);
            float *grad[3] = {guarded_floats((size_t)M * K), guarded_floats((size_t)N * K),
                              guarded_floats((size_t)N)};
            const size_t size[3] = {(size_t)M * K, (size_t)N * K, (size_t)N};
            fill(dout, (size_t)M * N);
            fill(inp, (size_t)M * K);
            fill(w, (size_t)N * K);
            double *ref[3];
            for (int g = 0; g < 3; g++) {
                fill(grad[g], size[g]);
                ref[g] = malloc(size[g] * sizeof(double));
                for (size_t i = 0; i < size[g]; i++) ref[g][i] = grad[g][i];
            }
            for (int m = 0; m < M; m++) {
                for (int k = 0; k < K; k++) {
                    double s0 = 0.0;
                    for (int n = 0; n < N; n++) {
                        s0 += (double)dout[(size_t)m * N + n] * (double)w[(size_t)n * K + k];
                    }
                    ref[0][(size_t)m * K + k] += s0;
                }
            }
            for (int n = 0; n < N; n++) {
                double sb = 0.0;
                for (int m = 0; m < M; m++) sb += dout[(size_t)m * N + n];
                ref[2][n] += sb;
                for (int k = 0; k < K; k++) {
                    double s1 = 0.0;
                    for (int m = 0; m < M; m++) {
                        s1 += (double)dout[(size_t)m * N + n] * (double)inp[(size_t)m * K + k];
                    }
                    ref[1][(size_t)n * K + k] += s1;
                }
            }
            float *pass[3];
            for (int g = 0; g < 3; g++) pass[g] = alone < 0 || alone == g ? grad[g] : NULL;
            if (gptc_linear_backward(pass[0], pass[1], pass[2], dout, inp, w, M, K, N) != 0) {
                err[0] = broken("linear_backward", "returned -1 (M, K, N)", M, K, N);
            }
            for (int g = 0; g < 3; g++) {
                if (pass[g] != NULL) err[g] = worse(err[g], rel_err(grad[g], ref[g], size[g]));
                free(ref[g]);
            }
            release_buffers();
        }
    }
    report(isa, "backward_dinp", err[0], TOL_SUM);
    report(isa, "backward_dweight", err[1], TOL_SUM);
    report(isa, "backward_dbias", err[2], TOL_SUM);
}

/* ------------------------------------------------------------------------
 * gptc_gemm_serial (attention's training products): strided views for
 * every transposition, in a work buffer of exactly the size it asks for.
 * ---------------------------------------------------------------------- */
static double check_gemm_serial(void)
{
    static const shape shapes[] = {{1, 1, 1},   {3, 32, 5},  {7, 64, 33}, {13, 1, 64},
                                   {33, 17, 32}, {64, 64, 4}, {65, 300, 31}};
    double worst = 0.0;
    for (int q = 0; q < (int)(sizeof(shapes) / sizeof(shapes[0])); q++) {
        for (int ta = 0; ta <= 1; ta++) {
            for (int tb = 0; tb <= 1; tb++) {
                const int M = shapes[q].M, N = shapes[q].N, K = shapes[q].K;
                /* either way for every transposition */
                const int accumulate = (q + ta + tb) & 1, ldc = N + 2;
                float *a = guarded_floats((size_t)M * K), *b = guarded_floats((size_t)K * N);
                const size_t nc = (size_t)(M - 1) * ldc + N;
                float *c = guarded_floats(nc);
                float *work = guarded_floats(gptc_gemm_serial_floats(M, N, K));
                double *ref = malloc(nc * sizeof(double));
                fill(a, (size_t)M * K);
                fill(b, (size_t)K * N);
                fill(c, nc);
                /* A(i, p) at a[i * ars + p * acs], B(p, j) at b[p * brs + j * bcs] */
                const ptrdiff_t ars = ta ? 1 : K, acs = ta ? M : 1;
                const ptrdiff_t brs = tb ? 1 : N, bcs = tb ? K : 1;
                for (size_t o = 0; o < nc; o++) ref[o] = c[o];
                for (int i = 0; i < M; i++) {
                    for (int j = 0; j < N; j++) {
                        double s = accumulate ? (double)c[(size_t)i * ldc + j] : 0.0;
                        for (int p = 0; p < K; p++) {
                            s += (double)a[i * ars + p * acs] * (double)b[p * brs + j * bcs];
                        }
                        ref[(size_t)i * ldc + j] = s;
                    }
                }
                gptc_gemm_serial(M, N, K, a, ars, acs, b, brs, bcs, c, ldc, accumulate, work);
                worst = worse(worst, rel_err(c, ref, nc));
                free(ref);
                release_buffers();
            }
        }
    }
    return worst;
}

/* ------------------------------------------------------------------------
 * Inference attention over a KV cache (the flash_task kernel).
 * ---------------------------------------------------------------------- */
typedef struct {
    int B, NH, HS, past, Tq, extra;   /* extra: cache rows past the filled ones */
} att_case;

static const att_case att_cases[] = {
    {1, 1, 1, 0, 1, 0},   {2, 2, 3, 0, 7, 0},   {1, 3, 8, 5, 1, 0},   {2, 2, 64, 0, 70, 0},
    {2, 1, 17, 40, 33, 3}, {1, 2, 64, 0, 130, 0}, {2, 2, 12, 63, 2, 1}, {1, 1, 5, 96, 1, 0},
};
#define NATT ((int)(sizeof(att_cases) / sizeof(att_cases[0])))

/* The kernel's result for queries q (B, Tq, C) at positions past.. over
 * caches k, v (B rows of capacity, row stride C), into out (guarded). With
 * GPTC_KEYS_IN_BLOCKS the keys of positions 0 .. past + Tq - 1 are first
 * stored into a block cache (guarded) whose other positions hold NaN, as
 * the positions a decoder has not stored yet may hold anything: the kernel
 * must mask them. */
static void run_attention(float *out, const float *q, const float *k, const float *v, int B,
                          int Tq, int past, int capacity, int NH, int HS,
                          gptc_key_layout layout)
{
    const int nthreads = gptc_get_num_threads(), C = NH * HS;
    float *scratch = guarded_floats(gptc_attention_cached_scratch_floats(B, capacity, C, nthreads));
    const float *keys = k;
    if (layout == GPTC_KEYS_IN_BLOCKS) {
        const size_t per_row = gptc_key_blocks_floats(1, capacity, C);
        float *blocks = guarded_floats((size_t)B * per_row);
        for (size_t i = 0; i < (size_t)B * per_row; i++) blocks[i] = NAN;
        for (int b = 0; b < B; b++) {
            gptc_store_key_blocks(blocks + (size_t)b * per_row, k + (size_t)b * capacity * C, 1,
                                  past + Tq, 0, capacity, NH, HS);
        }
        keys = blocks;
    }
    gptc_attention_cached_forward(out, q, keys, v, B, Tq, past, capacity, layout, NH, HS,
                                  scratch, nthreads);
}

static const gptc_key_layout key_layouts[] = {GPTC_KEYS_AS_ROWS, GPTC_KEYS_IN_BLOCKS};

static double check_attention(void)
{
    double worst = 0.0;
    for (int a = 0; a < NATT; a++) {
        const att_case ac = att_cases[a];
        const int C = ac.NH * ac.HS, keys = ac.past + ac.Tq, capacity = keys + ac.extra;
        const size_t nq = (size_t)ac.B * ac.Tq * C, ncache = (size_t)ac.B * capacity * C;
        float *q = guarded_floats(nq), *out = guarded_floats(nq);
        float *k = guarded_floats(ncache), *v = guarded_floats(ncache);
        double *ref = malloc(nq * sizeof(double)), *sc = malloc((size_t)keys * sizeof(double));
        fill(q, nq);
        fill(k, ncache);
        fill(v, ncache);
        for (int b = 0; b < ac.B; b++) {
            for (int h = 0; h < ac.NH; h++) {
                for (int i = 0; i < ac.Tq; i++) {
                    const float *qi = q + ((size_t)b * ac.Tq + i) * C + (size_t)h * ac.HS;
                    const int seen = ac.past + i + 1;
                    double mx = -INFINITY, sum = 0.0;
                    for (int j = 0; j < seen; j++) {
                        const float *kj = k + ((size_t)b * capacity + j) * C + (size_t)h * ac.HS;
                        double s = 0.0;
                        for (int d = 0; d < ac.HS; d++) s += (double)qi[d] * (double)kj[d];
                        sc[j] = s / sqrt((double)ac.HS);
                        mx = sc[j] > mx ? sc[j] : mx;
                    }
                    for (int j = 0; j < seen; j++) sum += (sc[j] = exp(sc[j] - mx));
                    double *o = ref + ((size_t)b * ac.Tq + i) * C + (size_t)h * ac.HS;
                    const float *vh = v + (size_t)b * capacity * C + (size_t)h * ac.HS;
                    for (int d = 0; d < ac.HS; d++) {
                        double s = 0.0;
                        for (int j = 0; j < seen; j++) s += sc[j] * (double)vh[(size_t)j * C + d];
                        o[d] = s / sum;
                    }
                }
            }
        }
        for (int lay = 0; lay < 2; lay++) {
            for (size_t i = 0; i < nq; i++) out[i] = NAN;
            run_attention(out, q, k, v, ac.B, ac.Tq, ac.past, capacity, ac.NH, ac.HS,
                          key_layouts[lay]);
            worst = worse(worst, rel_err(out, ref, nq));
        }
        free(ref);
        free(sc);
        release_buffers();
    }
    return worst;
}

/* A position computed alone (a decode step) or in a chunk of a prefill, over
 * keys as rows or in blocks, is bit for bit that row of the whole-sequence
 * forward. Returns the largest absolute difference, which must be 0. */
static double check_decode(void)
{
    static const int Ts[] = {1, 5, 33, 70, 130};
    static const int HSs[] = {3, 16, 64};
    double worst = 0.0;
    for (size_t qt = 0; qt < sizeof(Ts) / sizeof(Ts[0]); qt++) {
        for (size_t qh = 0; qh < sizeof(HSs) / sizeof(HSs[0]); qh++) {
            const int T = Ts[qt], HS = HSs[qh], B = 2, NH = 2, C = NH * HS;
            const size_t n = (size_t)B * T * C;
            float *q = guarded_floats(n), *k = guarded_floats(n), *v = guarded_floats(n);
            float *full = guarded_floats(n);
            fill(q, n);
            fill(k, n);
            fill(v, n);
            run_attention(full, q, k, v, B, T, 0, T, NH, HS, GPTC_KEYS_AS_ROWS);
            /* chunks of 1 (decode steps) and of 7 (a prefill in pieces),
             * over keys as rows and in blocks */
            for (int c = 0; c < 4; c++) {
                const int chunk = c % 2 == 0 ? 1 : 7;
                const gptc_key_layout layout = key_layouts[c / 2];
                for (int p = 0; p < T; p += chunk) {
                    const int Tq = T - p < chunk ? T - p : chunk;
                    const int mark = nmappings;   /* the chunk's buffers go after it */
                    float *qc = guarded_floats((size_t)B * Tq * C);
                    float *oc = guarded_floats((size_t)B * Tq * C);
                    for (int b = 0; b < B; b++) {
                        memcpy(qc + (size_t)b * Tq * C, q + ((size_t)b * T + p) * C,
                               (size_t)Tq * C * sizeof(float));
                    }
                    run_attention(oc, qc, k, v, B, Tq, p, T, NH, HS, layout);
                    for (int b = 0; b < B; b++) {
                        for (size_t i = 0; i < (size_t)Tq * C; i++) {
                            double d = fabs((double)oc[(size_t)b * Tq * C + i] -
                                            (double)full[((size_t)b * T + p) * C + i]);
                            worst = isnan(d) ? NAN : worse(worst, d);
                        }
                    }
                    release_since(mark);
                }
            }
            release_buffers();
        }
    }
    return worst;
}

/* ------------------------------------------------------------------------
 * The register-only FMA loop: each lane runs acc = 0.999 acc + 0.001, which
 * converges to 1, so after enough rounds the result is the number of lanes,
 * fma_flops_per_iteration / 2: finite, and the flop count it claims.
 * ---------------------------------------------------------------------- */
static double check_fma_loop(const gptc_kernels *t)
{
    const double lanes = t->fma_flops_per_iteration / 2.0;
    const float got = t->fma_loop(30000);
    if (!isfinite(got)) return NAN;
    return fabs((double)got - lanes) / lanes;
}

/* ------------------------------------------------------------------------
 * The streaming read (read_sum): the sum of runs of 1 .. 70 floats (every
 * tail of every vector width and of the four-vector step) and longer ones,
 * ending at guard pages, from two starts a float apart (so the vectors
 * meet both alignments of a float), against a sum in double. The values lie in [0.5, 1.5], so no sum
 * cancels and the float32 sums' rounding stays far below the tolerance.
 * ---------------------------------------------------------------------- */
static double check_read_sum(const gptc_kernels *t)
{
    static const size_t longer[] = {1000, 4099};
    double worst = 0.0;
    for (int c = 0; c < 72; c++) {
        const size_t n = c < 70 ? (size_t)c + 1 : longer[c - 70];
        for (int skew = 0; skew < 2; skew++) {
            const int mark = nmappings;
            float *buf = guarded_floats(n + (size_t)skew);
            float *a = buf + skew;
            double ref = 0.0;
            for (size_t i = 0; i < n; i++) {
                a[i] = 1.0f + 0.5f * uniform();
                ref += a[i];
            }
            const float got = t->read_sum(a, n);
            if (!isfinite(got)) return NAN;
            worst = worse(worst, fabs((double)got - ref) / ref);
            release_since(mark);
        }
    }
    return worst;
}

/* ------------------------------------------------------------------------
 * GELU over a run (gelu and gelu_backward), against the tanh form in double
 * precision: runs of 1 .. 40 floats (every tail of every vector width),
 * and longer ones, ending at guard pages; x in [-8, 8] and values where
 * e^(-2u) overflows. Each value is compared on its own scale, since the
 * negative side is tiny. Also: in place equals out of place, and a value
 * is the same wherever in a run it lies (as one-element run).
 * ---------------------------------------------------------------------- */
/* The reference in double, through s = (1 + tanh(u)) / 2 = 1 / (1 + e^(-2u)):
 * the tanh form loses the negative side to cancellation (1 + tanh(u) for
 * u < -15 is below double's rounding of 1). */
static double gelu_sigmoid(double v)
{
    return 1.0 / (1.0 + exp(-2.0 * 0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

static double gelu_run_ref(double v) { return v * gelu_sigmoid(v); }

/* d/dx of 0.5 x (1 + tanh(u)) = 0.5 (1 + t) + 0.5 x (1 - t^2) u', with
 * 1 + t = 2 s and 1 - t^2 = 4 s (1 - s) */
static double gelu_grad_ref(double v)
{
    const double s = gelu_sigmoid(v);
    const double du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * v * v);
    return s + 2.0 * v * s * (1.0 - s) * du;
}

static double check_gelu(const gptc_kernels *t)
{
    static const size_t longer[] = {255, 1000, 4099};
    double worst = 0.0;
    for (int c = 0; c < 43; c++) {
        const size_t n = c < 40 ? (size_t)c + 1 : longer[c - 40];
        const int mark = nmappings;
        float *x = guarded_floats(n), *out = guarded_floats(n), *again = guarded_floats(n);
        float *dout = guarded_floats(n), *dinp = guarded_floats(n);
        double *ref = malloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) x[i] = 8.0f * uniform();
        x[0] = n > 1 ? -30.0f : x[0];   /* e^(-2u) is +inf: the result is -0 */
        if (n > 2) x[n - 1] = 30.0f;
        fill(dout, n);
        fill(dinp, n);
        t->gelu(out, x, n);
        for (size_t i = 0; i < n; i++) {
            const double r = gelu_run_ref(x[i]);
            const double scale = fabs(r) > 1e-20 ? fabs(r) : 1e-20;
            worst = worse(worst, fabs((double)out[i] - r) / scale);
            float alone;
            t->gelu(&alone, x + i, 1);
            if (memcmp(&alone, &out[i], sizeof(float)) != 0) {
                worst = broken("gelu", "a value differs computed alone", (int)n, (int)i, 0);
            }
        }
        memcpy(again, x, n * sizeof(float));
        t->gelu(again, again, n);
        if (memcmp(again, out, n * sizeof(float)) != 0) {
            worst = broken("gelu", "in place differs from out of place", (int)n, 0, 0);
        }
        for (size_t i = 0; i < n; i++) ref[i] = dinp[i] + gelu_grad_ref(x[i]) * dout[i];
        t->gelu_backward(dinp, x, dout, n);
        worst = worse(worst, rel_err(dinp, ref, n));
        free(ref);
        release_since(mark);
    }
    return worst;
}

/* ------------------------------------------------------------------------
 * Cross-entropy's passes over a row (row_logsumexp, softmax_add) against
 * double precision: rows of 1 .. 40 logits (every tail of every vector
 * width) and longer ones up to GPT-2's 50257, ending at guard pages,
 * logits spread over +-30 around an offset of 100 (the maximum must be
 * subtracted). The maximum must be exact.
 * ---------------------------------------------------------------------- */
static double check_loss_rows(const gptc_kernels *t)
{
    static const int longer[] = {255, 1000, 50257};
    double worst = 0.0;
    for (int c = 0; c < 43; c++) {
        const int V = c < 40 ? c + 1 : longer[c - 40];
        const int mark = nmappings;
        float *l = guarded_floats((size_t)V), *dl = guarded_floats((size_t)V);
        double *ref = malloc((size_t)V * sizeof(double));
        float m_ref = -INFINITY;
        for (int j = 0; j < V; j++) {
            l[j] = 100.0f + 30.0f * uniform();
            m_ref = l[j] > m_ref ? l[j] : m_ref;
        }
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp((double)l[j] - m_ref);
        float m;
        double log_sum;
        t->row_logsumexp(l, V, &m, &log_sum);
        if (m != m_ref) worst = broken("row_logsumexp", "the maximum is not exact", V, 0, 0);
        worst = worse(worst, fabs(log_sum - log(sum)) / fmax(1.0, fabs(log(sum))));
        const double shift = m_ref + log(sum);
        fill(dl, (size_t)V);
        for (int j = 0; j < V; j++) ref[j] = dl[j] + 0.5 * exp((double)l[j] - shift);
        t->softmax_add(dl, l, V, shift, 0.5f);
        worst = worse(worst, rel_err(dl, ref, (size_t)V));
        free(ref);
        release_since(mark);
    }
    return worst;
}

/* ------------------------------------------------------------------------ */
static void check_kernel_set(const char *isa)
{
    if (gptc_set_isa(isa) != 0) {
        report(isa, "table", broken("table", "gptc_set_isa refused a supported set", 0, 0, 0),
               TOL_EXACT);
        return;
    }
    const gptc_kernels *t = gptc_active_kernels();
    printf("%s: %d x %d tile, pack width %d, packed GEMM from %d rows\n", isa, t->mr, t->nr,
           t->pack_width, t->packed_min_rows);
    running_isa = isa;
/* the kernel's name is set before its check runs, for on_fault */
#define RUN(kernel, check, tol) (running_kernel = (kernel), report(isa, (kernel), (check), (tol)))
    RUN("table", check_table(t, isa), TOL_EXACT);
    RUN("tile", check_tile(t), TOL_SUM);
    RUN("pack_f32", check_pack(t, 0), TOL_EXACT);
    RUN("pack_bf16", check_pack(t, 1), TOL_EXACT);
    RUN("rows_f32", check_rows(t, 0), TOL_SUM);
    RUN("rows_bf16", check_rows(t, 1), TOL_SUM);
    RUN("linear_f32", check_linear(t, 0), TOL_SUM);
    RUN("linear_bf16", check_linear(t, 1), TOL_SUM);
    RUN("pack_int8", check_pack_int8(t), TOL_EXACT);
    RUN("rows_int8_exact", check_rows_int8(t, 1), TOL_EXACT);
    RUN("rows_int8", check_rows_int8(t, 0), TOL_SUM);
    RUN("linear_int8", check_linear_int8(t), TOL_SUM);
    RUN("linear_parts", check_linear_parts(t), TOL_EXACT);
    running_kernel = "linear_backward";
    check_backward(isa);
    RUN("gemm_serial", check_gemm_serial(), TOL_SUM);
    RUN("attention", check_attention(), TOL_SUM);
    RUN("attention_decode", check_decode(), TOL_EXACT);
    /* the loop converges to within float rounding of 1, amplified by 1000 */
    RUN("fma_loop", check_fma_loop(t), 1e-3);
    RUN("read_sum", check_read_sum(t), TOL_SUM);
    RUN("gelu", check_gelu(t), TOL_SUM);
    RUN("loss_rows", check_loss_rows(t), TOL_SUM);
#undef RUN
}

int main(void)
{
    signal(SIGSEGV, on_fault);
    signal(SIGBUS, on_fault);
    const char *names[16];
    const char *compiled[16];
    int n = gptc_supported_isas(names, 16);
    int nc = gptc_compiled_isas(compiled, 16);
    n = n < 16 ? n : 16;
    nc = nc < 16 ? nc : 16;
    printf("compiled kernel sets:");
    for (int i = 0; i < nc; i++) printf(" %s", compiled[i]);
    printf("\nthreads: %d\n", gptc_get_num_threads());
    running_kernel = "quantize_int8";
    report("all", "quantize_int8", check_quantize(), TOL_EXACT);
    for (int i = 0; i < n; i++) check_kernel_set(names[i]);
    printf("tested kernel sets:");
    for (int i = 0; i < n; i++) printf(" %s", names[i]);
    printf("\n%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
