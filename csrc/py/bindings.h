/*
 * bindings.h - the entry points of gptc._C, one file per concept, gathered in
 * the method table of module.c.
 */
#ifndef GPTC_PY_BINDINGS_H
#define GPTC_PY_BINDINGS_H

#include "args.h"

/* py_random.c: the generator type and the random fills */
extern PyTypeObject GeneratorType;
PyObject *py_uniform_(PyObject *self, PyObject *args);
PyObject *py_normal_(PyObject *self, PyObject *args);
PyObject *py_bernoulli_(PyObject *self, PyObject *args);
PyObject *py_randperm(PyObject *self, PyObject *args);
PyObject *py_random_int64(PyObject *self, PyObject *generator);

/* buffer_pool.c: zeros from the pool, releasing what it keeps, what it holds */
PyObject *py_zeros(PyObject *self, PyObject *shape);
PyObject *py_empty_cache(PyObject *self, PyObject *Py_UNUSED(ignored));
PyObject *py_buffer_pool_stats(PyObject *self, PyObject *Py_UNUSED(ignored));

/* py_layers.c: each layer's forward beside its backward */
PyObject *py_linear(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *py_linear_backward(PyObject *self, PyObject *args);
PyObject *py_to_bfloat16(PyObject *self, PyObject *array);
PyObject *py_to_int8(PyObject *self, PyObject *array);
PyObject *py_layer_norm(PyObject *self, PyObject *args);
PyObject *py_layer_norm_backward(PyObject *self, PyObject *args);
PyObject *py_gelu(PyObject *self, PyObject *input);
PyObject *py_gelu_backward(PyObject *self, PyObject *args);
PyObject *py_relu(PyObject *self, PyObject *input);
PyObject *py_relu_backward(PyObject *self, PyObject *args);
PyObject *py_softmax(PyObject *self, PyObject *input);
PyObject *py_dropout(PyObject *self, PyObject *args);
PyObject *py_dropout_train(PyObject *self, PyObject *args);
PyObject *py_dropout_backward(PyObject *self, PyObject *args);
PyObject *py_embedding(PyObject *self, PyObject *args);
PyObject *py_embedding_backward(PyObject *self, PyObject *args);

/* py_attention.c: MultiHeadAttention, the training kernel and its backward,
 * and its two halves (weights, context) and theirs */
PyObject *py_multihead_attention(PyObject *self, PyObject *args);
PyObject *py_attention_train(PyObject *self, PyObject *args);
PyObject *py_attention_backward(PyObject *self, PyObject *args);
PyObject *py_attention_weights(PyObject *self, PyObject *args);
PyObject *py_attention_weights_backward(PyObject *self, PyObject *args);
PyObject *py_attention_context(PyObject *self, PyObject *args);
PyObject *py_attention_context_backward(PyObject *self, PyObject *args);
PyObject *py_attention_cached(PyObject *self, PyObject *args);   /* _testing */

/* py_model.c: the one-call forward and the KV-cache decoder */
extern PyTypeObject DecoderType;
PyObject *py_gpt_forward(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *py_check_in_idx(PyObject *self, PyObject *args, PyObject *kwargs);

/* py_loss.c and py_optim.c: training */
PyObject *py_cross_entropy(PyObject *self, PyObject *args);
PyObject *py_cross_entropy_backward(PyObject *self, PyObject *args);
PyObject *py_mse_backward(PyObject *self, PyObject *args);
PyObject *py_adamw_update(PyObject *self, PyObject *args);

/* py_sampling.c: the next token */
PyObject *py_next_tokens(PyObject *self, PyObject *args);
PyObject *py_check_sampling(PyObject *self, PyObject *args);

/* py_runtime.c: threads, kernel sets, build information */
PyObject *py_set_num_threads(PyObject *self, PyObject *n);
PyObject *py_get_num_threads(PyObject *self, PyObject *unused);
PyObject *py_isa(PyObject *self, PyObject *unused);
PyObject *py_set_isa(PyObject *self, PyObject *name);
PyObject *py_supported_isas(PyObject *self, PyObject *unused);
PyObject *py_fma_peak(PyObject *self, PyObject *args);
PyObject *py_read_bandwidth(PyObject *self, PyObject *args);
PyObject *py_build_info(PyObject *self, PyObject *unused);

#endif /* GPTC_PY_BINDINGS_H */
