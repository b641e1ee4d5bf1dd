/*
 * gelu.c - the activations of the feed-forward network (section 4.3).
 *
 * GELU is the tanh approximation GPT-2 was trained with:
 *   0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
 * It is smooth and lets small negative inputs through, unlike ReLU.
 * Since 0.5 (1 + tanh(u)) is the logistic sigmoid of 2u, it is computed as
 * x * sigmoid(2u) with one exponential (gptc_gelu_scalar, internal.h): the
 * same function, and a loop of it vectorises where tanhf would not.
 */
#include "gptc.h"
#include "internal.h"
#include "kernels.h"

/* The elementwise loops run in pieces of GELU_PIECE floats, each piece one
 * call of the kernel set's vectorised loop (csrc/arch/gelu_simd.h), the
 * pieces split among the threads. */
#define GELU_PIECE 4096

void gptc_gelu_forward(float *out, const float *x, size_t n)
{
    const gptc_gelu_fn gelu = gptc_active_kernels()->gelu;
    const long long pieces = (long long)((n + GELU_PIECE - 1) / GELU_PIECE);
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (n >= GPTC_PARALLEL_MIN_WORK)
    for (long long p = 0; p < pieces; p++) {
        const size_t i = (size_t)p * GELU_PIECE;
        gelu(out + i, x + i, n - i < GELU_PIECE ? n - i : GELU_PIECE);
    }
}

void gptc_relu_forward(float *out, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* written as a comparison, not fmaxf, so NaN propagates as in PyTorch */
        out[i] = x[i] > 0.0f ? x[i] : (x[i] == x[i] ? 0.0f : x[i]);
    }
}

/*
 * Backward. With u = sqrt(2/pi) * (x + 0.044715 x^3) and t = tanh(u):
 *   d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,
 *   du/dx = sqrt(2/pi) * (1 + 3 * 0.044715 x^2),
 * using tanh' = 1 - tanh^2. In terms of s = sigmoid(2u) = 0.5 (1 + t),
 * 1 - t^2 = 4 s (1 - s), so the gradient is s + 2 x s (1 - s) du/dx: one
 * exponential per element, as in the forward (gptc_gelu_grad_scalar,
 * internal.h).
 */
void gptc_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
    const gptc_gelu_backward_fn gelu_backward = gptc_active_kernels()->gelu_backward;
    const long long pieces = (long long)((n + GELU_PIECE - 1) / GELU_PIECE);
#pragma omp parallel for schedule(static) num_threads(gptc_get_num_threads()) \
    if (n >= GPTC_PARALLEL_MIN_WORK)
    for (long long p = 0; p < pieces; p++) {
        const size_t i = (size_t)p * GELU_PIECE;
        gelu_backward(dinp + i, inp + i, dout + i, n - i < GELU_PIECE ? n - i : GELU_PIECE);
    }
}

/* Gradient 1 where x > 0 and 0 where x <= 0 (0 at the kink, as PyTorch's
 * threshold_backward); a NaN input passes the gradient through, as there. */
void gptc_relu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dinp[i] += inp[i] <= 0.0f ? 0.0f : dout[i];
    }
}
