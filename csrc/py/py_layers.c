/*
 * py_layers.c - the bindings of the layers (gptc.nn.functional), each
 * forward beside its backward: linear (matmul.c), layer_norm, gelu and relu,
 * softmax, dropout, embedding.
 *
 * A backward takes the upstream gradient and what the forward read, and
 * ADDS each gradient into an existing float32 array, or skips it for None.
 * It returns None; a training forward returns what its backward needs.
 */
#include "py_random.h"

#include "bindings.h"

#include <string.h>

/* x's shape with its last dimension replaced by n, into dims (NPY_MAXDIMS). */
static void with_last_dim(PyArrayObject *x, npy_intp n, npy_intp *dims)
{
    int nd = PyArray_NDIM(x);
    memcpy(dims, PyArray_DIMS(x), nd * sizeof(npy_intp));
    dims[nd - 1] = n;
}

/* ------------------------------------------------------------------------
 * Linear
 * ---------------------------------------------------------------------- */
PyObject *py_linear(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"input", "weight", "bias", "gelu", "out", NULL};
    array_arg x = ARRAY_ARG("input", ANY_NDIM), bias = ARRAY_ARG("bias", 1);
    array_arg out = ARRAY_ARG("out", ANY_NDIM);
    weight_arg w = WEIGHT_ARG("weight");
    number_arg gelu = NUMBER_ARG("gelu");
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&O&|$O&O&:linear", kwlist, to_f32, &x,
                                     to_weight, &w, to_f32_or_none, &bias, to_flag, &gelu,
                                     to_grad, &out))
        return NULL;
    npy_intp rows, K, N = PyArray_DIM(w.array, 0);
    if (rows_and_width(x.array, "input", &rows, &K) < 0 ||
        check_last_dim(x.array, "input", PyArray_DIM(w.array, 1)) < 0 ||
        !fits_int(N, "out_features") || check_shape(&bias, 1, &N) < 0)
        return NULL;
    npy_intp dims[NPY_MAXDIMS];
    with_last_dim(x.array, N, dims);
    int nd = PyArray_NDIM(x.array);
    int accumulate = out.array != NULL;
    if (accumulate) {
        /* out += input . weight^T + bias: a shortcut connection fused into the product */
        if (gelu.value) {
            PyErr_SetString(PyExc_ValueError,
                            "linear: gelu=True computes a new activation and cannot be "
                            "combined with out= (which accumulates)");
            return NULL;
        }
        array_arg weight = {w.name, 2, w.array}, scales = {"weight scales", 2, w.scales};
        const array_arg *outs[] = {&out}, *ins[] = {&x, &weight, &scales};
        if (check_shape(&out, nd, dims) < 0 || check_disjoint(outs, 1, ins, 3, 0) < 0)
            return NULL;
        Py_INCREF(out.array);
    } else {
        out.array = new_f32(nd, dims);
        if (out.array == NULL) return NULL;
    }
    int flags = (gelu.value ? GPTC_LINEAR_GELU : 0) | (accumulate ? GPTC_LINEAR_ACCUMULATE : 0);
    Py_BEGIN_ALLOW_THREADS
    gptc_linear_forward(data_of(&out), data_of(&x), w.weight, data_of(&bias), (int)rows,
                        (int)K, (int)N, flags);
    Py_END_ALLOW_THREADS
    return (PyObject *)out.array;
}

PyObject *py_linear_backward(PyObject *self, PyObject *args)
{
    array_arg dout = ARRAY_ARG("dout", ANY_NDIM), x = ARRAY_ARG("inp", ANY_NDIM);
    array_arg w = ARRAY_ARG("weight", 2), dx = ARRAY_ARG("dinp", ANY_NDIM);
    array_arg dw = ARRAY_ARG("dweight", ANY_NDIM), db = ARRAY_ARG("dbias", ANY_NDIM);
    if (!PyArg_ParseTuple(args, "O&O&O&O&O&O&:linear_backward", to_f32, &dout, to_f32, &x,
                          to_f32, &w, to_grad, &dx, to_grad, &dw, to_grad, &db))
        return NULL;
    npy_intp M, K, N = PyArray_DIM(w.array, 0);
    if (rows_and_width(x.array, "inp", &M, &K) < 0 ||
        check_last_dim(x.array, "inp", PyArray_DIM(w.array, 1)) < 0 ||
        !fits_int(N, "out_features"))
        return NULL;
    int nd = PyArray_NDIM(x.array);
    npy_intp dshape[NPY_MAXDIMS], wshape[2] = {N, K};
    with_last_dim(x.array, N, dshape);
    const array_arg *outs[] = {&dx, &dw, &db}, *ins[] = {&dout, &x, &w};
    if (check_shape(&dout, nd, dshape) < 0 || check_shape(&dx, nd, PyArray_DIMS(x.array)) < 0 ||
        check_shape(&dw, 2, wshape) < 0 || check_shape(&db, 1, &N) < 0 ||
        check_disjoint(outs, 3, ins, 3, 0) < 0)
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_linear_backward(data_of(&dx), data_of(&dw), data_of(&db), data_of(&dout),
                              data_of(&x), data_of(&w), (int)M, (int)K, (int)N);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* to_bfloat16(array): the float32 values rounded to bfloat16, as a uint16
 * array of the same shape holding the bits. */
PyObject *py_to_bfloat16(PyObject *self, PyObject *arg)
{
    array_arg x = ARRAY_ARG("input", ANY_NDIM);
    if (!to_f32(arg, &x)) return NULL;
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(x.array),
                                                            PyArray_DIMS(x.array), NPY_UINT16);
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_f32_to_bf16((uint16_t *)PyArray_DATA(out), data_of(&x), (size_t)PyArray_SIZE(x.array));
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

/* to_int8(array) -> (values, scales): the float32 values (the last axis a
 * row) as int8 blocks, the pair linear takes as an int8 weight: values int8
 * of the same shape, scales uint16 (bfloat16 bits) whose last axis is
 * gptc_int8_blocks(K) long. */
PyObject *py_to_int8(PyObject *self, PyObject *arg)
{
    array_arg x = ARRAY_ARG("input", ANY_NDIM);
    npy_intp rows, K;
    if (!to_f32(arg, &x) || rows_and_width(x.array, "input", &rows, &K) < 0) return NULL;
    int nd = PyArray_NDIM(x.array);
    npy_intp dims[NPY_MAXDIMS];
    memcpy(dims, PyArray_DIMS(x.array), nd * sizeof(npy_intp));
    PyObject *values = PyArray_SimpleNew(nd, dims, NPY_INT8);
    dims[nd - 1] = gptc_int8_blocks((int)K);
    PyObject *scales = values == NULL ? NULL : PyArray_SimpleNew(nd, dims, NPY_UINT16);
    PyObject *pair = scales == NULL ? NULL : PyTuple_Pack(2, values, scales);
    if (pair != NULL) {
        Py_BEGIN_ALLOW_THREADS
        gptc_quantize_int8((int8_t *)PyArray_DATA((PyArrayObject *)values),
                           (uint16_t *)PyArray_DATA((PyArrayObject *)scales), data_of(&x),
                           (size_t)rows, (int)K, K);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(values);
    Py_XDECREF(scales);
    return pair;
}

/* ------------------------------------------------------------------------
 * LayerNorm
 * ---------------------------------------------------------------------- */
PyObject *py_layer_norm(PyObject *self, PyObject *args)
{
    array_arg x = ARRAY_ARG("input", ANY_NDIM), scale = ARRAY_ARG("scale", 1);
    array_arg shift = ARRAY_ARG("shift", 1);
    number_arg eps = NUMBER_ARG("eps");
    if (!PyArg_ParseTuple(args, "O&O&O&O&:layer_norm", to_f32, &x, to_f32, &scale, to_f32,
                          &shift, to_positive, &eps))
        return NULL;
    npy_intp rows, C;
    if (rows_and_width(x.array, "input", &rows, &C) < 0 ||
        check_last_dim(x.array, "input", PyArray_DIM(scale.array, 0)) < 0 ||
        check_shape(&shift, 1, &C) < 0)
        return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x.array), PyArray_DIMS(x.array));
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_layernorm_forward((float *)PyArray_DATA(out), data_of(&x), data_of(&scale),
                           data_of(&shift), (size_t)rows, (int)C, (float)eps.value);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

PyObject *py_layer_norm_backward(PyObject *self, PyObject *args)
{
    array_arg dout = ARRAY_ARG("dout", ANY_NDIM), x = ARRAY_ARG("inp", ANY_NDIM);
    array_arg scale = ARRAY_ARG("scale", 1), dx = ARRAY_ARG("dinp", ANY_NDIM);
    array_arg dscale = ARRAY_ARG("dscale", ANY_NDIM), dshift = ARRAY_ARG("dshift", ANY_NDIM);
    number_arg eps = NUMBER_ARG("eps");
    if (!PyArg_ParseTuple(args, "O&O&O&O&O&O&O&:layer_norm_backward", to_f32, &dout, to_f32,
                          &x, to_f32, &scale, to_positive, &eps, to_grad, &dx, to_grad,
                          &dscale, to_grad, &dshift))
        return NULL;
    npy_intp rows, C;
    if (rows_and_width(x.array, "inp", &rows, &C) < 0 ||
        check_last_dim(x.array, "inp", PyArray_DIM(scale.array, 0)) < 0)
        return NULL;
    int nd = PyArray_NDIM(x.array);
    const npy_intp *shape = PyArray_DIMS(x.array);
    const array_arg *outs[] = {&dx, &dscale, &dshift}, *ins[] = {&dout, &x, &scale};
    if (check_shape(&dout, nd, shape) < 0 || check_shape(&dx, nd, shape) < 0 ||
        check_shape(&dscale, 1, &C) < 0 || check_shape(&dshift, 1, &C) < 0 ||
        check_disjoint(outs, 3, ins, 3, 0) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_layernorm_backward(data_of(&dx), data_of(&dscale), data_of(&dshift), data_of(&dout),
                            data_of(&x), data_of(&scale), (size_t)rows, (int)C,
                            (float)eps.value);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------
 * Elementwise layers: GELU and ReLU (gelu.c), dropout's backward
 * ---------------------------------------------------------------------- */
typedef void (*elementwise_fn)(float *out, const float *x, size_t n);

static PyObject *elementwise(PyObject *arg, elementwise_fn fn)
{
    array_arg x = ARRAY_ARG("input", ANY_NDIM);
    if (!to_f32(arg, &x)) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x.array), PyArray_DIMS(x.array));
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    fn((float *)PyArray_DATA(out), data_of(&x), (size_t)PyArray_SIZE(x.array));
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

typedef void (*elementwise_backward_fn)(float *dinp, const float *inp, const float *dout,
                                        size_t n);

/* dinp += f'(inp) * dout for an elementwise f: all three of one shape. */
static PyObject *elementwise_backward(PyObject *args, const char *fmt, const char *second,
                                      elementwise_backward_fn fn)
{
    array_arg dout = ARRAY_ARG("dout", ANY_NDIM), x = ARRAY_ARG(second, ANY_NDIM);
    array_arg dx = ARRAY_ARG("dinp", ANY_NDIM);
    if (!PyArg_ParseTuple(args, fmt, to_f32, &dout, to_f32, &x, to_grad, &dx)) return NULL;
    int nd = PyArray_NDIM(x.array);
    const array_arg *outs[] = {&dx}, *ins[] = {&dout, &x};
    if (check_shape(&dout, nd, PyArray_DIMS(x.array)) < 0 ||
        check_shape(&dx, nd, PyArray_DIMS(x.array)) < 0 || check_disjoint(outs, 1, ins, 2, 1) < 0)
        return NULL;
    if (dx.array != NULL) {
        Py_BEGIN_ALLOW_THREADS
        fn(data_of(&dx), data_of(&x), data_of(&dout), (size_t)PyArray_SIZE(x.array));
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

PyObject *py_gelu(PyObject *self, PyObject *x) { return elementwise(x, gptc_gelu_forward); }

PyObject *py_gelu_backward(PyObject *self, PyObject *args)
{
    return elementwise_backward(args, "O&O&O&:gelu_backward", "inp", gptc_gelu_backward);
}

PyObject *py_relu(PyObject *self, PyObject *x) { return elementwise(x, gptc_relu_forward); }

PyObject *py_relu_backward(PyObject *self, PyObject *args)
{
    return elementwise_backward(args, "O&O&O&:relu_backward", "inp", gptc_relu_backward);
}

PyObject *py_softmax(PyObject *self, PyObject *arg)
{
    array_arg x = ARRAY_ARG("input", ANY_NDIM);
    if (!to_f32(arg, &x)) return NULL;
    npy_intp rows, C;
    if (rows_and_width(x.array, "input", &rows, &C) < 0) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x.array), PyArray_DIMS(x.array));
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_softmax_forward((float *)PyArray_DATA(out), data_of(&x), (size_t)rows, (int)C);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

/* ------------------------------------------------------------------------
 * Dropout
 * ---------------------------------------------------------------------- */

/* The arguments of both dropout forwards: (input, p, generator). */
static int parse_dropout(PyObject *args, const char *fmt, array_arg *x, number_arg *p,
                         GeneratorObject **g)
{
    return PyArg_ParseTuple(args, fmt, to_f32, x, to_probability, p, to_generator, g);
}

PyObject *py_dropout(PyObject *self, PyObject *args)
{
    array_arg x = ARRAY_ARG("input", ANY_NDIM);
    number_arg p = NUMBER_ARG("p");
    GeneratorObject *g;
    if (!parse_dropout(args, "O&O&O&:dropout", &x, &p, &g)) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x.array), PyArray_DIMS(x.array));
    if (out == NULL) return NULL;
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    gptc_dropout_forward((float *)PyArray_DATA(out), data_of(&x),
                         (size_t)PyArray_SIZE(x.array), p.value, &g->gen);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    return (PyObject *)out;
}

/* dropout_train(input, p, generator) -> (out, noise) */
PyObject *py_dropout_train(PyObject *self, PyObject *args)
{
    array_arg x = ARRAY_ARG("input", ANY_NDIM);
    number_arg p = NUMBER_ARG("p");
    GeneratorObject *g;
    if (!parse_dropout(args, "O&O&O&:dropout_train", &x, &p, &g)) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x.array), PyArray_DIMS(x.array));
    PyArrayObject *noise = out == NULL ? NULL : new_f32(PyArray_NDIM(x.array),
                                                        PyArray_DIMS(x.array));
    if (noise == NULL) {
        Py_XDECREF(out);
        return NULL;
    }
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    gptc_dropout_forward_noise((float *)PyArray_DATA(out), (float *)PyArray_DATA(noise),
                               data_of(&x), (size_t)PyArray_SIZE(x.array), p.value, &g->gen);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    return Py_BuildValue("(NN)", out, noise);
}

/* gptc_dropout_backward's arguments in elementwise_backward's order */
static void dropout_backward_fn(float *dinp, const float *noise, const float *dout, size_t n)
{
    gptc_dropout_backward(dinp, dout, noise, n);
}

PyObject *py_dropout_backward(PyObject *self, PyObject *args)
{
    return elementwise_backward(args, "O&O&O&:dropout_backward", "noise", dropout_backward_fn);
}

/* ------------------------------------------------------------------------
 * Embedding
 * ---------------------------------------------------------------------- */

/* ids.shape + (C,) into dims (NPY_MAXDIMS); -1 if that has too many dimensions. */
static int ids_shape_plus(PyArrayObject *ids, const char *name, npy_intp C, npy_intp *dims)
{
    int nd = PyArray_NDIM(ids);
    if (nd + 1 > NPY_MAXDIMS) {
        PyErr_Format(PyExc_ValueError, "%s has too many dimensions", name);
        return -1;
    }
    for (int i = 0; i < nd; i++) dims[i] = PyArray_DIM(ids, i);   /* nd may be 0 */
    dims[nd] = C;
    return 0;
}

PyObject *py_embedding(PyObject *self, PyObject *args)
{
    array_arg idx = ARRAY_ARG("input", ANY_NDIM), w = ARRAY_ARG("weight", 2);
    if (!PyArg_ParseTuple(args, "O&O&:embedding", to_int64, &idx, to_f32, &w)) return NULL;
    npy_intp V = PyArray_DIM(w.array, 0), C = PyArray_DIM(w.array, 1);
    npy_intp dims[NPY_MAXDIMS];
    if (!fits_int(C, "embedding_dim") || check_token_ids(idx.array, "input", V) < 0 ||
        ids_shape_plus(idx.array, "input", C, dims) < 0)
        return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(idx.array) + 1, dims);
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_embedding_forward((float *)PyArray_DATA(out), (const int64_t *)PyArray_DATA(idx.array),
                           data_of(&w), (size_t)PyArray_SIZE(idx.array), (int)C);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

PyObject *py_embedding_backward(PyObject *self, PyObject *args)
{
    array_arg dout = ARRAY_ARG("dout", ANY_NDIM), idx = ARRAY_ARG("idx", ANY_NDIM);
    array_arg dw = ARRAY_ARG("dweight", 2);
    if (!PyArg_ParseTuple(args, "O&O&O&:embedding_backward", to_f32, &dout, to_int64, &idx,
                          to_grad, &dw))
        return NULL;
    int nd = PyArray_NDIM(idx.array);
    npy_intp dims[NPY_MAXDIMS];
    if (ids_shape_plus(idx.array, "idx", 0, dims) < 0 || check_ndim(&dout, nd + 1) < 0)
        return NULL;
    /* without dweight there is nothing to accumulate into; dout must still fit */
    npy_intp C = PyArray_DIM(dw.array != NULL ? dw.array : dout.array,
                             dw.array != NULL ? 1 : nd);
    dims[nd] = C;
    if (check_shape(&dout, nd + 1, dims) < 0) return NULL;
    if (dw.array == NULL) Py_RETURN_NONE;
    const array_arg *outs[] = {&dw}, *ins[] = {&dout, &idx};
    if (!fits_int(C, "embedding_dim") ||
        check_token_ids(idx.array, "idx", PyArray_DIM(dw.array, 0)) < 0 ||
        check_disjoint(outs, 1, ins, 2, 0) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_embedding_backward(data_of(&dw), data_of(&dout), (const int64_t *)PyArray_DATA(idx.array),
                            (size_t)PyArray_SIZE(idx.array), (int)C);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
