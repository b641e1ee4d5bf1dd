/*
 * gelu_simd.h - GELU and its gradient over a run of floats, the
 * per-instruction-set half of csrc/gelu.c and of the matmul epilogue that
 * fuses GELU into a feed-forward product. Included once by each file of
 * csrc/arch/, after it defines
 *   GELU_TARGET  the target attribute of the functions, or nothing
 * and gets gelu_kernel and gelu_backward_kernel (gptc_gelu_fn and
 * gptc_gelu_backward_fn in kernels.h).
 *
 * The arithmetic is gptc_gelu_scalar and gptc_gelu_grad_scalar
 * (internal.h), straight-line code with one exponential that the compiler
 * vectorises at the width the target attribute allows: compiled in the
 * baseline x86-64 build (as the epilogue in matmul.c was) the loop ran 4
 * floats at a time, here it runs 8 with AVX2 and 16 with AVX-512. GELU on
 * 1024 x 3072 floats (the hidden layer of a (1, 1024) forward) took 2.8 ms
 * in the baseline build, 1.1 ms with avx2 and 0.84 ms with avx512_vnni;
 * fused into that feed-forward product it added 3.1 ms, now 0.6-1.1 ms
 * (2 threads, 2-vCPU Sapphire Rapids class Xeon VM, 2026-12-02). Each
 * element goes through the same operations whatever its neighbours, so a
 * value does not depend on where in a run it lies: a decode step's GELU
 * equals the same row's in a whole-sequence forward.
 */
#ifndef GPTC_GELU_SIMD_H
#define GPTC_GELU_SIMD_H

#include <stddef.h>

#include "../internal.h"

/* out[i] = gelu(x[i]) for i < n; out may be x (in place). */
GELU_TARGET static void gelu_kernel(float *out, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = gptc_gelu_scalar(x[i]);
}

/* dinp[i] += gelu'(inp[i]) * dout[i] for i < n. */
GELU_TARGET static void gelu_backward_kernel(float *dinp, const float *inp, const float *dout,
                                             size_t n)
{
    for (size_t i = 0; i < n; i++) dinp[i] += gptc_gelu_grad_scalar(inp[i]) * dout[i];
}

#endif /* GPTC_GELU_SIMD_H */
