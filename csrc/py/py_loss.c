/*
 * py_loss.c - the bindings of loss.c: cross-entropy beside its backward, and
 * the mean squared error's backward.
 */
#include "args.h"

#include "bindings.h"

/* logits (N, V) and targets (N,) with every target in [0, V), named as the
 * caller names them (F.cross_entropy's input and target). The hint is for
 * the book's (batch, seq_len, vocab) logits, which it flattens first. */
static int check_cross_entropy_args(const array_arg *logits, const array_arg *targets)
{
    if (PyArray_NDIM(logits->array) != 2) {
        PyObject *shape = shape_str(PyArray_NDIM(logits->array), PyArray_DIMS(logits->array));
        if (shape == NULL) return -1;
        PyErr_Format(PyExc_ValueError,
                     "%s must be (N, num_classes) logits, got shape %U (flatten (batch, "
                     "seq_len, vocab) logits with .flatten(0, 1))", logits->name, shape);
        Py_DECREF(shape);
        return -1;
    }
    npy_intp N = PyArray_DIM(logits->array, 0), V = PyArray_DIM(logits->array, 1);
    if (!fits_int(V, "number of classes") ||
        check_shape(targets, 1, &N) < 0)
        return -1;
    const int64_t *t = (const int64_t *)PyArray_DATA(targets->array);
    for (npy_intp i = 0; i < N; i++) {
        if (t[i] < 0 || t[i] >= V) {
            PyErr_Format(PyExc_IndexError,
                         "%s[%zd] = %lld is out of range: %s must be in [0, %zd) "
                         "for %s with V = %zd classes", targets->name,
                         (Py_ssize_t)i, (long long)t[i], targets->name, (Py_ssize_t)V,
                         logits->name, (Py_ssize_t)V);
            return -1;
        }
    }
    return 0;
}

PyObject *py_cross_entropy(PyObject *self, PyObject *args)
{
    array_arg logits = ARRAY_ARG("input", ANY_NDIM), targets = ARRAY_ARG("target", 1);
    if (!PyArg_ParseTuple(args, "O&O&:cross_entropy", to_f32, &logits, to_int64, &targets) ||
        check_cross_entropy_args(&logits, &targets) < 0)
        return NULL;
    npy_intp N = PyArray_DIM(logits.array, 0), V = PyArray_DIM(logits.array, 1);
    PyArrayObject *losses = new_f32(1, &N);
    if (losses == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_crossentropy_forward((float *)PyArray_DATA(losses), data_of(&logits),
                              (const int64_t *)PyArray_DATA(targets.array), (size_t)N, (int)V);
    Py_END_ALLOW_THREADS
    return (PyObject *)losses;
}

PyObject *py_cross_entropy_backward(PyObject *self, PyObject *args)
{
    array_arg dlosses = ARRAY_ARG("dlosses", 1), logits = ARRAY_ARG("logits", 2);
    array_arg targets = ARRAY_ARG("targets", 1), dlogits = ARRAY_ARG("dlogits", ANY_NDIM);
    if (!PyArg_ParseTuple(args, "O&O&O&O&:cross_entropy_backward", to_f32, &dlosses, to_f32,
                          &logits, to_int64, &targets, to_grad, &dlogits) ||
        check_cross_entropy_args(&logits, &targets) < 0)
        return NULL;
    npy_intp N = PyArray_DIM(logits.array, 0), V = PyArray_DIM(logits.array, 1);
    const array_arg *outs[] = {&dlogits}, *ins[] = {&dlosses, &logits, &targets};
    if (check_shape(&dlosses, 1, &N) < 0 ||
        check_shape(&dlogits, 2, PyArray_DIMS(logits.array)) < 0 ||
        check_disjoint(outs, 1, ins, 3, 0) < 0)
        return NULL;
    if (dlogits.array != NULL) {
        Py_BEGIN_ALLOW_THREADS
        gptc_crossentropy_backward(data_of(&dlogits), data_of(&dlosses), data_of(&logits),
                                   (const int64_t *)PyArray_DATA(targets.array), (size_t)N,
                                   (int)V);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

PyObject *py_mse_backward(PyObject *self, PyObject *args)
{
    array_arg pred = ARRAY_ARG("pred", ANY_NDIM), target = ARRAY_ARG("target", ANY_NDIM);
    array_arg dpred = ARRAY_ARG("dpred", ANY_NDIM);
    double scale;
    if (!PyArg_ParseTuple(args, "O&O&dO&:mse_backward", to_f32, &pred, to_f32, &target, &scale,
                          to_grad, &dpred))
        return NULL;
    int nd = PyArray_NDIM(pred.array);
    const array_arg *outs[] = {&dpred}, *ins[] = {&pred, &target};
    if (check_shape(&target, nd, PyArray_DIMS(pred.array)) < 0 ||
        check_shape(&dpred, nd, PyArray_DIMS(pred.array)) < 0 ||
        check_disjoint(outs, 1, ins, 2, 1) < 0)
        return NULL;
    if (dpred.array != NULL) {
        Py_BEGIN_ALLOW_THREADS
        gptc_mse_backward(data_of(&dpred), data_of(&pred), data_of(&target), (float)scale,
                          (size_t)PyArray_SIZE(pred.array));
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}
