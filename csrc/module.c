/*
 * module.c - the CPython / NumPy binding of gptc (the extension gptc._C).
 *
 * This file holds no math. Each function here checks its arguments (types,
 * dtypes, shapes, token id ranges, sizes), allocates the output array,
 * releases the GIL and calls one function of gptc.h. Bad input raises a
 * Python exception that names the argument, the value and what was
 * expected, so the C functions behind it can trust what they receive.
 *
 * Arrays must arrive as they will be used: float32 (token ids: int64),
 * C-contiguous and aligned. The Python classes in gptc.nn convert user
 * input into that form; weights (gptc.nn.Parameter) already have it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <float.h>
#include <limits.h>
#include <string.h>

#include "build_info.h"
#include "gptc.h"

/* ------------------------------------------------------------------------
 * Argument checking
 * ---------------------------------------------------------------------- */

/* "(2, 4, 768)" for an error message. */
static PyObject *shape_str(int ndim, const npy_intp *dims)
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

/* The typenum check_array takes for a Linear weight as stored: float32, or
 * uint16 holding the bfloat16 bits of Module.to_dtype("bfloat16"). */
#define WEIGHT_TYPES (-1)

/* obj must be an ndarray of the given type, C-contiguous and aligned, with
 * ndim dimensions (ndim < 0: any). Returns it (borrowed) or NULL with a
 * TypeError/ValueError naming `name`. */
static PyArrayObject *check_array(PyObject *obj, const char *name, int typenum, int ndim)
{
    const char *tname = typenum == NPY_FLOAT32 ? "float32"
                        : typenum == NPY_UINT16 ? "uint16 (bfloat16 bits)"
                        : typenum == WEIGHT_TYPES ? "float32 or uint16 (bfloat16 bits)" : "int64";
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s NumPy array, got %s", name, tname,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    int matches = typenum == WEIGHT_TYPES
                      ? PyArray_TYPE(a) == NPY_FLOAT32 || PyArray_TYPE(a) == NPY_UINT16
                      : PyArray_TYPE(a) == typenum;
    if (!matches) {
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
    if (ndim >= 0 && PyArray_NDIM(a) != ndim) {
        PyObject *s = shape_str(PyArray_NDIM(a), PyArray_DIMS(a));
        if (s != NULL) {
            PyErr_Format(PyExc_ValueError, "%s must have %d dimension%s, got shape %U", name,
                         ndim, ndim == 1 ? "" : "s", s);
            Py_DECREF(s);
        }
        return NULL;
    }
    return a;
}

/* a's shape must equal expected (same ndim as a). */
static int check_shape(PyArrayObject *a, const char *name, int ndim, const npy_intp *expected)
{
    int ok = PyArray_NDIM(a) == ndim;
    for (int i = 0; ok && i < ndim; i++) {
        ok = PyArray_DIM(a, i) == expected[i];
    }
    if (ok) return 0;
    PyObject *got = shape_str(PyArray_NDIM(a), PyArray_DIMS(a));
    PyObject *want = shape_str(ndim, expected);
    if (got != NULL && want != NULL) {
        PyErr_Format(PyExc_ValueError, "%s has shape %U, expected %U", name, got, want);
    }
    Py_XDECREF(got);
    Py_XDECREF(want);
    return -1;
}

/* A float32 array of the given shape, or None (returns NULL pointer in *out). */
static int optional_f32(PyObject *obj, const char *name, int ndim, const npy_intp *shape,
                        const float **out)
{
    *out = NULL;
    if (obj == Py_None) return 0;
    PyArrayObject *a = check_array(obj, name, NPY_FLOAT32, ndim);
    if (a == NULL || check_shape(a, name, ndim, shape) < 0) return -1;
    *out = (const float *)PyArray_DATA(a);
    return 0;
}

static int required_f32(PyObject *obj, const char *name, int ndim, const npy_intp *shape,
                        const float **out)
{
    if (obj == Py_None) {
        PyErr_Format(PyExc_TypeError, "%s must be a float32 NumPy array, got None", name);
        return -1;
    }
    return optional_f32(obj, name, ndim, shape, out);
}

/* A Linear weight of a model: float32, or uint16 holding the bfloat16 copy
 * Module.to_dtype("bfloat16") made of it. */
static int model_weight(PyObject *obj, const char *name, const npy_intp *shape,
                        gptc_weight *w)
{
    PyArrayObject *a = check_array(obj, name, WEIGHT_TYPES, 2);
    if (a == NULL || check_shape(a, name, 2, shape) < 0) return -1;
    *w = (gptc_weight){PyArray_DATA(a),
                       PyArray_TYPE(a) == NPY_UINT16 ? GPTC_BFLOAT16 : GPTC_FLOAT32};
    return 0;
}

/* Every dimension used by the C code is an int; refuse anything larger. */
static int fits_int(Py_ssize_t v, const char *what)
{
    if (v < 0 || v > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s = %zd is too large for gptc (at most %d)", what, v,
                     INT_MAX);
        return 0;
    }
    return 1;
}

static int check_dropout(double p, const char *name)
{
    if (!(p >= 0.0 && p <= 1.0)) {
        char *text = PyOS_double_to_string(p, 'r', 0, 0, NULL);
        PyErr_Format(PyExc_ValueError, "%s must be a probability in [0, 1], got %s", name,
                     text != NULL ? text : "?");
        PyMem_Free(text);
        return -1;
    }
    return 0;
}

/* Every id in [0, vocab); the error names the first bad one and where it is. */
static int check_token_ids(PyArrayObject *idx, const char *name, npy_intp vocab)
{
    const int64_t *ids = (const int64_t *)PyArray_DATA(idx);
    npy_intp n = PyArray_SIZE(idx);
    for (npy_intp i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab) {
            PyErr_Format(PyExc_IndexError,
                         "%s contains token id %lld at flat position %zd, outside the "
                         "vocabulary: ids must be in [0, %zd) for vocab_size %zd",
                         name, (long long)ids[i], (Py_ssize_t)i, (Py_ssize_t)vocab,
                         (Py_ssize_t)vocab);
            return -1;
        }
    }
    return 0;
}

static PyArrayObject *new_f32(int ndim, const npy_intp *dims)
{
    return (PyArrayObject *)PyArray_SimpleNew(ndim, (npy_intp *)dims, NPY_FLOAT32);
}

/* ------------------------------------------------------------------------
 * Generator: gptc_generator plus a lock, since the forward pass draws
 * dropout masks with the GIL released.
 * ---------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    gptc_generator gen;
    PyThread_type_lock lock;
} GeneratorObject;

static PyTypeObject GeneratorType;

static void lock_generator(GeneratorObject *g)
{
    if (!PyThread_acquire_lock(g->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(g->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

static void unlock_generator(GeneratorObject *g)
{
    PyThread_release_lock(g->lock);
}

static PyObject *Generator_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Generator", kwlist)) return NULL;
    GeneratorObject *self = (GeneratorObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    gptc_generator_seed(&self->gen, GPTC_DEFAULT_SEED);
    return (PyObject *)self;
}

static void Generator_dealloc(GeneratorObject *self)
{
    if (self->lock != NULL) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Generator_manual_seed(GeneratorObject *self, PyObject *arg)
{
    /* PyTorch accepts any integer in [-2**63, 2**64) and keeps it modulo 2**64. */
    PyObject *num = PyNumber_Index(arg);
    if (num == NULL) {
        PyErr_Format(PyExc_TypeError, "seed must be an integer, got %s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    unsigned long long seed = PyLong_AsUnsignedLongLong(num);
    if (seed == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        long long s = PyLong_AsLongLong(num);
        if (s == -1 && PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError, "seed must be in [-2**63, 2**64), got %R", num);
            Py_DECREF(num);
            return NULL;
        }
        seed = (unsigned long long)s;
    }
    Py_DECREF(num);
    lock_generator(self);
    gptc_generator_seed(&self->gen, (uint64_t)seed);
    unlock_generator(self);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *Generator_initial_seed(GeneratorObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(self->gen.seed);
}

static PyObject *Generator_get_state(GeneratorObject *self, PyObject *Py_UNUSED(ignored))
{
    npy_intp dims[1] = {GPTC_RNG_STATE_BYTES};
    PyArrayObject *out = (PyArrayObject *)PyArray_ZEROS(1, dims, NPY_UINT8, 0);
    if (out == NULL) return NULL;
    lock_generator(self);
    gptc_generator_get_state(&self->gen, (uint8_t *)PyArray_DATA(out));
    unlock_generator(self);
    return (PyObject *)out;
}

static PyObject *Generator_set_state(GeneratorObject *self, PyObject *arg)
{
    PyArrayObject *a;
    if (PyBytes_Check(arg) || PyByteArray_Check(arg)) {
        /* raw bytes: read as a uint8 buffer, not as one bytes scalar */
        PyObject *view = PyMemoryView_FromObject(arg);
        if (view == NULL) return NULL;
        a = (PyArrayObject *)PyArray_FROMANY(view, NPY_UINT8, 1, 1,
                                             NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
        Py_DECREF(view);
    } else {
        a = (PyArrayObject *)PyArray_FROMANY(arg, NPY_UINT8, 1, 1,
                                             NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    }
    if (a == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "state must be a 1-D uint8 array (or bytes) of %d bytes, as "
                     "Generator.get_state() returns, got %s",
                     GPTC_RNG_STATE_BYTES, Py_TYPE(arg)->tp_name);
        return NULL;
    }
    if (PyArray_SIZE(a) != GPTC_RNG_STATE_BYTES) {
        PyErr_Format(PyExc_ValueError, "state must hold %d bytes, got %zd", GPTC_RNG_STATE_BYTES,
                     (Py_ssize_t)PyArray_SIZE(a));
        Py_DECREF(a);
        return NULL;
    }
    lock_generator(self);
    int rc = gptc_generator_set_state(&self->gen, (const uint8_t *)PyArray_DATA(a));
    unlock_generator(self);
    Py_DECREF(a);
    if (rc != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "state is not a valid generator state (corrupt or not from "
                        "Generator.get_state() / torch.get_rng_state())");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Generator_methods[] = {
    {"manual_seed", (PyCFunction)Generator_manual_seed, METH_O,
     "manual_seed(seed) -> Generator\n\nSeed the generator as torch.Generator.manual_seed "
     "does; returns the generator."},
    {"initial_seed", (PyCFunction)Generator_initial_seed, METH_NOARGS,
     "initial_seed() -> int\n\nThe seed the generator was last seeded with."},
    {"get_state", (PyCFunction)Generator_get_state, METH_NOARGS,
     "get_state() -> numpy.ndarray\n\nThe full state as 5056 uint8 values, in the byte "
     "layout of torch.get_rng_state()."},
    {"set_state", (PyCFunction)Generator_set_state, METH_O,
     "set_state(state)\n\nRestore a state from get_state() (or torch.get_rng_state())."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GeneratorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gptc.Generator",
    .tp_basicsize = sizeof(GeneratorObject),
    .tp_dealloc = (destructor)Generator_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Generator()\n\nPyTorch's default CPU random generator (a 32-bit Mersenne "
              "Twister), reproduced draw for draw: after the same seed it produces the "
              "same rand/randn values, weights and dropout masks as PyTorch.",
    .tp_methods = Generator_methods,
    .tp_new = Generator_new,
};

static GeneratorObject *as_generator(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &GeneratorType)) {
        PyErr_Format(PyExc_TypeError, "generator must be a gptc.Generator, got %s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return (GeneratorObject *)obj;
}

/* ------------------------------------------------------------------------
 * Random fills: uniform_, normal_, bernoulli_ on a float32 array in place.
 * ---------------------------------------------------------------------- */
static PyArrayObject *writable_f32(PyObject *obj, const char *name)
{
    PyArrayObject *a = check_array(obj, name, NPY_FLOAT32, -1);
    if (a == NULL) return NULL;
    if (!PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s must be writable", name);
        return NULL;
    }
    return a;
}

static PyObject *py_uniform_(PyObject *self, PyObject *args)
{
    PyObject *out_obj, *gen_obj;
    double from, to;
    if (!PyArg_ParseTuple(args, "OddO:uniform_", &out_obj, &from, &to, &gen_obj)) return NULL;
    PyArrayObject *out = writable_f32(out_obj, "tensor");
    GeneratorObject *g = as_generator(gen_obj);
    if (out == NULL || g == NULL) return NULL;
    if (!(from <= to)) {
        PyErr_Format(PyExc_ValueError, "uniform_ expects from <= to, got from=%R, to=%R",
                     PyTuple_GET_ITEM(args, 1), PyTuple_GET_ITEM(args, 2));
        return NULL;
    }
    lock_generator(g);
    gptc_uniform_f32(&g->gen, (float *)PyArray_DATA(out), (size_t)PyArray_SIZE(out),
                     from, to);
    unlock_generator(g);
    Py_INCREF(out_obj);
    return out_obj;
}

static PyObject *py_randperm(PyObject *self, PyObject *args)
{
    long long n;
    PyObject *gen_obj;
    if (!PyArg_ParseTuple(args, "LO:randperm", &n, &gen_obj)) return NULL;
    GeneratorObject *g = as_generator(gen_obj);
    if (g == NULL) return NULL;
    if (n < 0 || n >= (1LL << 32)) {
        PyErr_Format(PyExc_ValueError, "randperm expects 0 <= n < 2**32, got n=%lld", n);
        return NULL;
    }
    npy_intp dims[1] = {(npy_intp)n};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    if (out == NULL) return NULL;
    lock_generator(g);
    gptc_randperm(&g->gen, (int64_t *)PyArray_DATA(out), (int64_t)n);
    unlock_generator(g);
    return (PyObject *)out;
}

/* random_int64(generator): torch.empty((), dtype=torch.int64).random_(), a
 * 64-bit draw reduced to [0, 2^63) -- how PyTorch's RandomSampler seeds the
 * generator of each epoch's shuffle. */
static PyObject *py_random_int64(PyObject *self, PyObject *gen_obj)
{
    GeneratorObject *g = as_generator(gen_obj);
    if (g == NULL) return NULL;
    lock_generator(g);
    uint64_t v = gptc_random_u64(&g->gen) & 0x7fffffffffffffffull;
    unlock_generator(g);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *py_normal_(PyObject *self, PyObject *args)
{
    PyObject *out_obj, *gen_obj;
    double mean, std;
    if (!PyArg_ParseTuple(args, "OddO:normal_", &out_obj, &mean, &std, &gen_obj)) return NULL;
    PyArrayObject *out = writable_f32(out_obj, "tensor");
    GeneratorObject *g = as_generator(gen_obj);
    if (out == NULL || g == NULL) return NULL;
    if (!(std >= 0.0)) {
        PyErr_Format(PyExc_ValueError, "normal_ expects std >= 0, got std=%R",
                     PyTuple_GET_ITEM(args, 2));
        return NULL;
    }
    lock_generator(g);
    gptc_normal_f32(&g->gen, (float *)PyArray_DATA(out), (size_t)PyArray_SIZE(out),
                    mean, std);
    unlock_generator(g);
    Py_INCREF(out_obj);
    return out_obj;
}

static PyObject *py_bernoulli_(PyObject *self, PyObject *args)
{
    PyObject *out_obj, *gen_obj;
    double p;
    if (!PyArg_ParseTuple(args, "OdO:bernoulli_", &out_obj, &p, &gen_obj)) return NULL;
    PyArrayObject *out = writable_f32(out_obj, "tensor");
    GeneratorObject *g = as_generator(gen_obj);
    if (out == NULL || g == NULL || check_dropout(p, "p") < 0) return NULL;
    lock_generator(g);
    gptc_bernoulli_f32(&g->gen, (float *)PyArray_DATA(out), (size_t)PyArray_SIZE(out), p);
    unlock_generator(g);
    Py_INCREF(out_obj);
    return out_obj;
}

/* ------------------------------------------------------------------------
 * Layers
 * ---------------------------------------------------------------------- */

/* Last-axis length and number of rows of x; x must have at least 1 dim. */
static int rows_and_width(PyArrayObject *x, const char *name, npy_intp *rows, npy_intp *width)
{
    int nd = PyArray_NDIM(x);
    if (nd < 1) {
        PyErr_Format(PyExc_ValueError, "%s must have at least 1 dimension, got a scalar", name);
        return -1;
    }
    *width = PyArray_DIM(x, nd - 1);
    *rows = 1;
    for (int i = 0; i < nd - 1; i++) {
        *rows *= PyArray_DIM(x, i);   /* not size / width: width may be 0 */
    }
    if (!fits_int(*width, "last dimension") || !fits_int(*rows, "number of rows")) return -1;
    return 0;
}

/* x's last dimension must be `want`. */
static int check_last_dim(PyArrayObject *x, const char *name, npy_intp want)
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

static int grad_out(PyObject *obj, const char *name, int ndim, const npy_intp *shape,
                    PyArrayObject **out);
static int check_disjoint(PyArrayObject *const *outs, const char *const *out_names, int n_out,
                          PyArrayObject *const *ins, const char *const *in_names, int n_in,
                          int allow_same);

/* linear: the weight is float32, or uint16 holding bfloat16 bits (the copy
 * Module.to_dtype("bfloat16") keeps). */
static PyObject *py_linear(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"input", "weight", "bias", "gelu", "out", NULL};
    PyObject *x_obj, *w_obj, *b_obj, *gelu_obj = Py_False, *out_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs,
                                     "OOO|$OO:linear", kwlist,
                                     &x_obj, &w_obj, &b_obj, &gelu_obj, &out_obj))
        return NULL;
    if (!PyBool_Check(gelu_obj)) {
        PyErr_Format(PyExc_TypeError, "gelu must be True or False, got %s",
                     Py_TYPE(gelu_obj)->tp_name);
        return NULL;
    }
    int gelu = gelu_obj == Py_True;
    PyArrayObject *x = check_array(x_obj, "input", NPY_FLOAT32, -1);
    PyArrayObject *w = check_array(w_obj, "weight", WEIGHT_TYPES, 2);
    if (x == NULL || w == NULL) return NULL;
    gptc_weight weight = {PyArray_DATA(w), PyArray_TYPE(w) == NPY_UINT16 ? GPTC_BFLOAT16
                                                                         : GPTC_FLOAT32};
    npy_intp rows, K, N = PyArray_DIM(w, 0);
    if (rows_and_width(x, "input", &rows, &K) < 0) return NULL;
    if (check_last_dim(x, "input", PyArray_DIM(w, 1)) < 0) return NULL;
    if (!fits_int(N, "out_features")) return NULL;
    const float *bias;
    npy_intp bshape[1] = {N};
    if (optional_f32(b_obj, "bias", 1, bshape, &bias) < 0) return NULL;

    npy_intp dims[NPY_MAXDIMS];
    int nd = PyArray_NDIM(x);
    memcpy(dims, PyArray_DIMS(x), nd * sizeof(npy_intp));
    dims[nd - 1] = N;
    PyArrayObject *out;
    int accumulate = out_obj != Py_None;
    if (accumulate) {
        /* out += input . weight^T + bias: a shortcut connection fused into the product */
        if (gelu) {
            PyErr_SetString(PyExc_ValueError,
                            "linear: gelu=True computes a new activation and cannot be "
                            "combined with out= (which accumulates)");
            return NULL;
        }
        if (grad_out(out_obj, "out", nd, dims, &out) < 0) return NULL;
        PyArrayObject *outs[] = {out}, *ins[] = {x, w};
        const char *out_names[] = {"out"}, *in_names[] = {"input", "weight"};
        if (check_disjoint(outs, out_names, 1, ins, in_names, 2, 0) < 0) return NULL;
        Py_INCREF(out);
    } else {
        out = new_f32(nd, dims);
        if (out == NULL) return NULL;
    }
    int flags = (gelu ? GPTC_LINEAR_GELU : 0) | (accumulate ? GPTC_LINEAR_ACCUMULATE : 0);
    Py_BEGIN_ALLOW_THREADS
    gptc_linear_forward((float *)PyArray_DATA(out), (const float *)PyArray_DATA(x), weight,
                        bias, (int)rows, (int)K, (int)N, flags);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

/* to_bfloat16(array): the float32 values rounded to bfloat16, as a uint16
 * array of the same shape holding the bits. */
static PyObject *py_to_bfloat16(PyObject *self, PyObject *x_obj)
{
    PyArrayObject *x = check_array(x_obj, "input", NPY_FLOAT32, -1);
    if (x == NULL) return NULL;
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(x), PyArray_DIMS(x),
                                                            NPY_UINT16);
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_f32_to_bf16((uint16_t *)PyArray_DATA(out), (const float *)PyArray_DATA(x),
                     (size_t)PyArray_SIZE(x));
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyObject *py_layer_norm(PyObject *self, PyObject *args)
{
    PyObject *x_obj, *scale_obj, *shift_obj;
    double eps;
    if (!PyArg_ParseTuple(args, "OOOd:layer_norm", &x_obj, &scale_obj, &shift_obj, &eps))
        return NULL;
    PyArrayObject *x = check_array(x_obj, "input", NPY_FLOAT32, -1);
    if (x == NULL) return NULL;
    npy_intp rows, C;
    if (rows_and_width(x, "input", &rows, &C) < 0) return NULL;
    const float *scale, *shift;
    PyArrayObject *sc = check_array(scale_obj, "scale", NPY_FLOAT32, 1);
    if (sc == NULL) return NULL;
    if (check_last_dim(x, "input", PyArray_DIM(sc, 0)) < 0) return NULL;
    npy_intp shape[1] = {C};
    if (required_f32(scale_obj, "scale", 1, shape, &scale) < 0 ||
        required_f32(shift_obj, "shift", 1, shape, &shift) < 0)
        return NULL;
    if (!(eps > 0.0)) {
        PyErr_Format(PyExc_ValueError, "eps must be positive, got %R", PyTuple_GET_ITEM(args, 3));
        return NULL;
    }
    PyArrayObject *out = new_f32(PyArray_NDIM(x), PyArray_DIMS(x));
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_layernorm_forward((float *)PyArray_DATA(out), (const float *)PyArray_DATA(x), scale,
                           shift, (size_t)rows, (int)C, (float)eps);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

typedef void (*elementwise_fn)(float *out, const float *x, size_t n);

static PyObject *elementwise(PyObject *x_obj, elementwise_fn fn)
{
    PyArrayObject *x = check_array(x_obj, "input", NPY_FLOAT32, -1);
    if (x == NULL) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x), PyArray_DIMS(x));
    if (out == NULL) return NULL;
    size_t n = (size_t)PyArray_SIZE(x);
    Py_BEGIN_ALLOW_THREADS
    fn((float *)PyArray_DATA(out), (const float *)PyArray_DATA(x), n);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyObject *py_gelu(PyObject *self, PyObject *x) { return elementwise(x, gptc_gelu_forward); }
static PyObject *py_relu(PyObject *self, PyObject *x) { return elementwise(x, gptc_relu_forward); }

static PyObject *py_softmax(PyObject *self, PyObject *x_obj)
{
    PyArrayObject *x = check_array(x_obj, "input", NPY_FLOAT32, -1);
    if (x == NULL) return NULL;
    npy_intp rows, C;
    if (rows_and_width(x, "input", &rows, &C) < 0) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x), PyArray_DIMS(x));
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_softmax_forward((float *)PyArray_DATA(out), (const float *)PyArray_DATA(x),
                         (size_t)rows, (int)C);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyObject *py_dropout(PyObject *self, PyObject *args)
{
    PyObject *x_obj, *gen_obj;
    double p;
    if (!PyArg_ParseTuple(args, "OdO:dropout", &x_obj, &p, &gen_obj)) return NULL;
    PyArrayObject *x = check_array(x_obj, "input", NPY_FLOAT32, -1);
    GeneratorObject *g = as_generator(gen_obj);
    if (x == NULL || g == NULL || check_dropout(p, "p") < 0) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x), PyArray_DIMS(x));
    if (out == NULL) return NULL;
    size_t n = (size_t)PyArray_SIZE(x);
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    gptc_dropout_forward((float *)PyArray_DATA(out), (const float *)PyArray_DATA(x), n, p,
                         &g->gen);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    return (PyObject *)out;
}

static PyObject *py_embedding(PyObject *self, PyObject *args)
{
    PyObject *idx_obj, *w_obj;
    if (!PyArg_ParseTuple(args, "OO:embedding", &idx_obj, &w_obj)) return NULL;
    PyArrayObject *idx = check_array(idx_obj, "input", NPY_INT64, -1);
    PyArrayObject *w = check_array(w_obj, "weight", NPY_FLOAT32, 2);
    if (idx == NULL || w == NULL) return NULL;
    npy_intp V = PyArray_DIM(w, 0), C = PyArray_DIM(w, 1);
    if (!fits_int(C, "embedding_dim") || check_token_ids(idx, "input", V) < 0) return NULL;
    int nd = PyArray_NDIM(idx);
    if (nd + 1 > NPY_MAXDIMS) {
        PyErr_SetString(PyExc_ValueError, "input has too many dimensions");
        return NULL;
    }
    npy_intp dims[NPY_MAXDIMS];
    for (int i = 0; i < nd; i++) dims[i] = PyArray_DIM(idx, i);   /* nd may be 0 */
    dims[nd] = C;
    PyArrayObject *out = new_f32(nd + 1, dims);
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_embedding_forward((float *)PyArray_DATA(out), (const int64_t *)PyArray_DATA(idx),
                           (const float *)PyArray_DATA(w), (size_t)PyArray_SIZE(idx), (int)C);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

/* Fill *p from the eight MultiHeadAttention weights; q/k/v biases may be None. */
static int parse_attention_params(PyObject *const *w, npy_intp d_in, npy_intp d_out,
                                  gptc_attention_params *p, const char *prefix)
{
    char name[160];
    npy_intp wshape[2] = {d_out, d_in}, oshape[2] = {d_out, d_out}, bshape[1] = {d_out};
#define NAMED(s) (snprintf(name, sizeof(name), "%s%s", prefix, s), name)
    if (model_weight(w[0], NAMED("W_query.weight"), wshape, &p->w_query) < 0)
        return -1;
    if (optional_f32(w[1], NAMED("W_query.bias"), 1, bshape, &p->b_query) < 0) return -1;
    if (model_weight(w[2], NAMED("W_key.weight"), wshape, &p->w_key) < 0)
        return -1;
    if (optional_f32(w[3], NAMED("W_key.bias"), 1, bshape, &p->b_key) < 0) return -1;
    if (model_weight(w[4], NAMED("W_value.weight"), wshape, &p->w_value) < 0)
        return -1;
    if (optional_f32(w[5], NAMED("W_value.bias"), 1, bshape, &p->b_value) < 0) return -1;
    if (model_weight(w[6], NAMED("out_proj.weight"), oshape, &p->w_out) < 0)
        return -1;
    if (optional_f32(w[7], NAMED("out_proj.bias"), 1, bshape, &p->b_out) < 0) return -1;
#undef NAMED
    return 0;
}

static PyObject *py_multihead_attention(PyObject *self, PyObject *args)
{
    PyObject *x_obj, *w[8], *gen_obj;
    int num_heads;
    double p;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOidO:multihead_attention", &x_obj, &w[0], &w[1],
                          &w[2], &w[3], &w[4], &w[5], &w[6], &w[7], &num_heads, &p, &gen_obj))
        return NULL;
    PyArrayObject *x = check_array(x_obj, "input", NPY_FLOAT32, 3);
    GeneratorObject *g = as_generator(gen_obj);
    if (x == NULL || g == NULL || check_dropout(p, "dropout") < 0) return NULL;
    /* the sizes come from W_query.weight, float32 or its bfloat16 copy */
    PyArrayObject *wq = check_array(w[0], "W_query.weight", WEIGHT_TYPES, 2);
    if (wq == NULL) return NULL;
    npy_intp B = PyArray_DIM(x, 0), T = PyArray_DIM(x, 1);
    npy_intp d_in = PyArray_DIM(wq, 1), d_out = PyArray_DIM(wq, 0);
    if (check_last_dim(x, "input", d_in) < 0) return NULL;
    if (num_heads <= 0 || d_out % num_heads != 0) {
        PyErr_Format(PyExc_ValueError, "d_out (%zd) must be divisible by num_heads (%d)",
                     (Py_ssize_t)d_out, num_heads);
        return NULL;
    }
    if (!fits_int(B * T, "batch * num_tokens") || !fits_int(d_in, "d_in") ||
        !fits_int(d_out, "d_out"))
        return NULL;
    gptc_attention_params params;
    if (parse_attention_params(w, d_in, d_out, &params, "") < 0) return NULL;
    npy_intp dims[3] = {B, T, d_out};
    PyArrayObject *out = new_f32(3, dims);
    if (out == NULL) return NULL;
    int rc;
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_mha_forward((float *)PyArray_DATA(out), (const float *)PyArray_DATA(x), &params,
                          (int)B, (int)T, (int)d_in, (int)d_out, num_heads, p, &g->gen);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    if (rc != 0) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    return (PyObject *)out;
}

/* ------------------------------------------------------------------------
 * The whole model in one call
 * ---------------------------------------------------------------------- */

/* Items of one block tuple, in the order gptc/model.py builds it. */
enum {
    BLK_NORM1_SCALE, BLK_NORM1_SHIFT, BLK_NORM1_EPS,
    BLK_WQ, BLK_BQ, BLK_WK, BLK_BK, BLK_WV, BLK_BV, BLK_WO, BLK_BO,
    BLK_ATT_DROPOUT,
    BLK_NORM2_SCALE, BLK_NORM2_SHIFT, BLK_NORM2_EPS,
    BLK_W_FC, BLK_B_FC, BLK_W_PROJ, BLK_B_PROJ,
    BLK_SHORTCUT_DROPOUT,
    BLK_NITEMS
};

static int parse_eps(PyObject *obj, const char *name, float *eps)
{
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s must be a number, got %s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (!(v > 0.0)) {
        PyErr_Format(PyExc_ValueError, "%s must be positive, got %R", name, obj);
        return -1;
    }
    *eps = (float)v;
    return 0;
}

static int parse_probability(PyObject *obj, const char *name, double *p)
{
    *p = PyFloat_AsDouble(obj);
    if (*p == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s must be a number in [0, 1], got %s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return check_dropout(*p, name);
}

static int parse_block(PyObject *blk_obj, int l, npy_intp C, gptc_block_params *blk)
{
    char prefix[64], name[160];
    snprintf(prefix, sizeof(prefix), "trf_blocks.%d.", l);
#define NAMED(s) (snprintf(name, sizeof(name), "%s%s", prefix, s), name)
    if (!PyTuple_Check(blk_obj)) {
        PyErr_Format(PyExc_TypeError, "blocks[%d] must be a tuple of %d items, got %s", l,
                     BLK_NITEMS, Py_TYPE(blk_obj)->tp_name);
        return -1;
    }
    if (PyTuple_GET_SIZE(blk_obj) != BLK_NITEMS) {
        PyErr_Format(PyExc_ValueError, "blocks[%d] must be a tuple of %d items, got %zd items",
                     l, BLK_NITEMS, PyTuple_GET_SIZE(blk_obj));
        return -1;
    }
    PyObject *const *it = &PyTuple_GET_ITEM(blk_obj, 0);
    npy_intp cshape[1] = {C};
    if (required_f32(it[BLK_NORM1_SCALE], NAMED("norm1.scale"), 1, cshape, &blk->norm1_scale) < 0 ||
        required_f32(it[BLK_NORM1_SHIFT], NAMED("norm1.shift"), 1, cshape, &blk->norm1_shift) < 0 ||
        parse_eps(it[BLK_NORM1_EPS], NAMED("norm1.eps"), &blk->norm1_eps) < 0)
        return -1;
    char att_prefix[96];
    snprintf(att_prefix, sizeof(att_prefix), "%satt.", prefix);
    if (parse_attention_params(&it[BLK_WQ], C, C, &blk->att, att_prefix) < 0) return -1;
    if (parse_probability(it[BLK_ATT_DROPOUT], NAMED("att.dropout.p"), &blk->att_dropout) < 0)
        return -1;
    if (required_f32(it[BLK_NORM2_SCALE], NAMED("norm2.scale"), 1, cshape, &blk->norm2_scale) < 0 ||
        required_f32(it[BLK_NORM2_SHIFT], NAMED("norm2.shift"), 1, cshape, &blk->norm2_shift) < 0 ||
        parse_eps(it[BLK_NORM2_EPS], NAMED("norm2.eps"), &blk->norm2_eps) < 0)
        return -1;
    /* the hidden size is the first dimension of ff.layers.0.weight, whichever dtype */
    PyArrayObject *wfc = check_array(it[BLK_W_FC], NAMED("ff.layers.0.weight"), WEIGHT_TYPES,
                                     2);
    if (wfc == NULL) return -1;
    npy_intp H = PyArray_DIM(wfc, 0);
    if (!fits_int(H, "hidden size")) return -1;
    npy_intp fc_shape[2] = {H, C}, proj_shape[2] = {C, H}, hshape[1] = {H};
    if (model_weight(it[BLK_W_FC], NAMED("ff.layers.0.weight"), fc_shape, &blk->w_fc) < 0 ||
        optional_f32(it[BLK_B_FC], NAMED("ff.layers.0.bias"), 1, hshape, &blk->b_fc) < 0 ||
        model_weight(it[BLK_W_PROJ], NAMED("ff.layers.2.weight"), proj_shape, &blk->w_proj) < 0 ||
        optional_f32(it[BLK_B_PROJ], NAMED("ff.layers.2.bias"), 1, cshape, &blk->b_proj) < 0)
        return -1;
    blk->hidden = (int)H;
    if (parse_probability(it[BLK_SHORTCUT_DROPOUT], NAMED("drop_shortcut.p"),
                          &blk->shortcut_dropout) < 0)
        return -1;
#undef NAMED
    return 0;
}

/* The model as gpt_forward takes it after in_idx: w holds tok_emb.weight,
 * pos_emb.weight, blocks, final_norm.scale, final_norm.shift,
 * final_norm.eps, out_head.weight, out_head.bias. `tokens` is the most
 * tokens (batch * sequence) one forward will run, for the size checks. On
 * success fills *m, returns the block array (free with PyMem_Free) and sets
 * *blocks_seq to the blocks as a tuple (a new reference: it keeps every
 * block's arrays alive). On failure returns NULL with an exception set. */
static gptc_block_params *parse_model(PyObject *const *w, int n_heads, double emb_dropout,
                                      npy_intp tokens, gptc_model_params *m,
                                      PyObject **blocks_seq)
{
    PyArrayObject *tok = check_array(w[0], "tok_emb.weight", NPY_FLOAT32, 2);
    PyArrayObject *pos = tok == NULL ? NULL : check_array(w[1], "pos_emb.weight", NPY_FLOAT32, 2);
    if (pos == NULL) return NULL;
    npy_intp V = PyArray_DIM(tok, 0), C = PyArray_DIM(tok, 1), ctx = PyArray_DIM(pos, 0);
    npy_intp pshape[2] = {ctx, C};
    const float *pos_data;
    if (required_f32(w[1], "pos_emb.weight", 2, pshape, &pos_data) < 0) return NULL;
    if (!fits_int(V, "vocab_size") || !fits_int(C, "emb_dim") || !fits_int(ctx, "context_length") ||
        !fits_int(tokens, "batch * seq_len") ||
        !fits_int(tokens * (C > 4 ? C : 4), "activation size"))
        return NULL;
    if (n_heads <= 0 || C % n_heads != 0) {
        PyErr_Format(PyExc_ValueError, "emb_dim (%zd) must be divisible by n_heads (%d)",
                     (Py_ssize_t)C, n_heads);
        return NULL;
    }
    /* a tuple, so that nobody can drop a block's arrays while C reads them */
    PyObject *blocks = PySequence_Tuple(w[2]);
    if (blocks == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "blocks must be a sequence of tuples, got %s",
                         Py_TYPE(w[2])->tp_name);
        }
        return NULL;
    }
    Py_ssize_t L = PyTuple_GET_SIZE(blocks);
    if (!fits_int(L, "n_layers")) {
        Py_DECREF(blocks);
        return NULL;
    }
    gptc_block_params *bp = PyMem_Calloc(L > 0 ? (size_t)L : 1, sizeof(gptc_block_params));
    if (bp == NULL) {
        Py_DECREF(blocks);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t l = 0; l < L; l++) {
        if (parse_block(PyTuple_GET_ITEM(blocks, l), (int)l, C, &bp[l]) < 0) goto fail;
    }
    *m = (gptc_model_params){
        .vocab_size = (int)V, .context_length = (int)ctx, .emb_dim = (int)C,
        .n_heads = n_heads, .n_layers = (int)L,
        .tok_emb = (const float *)PyArray_DATA(tok), .pos_emb = pos_data,
        .emb_dropout = emb_dropout, .blocks = bp,
    };
    npy_intp cshape[1] = {C}, hshape[2] = {V, C}, hbshape[1] = {V};
    if (required_f32(w[3], "final_norm.scale", 1, cshape, &m->final_scale) < 0 ||
        required_f32(w[4], "final_norm.shift", 1, cshape, &m->final_shift) < 0 ||
        parse_eps(w[5], "final_norm.eps", &m->final_eps) < 0 ||
        model_weight(w[6], "out_head.weight", hshape, &m->out_head_w) < 0 ||
        optional_f32(w[7], "out_head.bias", 1, hbshape, &m->out_head_b) < 0)
        goto fail;
    *blocks_seq = blocks;
    return bp;
fail:
    PyMem_Free(bp);
    Py_DECREF(blocks);
    return NULL;
}

static PyObject *py_gpt_forward(PyObject *self, PyObject *args)
{
    PyObject *idx_obj, *w[8], *gen_obj;
    int n_heads;
    double emb_dropout;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOidO:gpt_forward", &idx_obj, &w[0], &w[1], &w[2],
                          &w[3], &w[4], &w[5], &w[6], &w[7], &n_heads, &emb_dropout, &gen_obj))
        return NULL;
    PyArrayObject *idx = check_array(idx_obj, "in_idx", NPY_INT64, 2);
    PyArrayObject *tok = check_array(w[0], "tok_emb.weight", NPY_FLOAT32, 2);
    PyArrayObject *pos = check_array(w[1], "pos_emb.weight", NPY_FLOAT32, 2);
    GeneratorObject *g = as_generator(gen_obj);
    if (idx == NULL || tok == NULL || pos == NULL || g == NULL) return NULL;
    if (check_dropout(emb_dropout, "drop_emb.p") < 0) return NULL;
    npy_intp B = PyArray_DIM(idx, 0), T = PyArray_DIM(idx, 1);
    npy_intp V = PyArray_DIM(tok, 0), ctx = PyArray_DIM(pos, 0);
    if (B == 0 || T == 0) {
        PyErr_Format(PyExc_ValueError,
                     "in_idx has shape (%zd, %zd): the batch and the sequence must each hold "
                     "at least one token", (Py_ssize_t)B, (Py_ssize_t)T);
        return NULL;
    }
    if (T > ctx) {
        PyErr_Format(PyExc_ValueError,
                     "in_idx holds sequences of %zd tokens, longer than the model's "
                     "context_length %zd (crop the input to its last %zd tokens)",
                     (Py_ssize_t)T, (Py_ssize_t)ctx, (Py_ssize_t)ctx);
        return NULL;
    }
    gptc_model_params m;
    PyObject *blocks;
    gptc_block_params *bp = parse_model(w, n_heads, emb_dropout, B * T, &m, &blocks);
    if (bp == NULL) return NULL;
    PyArrayObject *out = NULL;
    if (check_token_ids(idx, "in_idx", V) < 0) goto done;

    npy_intp dims[3] = {B, T, V};
    out = new_f32(3, dims);
    if (out == NULL) goto done;
    int rc;
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_gpt_forward((float *)PyArray_DATA(out), (const int64_t *)PyArray_DATA(idx), &m,
                          (int)B, (int)T, &g->gen);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    if (rc != 0) {
        Py_CLEAR(out);
        PyErr_NoMemory();
    }
done:
    PyMem_Free(bp);
    Py_DECREF(blocks);
    return (PyObject *)out;
}

/* ------------------------------------------------------------------------
 * Decoder: generation with a KV cache (gptc_decoder, model.c).
 *
 * Decoder(tok_emb, ..., generator, batch, capacity) takes gpt_forward's
 * arguments without in_idx, then the batch size and how many positions to
 * cache. It keeps references to every weight array it reads, so they stay
 * alive (and the pointers valid) as long as the decoder does, and a lock,
 * since its methods release the GIL while they compute.
 * ---------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    gptc_decoder *dec;
    gptc_model_params m;
    gptc_block_params *blocks;
    PyObject *weights;   /* the constructor's arguments and the blocks tuple */
    PyThread_type_lock lock;
    int batch, capacity;
} DecoderObject;

static PyTypeObject DecoderType;

static int Decoder_init_from(DecoderObject *self, PyObject *args)
{
    PyObject *w[8], *gen_obj;
    int n_heads;
    double emb_dropout;
    Py_ssize_t batch, capacity;
    if (!PyArg_ParseTuple(args, "OOOOOOOOidOnn:Decoder", &w[0], &w[1], &w[2], &w[3], &w[4],
                          &w[5], &w[6], &w[7], &n_heads, &emb_dropout, &gen_obj, &batch,
                          &capacity))
        return -1;
    if (as_generator(gen_obj) == NULL || check_dropout(emb_dropout, "drop_emb.p") < 0)
        return -1;
    PyArrayObject *pos = check_array(w[1], "pos_emb.weight", NPY_FLOAT32, 2);
    if (pos == NULL) return -1;
    npy_intp ctx = PyArray_DIM(pos, 0);
    if (batch < 1 || batch > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "batch must be a positive integer, got %zd", batch);
        return -1;
    }
    if (capacity < 1 || capacity > ctx) {
        PyErr_Format(PyExc_ValueError,
                     "capacity must be in [1, context_length] = [1, %zd], got %zd",
                     (Py_ssize_t)ctx, capacity);
        return -1;
    }
    if ((double)batch * (double)capacity > (double)INT_MAX) {
        PyErr_Format(PyExc_ValueError, "batch * capacity = %zd * %zd is too large for gptc",
                     batch, capacity);
        return -1;
    }
    PyObject *blocks;
    self->blocks = parse_model(w, n_heads, emb_dropout, batch * capacity, &self->m, &blocks);
    if (self->blocks == NULL) return -1;
    /* the cache would hold keys and values computed with dropout */
    char noisy[64] = "";
    if (emb_dropout != 0.0) snprintf(noisy, sizeof(noisy), "drop_emb.p");
    for (int l = 0; noisy[0] == '\0' && l < self->m.n_layers; l++) {
        if (self->blocks[l].att_dropout != 0.0)
            snprintf(noisy, sizeof(noisy), "trf_blocks.%d.att.dropout.p", l);
        else if (self->blocks[l].shortcut_dropout != 0.0)
            snprintf(noisy, sizeof(noisy), "trf_blocks.%d.drop_shortcut.p", l);
    }
    if (noisy[0] != '\0') {
        PyErr_Format(PyExc_ValueError,
                     "the KV-cache decoder runs the model in inference mode, but %s is not 0 "
                     "(put the model in eval mode: model.eval())", noisy);
        Py_DECREF(blocks);
        return -1;
    }
    self->weights = PyTuple_Pack(2, args, blocks);
    Py_DECREF(blocks);
    if (self->weights == NULL) return -1;
    self->batch = (int)batch;
    self->capacity = (int)capacity;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    self->dec = gptc_decoder_new(&self->m, self->batch, self->capacity);
    Py_END_ALLOW_THREADS
    if (self->dec == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}
static PyObject *Decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "Decoder takes no keyword arguments");
        return NULL;
    }
    DecoderObject *self = (DecoderObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (Decoder_init_from(self, args) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Decoder_dealloc(DecoderObject *self)
{
    gptc_decoder_free(self->dec);
    PyMem_Free(self->blocks);
    Py_XDECREF(self->weights);
    if (self->lock != NULL) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* One thread at a time per decoder: its cache and buffers are one state. */
static void lock_decoder(DecoderObject *d)
{
    if (!PyThread_acquire_lock(d->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(d->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

static PyObject *Decoder_prefill(DecoderObject *self, PyObject *idx_obj)
{
    PyArrayObject *idx = check_array(idx_obj, "idx", NPY_INT64, 2);
    if (idx == NULL) return NULL;
    npy_intp B = PyArray_DIM(idx, 0), T = PyArray_DIM(idx, 1);
    if (B != self->batch || T < 1 || T > self->capacity) {
        PyErr_Format(PyExc_ValueError,
                     "idx has shape (%zd, %zd), expected (%d, T) with 1 <= T <= capacity %d",
                     (Py_ssize_t)B, (Py_ssize_t)T, self->batch, self->capacity);
        return NULL;
    }
    if (check_token_ids(idx, "idx", self->m.vocab_size) < 0) return NULL;
    npy_intp dims[2] = {B, self->m.vocab_size};
    PyArrayObject *logits = new_f32(2, dims);
    if (logits == NULL) return NULL;
    lock_decoder(self);
    Py_BEGIN_ALLOW_THREADS
    gptc_decoder_prefill(self->dec, (float *)PyArray_DATA(logits),
                         (const int64_t *)PyArray_DATA(idx), (int)T);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    return (PyObject *)logits;
}

static PyObject *Decoder_step(DecoderObject *self, PyObject *ids_obj)
{
    PyArrayObject *ids = check_array(ids_obj, "next_ids", NPY_INT64, 1);
    if (ids == NULL) return NULL;
    npy_intp shape[1] = {self->batch};
    if (check_shape(ids, "next_ids", 1, shape) < 0) return NULL;
    if (check_token_ids(ids, "next_ids", self->m.vocab_size) < 0) return NULL;
    npy_intp dims[2] = {self->batch, self->m.vocab_size};
    PyArrayObject *logits = new_f32(2, dims);
    if (logits == NULL) return NULL;
    lock_decoder(self);
    /* checked under the lock: another thread may have stepped meanwhile */
    int length = gptc_decoder_length(self->dec);
    if (length == 0 || length >= self->capacity) {
        PyThread_release_lock(self->lock);
        Py_DECREF(logits);
        if (length == 0) {
            PyErr_SetString(PyExc_RuntimeError, "step() needs a prefill() first");
        } else {
            PyErr_Format(PyExc_RuntimeError,
                         "the cache is full (%d of capacity %d positions): prefill() the "
                         "last tokens again", length, self->capacity);
        }
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    gptc_decoder_step(self->dec, (float *)PyArray_DATA(logits),
                      (const int64_t *)PyArray_DATA(ids));
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    return (PyObject *)logits;
}

static PyObject *Decoder_get_length(DecoderObject *self, void *closure)
{
    lock_decoder(self);
    int length = gptc_decoder_length(self->dec);
    PyThread_release_lock(self->lock);
    return PyLong_FromLong(length);
}

static PyObject *Decoder_get_capacity(DecoderObject *self, void *closure)
{
    return PyLong_FromLong(self->capacity);
}

static PyObject *Decoder_get_batch(DecoderObject *self, void *closure)
{
    return PyLong_FromLong(self->batch);
}

static PyMethodDef Decoder_methods[] = {
    {"prefill", (PyCFunction)Decoder_prefill, METH_O,
     "prefill(idx) -> logits\n\nForget the cache and run idx (batch, T), 1 <= T <= capacity, at "
     "positions 0 .. T - 1, caching every layer's keys and values. Returns the logits "
     "(batch, vocab_size) of the last position only."},
    {"step", (PyCFunction)Decoder_step, METH_O,
     "step(next_ids) -> logits\n\nRun one more token per sequence (next_ids: (batch,) int64) "
     "at position `length`, attending over the cache. Returns its logits (batch, vocab_size)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Decoder_getset[] = {
    {"length", (getter)Decoder_get_length, NULL, "positions cached so far", NULL},
    {"capacity", (getter)Decoder_get_capacity, NULL, "positions the cache can hold", NULL},
    {"batch", (getter)Decoder_get_batch, NULL, "sequences decoded together", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gptc._C.Decoder",
    .tp_basicsize = sizeof(DecoderObject),
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Decoder(tok_emb, pos_emb, blocks, final_scale, final_shift, final_eps, "
              "out_head_w, out_head_b, n_heads, emb_dropout, generator, batch, capacity)\n\n"
              "GPTModel inference with a KV cache, for generation: gpt_forward's weight "
              "arguments (GPTModel._one_call_arguments(), model in eval mode), the batch size "
              "and the positions to cache (at most context_length). The cache and all "
              "buffers are allocated once, here.",
    .tp_methods = Decoder_methods,
    .tp_getset = Decoder_getset,
    .tp_new = Decoder_new,
};

/* ------------------------------------------------------------------------
 * Backward (training). Every gradient argument is an existing float32
 * array the gradient is ADDED into (the C functions accumulate), or None
 * when that gradient is not needed. The functions return None, except the
 * training forwards, which return what their backward needs.
 * ---------------------------------------------------------------------- */

/* A float32 input of exactly the given shape. */
static PyArrayObject *f32_shaped(PyObject *obj, const char *name, int ndim,
                                 const npy_intp *shape)
{
    PyArrayObject *a = check_array(obj, name, NPY_FLOAT32, ndim);
    if (a == NULL || check_shape(a, name, ndim, shape) < 0) return NULL;
    return a;
}

/* A gradient to accumulate into: None (*out = NULL) or a writable float32
 * array of exactly the given shape. */
static int grad_out(PyObject *obj, const char *name, int ndim, const npy_intp *shape,
                    PyArrayObject **out)
{
    *out = NULL;
    if (obj == Py_None) return 0;
    PyArrayObject *a = writable_f32(obj, name);
    if (a == NULL || check_shape(a, name, ndim, shape) < 0) return -1;
    *out = a;
    return 0;
}

static float *data_or_null(PyArrayObject *a)
{
    return a == NULL ? NULL : (float *)PyArray_DATA(a);
}

/* Do the memory ranges of two (contiguous) arrays intersect? */
static int overlap(PyArrayObject *a, PyArrayObject *b)
{
    if (a == NULL || b == NULL || PyArray_NBYTES(a) == 0 || PyArray_NBYTES(b) == 0) return 0;
    uintptr_t a0 = (uintptr_t)PyArray_DATA(a), a1 = a0 + (uintptr_t)PyArray_NBYTES(a);
    uintptr_t b0 = (uintptr_t)PyArray_DATA(b), b1 = b0 + (uintptr_t)PyArray_NBYTES(b);
    return a0 < b1 && b0 < a1;
}

/* A gradient written while the kernel still reads its inputs (or another
 * gradient) would corrupt the result, so outputs must not share memory
 * with each other or with any input. allow_same: an elementwise kernel may
 * accumulate into exactly the buffer of one of its inputs, since each
 * element is read before it is written. */
static int check_disjoint(PyArrayObject *const *outs, const char *const *out_names, int n_out,
                          PyArrayObject *const *ins, const char *const *in_names, int n_in,
                          int allow_same)
{
    for (int i = 0; i < n_out; i++) {
        for (int j = i + 1; j < n_out; j++) {
            if (overlap(outs[i], outs[j])) {
                PyErr_Format(PyExc_ValueError, "%s and %s must not share memory",
                             out_names[i], out_names[j]);
                return -1;
            }
        }
        for (int j = 0; j < n_in; j++) {
            if (!overlap(outs[i], ins[j])) continue;
            if (allow_same && PyArray_DATA(outs[i]) == PyArray_DATA(ins[j]) &&
                PyArray_NBYTES(outs[i]) == PyArray_NBYTES(ins[j]))
                continue;
            PyErr_Format(PyExc_ValueError, "%s must not share memory with %s", out_names[i],
                         in_names[j]);
            return -1;
        }
    }
    return 0;
}

static PyObject *py_linear_backward(PyObject *self, PyObject *args)
{
    PyObject *dout_obj, *x_obj, *w_obj, *dx_obj, *dw_obj, *db_obj;
    if (!PyArg_ParseTuple(args, "OOOOOO:linear_backward", &dout_obj, &x_obj, &w_obj, &dx_obj,
                          &dw_obj, &db_obj))
        return NULL;
    PyArrayObject *x = check_array(x_obj, "inp", NPY_FLOAT32, -1);
    PyArrayObject *w = x == NULL ? NULL : check_array(w_obj, "weight", NPY_FLOAT32, 2);
    if (w == NULL) return NULL;
    npy_intp M, K, N = PyArray_DIM(w, 0);
    if (rows_and_width(x, "inp", &M, &K) < 0 || check_last_dim(x, "inp", PyArray_DIM(w, 1)) < 0 ||
        !fits_int(N, "out_features"))
        return NULL;
    int nd = PyArray_NDIM(x);
    npy_intp dshape[NPY_MAXDIMS];
    memcpy(dshape, PyArray_DIMS(x), nd * sizeof(npy_intp));
    dshape[nd - 1] = N;
    PyArrayObject *dout = f32_shaped(dout_obj, "dout", nd, dshape);
    if (dout == NULL) return NULL;
    npy_intp wshape[2] = {N, K}, bshape[1] = {N};
    PyArrayObject *dx, *dw, *db;
    if (grad_out(dx_obj, "dinp", nd, PyArray_DIMS(x), &dx) < 0 ||
        grad_out(dw_obj, "dweight", 2, wshape, &dw) < 0 ||
        grad_out(db_obj, "dbias", 1, bshape, &db) < 0)
        return NULL;
    PyArrayObject *outs[] = {dx, dw, db}, *ins[] = {dout, x, w};
    const char *out_names[] = {"dinp", "dweight", "dbias"}, *in_names[] = {"dout", "inp", "weight"};
    if (check_disjoint(outs, out_names, 3, ins, in_names, 3, 0) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_linear_backward(data_or_null(dx), data_or_null(dw), data_or_null(db),
                              (const float *)PyArray_DATA(dout), (const float *)PyArray_DATA(x),
                              (const float *)PyArray_DATA(w), (int)M, (int)K, (int)N);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_layer_norm_backward(PyObject *self, PyObject *args)
{
    PyObject *dout_obj, *x_obj, *scale_obj, *dx_obj, *dscale_obj, *dshift_obj;
    double eps;
    if (!PyArg_ParseTuple(args, "OOOdOOO:layer_norm_backward", &dout_obj, &x_obj, &scale_obj,
                          &eps, &dx_obj, &dscale_obj, &dshift_obj))
        return NULL;
    PyArrayObject *x = check_array(x_obj, "inp", NPY_FLOAT32, -1);
    if (x == NULL) return NULL;
    npy_intp rows, C;
    if (rows_and_width(x, "inp", &rows, &C) < 0) return NULL;
    PyArrayObject *sc = check_array(scale_obj, "scale", NPY_FLOAT32, 1);
    if (sc == NULL || check_last_dim(x, "inp", PyArray_DIM(sc, 0)) < 0) return NULL;
    if (!(eps > 0.0)) {
        PyErr_Format(PyExc_ValueError, "eps must be positive, got %R", PyTuple_GET_ITEM(args, 3));
        return NULL;
    }
    int nd = PyArray_NDIM(x);
    PyArrayObject *dout = f32_shaped(dout_obj, "dout", nd, PyArray_DIMS(x));
    if (dout == NULL) return NULL;
    npy_intp cshape[1] = {C};
    PyArrayObject *dx, *dscale, *dshift;
    if (grad_out(dx_obj, "dinp", nd, PyArray_DIMS(x), &dx) < 0 ||
        grad_out(dscale_obj, "dscale", 1, cshape, &dscale) < 0 ||
        grad_out(dshift_obj, "dshift", 1, cshape, &dshift) < 0)
        return NULL;
    PyArrayObject *outs[] = {dx, dscale, dshift}, *ins[] = {dout, x, sc};
    const char *out_names[] = {"dinp", "dscale", "dshift"}, *in_names[] = {"dout", "inp", "scale"};
    if (check_disjoint(outs, out_names, 3, ins, in_names, 3, 0) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_layernorm_backward(data_or_null(dx), data_or_null(dscale), data_or_null(dshift),
                            (const float *)PyArray_DATA(dout), (const float *)PyArray_DATA(x),
                            (const float *)PyArray_DATA(sc), (size_t)rows, (int)C, (float)eps);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

typedef void (*elementwise_backward_fn)(float *dinp, const float *inp, const float *dout,
                                        size_t n);

/* dinp += f'(inp) * dout for an elementwise f: all three of one shape. */
static PyObject *elementwise_backward(PyObject *args, const char *fmt, const char *second,
                                      elementwise_backward_fn fn)
{
    PyObject *dout_obj, *x_obj, *dx_obj;
    if (!PyArg_ParseTuple(args, fmt, &dout_obj, &x_obj, &dx_obj)) return NULL;
    PyArrayObject *x = check_array(x_obj, second, NPY_FLOAT32, -1);
    if (x == NULL) return NULL;
    int nd = PyArray_NDIM(x);
    PyArrayObject *dout = f32_shaped(dout_obj, "dout", nd, PyArray_DIMS(x));
    PyArrayObject *dx;
    if (dout == NULL || grad_out(dx_obj, "dinp", nd, PyArray_DIMS(x), &dx) < 0) return NULL;
    PyArrayObject *outs[] = {dx}, *ins[] = {dout, x};
    const char *out_names[] = {"dinp"}, *in_names[] = {"dout", second};
    if (check_disjoint(outs, out_names, 1, ins, in_names, 2, 1) < 0) return NULL;
    if (dx != NULL) {
        Py_BEGIN_ALLOW_THREADS
        fn((float *)PyArray_DATA(dx), (const float *)PyArray_DATA(x),
           (const float *)PyArray_DATA(dout), (size_t)PyArray_SIZE(x));
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *py_gelu_backward(PyObject *self, PyObject *args)
{
    return elementwise_backward(args, "OOO:gelu_backward", "inp", gptc_gelu_backward);
}

static PyObject *py_relu_backward(PyObject *self, PyObject *args)
{
    return elementwise_backward(args, "OOO:relu_backward", "inp", gptc_relu_backward);
}

/* gptc_dropout_backward's arguments in elementwise_backward's order */
static void dropout_backward_fn(float *dinp, const float *noise, const float *dout, size_t n)
{
    gptc_dropout_backward(dinp, dout, noise, n);
}

static PyObject *py_dropout_backward(PyObject *self, PyObject *args)
{
    return elementwise_backward(args, "OOO:dropout_backward", "noise", dropout_backward_fn);
}

static PyObject *py_embedding_backward(PyObject *self, PyObject *args)
{
    PyObject *dout_obj, *idx_obj, *dw_obj;
    if (!PyArg_ParseTuple(args, "OOO:embedding_backward", &dout_obj, &idx_obj, &dw_obj))
        return NULL;
    PyArrayObject *idx = check_array(idx_obj, "idx", NPY_INT64, -1);
    if (idx == NULL) return NULL;
    int nd = PyArray_NDIM(idx);
    if (nd + 1 > NPY_MAXDIMS) {
        PyErr_SetString(PyExc_ValueError, "idx has too many dimensions");
        return NULL;
    }
    if (dw_obj == Py_None) {
        /* nothing to accumulate into; still refuse a malformed dout */
        PyArrayObject *dout = check_array(dout_obj, "dout", NPY_FLOAT32, nd + 1);
        if (dout == NULL) return NULL;
        npy_intp dims[NPY_MAXDIMS];
        for (int i = 0; i < nd; i++) dims[i] = PyArray_DIM(idx, i);   /* nd may be 0 */
        dims[nd] = PyArray_DIM(dout, nd);
        if (check_shape(dout, "dout", nd + 1, dims) < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyArrayObject *dw = writable_f32(dw_obj, "dweight");
    if (dw == NULL) return NULL;
    if (PyArray_NDIM(dw) != 2) {
        PyObject *s = shape_str(PyArray_NDIM(dw), PyArray_DIMS(dw));
        if (s != NULL) {
            PyErr_Format(PyExc_ValueError, "dweight must have 2 dimensions, got shape %U", s);
            Py_DECREF(s);
        }
        return NULL;
    }
    npy_intp V = PyArray_DIM(dw, 0), C = PyArray_DIM(dw, 1);
    if (!fits_int(C, "embedding_dim")) return NULL;
    npy_intp dims[NPY_MAXDIMS];
    for (int i = 0; i < nd; i++) dims[i] = PyArray_DIM(idx, i);   /* nd may be 0 */
    dims[nd] = C;
    PyArrayObject *dout = f32_shaped(dout_obj, "dout", nd + 1, dims);
    if (dout == NULL || check_token_ids(idx, "idx", V) < 0) return NULL;
    PyArrayObject *outs[] = {dw}, *ins[] = {dout, idx};
    const char *out_names[] = {"dweight"}, *in_names[] = {"dout", "idx"};
    if (check_disjoint(outs, out_names, 1, ins, in_names, 2, 0) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_embedding_backward((float *)PyArray_DATA(dw), (const float *)PyArray_DATA(dout),
                            (const int64_t *)PyArray_DATA(idx), (size_t)PyArray_SIZE(idx),
                            (int)C);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_dropout_train(PyObject *self, PyObject *args)
{
    PyObject *x_obj, *gen_obj;
    double p;
    if (!PyArg_ParseTuple(args, "OdO:dropout_train", &x_obj, &p, &gen_obj)) return NULL;
    PyArrayObject *x = check_array(x_obj, "input", NPY_FLOAT32, -1);
    GeneratorObject *g = as_generator(gen_obj);
    if (x == NULL || g == NULL || check_dropout(p, "p") < 0) return NULL;
    PyArrayObject *out = new_f32(PyArray_NDIM(x), PyArray_DIMS(x));
    if (out == NULL) return NULL;
    PyArrayObject *noise = new_f32(PyArray_NDIM(x), PyArray_DIMS(x));
    if (noise == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    size_t n = (size_t)PyArray_SIZE(x);
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    gptc_dropout_forward_noise((float *)PyArray_DATA(out), (float *)PyArray_DATA(noise),
                               (const float *)PyArray_DATA(x), n, p, &g->gen);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    return Py_BuildValue("(NN)", out, noise);
}

/* q, k, v (B, T, C) with C = num_heads * head_dim: fills the dimensions and
 * checks they fit the C code's ints and a (B, NH, T, T) weight tensor. */
static int attention_dims(PyArrayObject *q, int num_heads, npy_intp *B, npy_intp *T,
                          npy_intp *C)
{
    *B = PyArray_DIM(q, 0);
    *T = PyArray_DIM(q, 1);
    *C = PyArray_DIM(q, 2);
    if (num_heads <= 0 || *C % num_heads != 0) {
        PyErr_Format(PyExc_ValueError, "the last dimension of q (%zd) must be divisible by "
                     "num_heads (%d)", (Py_ssize_t)*C, num_heads);
        return -1;
    }
    if (!fits_int(*B * *T, "batch * num_tokens") || !fits_int(*C, "d_out") ||
        !fits_int(*B * num_heads, "batch * num_heads"))
        return -1;
    /* the attention weights: B * NH * T * T floats must be addressable */
    double weights = (double)*B * num_heads * (double)*T * (double)*T;
    if (weights * sizeof(float) > (double)NPY_MAX_INTP) {
        PyErr_Format(PyExc_ValueError, "the attention weights (%zd, %d, %zd, %zd) are too large",
                     (Py_ssize_t)*B, num_heads, (Py_ssize_t)*T, (Py_ssize_t)*T);
        return -1;
    }
    return 0;
}

static PyObject *py_attention_train(PyObject *self, PyObject *args)
{
    PyObject *q_obj, *k_obj, *v_obj, *gen_obj;
    int num_heads;
    double p;
    if (!PyArg_ParseTuple(args, "OOOidO:attention_train", &q_obj, &k_obj, &v_obj, &num_heads,
                          &p, &gen_obj))
        return NULL;
    PyArrayObject *q = check_array(q_obj, "q", NPY_FLOAT32, 3);
    if (q == NULL) return NULL;
    PyArrayObject *k = f32_shaped(k_obj, "k", 3, PyArray_DIMS(q));
    PyArrayObject *v = k == NULL ? NULL : f32_shaped(v_obj, "v", 3, PyArray_DIMS(q));
    GeneratorObject *g = v == NULL ? NULL : as_generator(gen_obj);
    if (g == NULL || check_dropout(p, "dropout_p") < 0) return NULL;
    npy_intp B, T, C;
    if (attention_dims(q, num_heads, &B, &T, &C) < 0) return NULL;
    npy_intp adims[4] = {B, num_heads, T, T};
    PyArrayObject *out = new_f32(3, PyArray_DIMS(q));
    PyArrayObject *att = out == NULL ? NULL : new_f32(4, adims);
    PyArrayObject *noise = NULL;
    if (att != NULL && p > 0.0) noise = new_f32(4, adims);
    if (att == NULL || (p > 0.0 && noise == NULL)) {
        Py_XDECREF(out);
        Py_XDECREF(att);
        return NULL;
    }
    int nthreads = gptc_get_num_threads();
    int rc;
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_attention_forward_train((float *)PyArray_DATA(out), (float *)PyArray_DATA(att),
                                      data_or_null(noise), (const float *)PyArray_DATA(q),
                                      (const float *)PyArray_DATA(k),
                                      (const float *)PyArray_DATA(v), (int)B, (int)T, num_heads,
                                      (int)(C / num_heads), p, &g->gen, nthreads);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    if (rc != 0) {
        Py_DECREF(out);
        Py_DECREF(att);
        Py_XDECREF(noise);
        return PyErr_NoMemory();
    }
    if (noise == NULL) {
        return Py_BuildValue("(NNO)", out, att, Py_None);
    }
    return Py_BuildValue("(NNN)", out, att, noise);
}

static PyObject *py_attention_backward(PyObject *self, PyObject *args)
{
    PyObject *dout_obj, *q_obj, *k_obj, *v_obj, *att_obj, *noise_obj, *dq_obj, *dk_obj, *dv_obj;
    int num_heads;
    if (!PyArg_ParseTuple(args, "OOOOOOiOOO:attention_backward", &dout_obj, &q_obj, &k_obj,
                          &v_obj, &att_obj, &noise_obj, &num_heads, &dq_obj, &dk_obj, &dv_obj))
        return NULL;
    PyArrayObject *q = check_array(q_obj, "q", NPY_FLOAT32, 3);
    if (q == NULL) return NULL;
    npy_intp B, T, C;
    if (attention_dims(q, num_heads, &B, &T, &C) < 0) return NULL;
    const npy_intp *qshape = PyArray_DIMS(q);
    npy_intp adims[4] = {B, num_heads, T, T};
    PyArrayObject *k, *v, *dout, *att, *noise = NULL;
    if ((k = f32_shaped(k_obj, "k", 3, qshape)) == NULL ||
        (v = f32_shaped(v_obj, "v", 3, qshape)) == NULL ||
        (dout = f32_shaped(dout_obj, "dout", 3, qshape)) == NULL ||
        (att = f32_shaped(att_obj, "att", 4, adims)) == NULL)
        return NULL;
    if (noise_obj != Py_None && (noise = f32_shaped(noise_obj, "noise", 4, adims)) == NULL)
        return NULL;
    PyArrayObject *dq, *dk, *dv;
    if (grad_out(dq_obj, "dq", 3, qshape, &dq) < 0 || grad_out(dk_obj, "dk", 3, qshape, &dk) < 0 ||
        grad_out(dv_obj, "dv", 3, qshape, &dv) < 0)
        return NULL;
    PyArrayObject *outs[] = {dq, dk, dv}, *ins[] = {dout, q, k, v, att, noise};
    const char *out_names[] = {"dq", "dk", "dv"};
    const char *in_names[] = {"dout", "q", "k", "v", "att", "noise"};
    if (check_disjoint(outs, out_names, 3, ins, in_names, 6, 0) < 0) return NULL;
    int nthreads = gptc_get_num_threads();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_attention_backward(data_or_null(dq), data_or_null(dk), data_or_null(dv),
                                 (const float *)PyArray_DATA(dout), (const float *)PyArray_DATA(q),
                                 (const float *)PyArray_DATA(k), (const float *)PyArray_DATA(v),
                                 (const float *)PyArray_DATA(att),
                                 noise == NULL ? NULL : (const float *)PyArray_DATA(noise),
                                 (int)B, (int)T, num_heads, (int)(C / num_heads), nthreads);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* logits (N, V) and targets (N,) with every target in [0, V). */
static int check_cross_entropy_args(PyObject *logits_obj, PyObject *targets_obj,
                                    PyArrayObject **logits, PyArrayObject **targets)
{
    *logits = check_array(logits_obj, "logits", NPY_FLOAT32, 2);
    if (*logits == NULL) return -1;
    npy_intp N = PyArray_DIM(*logits, 0), V = PyArray_DIM(*logits, 1);
    if (!fits_int(V, "number of classes")) return -1;
    *targets = check_array(targets_obj, "targets", NPY_INT64, 1);
    npy_intp tshape[1] = {N};
    if (*targets == NULL || check_shape(*targets, "targets", 1, tshape) < 0) return -1;
    const int64_t *t = (const int64_t *)PyArray_DATA(*targets);
    for (npy_intp i = 0; i < N; i++) {
        if (t[i] < 0 || t[i] >= V) {
            PyErr_Format(PyExc_IndexError,
                         "targets[%zd] = %lld is out of range: targets must be in [0, %zd) "
                         "for logits with V = %zd classes",
                         (Py_ssize_t)i, (long long)t[i], (Py_ssize_t)V, (Py_ssize_t)V);
            return -1;
        }
    }
    return 0;
}

static PyObject *py_cross_entropy(PyObject *self, PyObject *args)
{
    PyObject *logits_obj, *targets_obj;
    if (!PyArg_ParseTuple(args, "OO:cross_entropy", &logits_obj, &targets_obj)) return NULL;
    PyArrayObject *logits, *targets;
    if (check_cross_entropy_args(logits_obj, targets_obj, &logits, &targets) < 0) return NULL;
    npy_intp N = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    npy_intp dims[1] = {N};
    PyArrayObject *losses = new_f32(1, dims);
    if (losses == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_crossentropy_forward((float *)PyArray_DATA(losses), (const float *)PyArray_DATA(logits),
                              (const int64_t *)PyArray_DATA(targets), (size_t)N, (int)V);
    Py_END_ALLOW_THREADS
    return (PyObject *)losses;
}

static PyObject *py_cross_entropy_backward(PyObject *self, PyObject *args)
{
    PyObject *dlosses_obj, *logits_obj, *targets_obj, *dlogits_obj;
    if (!PyArg_ParseTuple(args, "OOOO:cross_entropy_backward", &dlosses_obj, &logits_obj,
                          &targets_obj, &dlogits_obj))
        return NULL;
    PyArrayObject *logits, *targets;
    if (check_cross_entropy_args(logits_obj, targets_obj, &logits, &targets) < 0) return NULL;
    npy_intp N = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    npy_intp nshape[1] = {N};
    PyArrayObject *dlosses = f32_shaped(dlosses_obj, "dlosses", 1, nshape), *dlogits;
    if (dlosses == NULL || grad_out(dlogits_obj, "dlogits", 2, PyArray_DIMS(logits), &dlogits) < 0)
        return NULL;
    PyArrayObject *outs[] = {dlogits}, *ins[] = {dlosses, logits, targets};
    const char *out_names[] = {"dlogits"}, *in_names[] = {"dlosses", "logits", "targets"};
    if (check_disjoint(outs, out_names, 1, ins, in_names, 3, 0) < 0) return NULL;
    if (dlogits != NULL) {
        Py_BEGIN_ALLOW_THREADS
        gptc_crossentropy_backward((float *)PyArray_DATA(dlogits),
                                   (const float *)PyArray_DATA(dlosses),
                                   (const float *)PyArray_DATA(logits),
                                   (const int64_t *)PyArray_DATA(targets), (size_t)N, (int)V);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *py_mse_backward(PyObject *self, PyObject *args)
{
    PyObject *pred_obj, *target_obj, *dpred_obj;
    double scale;
    if (!PyArg_ParseTuple(args, "OOdO:mse_backward", &pred_obj, &target_obj, &scale, &dpred_obj))
        return NULL;
    PyArrayObject *pred = check_array(pred_obj, "pred", NPY_FLOAT32, -1);
    if (pred == NULL) return NULL;
    int nd = PyArray_NDIM(pred);
    PyArrayObject *target = f32_shaped(target_obj, "target", nd, PyArray_DIMS(pred)), *dpred;
    if (target == NULL || grad_out(dpred_obj, "dpred", nd, PyArray_DIMS(pred), &dpred) < 0)
        return NULL;
    PyArrayObject *outs[] = {dpred}, *ins[] = {pred, target};
    const char *out_names[] = {"dpred"}, *in_names[] = {"pred", "target"};
    if (check_disjoint(outs, out_names, 1, ins, in_names, 2, 1) < 0) return NULL;
    if (dpred != NULL) {
        Py_BEGIN_ALLOW_THREADS
        gptc_mse_backward((float *)PyArray_DATA(dpred), (const float *)PyArray_DATA(pred),
                          (const float *)PyArray_DATA(target), (float)scale,
                          (size_t)PyArray_SIZE(pred));
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *py_adamw_update(PyObject *self, PyObject *args)
{
    PyObject *p_obj, *g_obj, *m_obj, *v_obj;
    double lr, beta1, beta2, eps, weight_decay;
    long step;
    if (!PyArg_ParseTuple(args, "OOOOdddddl:adamw_update", &p_obj, &g_obj, &m_obj, &v_obj, &lr,
                          &beta1, &beta2, &eps, &weight_decay, &step))
        return NULL;
    PyArrayObject *param = writable_f32(p_obj, "param");
    if (param == NULL) return NULL;
    int nd = PyArray_NDIM(param);
    PyArrayObject *grad = f32_shaped(g_obj, "grad", nd, PyArray_DIMS(param));
    PyArrayObject *m = grad == NULL ? NULL : f32_shaped(m_obj, "exp_avg", nd, PyArray_DIMS(param));
    PyArrayObject *v = m == NULL ? NULL : f32_shaped(v_obj, "exp_avg_sq", nd, PyArray_DIMS(param));
    if (v == NULL) return NULL;
    if (!PyArray_ISWRITEABLE(m) || !PyArray_ISWRITEABLE(v)) {
        PyErr_SetString(PyExc_ValueError, "exp_avg and exp_avg_sq must be writable");
        return NULL;
    }
    if (step < 1) {
        PyErr_Format(PyExc_ValueError, "step must be >= 1, got %ld", step);
        return NULL;
    }
    PyArrayObject *outs[] = {param, m, v}, *ins[] = {grad};
    const char *out_names[] = {"param", "exp_avg", "exp_avg_sq"}, *in_names[] = {"grad"};
    if (check_disjoint(outs, out_names, 3, ins, in_names, 1, 0) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gptc_adamw_update((float *)PyArray_DATA(param), (const float *)PyArray_DATA(grad),
                      (float *)PyArray_DATA(m), (float *)PyArray_DATA(v),
                      (size_t)PyArray_SIZE(param), lr, beta1, beta2, eps, weight_decay, step);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------
 * Sampling and the inference attention kernel
 * ---------------------------------------------------------------------- */
static PyObject *py_next_tokens(PyObject *self, PyObject *args)
{
    PyObject *logits_obj, *temp_obj, *top_k_obj, *gen_obj;
    if (!PyArg_ParseTuple(args, "OOOO:next_tokens", &logits_obj, &temp_obj, &top_k_obj,
                          &gen_obj))
        return NULL;
    PyArrayObject *logits = check_array(logits_obj, "logits", NPY_FLOAT32, 2);
    GeneratorObject *g = logits == NULL ? NULL : as_generator(gen_obj);
    if (g == NULL) return NULL;
    npy_intp B = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
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
                         "top_k must be None or in [1, vocab_size] = [1, %zd], got %R",
                         (Py_ssize_t)V, top_k_obj);
            return NULL;
        }
    }
    npy_intp dims[1] = {B};
    PyArrayObject *next = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
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
    bad = gptc_next_tokens((int64_t *)PyArray_DATA(next), (const float *)PyArray_DATA(logits),
                           (int)B, (int)V, temperature, (int)top_k, &g->gen, scratch);
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

static PyObject *py_attention_cached(PyObject *self, PyObject *args)
{
    PyObject *q_obj, *k_obj, *v_obj;
    int num_heads;
    Py_ssize_t past;
    if (!PyArg_ParseTuple(args, "OOOin:attention_cached", &q_obj, &k_obj, &v_obj, &num_heads,
                          &past))
        return NULL;
    PyArrayObject *q = check_array(q_obj, "q", NPY_FLOAT32, 3);
    PyArrayObject *k = q == NULL ? NULL : check_array(k_obj, "k_cache", NPY_FLOAT32, 3);
    if (k == NULL) return NULL;
    npy_intp B = PyArray_DIM(q, 0), Tq = PyArray_DIM(q, 1), C = PyArray_DIM(q, 2);
    npy_intp cap = PyArray_DIM(k, 1);
    npy_intp kshape[3] = {B, cap, C};
    if (check_shape(k, "k_cache", 3, kshape) < 0 || f32_shaped(v_obj, "v_cache", 3, kshape) == NULL)
        return NULL;
    if (num_heads <= 0 || C % num_heads != 0) {
        PyErr_Format(PyExc_ValueError, "the last dimension of q (%zd) must be divisible by "
                     "num_heads (%d)", (Py_ssize_t)C, num_heads);
        return NULL;
    }
    if (past < 0 || past > cap - Tq) {
        PyErr_Format(PyExc_ValueError,
                     "past must be in [0, capacity - num_tokens] = [0, %zd], got %zd "
                     "(the caches hold %zd positions, q %zd new ones)",
                     (Py_ssize_t)(cap - Tq), past, (Py_ssize_t)cap, (Py_ssize_t)Tq);
        return NULL;
    }
    if (!fits_int(B * cap, "batch * capacity") || !fits_int(C, "d_out") ||
        !fits_int(B * num_heads, "batch * num_heads"))
        return NULL;
    PyArrayObject *out = new_f32(3, PyArray_DIMS(q));
    if (out == NULL) return NULL;
    int HS = (int)(C / num_heads);
    int nthreads = gptc_get_num_threads();
    float *scratch = PyMem_Malloc(gptc_attention_cached_scratch_floats(HS, nthreads) * sizeof(float));
    if (scratch == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    gptc_attention_cached_forward((float *)PyArray_DATA(out), (const float *)PyArray_DATA(q),
                                  (const float *)PyArray_DATA(k),
                                  (const float *)PyArray_DATA((PyArrayObject *)v_obj), (int)B,
                                  (int)Tq, (int)past, (int)cap, num_heads, HS, scratch,
                                  nthreads);
    Py_END_ALLOW_THREADS
    PyMem_Free(scratch);
    return (PyObject *)out;
}

/* ------------------------------------------------------------------------
 * Threads and build information
 * ---------------------------------------------------------------------- */
static PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 4096) {
        PyErr_Format(PyExc_ValueError, "num_threads must be in [1, 4096], got %ld", n);
        return NULL;
    }
    gptc_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(gptc_get_num_threads());
}

static PyObject *py_isa(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(gptc_isa_name());
}

/* A list of kernel-set names from gptc_supported_isas or gptc_compiled_isas. */
static PyObject *isa_list(int (*list)(const char **, int))
{
    const char *names[16];
    int n = list(names, 16);
    n = n < 16 ? n : 16;
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (name == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, name);
    }
    return out;
}

static PyObject *py_supported_isas(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return isa_list(gptc_supported_isas);
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "set_isa: name must be a str, got %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) return NULL;
    if (gptc_set_isa(name) < 0) {
        PyObject *supported = isa_list(gptc_supported_isas);
        if (supported == NULL) return NULL;
        PyErr_Format(PyExc_ValueError,
                     "set_isa: kernel set %R is not available here; this build and CPU "
                     "support %R", arg, supported);
        Py_DECREF(supported);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_fma_peak(PyObject *self, PyObject *args)
{
    int nthreads;
    long iterations;
    if (!PyArg_ParseTuple(args, "il:fma_peak", &nthreads, &iterations)) return NULL;
    if (nthreads < 1 || nthreads > 4096) {
        PyErr_Format(PyExc_ValueError, "fma_peak: nthreads must be in [1, 4096], got %d",
                     nthreads);
        return NULL;
    }
    if (iterations < 1) {
        PyErr_Format(PyExc_ValueError, "fma_peak: iterations must be >= 1, got %ld",
                     iterations);
        return NULL;
    }
    double gflops;
    Py_BEGIN_ALLOW_THREADS
    gflops = gptc_fma_peak_gflops(nthreads, iterations);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(gflops);
}

static PyObject *py_build_info(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    const gptc_build_info *info = gptc_get_build_info();
    PyObject *isas = isa_list(gptc_compiled_isas);
    if (isas == NULL) return NULL;
    PyObject *version = Py_None;   /* _OPENMP, None in a serial build */
    if (info->openmp) version = PyLong_FromLong(info->openmp);
    else Py_INCREF(Py_None);
    /* N hands over the two new references, also on failure */
    return Py_BuildValue("{s:s, s:O, s:N, s:N, s:O, s:s}", "compiler", info->compiler,
                         "openmp", info->openmp ? Py_True : Py_False, "openmp_version", version,
                         "isas_compiled", isas, "sanitize", info->sanitize ? Py_True : Py_False,
                         "isa", gptc_isa_name());
}

static PyMethodDef module_methods[] = {
    {"uniform_", py_uniform_, METH_VARARGS, "uniform_(tensor, from, to, generator)"},
    {"randperm", py_randperm, METH_VARARGS,
     "randperm(n, generator): int64 permutation of 0..n-1, as torch.randperm"},
    {"random_int64", py_random_int64, METH_O,
     "random_int64(generator): torch.empty((), dtype=torch.int64).random_() as a Python int"},
    {"normal_", py_normal_, METH_VARARGS, "normal_(tensor, mean, std, generator)"},
    {"bernoulli_", py_bernoulli_, METH_VARARGS, "bernoulli_(tensor, p, generator)"},
    {"linear", (PyCFunction)(void (*)(void))py_linear, METH_VARARGS | METH_KEYWORDS,
     "linear(input, weight, bias_or_None, *, gelu=False, out=None): input . weight^T + bias, "
     "then GELU if gelu; with out, out += input . weight^T + bias and out is returned. "
     "weight is float32, or uint16 bfloat16 bits (from to_bfloat16), widened as read"},
    {"to_bfloat16", py_to_bfloat16, METH_O,
     "to_bfloat16(float32 array): uint16 array of the values rounded to bfloat16 "
     "(nearest even)"},
    {"layer_norm", py_layer_norm, METH_VARARGS, "layer_norm(input, scale, shift, eps)"},
    {"gelu", py_gelu, METH_O, "gelu(input)"},
    {"relu", py_relu, METH_O, "relu(input)"},
    {"softmax", py_softmax, METH_O, "softmax(input): over the last axis"},
    {"dropout", py_dropout, METH_VARARGS, "dropout(input, p, generator)"},
    {"embedding", py_embedding, METH_VARARGS, "embedding(input_ids, weight)"},
    {"multihead_attention", py_multihead_attention, METH_VARARGS,
     "multihead_attention(input, Wq, bq, Wk, bk, Wv, bv, Wo, bo, num_heads, dropout, generator)"},
    {"gpt_forward", py_gpt_forward, METH_VARARGS,
     "gpt_forward(in_idx, tok_emb, pos_emb, blocks, final_scale, final_shift, final_eps, "
     "out_head_w, out_head_b, n_heads, emb_dropout, generator)"},
    {"linear_backward", py_linear_backward, METH_VARARGS,
     "linear_backward(dout, inp, weight, dinp, dweight, dbias): accumulate into the "
     "gradient arrays given (None: not needed)"},
    {"layer_norm_backward", py_layer_norm_backward, METH_VARARGS,
     "layer_norm_backward(dout, inp, scale, eps, dinp, dscale, dshift)"},
    {"gelu_backward", py_gelu_backward, METH_VARARGS, "gelu_backward(dout, inp, dinp)"},
    {"relu_backward", py_relu_backward, METH_VARARGS, "relu_backward(dout, inp, dinp)"},
    {"embedding_backward", py_embedding_backward, METH_VARARGS,
     "embedding_backward(dout, idx, dweight)"},
    {"dropout_train", py_dropout_train, METH_VARARGS,
     "dropout_train(input, p, generator) -> (out, noise)"},
    {"dropout_backward", py_dropout_backward, METH_VARARGS, "dropout_backward(dout, noise, dinp)"},
    {"attention_train", py_attention_train, METH_VARARGS,
     "attention_train(q, k, v, num_heads, dropout_p, generator) -> (out, att, noise_or_None)"},
    {"attention_backward", py_attention_backward, METH_VARARGS,
     "attention_backward(dout, q, k, v, att, noise_or_None, num_heads, dq, dk, dv)"},
    {"cross_entropy", py_cross_entropy, METH_VARARGS,
     "cross_entropy(logits, targets) -> per-row losses (N,)"},
    {"cross_entropy_backward", py_cross_entropy_backward, METH_VARARGS,
     "cross_entropy_backward(dlosses, logits, targets, dlogits)"},
    {"mse_backward", py_mse_backward, METH_VARARGS, "mse_backward(pred, target, scale, dpred)"},
    {"adamw_update", py_adamw_update, METH_VARARGS,
     "adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step)"},
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n)"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads()"},
    {"isa", py_isa, METH_NOARGS,
     "isa(): the kernel set in use (generic, avx2, avx512, neon); GPTC_ISA chooses at import"},
    {"set_isa", py_set_isa, METH_O,
     "set_isa(name): run every later operation on that kernel set (see supported_isas)"},
    {"supported_isas", py_supported_isas, METH_NOARGS,
     "supported_isas(): the kernel sets this build has and this CPU runs, narrowest first"},
    {"fma_peak", py_fma_peak, METH_VARARGS,
     "fma_peak(nthreads, iterations): GFLOP/s of the kernel set's register-only "
     "multiply-add loop on nthreads threads, the arithmetic peak"},
    {"build_info", py_build_info, METH_NOARGS,
     "build_info() -> dict: compiler, openmp, openmp_version, isas_compiled, sanitize, isa"},
    {"attention_cached", py_attention_cached, METH_VARARGS,
     "attention_cached(q, k_cache, v_cache, num_heads, past) -> out: inference attention of "
     "q (B, Tq, C), positions past .. past + Tq - 1, over caches (B, capacity, C) whose first "
     "past + Tq rows are filled"},
    {"next_tokens", py_next_tokens, METH_VARARGS,
     "next_tokens(logits, temperature, top_k, generator) -> (B,) int64: chapter 5's choice "
     "of the next token per row (top-k filter, then argmax or sampling)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "gptc._C",
    "gptc's C core: the layers of the chapter-4 GPT model on float32 NumPy arrays.",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__C(void)
{
    import_array();
    if (PyType_Ready(&GeneratorType) < 0 || PyType_Ready(&DecoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    Py_INCREF(&GeneratorType);
    if (PyModule_AddObject(m, "Generator", (PyObject *)&GeneratorType) < 0) {
        Py_DECREF(&GeneratorType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&DecoderType);
    if (PyModule_AddObject(m, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(&DecoderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "RNG_STATE_BYTES", GPTC_RNG_STATE_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
