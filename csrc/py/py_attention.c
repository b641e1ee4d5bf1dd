/*
 * py_attention.c - the bindings of attention.c: the MultiHeadAttention module
 * (the forward without gradients), the training forward beside its
 * backward, the same in two halves (weights, then context) beside theirs,
 * and, for the tests only, the inference kernel over a KV cache.
 */
#include "py_random.h"

#include "bindings.h"
#include "weights.h"

#include <stdio.h>

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

/* The sizes of attention in num_heads heads over x, a (B, T, C) tensor
 * (q, or v for the context), and the shape (B, NH, T, T) of its weights. */
typedef struct heads_shape {
    int B, T, NH, HS;
    npy_intp tokens[3];    /* (B, T, C): q, k, v, out and their gradients */
    npy_intp weights[4];   /* (B, NH, T, T) */
} heads_shape;

/* Fills s from x (3-D, as its converter checked), or -1 with the exception
 * naming x: C divisible into num_heads heads, every size fits an int. */
static int heads_shape_of(const array_arg *x, int num_heads, heads_shape *s)
{
    char what[64];
    const npy_intp *d = PyArray_DIMS(x->array);
    snprintf(what, sizeof(what), "the last dimension of %s", x->name);
    if (check_heads(d[2], what, num_heads) < 0 || attention_sizes(d[0], d[1], num_heads) < 0)
        return -1;
    *s = (heads_shape){.B = (int)d[0], .T = (int)d[1], .NH = num_heads,
                       .HS = (int)(d[2] / num_heads), .tokens = {d[0], d[1], d[2]},
                       .weights = {d[0], num_heads, d[1], d[1]}};
    return 0;
}

/* A kernel's status after it ran: None, or MemoryError if it could not
 * allocate its scratch. */
static PyObject *none_or_no_memory(int rc)
{
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* gptc_attention_weights and gptc_attention_context: one output, two
 * inputs, the sizes. */
typedef int (*attention_half)(float *out, const float *a, const float *b, int B, int T, int NH,
                              int HS, int nthreads);

/* Run a half on its checked inputs a, b: a new array of shape dims holding
 * what it computed, or NULL with an exception. */
static PyObject *run_half(attention_half half, int ndim, const npy_intp *dims,
                          const array_arg *a, const array_arg *b, const heads_shape *s)
{
    PyArrayObject *out = new_f32(ndim, dims);
    if (out == NULL) return NULL;
    int nthreads = gptc_get_num_threads();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = half((float *)PyArray_DATA(out), data_of(a), data_of(b), s->B, s->T, s->NH, s->HS,
              nthreads);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
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
    heads_shape s;
    if (!PyArg_ParseTuple(args, "O&O&O&iO&O&:attention_train", to_f32, &q, to_f32, &k, to_f32,
                          &v, &num_heads, to_probability, &p, to_generator, &g) ||
        check_shape(&k, 3, PyArray_DIMS(q.array)) < 0 ||
        check_shape(&v, 3, PyArray_DIMS(q.array)) < 0 || heads_shape_of(&q, num_heads, &s) < 0)
        return NULL;
    PyArrayObject *out = new_f32(3, s.tokens);
    PyArrayObject *att = out == NULL ? NULL : new_f32(4, s.weights);
    PyArrayObject *noise = att == NULL || p.value == 0.0 ? NULL : new_f32(4, s.weights);
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
                                      data_of(&q), data_of(&k), data_of(&v), s.B, s.T, s.NH,
                                      s.HS, p.value, &g->gen, nthreads);
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
    heads_shape s;
    if (!PyArg_ParseTuple(args, "O&O&O&O&O&O&iO&O&O&:attention_backward", to_f32, &dout,
                          to_f32, &q, to_f32, &k, to_f32, &v, to_f32, &att, to_f32_or_none,
                          &noise, &num_heads, to_grad, &dq, to_grad, &dk, to_grad, &dv) ||
        heads_shape_of(&q, num_heads, &s) < 0)
        return NULL;
    const array_arg *outs[] = {&dq, &dk, &dv}, *ins[] = {&dout, &q, &k, &v, &att, &noise};
    if (check_shape(&k, 3, s.tokens) < 0 || check_shape(&v, 3, s.tokens) < 0 ||
        check_shape(&dout, 3, s.tokens) < 0 || check_shape(&att, 4, s.weights) < 0 ||
        check_shape(&noise, 4, s.weights) < 0 || check_shape(&dq, 3, s.tokens) < 0 ||
        check_shape(&dk, 3, s.tokens) < 0 || check_shape(&dv, 3, s.tokens) < 0 ||
        check_disjoint(outs, 3, ins, 6, 0) < 0)
        return NULL;
    int nthreads = gptc_get_num_threads();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_attention_backward(data_of(&dq), data_of(&dk), data_of(&dv), data_of(&dout),
                                 data_of(&q), data_of(&k), data_of(&v), data_of(&att),
                                 data_of(&noise), s.B, s.T, s.NH, s.HS, nthreads);
    Py_END_ALLOW_THREADS
    return none_or_no_memory(rc);
}

/* attention_weights(q, k, num_heads) -> att (B, NH, T, T) */
PyObject *py_attention_weights(PyObject *self, PyObject *args)
{
    array_arg q = ARRAY_ARG("q", 3), k = ARRAY_ARG("k", ANY_NDIM);
    int num_heads;
    heads_shape s;
    if (!PyArg_ParseTuple(args, "O&O&i:attention_weights", to_f32, &q, to_f32, &k,
                          &num_heads) ||
        heads_shape_of(&q, num_heads, &s) < 0 || check_shape(&k, 3, s.tokens) < 0)
        return NULL;
    return run_half(gptc_attention_weights, 4, s.weights, &q, &k, &s);
}

/* attention_weights_backward(datt, q, k, att, num_heads, dq, dk) */
PyObject *py_attention_weights_backward(PyObject *self, PyObject *args)
{
    array_arg datt = ARRAY_ARG("datt", ANY_NDIM), q = ARRAY_ARG("q", 3);
    array_arg k = ARRAY_ARG("k", ANY_NDIM), att = ARRAY_ARG("att", ANY_NDIM);
    array_arg dq = ARRAY_ARG("dq", ANY_NDIM), dk = ARRAY_ARG("dk", ANY_NDIM);
    int num_heads;
    heads_shape s;
    if (!PyArg_ParseTuple(args, "O&O&O&O&iO&O&:attention_weights_backward", to_f32, &datt,
                          to_f32, &q, to_f32, &k, to_f32, &att, &num_heads, to_grad, &dq,
                          to_grad, &dk) ||
        heads_shape_of(&q, num_heads, &s) < 0)
        return NULL;
    const array_arg *outs[] = {&dq, &dk}, *ins[] = {&datt, &q, &k, &att};
    if (check_shape(&k, 3, s.tokens) < 0 || check_shape(&datt, 4, s.weights) < 0 ||
        check_shape(&att, 4, s.weights) < 0 || check_shape(&dq, 3, s.tokens) < 0 ||
        check_shape(&dk, 3, s.tokens) < 0 || check_disjoint(outs, 2, ins, 4, 0) < 0)
        return NULL;
    int nthreads = gptc_get_num_threads();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_attention_weights_backward(data_of(&dq), data_of(&dk), data_of(&datt),
                                         data_of(&q), data_of(&k), data_of(&att), s.B, s.T,
                                         s.NH, s.HS, nthreads);
    Py_END_ALLOW_THREADS
    return none_or_no_memory(rc);
}

/* attention_context(weights, v, num_heads) -> out (B, T, C) */
PyObject *py_attention_context(PyObject *self, PyObject *args)
{
    array_arg weights = ARRAY_ARG("weights", ANY_NDIM), v = ARRAY_ARG("v", 3);
    int num_heads;
    heads_shape s;
    if (!PyArg_ParseTuple(args, "O&O&i:attention_context", to_f32, &weights, to_f32, &v,
                          &num_heads) ||
        heads_shape_of(&v, num_heads, &s) < 0 || check_shape(&weights, 4, s.weights) < 0)
        return NULL;
    return run_half(gptc_attention_context, 3, s.tokens, &weights, &v, &s);
}

/* attention_context_backward(dout, weights, v, num_heads, dweights, dv) */
PyObject *py_attention_context_backward(PyObject *self, PyObject *args)
{
    array_arg dout = ARRAY_ARG("dout", ANY_NDIM), weights = ARRAY_ARG("weights", ANY_NDIM);
    array_arg v = ARRAY_ARG("v", 3);
    array_arg dweights = ARRAY_ARG("dweights", ANY_NDIM), dv = ARRAY_ARG("dv", ANY_NDIM);
    int num_heads;
    heads_shape s;
    if (!PyArg_ParseTuple(args, "O&O&O&iO&O&:attention_context_backward", to_f32, &dout,
                          to_f32, &weights, to_f32, &v, &num_heads, to_grad, &dweights,
                          to_grad, &dv) ||
        heads_shape_of(&v, num_heads, &s) < 0)
        return NULL;
    const array_arg *outs[] = {&dweights, &dv}, *ins[] = {&dout, &weights, &v};
    if (check_shape(&dout, 3, s.tokens) < 0 || check_shape(&weights, 4, s.weights) < 0 ||
        check_shape(&dweights, 4, s.weights) < 0 || check_shape(&dv, 3, s.tokens) < 0 ||
        check_disjoint(outs, 2, ins, 3, 0) < 0)
        return NULL;
    int nthreads = gptc_get_num_threads();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_attention_context_backward(data_of(&dweights), data_of(&dv), data_of(&dout),
                                         data_of(&weights), data_of(&v), s.B, s.T, s.NH, s.HS,
                                         nthreads);
    Py_END_ALLOW_THREADS
    return none_or_no_memory(rc);
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
    float *scratch = PyMem_Malloc(
        gptc_attention_cached_scratch_floats((int)B, (int)cap, (int)C, nthreads) * sizeof(float));
    if (scratch == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    gptc_attention_cached_forward((float *)PyArray_DATA(out), data_of(&q), data_of(&k),
                                  data_of(&v), (int)B, (int)Tq, (int)past, (int)cap,
                                  GPTC_KEYS_AS_ROWS, num_heads,
                                  HS, scratch, nthreads);
    Py_END_ALLOW_THREADS
    PyMem_Free(scratch);
    return (PyObject *)out;
}
