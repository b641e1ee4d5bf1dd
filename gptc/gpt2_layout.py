"""GPT-2's tensors and the book's GPTModel: which parameter is which part of which tensor.

OpenAI's checkpoints and Hugging Face's GPT-2 files hold the same tensors
under different names. Both store the linear layers as GPT-2's ``Conv1D``
does, with weights of shape (in, out), the transpose of a ``Linear`` weight,
and fuse the query, key and value projections into one ``c_attn`` of width
3 * emb_dim. Section 5.5 of the book splits and transposes them into
``GPTModel``; this module says once how, in both directions:

    GPT-2 tensor            GPTModel parameter (block i)
    wte                     tok_emb.weight (and out_head.weight)
    wpe                     pos_emb.weight
    h{i}/ln_1/g, b          trf_blocks.i.norm1.scale, shift
    h{i}/attn/c_attn/w      columns [0:E], [E:2E], [2E:3E], transposed:
                            att.W_query.weight, att.W_key.weight, att.W_value.weight
    h{i}/attn/c_attn/b      the same columns: att.W_query.bias, W_key.bias, W_value.bias
    h{i}/attn/c_proj/w, b   att.out_proj.weight (transposed), bias
    h{i}/ln_2/g, b          trf_blocks.i.norm2.scale, shift
    h{i}/mlp/c_fc/w, b      ff.layers.0.weight (transposed), bias
    h{i}/mlp/c_proj/w, b    ff.layers.2.weight (transposed), bias
    ln_f/g, b               final_norm.scale, shift
    lm_head                 out_head.weight, for a model whose head is not tied

The names are OpenAI's without their "model/" prefix; the shapes are given
without the leading 1 of OpenAI's Conv1D weights ([1, in, out]).
"""
import numpy as np

from .io import CheckpointFormatError

__all__ = ["LM_HEAD", "gpt2_tensor_shapes", "load_gpt2_tensors", "gpt2_tensors"]

#: The name of an untied output head (Hugging Face's ``lm_head.weight``).
LM_HEAD = "lm_head"

# Side of the square tiles of the transposing copies: NumPy's strided copy of
# a whole transposed matrix misses the cache on nearly every element; tiles of
# 128 x 128 floats (64 KiB) run about 7 times faster.
_TILE = 128


def gpt2_tensor_shapes(vocab_size, context_length, emb_dim, n_layers, hidden_dim=None):
    """GPT-2's tensors for a model of these sizes: name -> shape, in the order above."""
    hidden = 4 * emb_dim if hidden_dim is None else hidden_dim
    shapes = {"wte": (vocab_size, emb_dim), "wpe": (context_length, emb_dim)}
    for i in range(n_layers):
        shapes.update({
            f"h{i}/ln_1/g": (emb_dim,), f"h{i}/ln_1/b": (emb_dim,),
            f"h{i}/attn/c_attn/w": (emb_dim, 3 * emb_dim), f"h{i}/attn/c_attn/b": (3 * emb_dim,),
            f"h{i}/attn/c_proj/w": (emb_dim, emb_dim), f"h{i}/attn/c_proj/b": (emb_dim,),
            f"h{i}/ln_2/g": (emb_dim,), f"h{i}/ln_2/b": (emb_dim,),
            f"h{i}/mlp/c_fc/w": (emb_dim, hidden), f"h{i}/mlp/c_fc/b": (hidden,),
            f"h{i}/mlp/c_proj/w": (hidden, emb_dim), f"h{i}/mlp/c_proj/b": (emb_dim,),
        })
    shapes.update({"ln_f/g": (emb_dim,), "ln_f/b": (emb_dim,)})
    return shapes


def _plan(model):
    """[(GPT-2 name, [(state-dict key, parameter or None, column slice or None,
    transposed)])] for the book's GPTModel ``model``."""
    try:
        blocks = list(model.trf_blocks)
        plan = [("wte", [("tok_emb.weight", model.tok_emb.weight, None, False)]),
                ("wpe", [("pos_emb.weight", model.pos_emb.weight, None, False)])]
        for i, block in enumerate(blocks):
            att, ff, p = block.att, block.ff.layers, f"trf_blocks.{i}."
            emb = att.W_query.in_features
            thirds = [slice(k * emb, (k + 1) * emb) for k in range(3)]
            qkv = [("W_query", att.W_query), ("W_key", att.W_key), ("W_value", att.W_value)]
            plan += [
                (f"h{i}/ln_1/g", [(p + "norm1.scale", block.norm1.scale, None, False)]),
                (f"h{i}/ln_1/b", [(p + "norm1.shift", block.norm1.shift, None, False)]),
                (f"h{i}/attn/c_attn/w", [(f"{p}att.{name}.weight", layer.weight, cols, True)
                                         for (name, layer), cols in zip(qkv, thirds)]),
                (f"h{i}/attn/c_attn/b", [(f"{p}att.{name}.bias", layer.bias, cols, False)
                                         for (name, layer), cols in zip(qkv, thirds)]),
                (f"h{i}/attn/c_proj/w", [(p + "att.out_proj.weight", att.out_proj.weight,
                                          None, True)]),
                (f"h{i}/attn/c_proj/b", [(p + "att.out_proj.bias", att.out_proj.bias,
                                          None, False)]),
                (f"h{i}/ln_2/g", [(p + "norm2.scale", block.norm2.scale, None, False)]),
                (f"h{i}/ln_2/b", [(p + "norm2.shift", block.norm2.shift, None, False)]),
                (f"h{i}/mlp/c_fc/w", [(p + "ff.layers.0.weight", ff[0].weight, None, True)]),
                (f"h{i}/mlp/c_fc/b", [(p + "ff.layers.0.bias", ff[0].bias, None, False)]),
                (f"h{i}/mlp/c_proj/w", [(p + "ff.layers.2.weight", ff[2].weight, None, True)]),
                (f"h{i}/mlp/c_proj/b", [(p + "ff.layers.2.bias", ff[2].bias, None, False)]),
            ]
        plan += [("ln_f/g", [("final_norm.scale", model.final_norm.scale, None, False)]),
                 ("ln_f/b", [("final_norm.shift", model.final_norm.shift, None, False)])]
        if model.out_head.weight is not model.tok_emb.weight:
            plan.append((LM_HEAD, [("out_head.weight", model.out_head.weight, None, False)]))
    except (AttributeError, IndexError, TypeError) as exc:
        raise TypeError(f"expected the book's GPTModel (tok_emb, pos_emb, trf_blocks of "
                        f"TransformerBlock, final_norm, out_head), got {type(model).__name__} "
                        f"({exc})") from None
    return plan


def _source_shape(targets):
    """The shape the GPT-2 tensor must have to fill ``targets`` (absent query, key
    and value biases are the columns of c_attn/b)."""
    _, param, cols, transposed = targets[0]
    shape = () if param is None else param.shape[::-1] if transposed else param.shape
    if cols is not None:
        shape = shape[:-1] + (sum(c.stop - c.start for _, _, c, _ in targets),)
    return tuple(shape)


def _copy_transposed(target, source):
    """target[...] = source.T, one square tile at a time."""
    rows, cols = target.shape
    for r in range(0, rows, _TILE):
        for c in range(0, cols, _TILE):
            np.copyto(target[r:r + _TILE, c:c + _TILE], source[c:c + _TILE, r:r + _TILE].T)


def load_gpt2_tensors(model, source, where):
    """Fill ``model`` (the book's GPTModel, with query/key/value biases) from
    ``source``, an object with ``shape(name)`` (a tuple, or None when the tensor
    is absent) and ``mapped(name)`` (a context manager giving a read-only array
    of that shape) for the GPT-2 names above. ``where`` names the source in
    errors (a file, or "params"). Every name and shape is checked before any
    parameter changes; a mismatch raises CheckpointFormatError (a ValueError).
    """
    plan = _plan(model)
    for name, targets in plan:
        for key, param, _, _ in targets:
            if param is None:
                raise ValueError(f"{key} is None: GPT-2 has query, key and value biases, so "
                                 "build the GPTModel with qkv_bias=True (as the book does "
                                 "with NEW_CONFIG.update({'qkv_bias': True}))")
            if not param.flags.writeable:
                dtype = param.inference_dtype
                raise RuntimeError(f"{key!r} is stored in {dtype} for inference "
                                   f"(to_dtype({dtype!r})); call to_dtype('float32') before "
                                   "loading weights")
        shape = source.shape(name)
        expected = _source_shape(targets)
        if shape is None:
            raise CheckpointFormatError(f"{where}: the tensor {name} is missing (the model "
                                        f"needs it with shape {expected})")
        if tuple(shape) != expected:
            raise CheckpointFormatError(
                f"{where}: {name} has shape {tuple(shape)}, the model needs {expected} for "
                + ", ".join(key for key, _, _, _ in targets))
    for name, targets in plan:
        with source.mapped(name) as array:
            for _, param, cols, transposed in targets:
                part = array[..., cols] if cols is not None else array
                if transposed:
                    _copy_transposed(param, part)
                else:
                    np.copyto(param, part)


def gpt2_tensors(model):
    """The GPT-2 tensors of ``model``, in order: (name, shape, make) where make()
    returns the float32 array. A model without query/key/value biases (the
    book's default qkv_bias=False) gets zero c_attn biases, which compute the
    same; a model whose head is tied has no lm_head."""
    for name, targets in _plan(model):
        yield name, _source_shape(targets), lambda targets=targets: _assemble(targets)


def _assemble(targets):
    array = np.zeros(_source_shape(targets), np.float32)
    for _, param, cols, transposed in targets:
        if param is None:
            continue
        part = array[..., cols] if cols is not None else array
        part[...] = param.T if transposed else param
    return array
