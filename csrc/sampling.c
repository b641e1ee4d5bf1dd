/*
 * sampling.c - the next token from the last position's logits, as the
 * `generate` function of chapter 5 chooses it:
 *
 *   top_k:        logits below the k-th largest become -inf
 *   temperature:  0 -> argmax; > 0 -> sample from softmax(logits / t)
 *
 * Sampling draws one uniform double from the generator per row and walks
 * the cumulative weights, so every token is drawn with its softmax
 * probability and the same seed gives the same tokens. (PyTorch's
 * torch.multinomial draws differently: the distribution is the same, the
 * individual draws are not.)
 */
#include "gptc.h"

#include <math.h>

size_t gptc_sample_scratch_floats(int V)
{
    return (size_t)V;   /* a heap for the top-k threshold, then the weights */
}

/* Restore the min-heap property below position i of heap[0..n). */
static void sift_down(float *heap, int n, int i)
{
    for (;;) {
        int child = 2 * i + 1;
        if (child >= n) {
            return;
        }
        if (child + 1 < n && heap[child + 1] < heap[child]) {
            child++;
        }
        if (!(heap[child] < heap[i])) {
            return;
        }
        float t = heap[i];
        heap[i] = heap[child];
        heap[child] = t;
        i = child;
    }
}

/* The n largest of sign * x[0..V) in a min-heap; returns its root, the
 * n-th largest of sign * x. O(V log n), whatever the values. */
static float nth_largest(const float *x, int V, int n, float sign, float *heap)
{
    for (int i = 0; i < n; i++) {
        heap[i] = sign * x[i];
    }
    for (int i = n / 2 - 1; i >= 0; i--) {
        sift_down(heap, n, i);
    }
    for (int i = n; i < V; i++) {
        float y = sign * x[i];
        if (y > heap[0]) {
            heap[0] = y;
            sift_down(heap, n, 0);
        }
    }
    return heap[0];
}

/* The k-th largest of x (1 <= k <= V, no NaN): through a heap of the k
 * largest, or, when k is more than half of V, as the (V - k + 1)-th
 * smallest through a heap of the negated values (negation is exact). */
static float kth_largest(const float *x, int V, int k, float *heap)
{
    int n_small = V - k + 1;
    if (k <= n_small) {
        return nth_largest(x, V, k, 1.0f, heap);
    }
    return -nth_largest(x, V, n_small, -1.0f, heap);
}

/* One row; returns 0, or -1 if the row has nothing to choose from. */
static int next_token(int64_t *next, const float *x, int V, double temperature, int top_k,
                      gptc_generator *g, float *scratch)
{
    for (int i = 0; i < V; i++) {
        if (isnan(x[i])) {
            return -1;
        }
    }
    if (temperature == 0.0) {
        /* the top-k mask never removes the maximum, so argmax ignores it */
        int best = 0;
        for (int i = 1; i < V; i++) {
            if (x[i] > x[best]) {
                best = i;
            }
        }
        *next = best;
        return 0;
    }
    /* the book: logits < min_val become -inf, so ties with the k-th
     * largest are kept */
    const float threshold = top_k > 0 ? kth_largest(x, V, top_k, scratch) : -INFINITY;
    double zmax = -INFINITY;
    for (int i = 0; i < V; i++) {
        if (x[i] >= threshold) {
            double z = (double)x[i] / temperature;
            zmax = z > zmax ? z : zmax;
        }
    }
    if (!isfinite(zmax)) {
        return -1;   /* all -inf, or an infinite logit: softmax is undefined */
    }
    /* unnormalised softmax weights; kept in scratch so that the total and
     * the running sum below add exactly the same numbers */
    float *w = scratch;
    double total = 0.0;
    for (int i = 0; i < V; i++) {
        w[i] = x[i] >= threshold ? (float)exp((double)x[i] / temperature - zmax) : 0.0f;
        total += w[i];
    }
    /* u uniform in [0, 1) from 53 random bits, as PyTorch makes doubles */
    const double u = (double)(gptc_random_u64(g) >> 11) * (1.0 / 9007199254740992.0);
    const double target = u * total;
    double running = 0.0;
    int choice = -1;
    for (int i = 0; i < V; i++) {
        if (w[i] > 0.0f) {
            running += w[i];
            choice = i;
            if (running > target) {
                break;
            }
        }
    }
    /* choice is the last token with weight if rounding made target reach
     * the total; the maximum has weight 1, so there is one */
    *next = choice;
    return 0;
}

int gptc_next_tokens(int64_t *next, const float *logits, int B, int V, double temperature,
                     int top_k, gptc_generator *g, float *scratch)
{
    for (int b = 0; b < B; b++) {
        if (next_token(&next[b], logits + (size_t)b * V, V, temperature, top_k, g,
                       scratch) != 0) {
            return b;
        }
    }
    return -1;
}
