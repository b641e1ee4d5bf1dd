/*
 * py_attention.c - the bindings of attention.c: the MultiHeadAttention module
 * (the forward without gradients), the training forward beside its
 * backward, and, for the tests only, the inference kernel over a KV cache.
 */
#include "py_random.h"

#include "bindings.h"
#include "weights.h"

/* Attention of num_heads heads over B sequences of T tokens: every size an
 * int, and the (B, NH, T, T) weight tensor addressable. */
static int attention_sizes(npy_intp B, npy_intp T, int num_heads)
{
    npy_intp product, bt[2] = {B, T}, bh[2] = {B, num_heads};
    if (!fits_int(B, "batch") || !fits_int(T, "num_tokens") ||
        product_fits_int(bt, 2, "batch * num_tokens", &product) < 0 ||
        product_fits_int(bh, 2, "batch * num_heads", &product) < 0)
        return -1;
    double weights = (double)B * num_heads * (double)T * (double)T;
    if (weights * sizeof(float) > (double)NPY_MAX_INTP) {
        PyErr_Format(PyExc_ValueError, "the attention weights (%zd, %d, %zd, %zd) are too large",
                     (Py_ssize_t)B, num_heads, (Py_ssize_t)T, (Py_ssize_t)T);
        return -1;
    }
    return 0;
}

/* d_out features split into num_heads heads of at least one feature each
 * (with none, any number of heads would "divide" 0 and the loops over them
 * would run for nothing); `what` names d_out in the message. */
static int check_heads(npy_intp d_out, const char *what, int num_heads)
{
    if (num_heads <= 0 || d_out % num_heads != 0) {
        PyErr_Format(PyExc_ValueError, "%s (%zd) must be divisible by num_heads (%d)", what,
                     (Py_ssize_t)d_out, num_heads);
        return -1;
    }
    if (d_out == 0) {
        PyErr_Format(PyExc_ValueError, "%s is 0: each of the num_heads (%d) heads needs at "
                     "least one feature", what, num_heads);
        return -1;
    }
    return fits_int(d_out, "d_out") ? 0 : -1;
}

/* multihead_attention(input, weights, num_heads, generator): weights maps
 * MultiHeadAttention's state-dict keys (W_query.weight, ..., out_proj.bias)
 * to the arrays as stored, and dropout.p to the probability it applies now. */
PyObject *py_multihead_attention(PyObject *self, PyObject *args)
{
    array_arg x = ARRAY_ARG("input", 3);
    PyObject *mapping;
    int num_heads;
    GeneratorObject *g;
    if (!PyArg_ParseTuple(args, "O&OiO&:multihead_attention", to_f32, &x, &mapping, &num_heads,
                          to_generator, &g))
        return NULL;
    PyObject *weights = copy_weights(mapping);
    if (weights == NULL) return NULL;
    PyArrayObject *out = NULL;
    /* the sizes come from W_query.weight, float32 or its bfloat16 or int8 copy */
    PyArrayObject *wq = weights_linear_array(weights, "", "W_query.weight");
    if (wq == NULL) goto done;
    npy_intp B, T, d_in = PyArray_DIM(wq, 1), d_out = PyArray_DIM(wq, 0);
    if (check_last_dim(x.array, "input", d_in) < 0) goto done;
    B = PyArray_DIM(x.array, 0);
    T = PyArray_DIM(x.array, 1);
    if (check_heads(d_out, "d_out", num_heads) < 0 || attention_sizes(B, T, num_heads) < 0 ||
        !fits_int(d_in, "d_in"))
        goto done;
    gptc_attention_params p = {.d_in = (int)d_in, .d_out = (int)d_out, .num_heads = num_heads};
    if (weights_attention(weights, "", &p) < 0) goto done;
    npy_intp dims[3] = {B, T, d_out};
    out = new_f32(3, dims);
    if (out == NULL) goto done;
    int rc;
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_mha_forward((float *)PyArray_DATA(out), data_of(&x), &p, (int)B, (int)T, &g->gen);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    if (rc != 0) {
        Py_CLEAR(out);
        PyErr_NoMemory();
    }
done:
    Py_DECREF(weights);
    return (PyObject *)out;
}

/* attention_train(q, k, v, num_heads, dropout_p, generator)
 *   -> (out, att, noise or None) */
PyObject *py_attention_train(PyObject *self, PyObject *args)
{
    array_arg q = ARRAY_ARG("q", 3), k = ARRAY_ARG("k", 3), v = ARRAY_ARG("v", 3);
    number_arg p = NUMBER_ARG("dropout_p");
    int num_heads;
    GeneratorObject *g;
    if (!PyArg_ParseTuple(args, "O&O&O&iO&O&:attention_train", to_f32, &q, to_f32, &k, to_f32,
                          &v, &num_heads, to_probability, &p, to_generator, &g))
        return NULL;
    npy_intp B = PyArray_DIM(q.array, 0), T = PyArray_DIM(q.array, 1);
    npy_intp C = PyArray_DIM(q.array, 2);
    if (check_shape(&k, 3, PyArray_DIMS(q.array)) < 0 ||
        check_shape(&v, 3, PyArray_DIMS(q.array)) < 0 ||
        check_heads(C, "the last dimension of q", num_heads) < 0 ||
        attention_sizes(B, T, num_heads) < 0)
        return NULL;
    npy_intp adims[4] = {B, num_heads, T, T};
    PyArrayObject *out = new_f32(3, PyArray_DIMS(q.array));
    PyArrayObject *att = out == NULL ? NULL : new_f32(4, adims);
    PyArrayObject *noise = att == NULL || p.value == 0.0 ? NULL : new_f32(4, adims);
    if (att == NULL || (p.value > 0.0 && noise == NULL)) {
        Py_XDECREF(out);
        Py_XDECREF(att);
        return NULL;
    }
    int nthreads = gptc_get_num_threads();
    int rc;
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_attention_forward_train((float *)PyArray_DATA(out), (float *)PyArray_DATA(att),
                                      noise == NULL ? NULL : (float *)PyArray_DATA(noise),
                                      data_of(&q), data_of(&k), data_of(&v), (int)B, (int)T,
                                      num_heads, (int)(C / num_heads), p.value, &g->gen,
                                      nthreads);
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

PyObject *py_attention_backward(PyObject *self, PyObject *args)
{
    array_arg dout = ARRAY_ARG("dout", ANY_NDIM), q = ARRAY_ARG("q", 3);
    array_arg k = ARRAY_ARG("k", ANY_NDIM), v = ARRAY_ARG("v", ANY_NDIM);
    array_arg att = ARRAY_ARG("att", ANY_NDIM), noise = ARRAY_ARG("noise", ANY_NDIM);
    array_arg dq = ARRAY_ARG("dq", ANY_NDIM), dk = ARRAY_ARG("dk", ANY_NDIM);
    array_arg dv = ARRAY_ARG("dv", ANY_NDIM);
    int num_heads;
    if (!PyArg_ParseTuple(args, "O&O&O&O&O&O&iO&O&O&:attention_backward", to_f32, &dout,
                          to_f32, &q, to_f32, &k, to_f32, &v, to_f32, &att, to_f32_or_none,
                          &noise, &num_heads, to_grad, &dq, to_grad, &dk, to_grad, &dv))
        return NULL;
    npy_intp B = PyArray_DIM(q.array, 0), T = PyArray_DIM(q.array, 1);
    npy_intp C = PyArray_DIM(q.array, 2);
    if (check_heads(C, "the last dimension of q", num_heads) < 0 ||
        attention_sizes(B, T, num_heads) < 0)
        return NULL;
    const npy_intp *qshape = PyArray_DIMS(q.array);
    npy_intp adims[4] = {B, num_heads, T, T};
    const array_arg *outs[] = {&dq, &dk, &dv}, *ins[] = {&dout, &q, &k, &v, &att, &noise};
    if (check_shape(&k, 3, qshape) < 0 || check_shape(&v, 3, qshape) < 0 ||
        check_shape(&dout, 3, qshape) < 0 || check_shape(&att, 4, adims) < 0 ||
        check_shape(&noise, 4, adims) < 0 || check_shape(&dq, 3, qshape) < 0 ||
        check_shape(&dk, 3, qshape) < 0 || check_shape(&dv, 3, qshape) < 0 ||
        check_disjoint(outs, 3, ins, 6, 0) < 0)
        return NULL;
    int nthreads = gptc_get_num_threads();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_attention_backward(data_of(&dq), data_of(&dk), data_of(&dv), data_of(&dout),
                                 data_of(&q), data_of(&k), data_of(&v), data_of(&att),
                                 data_of(&noise), (int)B, (int)T, num_heads,
                                 (int)(C / num_heads), nthreads);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* _testing.attention_cached(q, k_cache, v_cache, num_heads, past): the
 * inference kernel on its own, so tests can hold it to float64 and to the
 * bits of the whole-sequence result. */
PyObject *py_attention_cached(PyObject *self, PyObject *args)
{
    array_arg q = ARRAY_ARG("q", 3), k = ARRAY_ARG("k_cache", 3), v = ARRAY_ARG("v_cache", 3);
    int num_heads;
    Py_ssize_t past;
    if (!PyArg_ParseTuple(args, "O&O&O&in:attention_cached", to_f32, &q, to_f32, &k, to_f32,
                          &v, &num_heads, &past))
        return NULL;
    npy_intp B = PyArray_DIM(q.array, 0), Tq = PyArray_DIM(q.array, 1);
    npy_intp C = PyArray_DIM(q.array, 2), cap = PyArray_DIM(k.array, 1);
    npy_intp kshape[3] = {B, cap, C}, bc;
    if (check_shape(&k, 3, kshape) < 0 || check_shape(&v, 3, kshape) < 0 ||
        check_heads(C, "the last dimension of q", num_heads) < 0)
        return NULL;
    if (past < 0 || past > cap - Tq) {
        PyErr_Format(PyExc_ValueError,
                     "past must be in [0, capacity - num_tokens] = [0, %zd], got %zd "
                     "(the caches hold %zd positions, q %zd new ones)",
                     (Py_ssize_t)(cap - Tq), past, (Py_ssize_t)cap, (Py_ssize_t)Tq);
        return NULL;
    }
    npy_intp bh[2] = {B, num_heads};
    if (product_fits_int(kshape, 2, "batch * capacity", &bc) < 0 ||
        product_fits_int(bh, 2, "batch * num_heads", &bc) < 0)
        return NULL;
    PyArrayObject *out = new_f32(3, PyArray_DIMS(q.array));
    if (out == NULL) return NULL;
    int HS = (int)(C / num_heads);
    int nthreads = gptc_get_num_threads();
    float *scratch = PyMem_Malloc(gptc_attention_cached_scratch_floats(HS, nthreads) *
                                  sizeof(float));
    if (scratch == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    gptc_attention_cached_forward((float *)PyArray_DATA(out), data_of(&q), data_of(&k),
                                  data_of(&v), (int)B, (int)Tq, (int)past, (int)cap, num_heads,
                                  HS, scratch, nthreads);
    Py_END_ALLOW_THREADS
    PyMem_Free(scratch);
    return (PyObject *)out;
}
