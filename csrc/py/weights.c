/*
 * weights.c - a module's weights looked up by their state-dict keys.
 *
 * GPTModel and MultiHeadAttention hand C a dict from the book's keys
 * ("trf_blocks.0.att.W_query.weight", ...) to the arrays C reads: the
 * parameters, a Linear weight as it is stored (the float32 parameter, its
 * bfloat16 copy or its int8 pair), and the few numbers of the modules under the names of
 * their attributes ("trf_blocks.0.norm1.eps", "drop_emb.p"). Every error
 * names the key.
 */
#include "weights.h"

#include <stdio.h>

PyObject *copy_weights(PyObject *mapping)
{
    if (!PyDict_Check(mapping) && !PyObject_HasAttrString(mapping, "keys")) {
        PyErr_Format(PyExc_TypeError,
                     "weights must be a mapping from state-dict keys to arrays, got %s",
                     Py_TYPE(mapping)->tp_name);
        return NULL;
    }
    PyObject *copy = PyDict_New();
    if (copy != NULL && PyDict_Merge(copy, mapping, 1) < 0) Py_CLEAR(copy);
    return copy;
}

/* The entry prefix + name (borrowed) into *out, with the key in key[];
 * a missing entry is NULL, or a KeyError if required. */
static int entry(PyObject *weights, const char *prefix, const char *name, int required,
                 char key[160], PyObject **out)
{
    snprintf(key, 160, "%s%s", prefix, name);
    *out = PyDict_GetItemString(weights, key);
    if (*out == NULL && required) {
        PyErr_Format(PyExc_KeyError, "the weights have no entry '%s'", key);
        return -1;
    }
    return 0;
}

int weights_f32(PyObject *weights, const char *prefix, const char *name, int ndim,
                const npy_intp *shape, const float **out)
{
    char key[160];
    PyObject *obj;
    array_arg a = ARRAY_ARG(key, ndim);
    if (entry(weights, prefix, name, 1, key, &obj) < 0 || !to_f32(obj, &a) ||
        check_shape(&a, ndim, shape) < 0)
        return -1;
    *out = data_of(&a);
    return 0;
}

int weights_bias(PyObject *weights, const char *prefix, const char *name, npy_intp size,
                 const float **out)
{
    char key[160];
    PyObject *obj;
    array_arg a = ARRAY_ARG(key, 1);
    *out = NULL;
    if (entry(weights, prefix, name, 0, key, &obj) < 0) return -1;
    if (obj == NULL || obj == Py_None) return 0;   /* the layer has no bias */
    if (!to_f32(obj, &a) || check_shape(&a, 1, &size) < 0) return -1;
    *out = data_of(&a);
    return 0;
}

PyArrayObject *weights_f32_array(PyObject *weights, const char *prefix, const char *name,
                                 int ndim)
{
    char key[160];
    PyObject *obj;
    array_arg a = ARRAY_ARG(key, ndim);
    if (entry(weights, prefix, name, 1, key, &obj) < 0 || !to_f32(obj, &a)) return NULL;
    return a.array;
}

PyArrayObject *weights_linear_array(PyObject *weights, const char *prefix, const char *name)
{
    char key[160];
    PyObject *obj;
    weight_arg w = WEIGHT_ARG(key);
    if (entry(weights, prefix, name, 1, key, &obj) < 0 || !to_weight(obj, &w)) return NULL;
    return w.array;
}

int weights_linear(PyObject *weights, const char *prefix, const char *name,
                   const npy_intp shape[2], gptc_weight *out)
{
    char key[160];
    PyObject *obj;
    weight_arg w = WEIGHT_ARG(key);
    if (entry(weights, prefix, name, 1, key, &obj) < 0 || !to_weight(obj, &w)) return -1;
    array_arg a = {key, 2, w.array};
    if (check_shape(&a, 2, shape) < 0) return -1;
    *out = w.weight;
    return 0;
}

/* A number entry, through one of args.h's number converters. */
static int number_entry(PyObject *weights, const char *prefix, const char *name,
                        int (*convert)(PyObject *, void *), double *out)
{
    char key[160];
    PyObject *obj;
    number_arg v = NUMBER_ARG(key);
    if (entry(weights, prefix, name, 1, key, &obj) < 0 || !convert(obj, &v)) return -1;
    *out = v.value;
    return 0;
}

int weights_eps(PyObject *weights, const char *prefix, const char *name, float *out)
{
    double eps;
    if (number_entry(weights, prefix, name, to_positive, &eps) < 0) return -1;
    *out = (float)eps;
    return 0;
}

int weights_probability(PyObject *weights, const char *prefix, const char *name, double *out)
{
    return number_entry(weights, prefix, name, to_probability, out);
}

int weights_attention(PyObject *weights, const char *prefix, gptc_attention_params *p)
{
    npy_intp qkv[2] = {p->d_out, p->d_in}, out[2] = {p->d_out, p->d_out};
    if (weights_linear(weights, prefix, "W_query.weight", qkv, &p->w_query) < 0 ||
        weights_bias(weights, prefix, "W_query.bias", p->d_out, &p->b_query) < 0 ||
        weights_linear(weights, prefix, "W_key.weight", qkv, &p->w_key) < 0 ||
        weights_bias(weights, prefix, "W_key.bias", p->d_out, &p->b_key) < 0 ||
        weights_linear(weights, prefix, "W_value.weight", qkv, &p->w_value) < 0 ||
        weights_bias(weights, prefix, "W_value.bias", p->d_out, &p->b_value) < 0 ||
        weights_linear(weights, prefix, "out_proj.weight", out, &p->w_out) < 0 ||
        weights_bias(weights, prefix, "out_proj.bias", p->d_out, &p->b_out) < 0 ||
        weights_probability(weights, prefix, "dropout.p", &p->dropout) < 0)
        return -1;
    return 0;
}
