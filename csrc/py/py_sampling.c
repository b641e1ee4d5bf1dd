/*
 * py_sampling.c - the binding of sampling.c: chapter 5's choice of the next
 * token from each row of logits.
 */
#include "py_random.h"

#include "bindings.h"

#include <float.h>

/* The sampling settings of chapter 5, checked here for next_tokens and for
 * gptc.generate (which checks them before its first forward, through
 * check_sampling): temperature a finite number >= 0, top_k None or an integer
 * in [1, vocab_size] (vocab_size < 0: not known, any positive integer). On
 * success *top_k is 0 for None. */
static int read_sampling(PyObject *temp_obj, PyObject *top_k_obj, Py_ssize_t vocab_size,
                         double *temperature, long *top_k)
{
    if (PyBool_Check(temp_obj) || !(PyFloat_Check(temp_obj) || PyLong_Check(temp_obj) ||
                                    PyNumber_Check(temp_obj))) {
        PyErr_Format(PyExc_TypeError, "temperature must be a finite number >= 0, got %R",
                     temp_obj);
        return 0;
    }
    *temperature = PyFloat_AsDouble(temp_obj);
    if (*temperature == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "temperature must be a finite number >= 0, got %R",
                     temp_obj);
        return 0;
    }
    if (!(*temperature >= 0.0 && *temperature <= DBL_MAX)) {
        PyErr_Format(PyExc_ValueError, "temperature must be a finite number >= 0, got %R",
                     temp_obj);
        return 0;
    }
    *top_k = 0;
    if (top_k_obj == Py_None) return 1;
    char limit[64];
    if (vocab_size >= 0)
        snprintf(limit, sizeof limit, "in [1, vocab_size] = [1, %zd]", vocab_size);
    else
        snprintf(limit, sizeof limit, "of at least 1");
    /* numpy integers count, floats and bools do not */
    int integer = !PyBool_Check(top_k_obj) && !PyFloat_Check(top_k_obj) &&
                  PyIndex_Check(top_k_obj);
    if (!integer) {
        PyErr_Format(PyExc_TypeError, "top_k must be None or an integer %s, got %R", limit,
                     top_k_obj);
        return 0;
    }
    PyObject *index = PyNumber_Index(top_k_obj);
    if (index == NULL) return 0;
    int overflow;
    *top_k = PyLong_AsLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (overflow != 0 || *top_k < 1 || (vocab_size >= 0 && *top_k > vocab_size)) {
        PyErr_Format(PyExc_ValueError, "top_k must be None or an integer %s, got %R", limit,
                     top_k_obj);
        return 0;
    }
    return 1;
}

/* check_sampling(temperature, top_k, vocab_size) -> (float temperature, top_k):
 * the checks of next_tokens, for a caller that wants them before its work */
PyObject *py_check_sampling(PyObject *self, PyObject *args)
{
    PyObject *temp_obj, *top_k_obj, *vocab_obj;
    if (!PyArg_ParseTuple(args, "OOO:check_sampling", &temp_obj, &top_k_obj, &vocab_obj))
        return NULL;
    Py_ssize_t vocab_size = -1;
    if (vocab_obj != Py_None) {
        vocab_size = PyLong_AsSsize_t(vocab_obj);
        if (vocab_size == -1 && PyErr_Occurred()) return NULL;
        if (vocab_size < 1) {
            PyErr_Format(PyExc_ValueError, "vocab_size must be None or positive, got %zd",
                         vocab_size);
            return NULL;
        }
    }
    double temperature;
    long top_k;
    if (!read_sampling(temp_obj, top_k_obj, vocab_size, &temperature, &top_k)) return NULL;
    if (top_k == 0) return Py_BuildValue("(dO)", temperature, Py_None);
    return Py_BuildValue("(dl)", temperature, top_k);
}

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
    double temperature;
    long top_k;
    if (!read_sampling(temp_obj, top_k_obj, (Py_ssize_t)V, &temperature, &top_k)) return NULL;
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
