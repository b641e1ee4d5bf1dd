/*
 * args.h - what every file of the binding (csrc/py/) shares: the CPython and
 * NumPy headers, and the argument converters and checks of args.c.
 *
 * A binding parses its arguments with PyArg_Parse* and the `O&` converters
 * below, checks how they fit together (shapes, sizes, token ids), releases
 * the GIL and calls one function of gptc.h. A converter gets the name to
 * use in its messages from the struct it fills, e.g.
 *
 *     array_arg x = ARRAY_ARG("input", ANY_NDIM);
 *     PyArg_ParseTuple(args, "O&", to_f32, &x);
 *
 * and raises, on bad input, an exception that names the argument, the value
 * and what was expected.
 */
#ifndef GPTC_PY_ARGS_H
#define GPTC_PY_ARGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
/* the oldest NumPy gptc runs on (pyproject.toml); 1.22 brought the memory
 * handlers of buffer_pool.c */
#define NPY_TARGET_VERSION NPY_1_23_API_VERSION
/* one NumPy C-API table for all the files of the extension; module.c
 * defines GPTC_PY_IMPORT_ARRAY and fills it in import_array() */
#define PY_ARRAY_UNIQUE_SYMBOL gptc_numpy_api
#ifndef GPTC_PY_IMPORT_ARRAY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "gptc.h"

/* An array argument: C-contiguous, aligned, of the converter's dtype and
 * of `ndim` dimensions (ANY_NDIM: any). */
#define ANY_NDIM (-1)
typedef struct array_arg {
    const char *name;
    int ndim;
    PyArrayObject *array;   /* set by the converter (borrowed); NULL for None */
} array_arg;
#define ARRAY_ARG(name, ndim) {(name), (ndim), NULL}

/* A Linear weight as the model stores it (Module.to_dtype): float32, uint16
 * holding the bfloat16 bits, or the int8 pair (values, scales) of to_int8.
 * array is always 2-D, [out_features, in_features] (the int8 values). */
typedef struct weight_arg {
    const char *name;
    PyArrayObject *array;
    PyArrayObject *scales;   /* the int8 scales, else NULL */
    gptc_weight weight;
} weight_arg;
#define WEIGHT_ARG(name) {(name), NULL, NULL, {NULL, GPTC_FLOAT32, NULL}}

/* A named number: a probability, a positive eps, or a flag. */
typedef struct number_arg {
    const char *name;
    double value;
} number_arg;
#define NUMBER_ARG(name) {(name), 0.0}

/* The converters, for `O&` (they return 1, or 0 with an exception set). */
int to_f32(PyObject *obj, void *array_arg_ptr);
int to_f32_or_none(PyObject *obj, void *array_arg_ptr);
int to_writable_f32(PyObject *obj, void *array_arg_ptr);   /* written in place */
int to_grad(PyObject *obj, void *array_arg_ptr);           /* None, or writable float32 */
int to_int64(PyObject *obj, void *array_arg_ptr);
int to_weight(PyObject *obj, void *weight_arg_ptr);
int to_probability(PyObject *obj, void *number_arg_ptr);   /* a number in [0, 1] */
int to_positive(PyObject *obj, void *number_arg_ptr);      /* a number > 0 (an eps) */
int to_flag(PyObject *obj, void *number_arg_ptr);          /* True or False: 1.0 or 0.0 */

/* The checks after parsing; each returns 0, or -1 with an exception set. */
/* a must have ndim dimensions (nothing to check when a holds None) */
int check_ndim(const array_arg *a, int ndim);
/* a's shape must be `shape` (nothing to check when a holds None) */
int check_shape(const array_arg *a, int ndim, const npy_intp *shape);
/* x's last dimension must be `want` */
int check_last_dim(PyArrayObject *x, const char *name, npy_intp want);
/* x (at least 1-D) as rows of its last dimension: both must fit an int */
int rows_and_width(PyArrayObject *x, const char *name, npy_intp *rows, npy_intp *width);
/* every id in [0, vocab); the message names the first bad one */
int check_token_ids(PyArrayObject *ids, const char *name, npy_intp vocab);
/* outputs must not share memory with each other nor with any input;
 * allow_same: an elementwise kernel may write over exactly one input */
int check_disjoint(const array_arg *const *outs, int n_out, const array_arg *const *ins,
                   int n_in, int allow_same);
/* The product of n dimensions into *product: -1 with ValueError naming
 * `what` if it exceeds an int (0 when a dimension is 0, whatever the rest). */
int product_fits_int(const npy_intp *dims, int n, const char *what, npy_intp *product);
/* Every size the C code takes is an int: 1 if v fits, else 0 with ValueError. */
int fits_int(Py_ssize_t v, const char *what);

/* "(2, 4, 768)", for messages (a new reference, or NULL). */
PyObject *shape_str(int ndim, const npy_intp *dims);
/* A new float32 array whose memory comes from buffer_pool.c. */
PyArrayObject *new_f32(int ndim, const npy_intp *dims);
/* Sets up that pool; module.c calls it once, before any new_f32. */
int buffer_pool_init(void);
/* The data of an argument, NULL for None. */
static inline float *data_of(const array_arg *a)
{
    return a->array == NULL ? NULL : (float *)PyArray_DATA(a->array);
}

#endif /* GPTC_PY_ARGS_H */
