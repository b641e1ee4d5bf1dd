/*
 * py_model.c - the bindings of model.c: the whole GPTModel forward in one
 * call, and the KV-cache decoder of gptc.generate.
 *
 * Both read the model from `weights`, a mapping from the book's state-dict
 * keys to the arrays as GPTModel stores them, plus the modules' numbers
 * under their attribute names (GPTModel._one_call_arguments builds it):
 *
 *   tok_emb.weight, pos_emb.weight, drop_emb.p,
 *   trf_blocks.<l>.norm1.{scale,shift,eps}, trf_blocks.<l>.att.W_query.weight ...
 *   trf_blocks.<l>.att.dropout.p, trf_blocks.<l>.norm2.{scale,shift,eps},
 *   trf_blocks.<l>.ff.layers.{0,2}.{weight,bias}, trf_blocks.<l>.drop_shortcut.p,
 *   final_norm.{scale,shift,eps}, out_head.weight, out_head.bias (optional)
 *
 * and n_layers, n_heads beside it.
 */
#include "py_random.h"

#include "bindings.h"
#include "weights.h"

#include <limits.h>
#include <stdio.h>

/* The model as C reads it. */
typedef struct model_view {
    gptc_model_params m;
    gptc_block_params *blocks;   /* n_layers of them (PyMem) */
    PyObject *weights;           /* a dict copy of the mapping: holds every array read */
} model_view;

static void release_model(model_view *v)
{
    PyMem_Free(v->blocks);
    v->blocks = NULL;
    Py_CLEAR(v->weights);
}

static int parse_block(PyObject *w, int l, npy_intp C, int n_heads, gptc_block_params *blk)
{
    char prefix[64], att[80];
    snprintf(prefix, sizeof(prefix), "trf_blocks.%d.", l);
    snprintf(att, sizeof(att), "trf_blocks.%d.att.", l);
    npy_intp cshape[1] = {C};
    blk->att = (gptc_attention_params){.d_in = (int)C, .d_out = (int)C, .num_heads = n_heads};
    if (weights_f32(w, prefix, "norm1.scale", 1, cshape, &blk->norm1_scale) < 0 ||
        weights_f32(w, prefix, "norm1.shift", 1, cshape, &blk->norm1_shift) < 0 ||
        weights_eps(w, prefix, "norm1.eps", &blk->norm1_eps) < 0 ||
        weights_attention(w, att, &blk->att) < 0 ||
        weights_f32(w, prefix, "norm2.scale", 1, cshape, &blk->norm2_scale) < 0 ||
        weights_f32(w, prefix, "norm2.shift", 1, cshape, &blk->norm2_shift) < 0 ||
        weights_eps(w, prefix, "norm2.eps", &blk->norm2_eps) < 0)
        return -1;
    /* the hidden size is the first dimension of ff.layers.0.weight, whichever dtype */
    PyArrayObject *wfc = weights_linear_array(w, prefix, "ff.layers.0.weight");
    if (wfc == NULL) return -1;
    npy_intp H = PyArray_DIM(wfc, 0);
    if (!fits_int(H, "hidden size")) return -1;
    npy_intp fc_shape[2] = {H, C}, proj_shape[2] = {C, H};
    if (weights_linear(w, prefix, "ff.layers.0.weight", fc_shape, &blk->w_fc) < 0 ||
        weights_bias(w, prefix, "ff.layers.0.bias", H, &blk->b_fc) < 0 ||
        weights_linear(w, prefix, "ff.layers.2.weight", proj_shape, &blk->w_proj) < 0 ||
        weights_bias(w, prefix, "ff.layers.2.bias", C, &blk->b_proj) < 0 ||
        weights_probability(w, prefix, "drop_shortcut.p", &blk->shortcut_dropout) < 0)
        return -1;
    blk->hidden = (int)H;
    return 0;
}

/* Fill *v from the mapping; on failure release it and return -1. */
static int parse_model(PyObject *mapping, int n_layers, int n_heads, model_view *v)
{
    *v = (model_view){.weights = copy_weights(mapping)};
    PyObject *w = v->weights;
    if (w == NULL) return -1;
    PyArrayObject *tok = weights_f32_array(w, "", "tok_emb.weight", 2);
    PyArrayObject *pos = tok == NULL ? NULL : weights_f32_array(w, "", "pos_emb.weight", 2);
    if (pos == NULL) goto fail;
    npy_intp V = PyArray_DIM(tok, 0), C = PyArray_DIM(tok, 1), ctx = PyArray_DIM(pos, 0);
    npy_intp pshape[2] = {ctx, C};
    const float *pos_data;
    if (weights_f32(w, "", "pos_emb.weight", 2, pshape, &pos_data) < 0 ||
        !fits_int(V, "vocab_size") || !fits_int(C, "emb_dim") ||
        !fits_int(ctx, "context_length"))
        goto fail;
    if (n_heads <= 0 || C % n_heads != 0 || C == 0) {
        PyErr_Format(PyExc_ValueError, "emb_dim (%zd) must be %s by n_heads (%d)",
                     (Py_ssize_t)C, C == 0 ? "positive and divisible" : "divisible", n_heads);
        goto fail;
    }
    if (n_layers < 0) {
        PyErr_Format(PyExc_ValueError, "n_layers must be >= 0, got %d", n_layers);
        goto fail;
    }
    v->m = (gptc_model_params){
        .vocab_size = (int)V, .context_length = (int)ctx, .emb_dim = (int)C,
        .n_layers = n_layers,
        .tok_emb = (const float *)PyArray_DATA(tok), .pos_emb = pos_data,
    };
    if (weights_probability(w, "", "drop_emb.p", &v->m.emb_dropout) < 0) goto fail;
    v->blocks = PyMem_Calloc(n_layers > 0 ? (size_t)n_layers : 1, sizeof(gptc_block_params));
    if (v->blocks == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int l = 0; l < n_layers; l++) {
        if (parse_block(w, l, C, n_heads, &v->blocks[l]) < 0) goto fail;
    }
    v->m.blocks = v->blocks;
    npy_intp cshape[1] = {C}, hshape[2] = {V, C};
    if (weights_f32(w, "", "final_norm.scale", 1, cshape, &v->m.final_scale) < 0 ||
        weights_f32(w, "", "final_norm.shift", 1, cshape, &v->m.final_shift) < 0 ||
        weights_eps(w, "", "final_norm.eps", &v->m.final_eps) < 0 ||
        weights_linear(w, "", "out_head.weight", hshape, &v->m.out_head_w) < 0 ||
        weights_bias(w, "", "out_head.bias", V, &v->m.out_head_b) < 0)
        goto fail;
    return 0;
fail:
    release_model(v);
    return -1;
}

/* The activations of `tokens` tokens (batch * sequence) must be addressable
 * with ints. */
static int check_tokens(const gptc_model_params *m, Py_ssize_t tokens)
{
    int widest = m->emb_dim > 4 ? m->emb_dim : 4;
    return fits_int(tokens, "batch * seq_len") && fits_int(tokens * widest, "activation size")
               ? 0 : -1;
}

/* What the model takes as input: (batch, seq_len) token ids, both non-zero,
 * seq_len <= context_length, every id in [0, vocab_size). */
static int check_model_input(PyArrayObject *idx, const char *name, npy_intp vocab,
                             npy_intp ctx)
{
    npy_intp B = PyArray_DIM(idx, 0), T = PyArray_DIM(idx, 1);
    if (B == 0 || T == 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s has shape (%zd, %zd): the batch and the sequence must each hold "
                     "at least one token", name, (Py_ssize_t)B, (Py_ssize_t)T);
        return -1;
    }
    if (T > ctx) {
        PyErr_Format(PyExc_ValueError,
                     "%s holds sequences of %zd tokens, longer than the context_length %zd "
                     "(crop it to the last context_length tokens, as generate_text_simple "
                     "does)", name, (Py_ssize_t)T, (Py_ssize_t)ctx);
        return -1;
    }
    return check_token_ids(idx, name, vocab);
}

/* check_in_idx(in_idx, vocab_size, name="in_idx", context_length=None): the
 * checks gpt_forward makes of its input, for the module-by-module forward
 * (and, without context_length, for a prompt that may outgrow the context). */
PyObject *py_check_in_idx(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"in_idx", "vocab_size", "name", "context_length", NULL};
    PyObject *obj, *ctx_obj = Py_None;
    Py_ssize_t vocab;
    const char *name = "in_idx";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On|sO:check_in_idx", kwlist, &obj, &vocab,
                                     &name, &ctx_obj))
        return NULL;
    array_arg idx = ARRAY_ARG(name, 2);
    if (!to_int64(obj, &idx)) return NULL;
    Py_ssize_t ctx = PyArray_DIM(idx.array, 1);   /* None: any length */
    if (ctx_obj != Py_None && (ctx = PyNumber_AsSsize_t(ctx_obj, PyExc_OverflowError)) == -1 &&
        PyErr_Occurred())
        return NULL;
    if (check_model_input(idx.array, name, vocab, ctx) < 0) return NULL;
    Py_RETURN_NONE;
}

/* gpt_forward(in_idx, weights, n_layers, n_heads, generator) -> logits */
PyObject *py_gpt_forward(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"in_idx", "weights", "n_layers", "n_heads", "generator", NULL};
    array_arg idx = ARRAY_ARG("in_idx", 2);
    PyObject *mapping;
    int n_layers, n_heads;
    GeneratorObject *g;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&OiiO&:gpt_forward", kwlist, to_int64,
                                     &idx, &mapping, &n_layers, &n_heads, to_generator, &g))
        return NULL;
    model_view v;
    if (parse_model(mapping, n_layers, n_heads, &v) < 0) return NULL;
    PyArrayObject *out = NULL;
    npy_intp B = PyArray_DIM(idx.array, 0), T = PyArray_DIM(idx.array, 1);
    if (check_model_input(idx.array, "in_idx", v.m.vocab_size, v.m.context_length) < 0 ||
        check_tokens(&v.m, B * T) < 0)
        goto done;
    npy_intp dims[3] = {B, T, v.m.vocab_size};
    out = new_f32(3, dims);
    if (out == NULL) goto done;
    int rc;
    lock_generator(g);
    Py_BEGIN_ALLOW_THREADS
    rc = gptc_gpt_forward((float *)PyArray_DATA(out), (const int64_t *)PyArray_DATA(idx.array),
                          &v.m, (int)B, (int)T, &g->gen);
    Py_END_ALLOW_THREADS
    unlock_generator(g);
    if (rc != 0) {
        Py_CLEAR(out);
        PyErr_NoMemory();
    }
done:
    release_model(&v);
    return (PyObject *)out;
}

/* ------------------------------------------------------------------------
 * Decoder: generation with a KV cache (gptc_decoder, model.c). It keeps the
 * model it read (and with it every weight array, so the pointers stay
 * valid as long as the decoder does), and a lock, since its methods
 * release the GIL while they compute.
 * ---------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    gptc_decoder *dec;
    model_view model;
    PyThread_type_lock lock;
    int batch, capacity;
} DecoderObject;

/* The first dropout probability of the model that is not 0 (its key), or NULL. */
static const char *first_dropout(const model_view *v, char key[64])
{
    if (v->m.emb_dropout != 0.0) return "drop_emb.p";
    for (int l = 0; l < v->m.n_layers; l++) {
        if (v->blocks[l].att.dropout != 0.0) {
            snprintf(key, 64, "trf_blocks.%d.att.dropout.p", l);
            return key;
        }
        if (v->blocks[l].shortcut_dropout != 0.0) {
            snprintf(key, 64, "trf_blocks.%d.drop_shortcut.p", l);
            return key;
        }
    }
    return NULL;
}

static int Decoder_init_from(DecoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"weights", "n_layers", "n_heads", "batch", "capacity", NULL};
    PyObject *mapping;
    int n_layers, n_heads;
    Py_ssize_t batch, capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oiinn:Decoder", kwlist, &mapping,
                                     &n_layers, &n_heads, &batch, &capacity))
        return -1;
    if (batch < 1 || batch > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "batch must be a positive integer, got %zd", batch);
        return -1;
    }
    if (parse_model(mapping, n_layers, n_heads, &self->model) < 0) return -1;
    const gptc_model_params *m = &self->model.m;
    if (capacity < 1 || capacity > m->context_length) {
        PyErr_Format(PyExc_ValueError,
                     "capacity must be in [1, context_length] = [1, %d], got %zd",
                     m->context_length, capacity);
        return -1;
    }
    if ((double)batch * (double)capacity > (double)INT_MAX) {
        PyErr_Format(PyExc_ValueError, "batch * capacity = %zd * %zd is too large for gptc",
                     batch, capacity);
        return -1;
    }
    if (check_tokens(m, batch * capacity) < 0) return -1;
    /* the cache would hold keys and values computed with dropout */
    char key[64];
    const char *noisy = first_dropout(&self->model, key);
    if (noisy != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "the KV-cache decoder runs the model in inference mode, but %s is not 0 "
                     "(put the model in eval mode: model.eval())", noisy);
        return -1;
    }
    self->batch = (int)batch;
    self->capacity = (int)capacity;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    self->dec = gptc_decoder_new(m, self->batch, self->capacity);
    Py_END_ALLOW_THREADS
    if (self->dec == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *Decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    DecoderObject *self = (DecoderObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (Decoder_init_from(self, args, kwargs) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Decoder_dealloc(DecoderObject *self)
{
    gptc_decoder_free(self->dec);
    release_model(&self->model);
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

static PyObject *Decoder_prefill(DecoderObject *self, PyObject *arg)
{
    array_arg idx = ARRAY_ARG("idx", 2);
    if (!to_int64(arg, &idx)) return NULL;
    npy_intp B = PyArray_DIM(idx.array, 0), T = PyArray_DIM(idx.array, 1);
    if (B != self->batch || T < 1 || T > self->capacity) {
        PyErr_Format(PyExc_ValueError,
                     "idx has shape (%zd, %zd), expected (%d, T) with 1 <= T <= capacity %d",
                     (Py_ssize_t)B, (Py_ssize_t)T, self->batch, self->capacity);
        return NULL;
    }
    const int V = self->model.m.vocab_size;
    if (check_token_ids(idx.array, "idx", V) < 0) return NULL;
    npy_intp dims[2] = {B, V};
    PyArrayObject *logits = new_f32(2, dims);
    if (logits == NULL) return NULL;
    lock_decoder(self);
    Py_BEGIN_ALLOW_THREADS
    gptc_decoder_prefill(self->dec, (float *)PyArray_DATA(logits),
                         (const int64_t *)PyArray_DATA(idx.array), (int)T);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    return (PyObject *)logits;
}

static PyObject *Decoder_step(DecoderObject *self, PyObject *arg)
{
    array_arg ids = ARRAY_ARG("next_ids", 1);
    npy_intp shape[1] = {self->batch};
    const int V = self->model.m.vocab_size;
    if (!to_int64(arg, &ids) || check_shape(&ids, 1, shape) < 0 ||
        check_token_ids(ids.array, "next_ids", V) < 0)
        return NULL;
    npy_intp dims[2] = {self->batch, V};
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
                      (const int64_t *)PyArray_DATA(ids.array));
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

PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gptc._C.Decoder",
    .tp_basicsize = sizeof(DecoderObject),
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Decoder(weights, n_layers, n_heads, batch, capacity)\n\n"
              "GPTModel inference with a KV cache, for generation: gpt_forward's model "
              "arguments (GPTModel._one_call_arguments(), model in eval mode), the batch size "
              "and the positions to cache (at most context_length). The cache and all "
              "buffers are allocated once, here.",
    .tp_methods = Decoder_methods,
    .tp_getset = Decoder_getset,
    .tp_new = Decoder_new,
};
