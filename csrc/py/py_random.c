/*
 * py_random.c - gptc.Generator (PyTorch's CPU generator, csrc/rng.c) and the
 * random fills: uniform_, normal_, bernoulli_ in place, randperm, random_int64.
 */
#include "py_random.h"

#include "bindings.h"

void lock_generator(GeneratorObject *g)
{
    if (!PyThread_acquire_lock(g->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(g->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

void unlock_generator(GeneratorObject *g)
{
    PyThread_release_lock(g->lock);
}

int to_generator(PyObject *obj, void *ptr)
{
    if (!PyObject_TypeCheck(obj, &GeneratorType)) {
        PyErr_Format(PyExc_TypeError, "generator must be a gptc.Generator, got %s",
                     Py_TYPE(obj)->tp_name);
        return 0;
    }
    *(GeneratorObject **)ptr = (GeneratorObject *)obj;
    return 1;
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

PyTypeObject GeneratorType = {
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

/* ------------------------------------------------------------------------
 * Random fills of a float32 array in place; each returns the array.
 * ---------------------------------------------------------------------- */
/* Fill out from g under its lock; returns out (a new reference). */
static PyObject *fill(const array_arg *out, GeneratorObject *g,
                      void (*fill_fn)(gptc_generator *, float *, size_t, double, double),
                      double a, double b)
{
    lock_generator(g);
    fill_fn(&g->gen, data_of(out), (size_t)PyArray_SIZE(out->array), a, b);
    unlock_generator(g);
    Py_INCREF(out->array);
    return (PyObject *)out->array;
}

PyObject *py_uniform_(PyObject *self, PyObject *args)
{
    array_arg out = ARRAY_ARG("tensor", ANY_NDIM);
    double from, to;
    GeneratorObject *g;
    if (!PyArg_ParseTuple(args, "O&ddO&:uniform_", to_writable_f32, &out, &from, &to,
                          to_generator, &g))
        return NULL;
    if (!(from <= to)) {
        PyErr_Format(PyExc_ValueError, "uniform_ expects from <= to, got from=%R, to=%R",
                     PyTuple_GET_ITEM(args, 1), PyTuple_GET_ITEM(args, 2));
        return NULL;
    }
    return fill(&out, g, gptc_uniform_f32, from, to);
}

PyObject *py_normal_(PyObject *self, PyObject *args)
{
    array_arg out = ARRAY_ARG("tensor", ANY_NDIM);
    double mean, std;
    GeneratorObject *g;
    if (!PyArg_ParseTuple(args, "O&ddO&:normal_", to_writable_f32, &out, &mean, &std,
                          to_generator, &g))
        return NULL;
    if (!(std >= 0.0)) {
        PyErr_Format(PyExc_ValueError, "normal_ expects std >= 0, got std=%R",
                     PyTuple_GET_ITEM(args, 2));
        return NULL;
    }
    return fill(&out, g, gptc_normal_f32, mean, std);
}

PyObject *py_bernoulli_(PyObject *self, PyObject *args)
{
    array_arg out = ARRAY_ARG("tensor", ANY_NDIM);
    number_arg p = NUMBER_ARG("p");
    GeneratorObject *g;
    if (!PyArg_ParseTuple(args, "O&O&O&:bernoulli_", to_writable_f32, &out, to_probability, &p,
                          to_generator, &g))
        return NULL;
    lock_generator(g);
    gptc_bernoulli_f32(&g->gen, data_of(&out), (size_t)PyArray_SIZE(out.array), p.value);
    unlock_generator(g);
    Py_INCREF(out.array);
    return (PyObject *)out.array;
}

PyObject *py_randperm(PyObject *self, PyObject *args)
{
    long long n;
    GeneratorObject *g;
    if (!PyArg_ParseTuple(args, "LO&:randperm", &n, to_generator, &g)) return NULL;
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

/* torch.empty((), dtype=torch.int64).random_(): a 64-bit draw reduced to
 * [0, 2^63), how PyTorch's RandomSampler seeds each epoch's shuffle. */
PyObject *py_random_int64(PyObject *self, PyObject *arg)
{
    GeneratorObject *g;
    if (!to_generator(arg, &g)) return NULL;
    lock_generator(g);
    uint64_t v = gptc_random_u64(&g->gen) & 0x7fffffffffffffffull;
    unlock_generator(g);
    return PyLong_FromUnsignedLongLong(v);
}
