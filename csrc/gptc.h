/*
 * gptc.h - the C API of gptc: the GPT-2 model of chapter 4 of
 * "Build a Large Language Model (From Scratch)" as plain C functions.
 *
 * Conventions shared by every function below:
 *  - tensors are contiguous row-major float32 buffers; shapes are passed
 *    explicitly and named as in the book (B batch, T sequence length,
 *    C emb_dim, NH heads, V vocabulary);
 *  - weights are laid out exactly as PyTorch stores them, so a state dict
 *    moves between the book's model and gptc without any transposition
 *    (a Linear weight is [out_features, in_features]);
 *  - functions never allocate inside their loops and never check their
 *    arguments: the Python binding (csrc/py/) validates shapes, dtypes and
 *    token ids before calling in, and the C code trusts it.
 */
#ifndef GPTC_H
#define GPTC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * rng.c - PyTorch's default CPU generator, reproduced draw for draw.
 *
 * torch.manual_seed(s) seeds a 32-bit Mersenne Twister (mt19937); every
 * random tensor the chapter prints (weights, torch.rand/randn, dropout
 * masks) is a deterministic transformation of that stream. gptc keeps the
 * same state and applies the same transformations in the same order, so
 * gptc.manual_seed(123) reproduces the book's numbers without PyTorch.
 * ---------------------------------------------------------------------- */
#define GPTC_MT_N 624
/* Size in bytes of the serialised generator state. It is the byte layout
 * of torch.get_rng_state() for the CPU generator, so a state can move
 * between PyTorch and gptc in both directions. */
#define GPTC_RNG_STATE_BYTES 5056

typedef struct gptc_generator {
    uint64_t seed;                /* what initial_seed() reports */
    uint32_t state[GPTC_MT_N];    /* mt19937 state words */
    int32_t left;                 /* draws left before the next twist */
    int32_t next;                 /* index of the next state word */
    int32_t seeded;
    /* Box-Muller spare values, cached between calls as PyTorch caches them */
    int32_t has_next_double_normal;
    double next_double_normal;
    int32_t has_next_float_normal;
    float next_float_normal;
} gptc_generator;

/* PyTorch's default seed for a fresh process (what torch.initial_seed()
 * reports before any manual_seed call). */
#define GPTC_DEFAULT_SEED 67280421310721ULL

void gptc_generator_seed(gptc_generator *g, uint64_t seed);
uint32_t gptc_random_u32(gptc_generator *g);
uint64_t gptc_random_u64(gptc_generator *g);
/* torch.rand / Tensor.uniform_(from, to) on a contiguous float32 tensor.
 * from/to are the Python floats as given (PyTorch narrows them to float
 * itself); the caller checks from <= to. */
void gptc_uniform_f32(gptc_generator *g, float *out, size_t n, double from, double to);
/* torch.randn / Tensor.normal_(mean, std) on a contiguous float32 tensor,
 * including PyTorch's two code paths (n < 16 and n >= 16). mean/std are
 * doubles because the n < 16 path computes in double with them unrounded;
 * the caller checks std >= 0. */
void gptc_normal_f32(gptc_generator *g, float *out, size_t n, double mean, double std);
/* Tensor.bernoulli_(p) on a contiguous float32 tensor, as PyTorch's CPU
 * kernel does it when it does not call MKL: out[i] is 1.0f or 0.0f. */
void gptc_bernoulli_f32(gptc_generator *g, float *out, size_t n, double p);
/* torch.randperm(n): a random permutation of 0 .. n - 1 (0 <= n < 2^32),
 * the same one PyTorch draws from the same generator state. */
void gptc_randperm(gptc_generator *g, int64_t *out, int64_t n);
/* Serialise to / restore from torch.get_rng_state()'s byte layout.
 * gptc_generator_set_state returns 0 on success, -1 if the bytes do not
 * describe a valid state (the generator is then left unchanged). */
void gptc_generator_get_state(const gptc_generator *g, uint8_t out[GPTC_RNG_STATE_BYTES]);
int gptc_generator_set_state(gptc_generator *g, const uint8_t in[GPTC_RNG_STATE_BYTES]);

/* ------------------------------------------------------------------------
 * threads.c - how many threads the parallel loops use.
 * ---------------------------------------------------------------------- */
void gptc_set_num_threads(int n);   /* n >= 1 */
int gptc_get_num_threads(void);

/* ------------------------------------------------------------------------
 * One function per layer of the chapter-4 model. Each takes its output
 * buffer first, then its inputs, then the shape.
 *
 * Beside each forward is its backward (for training). A backward takes the
 * gradients it produces first, then the upstream gradient dout and what
 * the forward read. Every gradient is ACCUMULATED (+=) into its buffer, so
 * a parameter used twice (or a tied weight) simply collects both; the
 * caller zeroes the buffers before a step. A gradient pointer may be NULL:
 * that gradient is not needed and its work is skipped.
 * ---------------------------------------------------------------------- */

/* embedding.c: out[i, :] = weight[idx[i], :] for i < n (nn.Embedding). */
void gptc_embedding_forward(float *out, const int64_t *idx, const float *weight,
                            size_t n, int C);
/* embedding.c: the model's input, out[b, t, :] = tok_emb[idx[b, t]] + pos_emb[t]. */
void gptc_encoder_forward(float *out, const int64_t *idx, const float *tok_emb,
                          const float *pos_emb, int B, int T, int C);
/* embedding.c: dweight[idx[i], :] += dout[i, :]; repeated ids accumulate. */
void gptc_embedding_backward(float *dweight, const float *dout, const int64_t *idx,
                             size_t n, int C);

/* layernorm.c: over the last axis of N rows of C values, biased variance. */
void gptc_layernorm_forward(float *out, const float *x, const float *scale,
                            const float *shift, size_t N, int C, float eps);
/* layernorm.c: dinp [N, C], dscale [C], dshift [C]; the row mean and
 * variance are recomputed from inp exactly as the forward computes them. */
void gptc_layernorm_backward(float *dinp, float *dscale, float *dshift, const float *dout,
                             const float *inp, const float *scale, size_t N, int C, float eps);

/* gelu.c: the tanh approximation the book uses, elementwise. */
void gptc_gelu_forward(float *out, const float *x, size_t n);
/* relu, elementwise (the chapter's ReLU comparison and Sequential example). */
void gptc_relu_forward(float *out, const float *x, size_t n);
/* gelu.c: dinp += gelu'(inp) * dout (the derivative of the tanh form). */
void gptc_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
/* gelu.c: dinp += dout where inp > 0 (gradient 0 at inp <= 0, as PyTorch). */
void gptc_relu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* A Linear layer's weight [out_features, in_features], as stored: float32
 * (the parameter itself), the bfloat16 copy Module.to_dtype("bfloat16")
 * keeps for inference (the top 16 bits of each float32, as uint16_t), or
 * the int8 copy of Module.to_dtype("int8"): each row cut into blocks of
 * GPTC_INT8_BLOCK consecutive values (the last one shorter when K is not a
 * multiple), each block stored as int8 values q and one scale d, the
 * value being q * d. data holds the int8_t values [N, K], scales the
 * bfloat16 bits of d [N, gptc_int8_blocks(K)] (NULL for the other types).
 * gptc_quantize_int8 makes them. */
typedef enum gptc_dtype { GPTC_FLOAT32 = 0, GPTC_BFLOAT16 = 1, GPTC_INT8 = 2 } gptc_dtype;
typedef struct gptc_weight {
    const void *data;
    gptc_dtype dtype;
    const uint16_t *scales;
} gptc_weight;

#define GPTC_INT8_BLOCK 32

static inline int gptc_int8_blocks(int K)
{
    return (K + GPTC_INT8_BLOCK - 1) / GPTC_INT8_BLOCK;
}

static inline gptc_weight gptc_f32_weight(const float *w)
{
    gptc_weight v = {w, GPTC_FLOAT32, NULL};
    return v;
}

/* What gptc_linear_forward does with the product, fused into it so the
 * result is written once instead of being read back by a second pass. */
enum {
    GPTC_LINEAR_GELU = 1,        /* out = GELU(x . W^T + bias) */
    GPTC_LINEAR_ACCUMULATE = 2,  /* out += x . W^T + bias (a shortcut connection) */
};

/* matmul.c: out[M, N] = x[M, K] . weight[N, K]^T + bias[N] (bias may be
 * NULL), changed by flags (at most one of the two). A bfloat16 weight is
 * widened to float32 as it is read; products and sums are float32. With
 * an int8 weight, a few rows (decode steps) are quantised like the weight
 * (gptc_quantize_int8) and multiplied in integers: each block's dot
 * product is an exact integer sum, scaled by both blocks' scales and
 * summed in float32 (a block holding inf or NaN gives NaN). Many rows
 * take the packed product of the float32 path, each int8 value widened to
 * q * d, exactly, as it is packed. */
void gptc_linear_forward(float *out, const float *x, gptc_weight weight, const float *bias,
                         int M, int K, int N, int flags);
/* One of several products of the same input: out[M, N] = x . weight^T +
 * bias, changed by flags, as gptc_linear_forward takes them. */
typedef struct gptc_linear_part {
    float *out;
    gptc_weight weight;
    const float *bias;
    int N, flags;
} gptc_linear_part;
/* matmul.c: the products of `count` weights with one x[M, K] (attention's
 * query, key and value projections), each exactly what gptc_linear_forward
 * gives it (which is this with one part). The outputs of all of them
 * share one parallel loop: with few rows (a decode step) the products are
 * short next to the cost of starting a loop, and the int8 ones share one
 * quantisation of x; with many rows x is packed once for all of them and
 * the threads wait for each other once. No out may overlap x or another
 * out. */
void gptc_linear_forward_parts(const gptc_linear_part *parts, int count, const float *x, int M,
                               int K);
/* matmul.c: the gradients of gptc_linear_forward with a float32 weight
 * (inp is its x):
 *   dinp[M, K] += dout[M, N] . W[N, K]
 *   dweight[N, K] += dout^T . inp[M, K]
 *   dbias[N] += column sums of dout
 * Threaded; deterministic, and the same result for any thread count.
 * Returns 0, or -1 if its packing buffers could not be allocated (the
 * gradients are then incomplete). */
int gptc_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int M, int K, int N);
/* matmul.c: float32 to bfloat16, rounding to nearest even (NaN stays NaN). */
void gptc_f32_to_bf16(uint16_t *out, const float *in, size_t n);
/* quantize.c: rows of len float32 values (row r at x + r * x_stride) to
 * int8 blocks: values [rows, len], scales [rows, gptc_int8_blocks(len)].
 * Each block of GPTC_INT8_BLOCK values (fewer at the end of a row) gets
 * the scale d = bfloat16(max |x| / 127), rounded to nearest even, and the
 * values q = x / d rounded to nearest even and clamped to [-127, 127]
 * (float32 arithmetic throughout, so the result is defined bit for bit).
 * A block of zeros gets d = 0, q = 0; a block holding inf or NaN gets
 * d = NaN, q = 0. Threaded over the rows. */
void gptc_quantize_int8(int8_t *values, uint16_t *scales, const float *x, size_t rows, int len,
                        ptrdiff_t x_stride);

/* isa.c: the kernel sets (csrc/kernels.h): "generic", "avx2", "avx512",
 * "neon". gptc_isa_name is the one in use; gptc_set_isa selects another
 * for every later operation (0, or -1 if this build or this CPU lacks it).
 * gptc_supported_isas and gptc_compiled_isas write up to capacity names
 * (narrowest first) of the sets this CPU runs / this build has, and
 * return how many there are. */
const char *gptc_isa_name(void);
int gptc_set_isa(const char *name);
int gptc_supported_isas(const char **names, int capacity);
int gptc_compiled_isas(const char **names, int capacity);
/* limits.c: the selected kernel set's register-only multiply-add loop run
 * `iterations` rounds on nthreads threads: the arithmetic peak, GFLOP/s. */
double gptc_fma_peak_gflops(int nthreads, long iterations);
/* limits.c: read the n floats at a once with the selected kernel set's
 * loads, split between nthreads threads: on an array much larger than the
 * caches, the streaming-read bandwidth, GB/s (10^9 bytes per second). */
double gptc_read_bandwidth_gbs(const float *a, size_t n, int nthreads);

/* softmax.c: row-wise softmax over N rows of C values. */
void gptc_softmax_forward(float *out, const float *x, size_t N, int C);

/* residual.c: out = a + b, elementwise (out may alias a or b). */
void gptc_residual_forward(float *out, const float *a, const float *b, size_t n);

/* dropout.c: PyTorch's dropout noise for n values: noise[i] = 0 or
 * 1.0f / (float)(1 - p), from bernoulli(1 - p) drawn over the n values in
 * order. p == 0: all 1, p == 1: all 0, and no draws in either case. Every
 * dropout of gptc (layers, attention weights) draws through this. */
void gptc_dropout_noise(float *noise, size_t n, double p, gptc_generator *g);
/* dropout.c: inverted dropout as PyTorch's CPU kernel does it:
 * out = x * gptc_dropout_noise(p). p == 0 copies x; p == 1 zeroes it (NaN
 * stays NaN). out may alias x. */
void gptc_dropout_forward(float *out, const float *x, size_t n, double p,
                          gptc_generator *g);
/* dropout.c: the training forward that keeps its noise for the backward:
 * out = x * noise with noise from gptc_dropout_noise, the same draws as
 * gptc_dropout_forward. out may alias x. */
void gptc_dropout_forward_noise(float *out, float *noise, const float *x, size_t n,
                                double p, gptc_generator *g);
/* dropout.c: dinp += dout * noise. */
void gptc_dropout_backward(float *dinp, const float *dout, const float *noise, size_t n);

/* attention.c: the causal core of multi-head attention, one kernel per
 * purpose. q, k, v are (B, T, NH * HS) as the Linear projections produce
 * them; out is the heads merged back into (B, T, NH * HS), ready for
 * out_proj.
 *
 * Inference: a blocked softmax kernel (never a T x T matrix) over a KV
 * cache. q and out are (B, Tq, NH * HS): the queries of positions
 * past .. past + Tq - 1. The caches hold, per batch row, `capacity` rows
 * of NH * HS (row j = position j; batch b starts at row b * capacity) of
 * which rows 0 .. past + Tq - 1 are filled. The plain forward is past = 0
 * with q's own k and v as the caches (capacity = Tq); row i of out is what
 * it gives for position i of the whole sequence, bit for bit, whatever Tq
 * and past. scratch must hold gptc_attention_cached_scratch_floats(B,
 * capacity, NH * HS, nthreads) floats (room for the keys in blocks and the
 * values head by head too, which the kernel makes there when the keys come
 * as rows).
 *
 * With key_layout GPTC_KEYS_IN_BLOCKS the key cache is in the kernel's own
 * layout instead, written by gptc_store_key_blocks: per batch row and head,
 * the positions in blocks of a few dozen, each block stored transposed (a
 * feature's values for the block's positions side by side). The kernel
 * then reads each block as it is rather than transposing it again on every
 * call, which in a decode step (one query row) took more time than the
 * scores themselves. The result is the same, bit for bit.
 * gptc_key_blocks_floats is the size of such a cache of C = NH * HS
 * features. Its positions not yet stored may hold anything (stale keys
 * after a window slides, or NaN): the kernel masks their scores. */
typedef enum { GPTC_KEYS_AS_ROWS = 0, GPTC_KEYS_IN_BLOCKS = 1 } gptc_key_layout;
size_t gptc_attention_cached_scratch_floats(int B, int capacity, int C, int nthreads);
void gptc_attention_cached_forward(float *out, const float *q, const float *k_cache,
                                   const float *v_cache, int B, int Tq, int past,
                                   int capacity, gptc_key_layout key_layout, int NH, int HS,
                                   float *scratch, int nthreads);
size_t gptc_key_blocks_floats(int B, int capacity, int C);
/* k (B, T, NH * HS), the keys of positions past .. past + T - 1, into the
 * blocks of a cache of `capacity` positions per batch row. */
void gptc_store_key_blocks(float *blocks, const float *k, int B, int T, int past, int capacity,
                           int NH, int HS);
/* attention.c: training, as per-head matrix products that keep what the
 * backward needs: att (B, NH, T, T), the softmax weights before dropout
 * (zeros above the diagonal; NULL: not kept), and noise (B, NH, T, T), the
 * dropout noise on the weights, drawn by gptc_dropout_noise over the whole
 * tensor as the book's nn.Dropout draws it (may be NULL when dropout_p ==
 * 0). out equals the inference kernel's to rounding. Threaded over (b, h)
 * on nthreads threads. Returns 0, or -1 if its scratch could not be
 * allocated. */
int gptc_attention_forward_train(float *out, float *att, float *noise, const float *q,
                                 const float *k, const float *v, int B, int T, int NH,
                                 int HS, double dropout_p, gptc_generator *g, int nthreads);
/* attention.c: the gradients of the training forward with respect to q, k
 * and v, all (B, T, NH * HS) like dout; noise NULL means no dropout.
 * Threaded over (b, h) on nthreads threads; deterministic for any thread
 * count. Returns 0, or -1 if its scratch could not be allocated. */
int gptc_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *att,
                            const float *noise, int B, int T, int NH, int HS, int nthreads);
/* attention.c: the training forward in two halves, for a forward that
 * hands the weights to the dropout module in between (a hook on it may
 * replace them). Threaded over (b, h) on nthreads threads, deterministic
 * for any thread count; each returns 0, or -1 if its scratch could not be
 * allocated.
 *
 * gptc_attention_weights: att (B, NH, T, T) = the causal softmax of
 * q k^T / sqrt(HS) per head, zeros above the diagonal: the att of
 * gptc_attention_forward_train, bit for bit. Its backward: dq, dk (B, T,
 * NH * HS) from datt, the gradient of att; entries of datt above the
 * diagonal do not count (att is constant 0 there). */
int gptc_attention_weights(float *att, const float *q, const float *k, int B, int T, int NH,
                           int HS, int nthreads);
int gptc_attention_weights_backward(float *dq, float *dk, const float *datt, const float *q,
                                    const float *k, const float *att, int B, int T, int NH,
                                    int HS, int nthreads);
/* gptc_attention_context: out (B, T, NH * HS) = weights (B, NH, T, T) times
 * the values of each head, the heads merged back, ready for out_proj. Every
 * entry of weights counts, above the diagonal too. Its backward: dweights
 * (B, NH, T, T) and dv (B, T, NH * HS). */
int gptc_attention_context(float *out, const float *weights, const float *v, int B, int T,
                           int NH, int HS, int nthreads);
int gptc_attention_context_backward(float *dweights, float *dv, const float *dout,
                                    const float *weights, const float *v, int B, int T,
                                    int NH, int HS, int nthreads);

/* MultiHeadAttention as C sees it: its sizes, its weights by the book's
 * attribute names, and the dropout on its attention weights. The q/k/v
 * biases are NULL when qkv_bias=False. */
typedef struct gptc_attention_params {
    int d_in, d_out, num_heads;
    gptc_weight w_query; const float *b_query;   /* [d_out, d_in], [d_out] */
    gptc_weight w_key; const float *b_key;
    gptc_weight w_value; const float *b_value;
    gptc_weight w_out; const float *b_out;       /* out_proj: [d_out, d_out], [d_out] */
    double dropout;                              /* dropout.p (0 in eval) */
} gptc_attention_params;

/* The keys and values of one layer for B sequences, `capacity` positions
 * per batch row, of which the first `past` are filled: the values as rows
 * of d_out floats (batch b starts at row b * capacity), the keys in blocks
 * (GPTC_KEYS_IN_BLOCKS: gptc_store_key_blocks). */
typedef struct gptc_kv_cache {
    float *k, *v;
    int capacity, past;
} gptc_kv_cache;

/* The buffers of MultiHeadAttention over B * T tokens. */
typedef struct gptc_mha_buffers {
    float *q, *k, *v;   /* B * T * d_out floats each: the projections */
    float *context;     /* B * T * d_out: the merged heads; may be the module's input */
    float *scratch;     /* gptc_mha_scratch_floats(p, B, T, nthreads) floats */
} gptc_mha_buffers;

size_t gptc_mha_scratch_floats(const gptc_attention_params *p, int B, int T, int nthreads);

/* attention.c: MultiHeadAttention on T new tokens per batch row, x
 * (B, T, d_in) -> out (B, T, d_out), or out += the result with flags =
 * GPTC_LINEAR_ACCUMULATE (a shortcut connection fused into out_proj).
 * cache NULL: the plain forward over positions 0 .. T - 1. With a cache the
 * new keys and values are stored at its rows past .. past + T - 1 and the
 * queries attend over everything it holds (p->dropout must then be 0).
 * With p->dropout > 0 the attention runs the training kernel, whose noise
 * is drawn from g; else the inference kernel. The one function behind
 * gptc_mha_forward and the attention half of the model's blocks (model.c).
 * Returns 0, or -1 if memory ran out (only possible with dropout). */
int gptc_mha_tokens(float *out, const float *x, const gptc_attention_params *p, int B, int T,
                    const gptc_kv_cache *cache, gptc_generator *g, const gptc_mha_buffers *w,
                    int flags, int nthreads);
/* attention.c: the whole MultiHeadAttention module, x (B, T, d_in) ->
 * out (B, T, d_out), with its buffers allocated once. Returns 0, or -1 if
 * memory ran out. */
int gptc_mha_forward(float *out, const float *x, const gptc_attention_params *p, int B, int T,
                     gptc_generator *g);


/* ------------------------------------------------------------------------
 * loss.c - the training losses.
 * ---------------------------------------------------------------------- */
/* losses[i] = logsumexp(logits[i, :]) - logits[i, targets[i]] for N rows of
 * V logits (F.cross_entropy with reduction='none'); targets in [0, V). */
void gptc_crossentropy_forward(float *losses, const float *logits, const int64_t *targets,
                               size_t N, int V);
/* dlogits[i, :] += dlosses[i] * (softmax(logits[i, :]) - onehot(targets[i])). */
void gptc_crossentropy_backward(float *dlogits, const float *dlosses, const float *logits,
                                const int64_t *targets, size_t N, int V);
/* dpred += dloss_scale * 2 * (pred - target); for a mean over n values the
 * caller passes dloss_scale = dloss / n. */
void gptc_mse_backward(float *dpred, const float *pred, const float *target,
                       float dloss_scale, size_t n);

/* optim.c: one AdamW step (PyTorch's update, decoupled weight decay) on n
 * values; m and v are the moment buffers, step counts from 1. */
void gptc_adamw_update(float *param, const float *grad, float *m, float *v, size_t n,
                       double lr, double beta1, double beta2, double eps,
                       double weight_decay, long step);

/* ------------------------------------------------------------------------
 * model.c - the whole GPTModel forward in one call.
 * ---------------------------------------------------------------------- */
typedef struct gptc_block_params {
    const float *norm1_scale, *norm1_shift;
    float norm1_eps;
    gptc_attention_params att;       /* d_in = d_out = emb_dim */
    const float *norm2_scale, *norm2_shift;
    float norm2_eps;
    gptc_weight w_fc; const float *b_fc;      /* ff.layers[0]: [H, C], [H] */
    gptc_weight w_proj; const float *b_proj;  /* ff.layers[2]: [C, H], [C] */
    int hidden;                      /* H, 4 * C in the book */
    double shortcut_dropout;         /* drop_shortcut (0 in eval) */
} gptc_block_params;

/* feedforward.c: FeedForward: Linear(C, H) -> GELU -> Linear(H, C), with
 * the weights of blk (w_fc, b_fc, w_proj, b_proj, hidden = H). x and out are (N, C); hidden is N * H floats of
 * scratch. With accumulate the result is added to out (out += FF(x), a
 * shortcut connection) instead of stored; out must not alias x. */
void gptc_feedforward_forward(float *out, const float *x, const gptc_block_params *blk,
                              int N, int C, float *hidden, int accumulate);

typedef struct gptc_model_params {
    int vocab_size, context_length, emb_dim, n_layers;   /* heads: blocks[l].att */
    const float *tok_emb;            /* [V, C] */
    const float *pos_emb;            /* [context_length, C] */
    double emb_dropout;              /* drop_emb (0 in eval) */
    const gptc_block_params *blocks; /* n_layers of them */
    const float *final_scale, *final_shift;
    float final_eps;
    gptc_weight out_head_w;          /* [V, C]; may be tok_emb (weight tying) */
    const float *out_head_b;         /* [V] or NULL (the book has no bias) */
} gptc_model_params;

/* Logits (B, T, V) for token ids idx (B, T). Every id must be in
 * [0, vocab_size) and T <= context_length (the binding checks both).
 * Dropout draws from g in the order PyTorch's modules would. The
 * activations of one block at a time live in one scratch allocation made
 * at the start of the call; returns 0, or -1 if that allocation failed. */
int gptc_gpt_forward(float *logits, const int64_t *idx, const gptc_model_params *m,
                     int B, int T, gptc_generator *g);

/* model.c - generation with a KV cache. A decoder holds, for B sequences,
 * the keys and values of every layer for up to `capacity` positions
 * (capacity <= context_length), and the activation buffers of a forward of
 * `capacity` tokens, all allocated once by gptc_decoder_new. It runs the
 * model in inference mode: every dropout probability in m must be 0. m and
 * the weights it points to must outlive the decoder; one decoder is used by
 * one thread at a time.
 *
 * gptc_decoder_new returns NULL if memory ran out. */
typedef struct gptc_decoder gptc_decoder;
gptc_decoder *gptc_decoder_new(const gptc_model_params *m, int B, int capacity);
void gptc_decoder_free(gptc_decoder *d);
/* Positions cached so far. */
int gptc_decoder_length(const gptc_decoder *d);
/* Forget the cache and run idx (B, T), 1 <= T <= capacity, at positions
 * 0 .. T - 1, caching their keys and values; logits (B, V) are those of
 * the last position only (out_head runs on that row alone). */
void gptc_decoder_prefill(gptc_decoder *d, float *logits, const int64_t *idx, int T);
/* One more token per sequence, next (B,), at position length (which must
 * be < capacity): its keys and values are appended and it attends over the
 * whole cache. logits (B, V). The result is the last row of
 * gptc_gpt_forward on the whole sequence, up to rounding in the matmuls. */
void gptc_decoder_step(gptc_decoder *d, float *logits, const int64_t *next);

/* ------------------------------------------------------------------------
 * sampling.c - choosing the next token from logits (chapter 5's generate).
 * ---------------------------------------------------------------------- */
/* For each of B rows of V logits: with top_k > 0, logits below the top_k-th
 * largest count as -inf (ties with it stay); then temperature == 0 picks
 * the first largest logit (argmax; top_k cannot change it, and nothing is
 * drawn), and temperature > 0 samples from softmax(logits / temperature)
 * with one uniform draw from g per row. 1 <= top_k <= V, or 0 for none.
 * scratch must hold gptc_sample_scratch_floats(V) floats. Returns -1, or
 * the first row that has nothing to choose from (a NaN logit; when
 * sampling, also an infinite one), whose token is then left unset. */
size_t gptc_sample_scratch_floats(int V);
int gptc_next_tokens(int64_t *next, const float *logits, int B, int V, double temperature,
                     int top_k, gptc_generator *g, float *scratch);

#ifdef __cplusplus
}
#endif
#endif /* GPTC_H */
