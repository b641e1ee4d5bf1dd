/*
 * py_sampling.c - the binding of sampling.c: chapter 5's choice of the next
 * token from each row of logits.
 */
#include "py_random.h"

#include "bindings.h"

#include <float.h>

/* next_tokens(logits, temperature, top_k, generator) -> (B,) int64 */
PyObject *py_next_tokens(PyObject *self, PyObject *args)
{
    array_arg logits = ARRAY_ARG("logits", 2);
    PyObject *temp_obj, *top_k_obj;
    GeneratorObject *g;
    if (!PyArg_ParseTuple(args, "O&OOO&:next_tokens", to_f32, &logits, &temp_obj, &top_k_obj,
                          to_generator, &g))
        return NULL;
    npy_intp B = PyArray_DIM(logits.array, 0), V = PyArray_DIM(logits.array, 1);
    if (V < 1 || !fits_int(V, "vocab_size") || !fits_int(B, "batch")) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "logits must hold at least one value per row, got "
                         "shape (%zd, %zd)", (Py_ssize_t)B, (Py_ssize_t)V);
        return NULL;
    }
    double temperature = PyFloat_AsDouble(temp_obj);
    if (temperature == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "temperature must be a number, got %s",
                     Py_TYPE(temp_obj)->tp_name);
        return NULL;
    }
    if (!(temperature >= 0.0 && temperature <= DBL_MAX)) {
        PyErr_Format(PyExc_ValueError, "temperature must be a finite number >= 0, got %R",
                     temp_obj);
        return NULL;
    }
    long top_k = 0;
    if (top_k_obj != Py_None) {
        if (PyBool_Check(top_k_obj) || !PyLong_Check(top_k_obj)) {
            PyErr_Format(PyExc_TypeError, "top_k must be None or an integer, got %s",
                         Py_TYPE(top_k_obj)->tp_name);
            return NULL;
        }
        int overflow;
        top_k = PyLong_AsLongAndOverflow(top_k_obj, &overflow);
        if (overflow != 0 || top_k < 1 || top_k > V) {
            PyErr_Format(PyExc_ValueError,
                         "top_k must be None or an integer in [1, vocab_size] = [1, %zd], "
                         "got %R",
                         (Py_ssize_t)V, top_k_obj);
            return NULL;
        }
    }
    PyArrayObject *next = (PyArrayObject *)PyArray_SimpleNew(1, &B, NPY_INT64);
    if (next == NULL) return NULL;
    float *scratch = PyMem_Malloc(gptc_sample_scratch_floats((int)V) * sizeof(float));
    if (scratch == NULL) {
        Py_DECREF(next);
        return PyErr_NoMemory();
    }
    int bad;
    /* greedy choice draws nothing, so it needs no generator lock */
    if (temperature > 0.0) lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    bad = gptc_next_tokens((int64_t *)PyArray_DATA(next), data_of(&logits), (int)B, (int)V,
                           temperature, (int)top_k, &g->gen, scratch);
    Py_END_ALLOW_THREADS
    if (temperature > 0.0) unlock_generator(g);
    PyMem_Free(scratch);
    if (bad >= 0) {
        Py_DECREF(next);
        PyErr_Format(PyExc_ValueError,
                     "logits row %d has no token to choose: it holds NaN%s", bad,
                     temperature > 0.0 ? ", an infinite value, or only -inf" : "");
        return NULL;
    }
    return (PyObject *)next;
}
