/*
 * args.c - the argument converters and checks every binding uses (args.h).
 *
 * Arrays must arrive as they will be used: float32 (token ids: int64),
 * C-contiguous and aligned. The Python package converts user input into
 * that form (gptc/_convert.py); these functions refuse anything else with
 * one message per fact, so the C functions behind them can trust what they
 * receive.
 */
#include "args.h"

#include <limits.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

PyObject *shape_str(int ndim, const npy_intp *dims)
{
    PyObject *parts = PyList_New(ndim);
    if (parts == NULL) return NULL;
    for (int i = 0; i < ndim; i++) {
        PyObject *d = PyUnicode_FromFormat("%zd", (Py_ssize_t)dims[i]);
        if (d == NULL) { Py_DECREF(parts); return NULL; }
        PyList_SET_ITEM(parts, i, d);
    }
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *joined = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    if (joined == NULL) return NULL;
    PyObject *res = PyUnicode_FromFormat(ndim == 1 ? "(%U,)" : "(%U)", joined);
    Py_DECREF(joined);
    return res;
}

int check_ndim(const array_arg *a, int ndim)
{
    if (a->array == NULL || ndim == ANY_NDIM || PyArray_NDIM(a->array) == ndim) return 0;
    PyObject *s = shape_str(PyArray_NDIM(a->array), PyArray_DIMS(a->array));
    if (s != NULL) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimension%s, got shape %U", a->name,
                     ndim, ndim == 1 ? "" : "s", s);
        Py_DECREF(s);
    }
    return -1;
}

/* The dtypes a Linear weight may be stored in as one array, and their name
 * in messages (an int8 weight is a pair of arrays: to_int8_weight). */
static int is_weight_type(int typenum)
{
    return typenum == NPY_FLOAT32 || typenum == NPY_UINT16;
}
#define WEIGHT_TYPES_NAME "float32 or uint16 (bfloat16 bits)"

/* obj must be an ndarray accepted by `matches`, C-contiguous and aligned,
 * with ndim dimensions (ANY_NDIM: any). Returns it (borrowed) or NULL with
 * a TypeError/ValueError naming `name`. */
static PyArrayObject *checked_array(PyObject *obj, const char *name, int (*matches)(int),
                                    const char *tname, int ndim)
{
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s NumPy array, got %s", name, tname,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (!matches(PyArray_TYPE(a))) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype %s, got %S", name, tname,
                     (PyObject *)PyArray_DESCR(a));
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a C-contiguous, aligned array (use numpy.ascontiguousarray)",
                     name);
        return NULL;
    }
    array_arg arg = {name, ndim, a};
    return check_ndim(&arg, ndim) == 0 ? a : NULL;
}

static int is_f32(int typenum) { return typenum == NPY_FLOAT32; }
static int is_int64(int typenum) { return typenum == NPY_INT64; }

int to_f32(PyObject *obj, void *ptr)
{
    array_arg *a = ptr;
    a->array = checked_array(obj, a->name, is_f32, "float32", a->ndim);
    return a->array != NULL;
}

int to_f32_or_none(PyObject *obj, void *ptr)
{
    array_arg *a = ptr;
    a->array = NULL;
    return obj == Py_None || to_f32(obj, ptr);
}

int to_writable_f32(PyObject *obj, void *ptr)
{
    array_arg *a = ptr;
    if (!to_f32(obj, ptr)) return 0;
    if (!PyArray_ISWRITEABLE(a->array)) {
        PyErr_Format(PyExc_ValueError, "%s must be writable", a->name);
        a->array = NULL;
        return 0;
    }
    return 1;
}

int to_grad(PyObject *obj, void *ptr)
{
    array_arg *a = ptr;
    a->array = NULL;
    return obj == Py_None || to_writable_f32(obj, ptr);
}

int to_int64(PyObject *obj, void *ptr)
{
    array_arg *a = ptr;
    a->array = checked_array(obj, a->name, is_int64, "int64", a->ndim);
    return a->array != NULL;
}

static int is_int8(int typenum) { return typenum == NPY_INT8; }
static int is_uint16(int typenum) { return typenum == NPY_UINT16; }

/* The int8 weight of Module.to_dtype("int8"), the pair (values, scales) that
 * gptc._C.to_int8 returns: values int8 [N, K], scales uint16 (bfloat16
 * bits) [N, gptc_int8_blocks(K)]. */
static int to_int8_weight(PyObject *obj, weight_arg *w)
{
    char part[200];
    if (PyTuple_GET_SIZE(obj) != 2) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be an int8 weight (values, scales), a tuple of 2 arrays, got a "
                     "tuple of %zd items", w->name, PyTuple_GET_SIZE(obj));
        return 0;
    }
    snprintf(part, sizeof(part), "%s values", w->name);
    PyArrayObject *q = checked_array(PyTuple_GET_ITEM(obj, 0), part, is_int8, "int8", 2);
    if (q == NULL) return 0;
    snprintf(part, sizeof(part), "%s scales", w->name);
    array_arg d = {part, 2, checked_array(PyTuple_GET_ITEM(obj, 1), part, is_uint16,
                                          "uint16 (bfloat16 bits)", 2)};
    if (d.array == NULL || !fits_int(PyArray_DIM(q, 1), "in_features")) return 0;
    npy_intp want[2] = {PyArray_DIM(q, 0), gptc_int8_blocks((int)PyArray_DIM(q, 1))};
    if (check_shape(&d, 2, want) < 0) return 0;
    w->array = q;
    w->scales = d.array;
    w->weight = (gptc_weight){PyArray_DATA(q), GPTC_INT8, (const uint16_t *)PyArray_DATA(d.array)};
    return 1;
}

int to_weight(PyObject *obj, void *ptr)
{
    weight_arg *w = ptr;
    w->array = w->scales = NULL;
    if (PyTuple_Check(obj)) return to_int8_weight(obj, w);
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s must be a " WEIGHT_TYPES_NAME " NumPy array, or an int8 weight "
                     "(values, scales) from to_int8, got %s", w->name, Py_TYPE(obj)->tp_name);
        return 0;
    }
    w->array = checked_array(obj, w->name, is_weight_type, WEIGHT_TYPES_NAME, 2);
    if (w->array == NULL) return 0;
    w->weight = (gptc_weight){PyArray_DATA(w->array),
                              PyArray_TYPE(w->array) == NPY_UINT16 ? GPTC_BFLOAT16
                                                                   : GPTC_FLOAT32, NULL};
    return 1;
}

/* The value of a Python number, or -1 with a TypeError naming `name`. */
static int number_value(PyObject *obj, const char *name, const char *expected, double *out)
{
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s must be a number%s, got %s", name, expected,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = v;
    return 0;
}

int to_probability(PyObject *obj, void *ptr)
{
    number_arg *p = ptr;
    if (number_value(obj, p->name, " in [0, 1]", &p->value) < 0) return 0;
    if (!(p->value >= 0.0 && p->value <= 1.0)) {
        char *text = PyOS_double_to_string(p->value, 'r', 0, 0, NULL);
        PyErr_Format(PyExc_ValueError, "%s must be a probability in [0, 1], got %s", p->name,
                     text != NULL ? text : "?");
        PyMem_Free(text);
        return 0;
    }
    return 1;
}

int to_positive(PyObject *obj, void *ptr)
{
    number_arg *p = ptr;
    if (number_value(obj, p->name, "", &p->value) < 0) return 0;
    if (!(p->value > 0.0)) {
        PyErr_Format(PyExc_ValueError, "%s must be positive, got %R", p->name, obj);
        return 0;
    }
    return 1;
}

int to_flag(PyObject *obj, void *ptr)
{
    number_arg *p = ptr;
    if (!PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be True or False, got %s", p->name,
                     Py_TYPE(obj)->tp_name);
        return 0;
    }
    p->value = obj == Py_True;
    return 1;
}

int check_shape(const array_arg *a, int ndim, const npy_intp *shape)
{
    if (a->array == NULL) return 0;
    int ok = PyArray_NDIM(a->array) == ndim;
    for (int i = 0; ok && i < ndim; i++) {
        ok = PyArray_DIM(a->array, i) == shape[i];
    }
    if (ok) return 0;
    PyObject *got = shape_str(PyArray_NDIM(a->array), PyArray_DIMS(a->array));
    PyObject *want = shape_str(ndim, shape);
    if (got != NULL && want != NULL) {
        PyErr_Format(PyExc_ValueError, "%s has shape %U, expected %U", a->name, got, want);
    }
    Py_XDECREF(got);
    Py_XDECREF(want);
    return -1;
}

int fits_int(Py_ssize_t v, const char *what)
{
    if (v < 0 || v > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s = %zd is too large for gptc (at most %d)", what, v,
                     INT_MAX);
        return 0;
    }
    return 1;
}

int rows_and_width(PyArrayObject *x, const char *name, npy_intp *rows, npy_intp *width)
{
    int nd = PyArray_NDIM(x);
    if (nd < 1) {
        PyErr_Format(PyExc_ValueError, "%s must have at least 1 dimension, got a scalar", name);
        return -1;
    }
    *width = PyArray_DIM(x, nd - 1);
    /* not size / width: width may be 0 */
    if (!fits_int(*width, "last dimension") ||
        product_fits_int(PyArray_DIMS(x), nd - 1, "number of rows", rows) < 0)
        return -1;
    return 0;
}

int product_fits_int(const npy_intp *dims, int n, const char *what, npy_intp *product)
{
    /* An empty array may have other dimensions of any size, whose product
     * would overflow: it holds no rows. */
    *product = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] == 0) {
            *product = 0;
            return 0;
        }
    }
    for (int i = 0; i < n; i++) {
        if (dims[i] > INT_MAX / *product) {
            PyErr_Format(PyExc_ValueError, "%s is too large for gptc (at most %d)", what,
                         INT_MAX);
            return -1;
        }
        *product *= dims[i];
    }
    return 0;
}

int check_last_dim(PyArrayObject *x, const char *name, npy_intp want)
{
    npy_intp got = PyArray_DIM(x, PyArray_NDIM(x) - 1);
    if (got == want) return 0;
    PyObject *s = shape_str(PyArray_NDIM(x), PyArray_DIMS(x));
    if (s != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "%s has shape %U: its last dimension is %zd, expected %zd", name, s,
                     (Py_ssize_t)got, (Py_ssize_t)want);
        Py_DECREF(s);
    }
    return -1;
}

int check_token_ids(PyArrayObject *ids, const char *name, npy_intp vocab)
{
    const int64_t *v = (const int64_t *)PyArray_DATA(ids);
    npy_intp n = PyArray_SIZE(ids);
    for (npy_intp i = 0; i < n; i++) {
        if (v[i] < 0 || v[i] >= vocab) {
            PyErr_Format(PyExc_IndexError,
                         "%s contains token id %lld at flat position %zd, outside the "
                         "vocabulary: ids must be in [0, %zd) for vocab_size %zd",
                         name, (long long)v[i], (Py_ssize_t)i, (Py_ssize_t)vocab,
                         (Py_ssize_t)vocab);
            return -1;
        }
    }
    return 0;
}

/* Do the memory ranges of two (contiguous) arrays intersect? */
static int overlap(PyArrayObject *a, PyArrayObject *b)
{
    if (a == NULL || b == NULL || PyArray_NBYTES(a) == 0 || PyArray_NBYTES(b) == 0) return 0;
    uintptr_t a0 = (uintptr_t)PyArray_DATA(a), a1 = a0 + (uintptr_t)PyArray_NBYTES(a);
    uintptr_t b0 = (uintptr_t)PyArray_DATA(b), b1 = b0 + (uintptr_t)PyArray_NBYTES(b);
    return a0 < b1 && b0 < a1;
}

/* An output written while the kernel still reads its inputs (or another
 * output) would corrupt the result. */
int check_disjoint(const array_arg *const *outs, int n_out, const array_arg *const *ins,
                   int n_in, int allow_same)
{
    for (int i = 0; i < n_out; i++) {
        PyArrayObject *o = outs[i]->array;
        for (int j = i + 1; j < n_out; j++) {
            if (overlap(o, outs[j]->array)) {
                PyErr_Format(PyExc_ValueError, "%s and %s must not share memory",
                             outs[i]->name, outs[j]->name);
                return -1;
            }
        }
        for (int j = 0; j < n_in; j++) {
            PyArrayObject *in = ins[j]->array;
            if (!overlap(o, in)) continue;
            /* each element is read before it is written */
            if (allow_same && PyArray_DATA(o) == PyArray_DATA(in) &&
                PyArray_NBYTES(o) == PyArray_NBYTES(in))
                continue;
            PyErr_Format(PyExc_ValueError, "%s must not share memory with %s", outs[i]->name,
                         ins[j]->name);
            return -1;
        }
    }
    return 0;
}
