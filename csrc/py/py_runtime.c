/*
 * py_runtime.c - the bindings of threads.c, isa.c and build_info.c: how many
 * threads the loops use, which kernel set runs, how the core was built.
 */
#include "args.h"

#include "bindings.h"
#include "build_info.h"

PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
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

PyObject *py_get_num_threads(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(gptc_get_num_threads());
}

PyObject *py_isa(PyObject *self, PyObject *Py_UNUSED(ignored))
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

PyObject *py_supported_isas(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return isa_list(gptc_supported_isas);
}

PyObject *py_set_isa(PyObject *self, PyObject *arg)
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

PyObject *py_fma_peak(PyObject *self, PyObject *args)
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

PyObject *py_read_bandwidth(PyObject *self, PyObject *args)
{
    array_arg a = ARRAY_ARG("data", ANY_NDIM);
    int nthreads;
    if (!PyArg_ParseTuple(args, "O&i:read_bandwidth", to_f32, &a, &nthreads)) return NULL;
    if (nthreads < 1 || nthreads > 4096) {
        PyErr_Format(PyExc_ValueError, "read_bandwidth: nthreads must be in [1, 4096], got %d",
                     nthreads);
        return NULL;
    }
    const npy_intp n = PyArray_SIZE(a.array);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "read_bandwidth: data must hold at least one value, got an empty array");
        return NULL;
    }
    double gbs;
    Py_BEGIN_ALLOW_THREADS
    gbs = gptc_read_bandwidth_gbs(data_of(&a), (size_t)n, nthreads);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(gbs);
}

PyObject *py_build_info(PyObject *self, PyObject *Py_UNUSED(ignored))
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
