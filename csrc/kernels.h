/*
 * kernels.h - the kernel layer: the innermost loops of gptc, written once
 * per instruction set, behind one table of function pointers.
 *
 * Everything that depends on the CPU's vector instructions is a kernel
 * here (GELU and cross-entropy's exponentials too: their loops are
 * vectorised at the table's width); everything else
 * (blocking, threading, the bias epilogue, which product takes which path)
 * is written once, in matmul.c, attention.c, gelu.c and loss.c, and calls the
 * kernels of the selected table. Each
 * instruction set has a file of its own in csrc/arch/:
 *
 *   generic.c      portable C (any CPU; SSE2 vectors on x86-64, whatever
 *                  the compiler's baseline is elsewhere)
 *   x86_avx2.c     AVX2 + FMA (x86-64 since Haswell / Zen): the tables
 *                  "avx2" and "avx2_vnni", which adds AVX-VNNI's vpdpbusd
 *                  to the int8 products (Alder Lake, Sapphire Rapids, Zen 5)
 *   x86_avx512.c   AVX-512F + BW (Skylake-SP and later Xeons, Zen 4): the
 *                  tables "avx512" and "avx512_vnni", which adds AVX512-VNNI
 *                  (Cascade Lake, Ice Lake and later, Zen 4)
 *   arm64_neon.c   ARMv8 Advanced SIMD (Apple Silicon, Graviton, ...): the
 *                  tables "neon" and "neon_dotprod", which adds the
 *                  dot-product extension's sdot to the int8 products
 *                  (optional from ARMv8.2: Apple M1 and later, Neoverse N1
 *                  and later, Cortex-A76 and later)
 *
 * A VNNI or dot-product table differs from its base table in the int8
 * products only. isa.c picks the widest table the CPU supports when gptc
 * is imported; GPTC_ISA=generic|avx2|avx2_vnni|avx512|avx512_vnni|neon|
 * neon_dotprod forces one, and gptc_set_isa switches at run time (the
 * tests run every kernel set in one process that way). The x86 files, and
 * arm64_neon.c for sdot, compile their functions with target attributes,
 * so the default build needs no -march flag and runs on any x86-64 or
 * ARMv8-A CPU.
 *
 * Not a public header: gptc.h is the API.
 */
#ifndef GPTC_KERNELS_H
#define GPTC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "gptc.h"

/* ------------------------------------------------------------------------
 * Packed matrix multiply (matmul.c drives it, BLIS-style).
 * ---------------------------------------------------------------------- */

/* The register tile: acc[i][j] = sum over p < kc of ap[p * MR + i] * bp[p * NR + j]
 * for the table's MR x NR, then c[i * ldc + j] = acc (add == 0) or += acc
 * (add == 1). ap and bp are packed panels aligned to 64 bytes. */
typedef void (*gptc_tile_fn)(int kc, const float *ap, const float *bp, float *c,
                             ptrdiff_t ldc, int add);

/* The packing transposes: dst[p * ld + r] = src[r * stride + p] for
 * r < rows and p < len; lanes rows <= r < width are written as zeros
 * (width <= the table's pack_width). src holds float32, or bfloat16
 * (uint16_t) for the bfloat16 variant, which widens as it packs. */
typedef void (*gptc_pack_fn)(float *dst, ptrdiff_t ld, const void *src, ptrdiff_t stride,
                             int rows, int width, int len);

/* Rows of int8 blocks (gptc.h, gptc_weight): row r's values at
 * values + r * stride, the bfloat16 scale of its block b at
 * scales[r * scale_stride + b]. A view may start inside a row, at a block
 * boundary. */
typedef struct gptc_int8_rows {
    const int8_t *values;
    const uint16_t *scales;
    ptrdiff_t stride, scale_stride;
} gptc_int8_rows;

/* The packing transpose of int8 rows, each value widened to q * d (exact
 * in float32: 7 bits times bfloat16's 8) as it is packed: dst[p * ld + r]
 * is the value p of row r of src (a view starting at a block boundary). */
typedef void (*gptc_pack_int8_fn)(float *dst, ptrdiff_t ld, gptc_int8_rows src, int rows,
                                  int width, int len);

/* ------------------------------------------------------------------------
 * Few-rows products (decode steps, small batches): dot products of an x
 * row with a W row, both contiguous, every weight read once for all rows.
 *
 * For columns n0 <= j < n1 and all rows m < M:
 *   out[m * N + j] = (accumulate ? out[m * N + j] : 0) + x_m . w_j + bias[j]
 * x is [M, K] float32, w is [N, K] in the kernel's weight type, bias may
 * be NULL. With two rows or more each output is summed in one fixed order,
 * so a row gets the same bits whatever the count of rows; one row (a
 * decode step) takes a dot product that sums in another order.
 * ---------------------------------------------------------------------- */
/* Every tile width of every kernel divides this: the driver's chunks of
 * columns are multiples, so only the end of W is ever short of a tile. */
#define GPTC_ROWS_MAX_NR 12
typedef void (*gptc_rows_fn)(float *out, const float *x, const void *w, const float *bias,
                             int M, int K, int N, int n0, int n1, int accumulate);

/* The same with an int8 weight, its x rows quantised like it (matmul.c
 * calls gptc_quantize_int8 once per call): x and w are views of M and N
 * rows of K values. Each output is the sum over blocks b, in float32, of
 *   (integer dot product of the blocks' values) * d_x[b] * d_w[b]
 * where the integer sums are exact (|q| <= 127, so no step saturates) and
 * d_x[b] * d_w[b] is exact too (two bfloat16 values). */
typedef void (*gptc_rows_int8_fn)(float *out, gptc_int8_rows x, gptc_int8_rows w,
                                  const float *bias, int M, int K, int N, int n0, int n1,
                                  int accumulate);

/* ------------------------------------------------------------------------
 * Inference attention (attention.c): the blocked kernel (flash_attention.h).
 * ---------------------------------------------------------------------- */
#define GPTC_ATT_Q_BLOCK 64    /* query rows per task (attention.c) */
#define GPTC_ATT_K_BLOCK 32    /* keys per block */
#define GPTC_ATT_ROW_TILE 4    /* query rows sharing each load of a key or value */

/* One problem: queries of Tq new positions past, ..., past + Tq - 1 (rows
 * of q and out, B * Tq of them, row stride C) over keys and values
 * 0 .. past + Tq - 1. The values of batch row b, head h, position j are the
 * HS floats at v + b * v_batch_stride + h * v_head_stride + j * v_row_stride
 * (rows of C floats, or each head's rows side by side); the keys are
 * k_blocks transposed blocks per head (gptc_store_key_blocks), batch row b
 * and head h at block (b * NH + h) * k_blocks. */
typedef struct gptc_flash_problem {
    float *out;
    const float *q, *k, *v;
    int Tq, past, C, HS;
    size_t v_batch_stride, v_head_stride, v_row_stride;
    int k_blocks;
    float divisor;             /* sqrt(HS) */
} gptc_flash_problem;

/* Floats between the rows of scores of a tile, for queries that see up to
 * `keys` keys: whole blocks. */
static inline size_t gptc_flash_score_stride(int keys)
{
    return ((size_t)keys + GPTC_ATT_K_BLOCK - 1) / GPTC_ATT_K_BLOCK * GPTC_ATT_K_BLOCK;
}

/* Per-thread scratch of one task, in floats: a tile's rows of scores. */
static inline size_t gptc_flash_scratch_floats(int keys)
{
    return (size_t)GPTC_ATT_ROW_TILE * gptc_flash_score_stride(keys);
}

/* One task: query rows [row0, row0 + nrows) of batch b, head h. */
typedef void (*gptc_flash_task_fn)(const gptc_flash_problem *pb, int b, int h, int row0,
                                   int nrows, float *scratch);

/* ------------------------------------------------------------------------
 * GELU over a run of n floats (csrc/arch/gelu_simd.h): the activation layer
 * and the epilogue of a feed-forward product.
 * ---------------------------------------------------------------------- */
/* out[i] = gelu(x[i]); out may be x. */
typedef void (*gptc_gelu_fn)(float *out, const float *x, size_t n);
/* dinp[i] += gelu'(inp[i]) * dout[i]. */
typedef void (*gptc_gelu_backward_fn)(float *dinp, const float *inp, const float *dout,
                                      size_t n);

/* ------------------------------------------------------------------------
 * Cross-entropy over a row of V >= 1 logits (csrc/arch/loss_simd.h).
 * ---------------------------------------------------------------------- */
/* *maxval = max_j l[j], *log_sum = log(sum_j e^(l[j] - max)). */
typedef void (*gptc_logsumexp_fn)(const float *l, int V, float *maxval, double *log_sum);
/* dl[j] += scale * e^(l[j] - shift). */
typedef void (*gptc_softmax_add_fn)(float *dl, const float *l, int V, double shift,
                                    float scale);

/* ------------------------------------------------------------------------
 * The table.
 * ---------------------------------------------------------------------- */
typedef struct gptc_kernels {
    const char *name;               /* "generic", "avx2", "avx512", "neon", ... */
    int mr, nr;                     /* the register tile's shape */
    int pack_width;                 /* the widest square of the packing transposes */
    gptc_tile_fn tile;
    gptc_pack_fn pack_f32, pack_bf16;
    gptc_pack_int8_fn pack_int8;
    gptc_rows_fn rows_f32, rows_bf16;
    gptc_rows_int8_fn rows_int8;
    /* Products with fewer rows than this take the few-rows kernels, which
     * read each weight once; from here on packing W pays for itself. The
     * crossing depends on both kernels: each table's value is where the two
     * timed equal on GPT-2's four weight shapes, M = 4 .. 64, one thread. */
    int packed_min_rows;
    gptc_flash_task_fn flash_task;
    gptc_gelu_fn gelu;
    gptc_gelu_backward_fn gelu_backward;
    gptc_logsumexp_fn row_logsumexp;
    gptc_softmax_add_fn softmax_add;
    /* A register-only loop of independent multiply-adds for `iterations`
     * rounds: the machine's arithmetic peak on one thread. Returns a value
     * of the sums so the work cannot be optimised away; does
     * fma_flops_per_iteration floating-point operations per round. */
    float (*fma_loop)(long iterations);
    int fma_flops_per_iteration;
    /* The sum of the n floats at a (any alignment), read with this set's
     * widest loads: timed on an array much larger than the caches, the
     * streaming-read bandwidth (csrc/limits.c). */
    float (*read_sum)(const float *a, size_t n);
} gptc_kernels;

extern const gptc_kernels gptc_kernels_generic;
#if defined(__x86_64__) && defined(__GNUC__)
#define GPTC_HAVE_X86_KERNELS 1
extern const gptc_kernels gptc_kernels_avx2, gptc_kernels_avx2_vnni;
extern const gptc_kernels gptc_kernels_avx512, gptc_kernels_avx512_vnni;
#endif
#if defined(__aarch64__)
#define GPTC_HAVE_NEON_KERNELS 1
extern const gptc_kernels gptc_kernels_neon, gptc_kernels_neon_dotprod;
#endif

#ifdef GPTC_HAVE_X86_KERNELS
/* The int8 few-rows products on 256-bit vectors (x86_avx2.c): with
 * vpmaddubsw + vpmaddwd (AVX2: the avx2 and avx512 tables), with AVX-VNNI's
 * vpdpbusd (avx2_vnni) and with AVX512-VNNI's on 256-bit vectors
 * (avx512_vnni). The AVX-512 tables take these rather than 512-bit ones:
 * the 512-bit kernel (two blocks per vector, their scales apart by a
 * permute, the sign trick by mask as AVX-512 has no vpsignb) decoded GPT-2
 * 124M about 15% slower on a 2-core AMD EPYC (Zen 5 class) VM, 2026-12-02
 * (e.g. 175 against 214 tokens/s), and no faster on a Sapphire Rapids VM
 * (178 against 180, 2026-12-01). */
void gptc_x86_rows_int8_256(float *out, gptc_int8_rows x, gptc_int8_rows w, const float *bias,
                            int M, int K, int N, int n0, int n1, int accumulate);
void gptc_x86_rows_int8_256_avx_vnni(float *out, gptc_int8_rows x, gptc_int8_rows w,
                                     const float *bias, int M, int K, int N, int n0, int n1,
                                     int accumulate);
void gptc_x86_rows_int8_256_avx512_vnni(float *out, gptc_int8_rows x, gptc_int8_rows w,
                                        const float *bias, int M, int K, int N, int n0, int n1,
                                        int accumulate);
#endif

/* The tables compiled into this build, NULL-terminated, narrowest first. */
extern const gptc_kernels *const gptc_kernels_compiled[];

/* The selected table (isa.c). A caller reads it once per operation, so an
 * operation never mixes two tables even if another thread switches. */
const gptc_kernels *gptc_active_kernels(void);

/* The largest tile and transpose of any table, for buffers sized before a
 * table is read (gptc_gemm_serial_floats). */
#define GPTC_MAX_MR 12
#define GPTC_MAX_NR 32

#endif /* GPTC_KERNELS_H */
