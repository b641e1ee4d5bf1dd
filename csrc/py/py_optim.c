/*
 * py_optim.c - the binding of optim.c: one AdamW step on a parameter in place.
 */
#include "args.h"

#include "bindings.h"

PyObject *py_adamw_update(PyObject *self, PyObject *args)
{
    array_arg param = ARRAY_ARG("param", ANY_NDIM), grad = ARRAY_ARG("grad", ANY_NDIM);
    array_arg m = ARRAY_ARG("exp_avg", ANY_NDIM), v = ARRAY_ARG("exp_avg_sq", ANY_NDIM);
    double lr, beta1, beta2, eps, weight_decay;
    long step;
    if (!PyArg_ParseTuple(args, "O&O&O&O&dddddl:adamw_update", to_writable_f32, &param, to_f32,
                          &grad, to_writable_f32, &m, to_writable_f32, &v, &lr, &beta1, &beta2,
                          &eps, &weight_decay, &step))
        return NULL;
    int nd = PyArray_NDIM(param.array);
    const npy_intp *shape = PyArray_DIMS(param.array);
    const array_arg *outs[] = {&param, &m, &v}, *ins[] = {&grad};
    if (check_shape(&grad, nd, shape) < 0 || check_shape(&m, nd, shape) < 0 ||
        check_shape(&v, nd, shape) < 0 || check_disjoint(outs, 3, ins, 1, 0) < 0)
        return NULL;
    if (step < 1) {
        PyErr_Format(PyExc_ValueError, "step must be >= 1, got %ld", step);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    gptc_adamw_update(data_of(&param), data_of(&grad), data_of(&m), data_of(&v),
                      (size_t)PyArray_SIZE(param.array), lr, beta1, beta2, eps, weight_decay,
                      step);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
