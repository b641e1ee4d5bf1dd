/*
 * weights.h - reading a module's weights from a mapping of state-dict keys
 * (weights.c), as GPTModel and MultiHeadAttention hand them to C.
 */
#ifndef GPTC_PY_WEIGHTS_H
#define GPTC_PY_WEIGHTS_H

#include "args.h"

/* A dict copy of `mapping` (a new reference), which keeps every array C
 * reads alive while the GIL is released; NULL with TypeError if it is not
 * a mapping. */
PyObject *copy_weights(PyObject *mapping);

/* The entries of weights under their keys, prefix + name. Each returns 0,
 * or -1 with an exception naming the key: KeyError for a missing entry
 * (except an optional bias, which may be absent or None), then what the
 * converter of args.h says. */
int weights_f32(PyObject *weights, const char *prefix, const char *name, int ndim,
                const npy_intp *shape, const float **out);
int weights_bias(PyObject *weights, const char *prefix, const char *name, npy_intp size,
                 const float **out);
int weights_linear(PyObject *weights, const char *prefix, const char *name,
                   const npy_intp shape[2], gptc_weight *out);
int weights_eps(PyObject *weights, const char *prefix, const char *name, float *out);
int weights_probability(PyObject *weights, const char *prefix, const char *name, double *out);
/* The arrays themselves (borrowed), to read sizes from: a float32 array of
 * ndim dimensions, and the 2-D array a Linear weight is stored in. */
PyArrayObject *weights_f32_array(PyObject *weights, const char *prefix, const char *name,
                                 int ndim);
PyArrayObject *weights_linear_array(PyObject *weights, const char *prefix, const char *name);

/* MultiHeadAttention's weights (W_query.weight, ..., out_proj.bias) and its
 * dropout.p under prefix, with the sizes given: p->d_in, p->d_out and
 * p->num_heads must be set (num_heads dividing d_out). */
int weights_attention(PyObject *weights, const char *prefix, gptc_attention_params *p);

#endif /* GPTC_PY_WEIGHTS_H */
