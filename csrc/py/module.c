/*
 * module.c - the extension gptc._C: the method table and the module init.
 *
 * The binding holds no math. Each entry point (one file per concept beside
 * this one, declared in bindings.h) parses and checks its arguments with
 * the converters of args.c, releases the GIL and calls one function of
 * gptc.h. gptc._C._testing holds the entry points only the tests use.
 */
#define GPTC_PY_IMPORT_ARRAY
#include "bindings.h"

#define FN(f) ((PyCFunction)(void (*)(void))(f))

static PyMethodDef module_methods[] = {
    /* random numbers (py_random.c) */
    {"uniform_", py_uniform_, METH_VARARGS, "uniform_(tensor, from, to, generator)"},
    {"normal_", py_normal_, METH_VARARGS, "normal_(tensor, mean, std, generator)"},
    {"bernoulli_", py_bernoulli_, METH_VARARGS, "bernoulli_(tensor, p, generator)"},
    {"randperm", py_randperm, METH_VARARGS,
     "randperm(n, generator): int64 permutation of 0..n-1, as torch.randperm"},
    {"random_int64", py_random_int64, METH_O,
     "random_int64(generator): torch.empty((), dtype=torch.int64).random_() as a Python int"},
    /* layers, each forward beside its backward (py_layers.c) */
    {"linear", FN(py_linear), METH_VARARGS | METH_KEYWORDS,
     "linear(input, weight, bias_or_None, *, gelu=False, out=None): input . weight^T + bias, "
     "then GELU if gelu; with out, out += input . weight^T + bias and out is returned. "
     "weight is float32, uint16 bfloat16 bits (from to_bfloat16), widened as read, or an "
     "int8 pair (values, scales) from to_int8"},
    {"linear_backward", py_linear_backward, METH_VARARGS,
     "linear_backward(dout, inp, weight, dinp, dweight, dbias): accumulate into the "
     "gradient arrays given (None: not needed)"},
    {"to_bfloat16", py_to_bfloat16, METH_O,
     "to_bfloat16(float32 array): uint16 array of the values rounded to bfloat16 "
     "(nearest even)"},
    {"to_int8", py_to_int8, METH_O,
     "to_int8(float32 array) -> (values, scales): each block of 32 along the last axis "
     "(fewer at its end) as int8 values q = round(x / d) and the scale d = max |x| / 127, "
     "bfloat16 bits in uint16 (both rounded to nearest even; q clamped to [-127, 127])"},
    {"layer_norm", py_layer_norm, METH_VARARGS, "layer_norm(input, scale, shift, eps)"},
    {"layer_norm_backward", py_layer_norm_backward, METH_VARARGS,
     "layer_norm_backward(dout, inp, scale, eps, dinp, dscale, dshift)"},
    {"gelu", py_gelu, METH_O, "gelu(input)"},
    {"gelu_backward", py_gelu_backward, METH_VARARGS, "gelu_backward(dout, inp, dinp)"},
    {"relu", py_relu, METH_O, "relu(input)"},
    {"relu_backward", py_relu_backward, METH_VARARGS, "relu_backward(dout, inp, dinp)"},
    {"softmax", py_softmax, METH_O, "softmax(input): over the last axis"},
    {"dropout", py_dropout, METH_VARARGS, "dropout(input, p, generator)"},
    {"dropout_train", py_dropout_train, METH_VARARGS,
     "dropout_train(input, p, generator) -> (out, noise)"},
    {"dropout_backward", py_dropout_backward, METH_VARARGS, "dropout_backward(dout, noise, dinp)"},
    {"embedding", py_embedding, METH_VARARGS, "embedding(input_ids, weight)"},
    {"embedding_backward", py_embedding_backward, METH_VARARGS,
     "embedding_backward(dout, idx, dweight)"},
    /* attention (py_attention.c) */
    {"multihead_attention", py_multihead_attention, METH_VARARGS,
     "multihead_attention(input, weights, num_heads, generator): MultiHeadAttention without "
     "gradients; weights maps its state-dict keys (W_query.weight, ..., out_proj.bias) to the "
     "arrays as stored, and dropout.p to the probability it applies"},
    {"attention_train", py_attention_train, METH_VARARGS,
     "attention_train(q, k, v, num_heads, dropout_p, generator) -> (out, att, noise_or_None)"},
    {"attention_backward", py_attention_backward, METH_VARARGS,
     "attention_backward(dout, q, k, v, att, noise_or_None, num_heads, dq, dk, dv)"},
    {"attention_weights", py_attention_weights, METH_VARARGS,
     "attention_weights(q, k, num_heads) -> att (B, num_heads, T, T): the causal softmax "
     "weights of every head (attention_train's att), the first half of attention"},
    {"attention_weights_backward", py_attention_weights_backward, METH_VARARGS,
     "attention_weights_backward(datt, q, k, att, num_heads, dq, dk): accumulate the "
     "gradients of q and k from that of att into the arrays given (None: not needed)"},
    {"attention_context", py_attention_context, METH_VARARGS,
     "attention_context(weights, v, num_heads) -> out (B, T, C): weights (B, num_heads, T, T) "
     "times each head's values, heads merged: the second half of attention"},
    {"attention_context_backward", py_attention_context_backward, METH_VARARGS,
     "attention_context_backward(dout, weights, v, num_heads, dweights, dv): accumulate the "
     "gradients of weights and v into the arrays given (None: not needed)"},
    /* the whole model (py_model.c) */
    {"gpt_forward", FN(py_gpt_forward), METH_VARARGS | METH_KEYWORDS,
     "gpt_forward(in_idx, weights, n_layers, n_heads, generator) -> logits: GPTModel in one "
     "call; weights maps the state-dict keys to the arrays as stored, and the modules' eps "
     "and dropout p under their attribute names (GPTModel._one_call_arguments)"},
    {"check_in_idx", FN(py_check_in_idx), METH_VARARGS | METH_KEYWORDS,
     "check_in_idx(in_idx, vocab_size, name='in_idx', context_length=None): the checks "
     "gpt_forward makes of its token ids (non-empty, at most context_length long, in the "
     "vocabulary)"},
    /* training (py_loss.c, py_optim.c) */
    {"cross_entropy", py_cross_entropy, METH_VARARGS,
     "cross_entropy(logits, targets) -> per-row losses (N,)"},
    {"cross_entropy_backward", py_cross_entropy_backward, METH_VARARGS,
     "cross_entropy_backward(dlosses, logits, targets, dlogits)"},
    {"mse_backward", py_mse_backward, METH_VARARGS, "mse_backward(pred, target, scale, dpred)"},
    {"adamw_update", py_adamw_update, METH_VARARGS,
     "adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step)"},
    /* sampling (py_sampling.c) */
    {"next_tokens", py_next_tokens, METH_VARARGS,
     "next_tokens(logits, temperature, top_k, generator) -> (B,) int64: chapter 5's choice "
     "of the next token per row (top-k filter, then argmax or sampling)"},
    {"check_sampling", py_check_sampling, METH_VARARGS,
     "check_sampling(temperature, top_k, vocab_size) -> (temperature, top_k): next_tokens' "
     "checks of its settings, for gptc.generate to make before its first forward "
     "(vocab_size None: not known)"},
    /* threads, kernel sets and the build (py_runtime.c) */
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n)"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads()"},
    {"isa", py_isa, METH_NOARGS,
     "isa(): the kernel set in use (generic, avx2, avx2_vnni, avx512, avx512_vnni, neon, "
     "neon_dotprod); GPTC_ISA chooses at import"},
    {"set_isa", py_set_isa, METH_O,
     "set_isa(name): run every later operation on that kernel set (see supported_isas)"},
    {"supported_isas", py_supported_isas, METH_NOARGS,
     "supported_isas(): the kernel sets this build has and this CPU runs, narrowest first"},
    {"fma_peak", py_fma_peak, METH_VARARGS,
     "fma_peak(nthreads, iterations): GFLOP/s of the kernel set's register-only "
     "multiply-add loop on nthreads threads, the arithmetic peak"},
    {"read_bandwidth", py_read_bandwidth, METH_VARARGS,
     "read_bandwidth(data, nthreads): GB/s of one read of the float32 array data with "
     "the kernel set's loads on nthreads threads; the streaming-read bandwidth when data "
     "is much larger than the caches"},
    {"zeros", py_zeros, METH_O, "zeros(shape) -> float32 zeros, memory from the buffer pool"},
    {"empty_cache", py_empty_cache, METH_NOARGS,
     "empty_cache() -> bytes the buffer pool kept and now released"},
    {"buffer_pool_stats", py_buffer_pool_stats, METH_NOARGS,
     "buffer_pool_stats() -> dict: kept_bytes, kept_blocks, reused, fresh, min_bytes, limit_bytes"},
    {"build_info", py_build_info, METH_NOARGS,
     "build_info() -> dict: compiler, openmp, openmp_version, isas_compiled, sanitize, isa"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef testing_methods[] = {
    {"attention_cached", py_attention_cached, METH_VARARGS,
     "attention_cached(q, k_cache, v_cache, num_heads, past) -> out: the inference attention "
     "kernel alone, on q (B, Tq, C), positions past .. past + Tq - 1, over caches "
     "(B, capacity, C) whose first past + Tq rows are filled"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "gptc._C",
    "gptc's C core: the layers of the chapter-4 GPT model on float32 NumPy arrays.",
    -1, module_methods,
};

static struct PyModuleDef testing_moduledef = {
    PyModuleDef_HEAD_INIT, "gptc._C._testing",
    "Entry points of gptc's C core that only the tests use.",
    -1, testing_methods,
};

/* PyModule_AddObject steals a reference only on success. */
static int add_object(PyObject *m, const char *name, PyObject *obj)
{
    Py_INCREF(obj);
    if (PyModule_AddObject(m, name, obj) < 0) {
        Py_DECREF(obj);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__C(void)
{
    import_array();
    if (buffer_pool_init() < 0) return NULL;
    if (PyType_Ready(&GeneratorType) < 0 || PyType_Ready(&DecoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    PyObject *testing = PyModule_Create(&testing_moduledef);
    int failed = testing == NULL ||
                 add_object(m, "Generator", (PyObject *)&GeneratorType) < 0 ||
                 add_object(m, "Decoder", (PyObject *)&DecoderType) < 0 ||
                 add_object(m, "_testing", testing) < 0 ||
                 PyModule_AddIntConstant(m, "RNG_STATE_BYTES", GPTC_RNG_STATE_BYTES) < 0;
    Py_XDECREF(testing);
    if (failed) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
