"""The chapter-4 GPT model: the book's classes, with the book's names.

Reading order, as in the chapter: ``DummyGPTModel`` (4.1), ``LayerNorm`` and
``GELU`` (layers.py), ``FeedForward`` (4.3), ``MultiHeadAttention`` (from
chapter 3), ``TransformerBlock`` (4.5), ``GPTModel`` (4.6).

Every module can be called on its own; ``GPTModel.forward`` runs the whole
network in one C call (csrc/model.c) that reads the weights where these
modules hold them.
"""
import warnings

import numpy as np

from .. import _C
from .._convert import as_float32, as_token_ids
from ..autograd import Tensor, data_of, recording
from ..config import check_config
from ..random import default_generator
from . import functional as F
from .hooks import has_hooks, has_own_hooks
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear
from .module import Module, Sequential

__all__ = ["MultiHeadAttention", "FeedForward", "TransformerBlock", "GPTModel",
           "DummyGPTModel", "DummyTransformerBlock", "DummyLayerNorm"]


def _causal_mask(context_length):
    """The upper-triangular mask of the book (1 above the diagonal: the
    future a token may not see). The C attention applies causality itself,
    so the array is informational; it is shared read-only between the
    blocks of a model instead of one copy per block."""
    mask = np.triu(np.ones((context_length, context_length), np.float32), k=1)
    mask.flags.writeable = False
    return mask


_mask_cache = {}


def _shared_causal_mask(context_length):
    mask = _mask_cache.get(context_length)
    if mask is None:
        mask = _mask_cache[context_length] = _causal_mask(context_length)
    return mask


def _dropout_p(dropout):
    """The probability a Dropout module applies now (0 in eval mode)."""
    return dropout.p if dropout.training else 0.0


def _stored(weight):
    """What the C forward reads for a Linear weight: its copy after
    ``to_dtype("bfloat16")`` (uint16 bits) or ``to_dtype("int8")`` (an
    Int8Weight), else the float32 parameter."""
    return weight if weight.inference_copy is None else weight.inference_copy


def _check_input(x, name, ndim, last_dim):
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if x.shape[-1] != last_dim:
        raise ValueError(f"{name} has shape {x.shape}: its last dimension must be "
                         f"{last_dim}")


class MultiHeadAttention(Module):
    """Causal multi-head self-attention (chapter 3; csrc/attention.c).

    ``W_query``, ``W_key``, ``W_value`` project the (batch, num_tokens, d_in)
    input to d_out features, split into ``num_heads`` heads of ``head_dim``;
    each position attends to itself and the positions before it (``mask``
    marks the rest); the weights pass through ``dropout`` in training mode;
    the heads are merged and projected by ``out_proj``.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        for arg, value in (("d_in", d_in), ("d_out", d_out), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        if not isinstance(context_length, int) or context_length <= 0:
            raise ValueError(f"context_length must be a positive integer, got "
                             f"{context_length!r}")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.W_query = Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = Linear(d_out, d_out)
        self.dropout = Dropout(dropout)
        self.register_buffer("mask", _shared_causal_mask(context_length))

    def forward(self, x):
        """(batch, num_tokens, d_in) -> (batch, num_tokens, d_out). Any real-valued
        array-like is accepted and converted to contiguous float32."""
        if not isinstance(x, Tensor):
            x = as_float32(x)
        _check_input(x, "input", 3, self.W_query.in_features)
        if x.shape[1] > self.context_length:
            raise ValueError(f"input holds {x.shape[1]} tokens, more than context_length "
                             f"{self.context_length}")
        hooked = has_hooks(self)
        if hooked and has_own_hooks(self.dropout):
            warnings.warn("a hook on MultiHeadAttention.dropout is not called: gptc applies "
                          "the attention dropout inside its C kernel (gptc.attention_weights"
                          "(model, idx) returns the attention weights)", stacklevel=2)
        if hooked or recording(x, *self.parameters()):
            # Step by step, so that backward can run through each part and
            # the hooks of the projections fire.
            queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
            context = F.causal_attention(queries, keys, values, self.num_heads,
                                         _dropout_p(self.dropout))
            return self.out_proj(context)
        return _C.multihead_attention(
            x, _stored(self.W_query.weight), self.W_query.bias, _stored(self.W_key.weight),
            self.W_key.bias, _stored(self.W_value.weight), self.W_value.bias,
            _stored(self.out_proj.weight), self.out_proj.bias, self.num_heads,
            _dropout_p(self.dropout), default_generator)


class FeedForward(Module):
    """Linear(emb_dim, 4 * emb_dim) -> GELU -> Linear(4 * emb_dim, emb_dim) (section 4.3)."""

    def __init__(self, cfg):
        super().__init__()
        check_config(cfg, ("emb_dim",))
        self.layers = Sequential(
            Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(Module):
    """Pre-norm transformer block (section 4.5)::

        x = x + drop_shortcut(att(norm1(x)))
        x = x + drop_shortcut(ff(norm2(x)))
    """

    def __init__(self, cfg):
        super().__init__()
        check_config(cfg)
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"])
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = Dropout(cfg["drop_rate"])

    def forward(self, x):
        shortcut = x if isinstance(x, Tensor) else as_float32(x)
        x = self.norm1(shortcut)
        x = self.att(x)
        x = self.drop_shortcut(x)
        x = x + shortcut

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        x = x + shortcut
        return x


def _check_in_idx(in_idx, context_length, vocab_size, name="in_idx"):
    """Token ids as a (batch, seq_len) int64 array, or a clear error naming ``name``."""
    in_idx = as_token_ids(in_idx, name=name, ndim=2)
    batch, seq_len = in_idx.shape
    if batch == 0 or seq_len == 0:
        raise ValueError(f"{name} has shape {in_idx.shape}: the batch and the sequence "
                         "must each hold at least one token")
    if seq_len > context_length:
        raise ValueError(f"{name} holds sequences of {seq_len} tokens, longer than the "
                         f"context_length {context_length} (crop it to the last "
                         "context_length tokens, as generate_text_simple does)")
    bad = (in_idx < 0) | (in_idx >= vocab_size)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise IndexError(f"{name} contains token id {int(in_idx.flat[pos])} at flat position "
                         f"{pos}, outside the vocabulary: ids must be in [0, {vocab_size}) for "
                         f"vocab_size {vocab_size}")
    return in_idx


def _forward_through_modules(model, in_idx):
    """The book's GPT forward, one module call after another (GPTModel when it
    records gradients or was customised, and DummyGPTModel)."""
    seq_len = in_idx.shape[1]
    tok_embeds = model.tok_emb(in_idx)
    pos_embeds = model.pos_emb(np.arange(seq_len))
    x = tok_embeds + pos_embeds
    x = model.drop_emb(x)
    x = model.trf_blocks(x)
    x = model.final_norm(x)
    return model.out_head(x)


def _is_book_block(block, emb_dim, n_heads):
    """True if ``block`` is exactly the book's TransformerBlock, so the one-call
    C forward computes what calling its submodules would."""
    if type(block) is not TransformerBlock:
        return False
    att, ff = block.att, block.ff
    layers = getattr(ff, "layers", None)
    return (type(att) is MultiHeadAttention and att.num_heads == n_heads
            and att.d_out == emb_dim and att.W_query.in_features == emb_dim
            and all(type(m) is Linear for m in (att.W_query, att.W_key, att.W_value,
                                                att.out_proj))
            and type(att.dropout) is Dropout
            and type(ff) is FeedForward and type(layers) is Sequential and len(layers) == 3
            and type(layers[0]) is Linear and type(layers[1]) is GELU
            and type(layers[2]) is Linear
            and type(block.norm1) is LayerNorm and type(block.norm2) is LayerNorm
            and type(block.drop_shortcut) is Dropout)


class GPTModel(Module):
    """The GPT model of section 4.6.

    Token ids (batch, seq_len) -> logits (batch, seq_len, vocab_size)::

        x = drop_emb(tok_emb(in_idx) + pos_emb(arange(seq_len)))
        x = trf_blocks(x); x = final_norm(x); logits = out_head(x)

    ``GPTModel(cfg, tie_weights=True)`` makes ``out_head`` share the token
    embedding's weight array, as GPT-2 did (124,412,160 parameters instead
    of 163,009,536 for GPT_CONFIG_124M). The weights are drawn exactly as the
    book's constructor draws them either way.
    """

    def __init__(self, cfg, tie_weights=False):
        super().__init__()
        check_config(cfg)
        self.tok_emb = Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = Dropout(cfg["drop_rate"])
        self.trf_blocks = Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if tie_weights:
            self.out_head.weight = self.tok_emb.weight

    @classmethod
    def from_pretrained(cls, path):
        """A GPTModel (in eval mode) from a Hugging Face GPT-2 directory: config.json
        and model.safetensors as ``GPT2LMHeadModel.save_pretrained`` writes them
        (gptc/huggingface.py)."""
        from ..huggingface import from_pretrained
        return from_pretrained(path, cls)

    def save_pretrained(self, path):
        """Write this model to the directory ``path`` in Hugging Face's GPT-2
        layout, which ``transformers.GPT2LMHeadModel.from_pretrained`` opens."""
        from ..huggingface import save_pretrained
        save_pretrained(self, path)

    def _is_book_model(self):
        """True if every submodule is still the book's (hooks aside): what the
        one-call C forward computes and GPT-2's file layout describes."""
        emb_dim = self.tok_emb.embedding_dim
        blocks = self.trf_blocks
        if not (type(self.tok_emb) is Embedding and type(self.pos_emb) is Embedding
                and type(self.drop_emb) is Dropout and type(blocks) is Sequential
                and type(self.final_norm) is LayerNorm and type(self.out_head) is Linear
                and self.pos_emb.embedding_dim == emb_dim and len(blocks) > 0):
            return False
        n_heads = blocks[0].att.num_heads if type(blocks[0]) is TransformerBlock else 0
        return all(_is_book_block(block, emb_dim, n_heads) for block in blocks)

    def _one_call_arguments(self):
        """The weights in the order gptc._C.gpt_forward takes them, or None if
        a submodule was replaced by something the C forward does not know, or
        if a module of the model has a hook (the C forward would skip it)."""
        if has_hooks(self) or not self._is_book_model():
            return None
        blocks = self.trf_blocks
        n_heads = blocks[0].att.num_heads
        block_args = []
        for block in blocks:
            att, ff = block.att, block.ff.layers
            block_args.append((
                block.norm1.scale, block.norm1.shift, block.norm1.eps,
                _stored(att.W_query.weight), att.W_query.bias, _stored(att.W_key.weight),
                att.W_key.bias, _stored(att.W_value.weight), att.W_value.bias,
                _stored(att.out_proj.weight), att.out_proj.bias,
                _dropout_p(att.dropout),
                block.norm2.scale, block.norm2.shift, block.norm2.eps,
                _stored(ff[0].weight), ff[0].bias, _stored(ff[2].weight), ff[2].bias,
                _dropout_p(block.drop_shortcut)))
        return (self.tok_emb.weight, self.pos_emb.weight, block_args,
                self.final_norm.scale, self.final_norm.shift, self.final_norm.eps,
                _stored(self.out_head.weight), self.out_head.bias, n_heads,
                _dropout_p(self.drop_emb), default_generator)

    def forward(self, in_idx):
        """Logits (batch, seq_len, vocab_size), float32, for integer token ids
        of shape (batch, seq_len) with seq_len <= context_length.

        Ids of any integer dtype and any memory layout are accepted (converted
        to contiguous int64 once); float ids raise TypeError, ids outside
        [0, vocab_size) raise IndexError naming the id.

        Without hooks and without recording gradients this is one C call.
        While a forward hook or pre-hook is registered on the model or any
        module in it (``register_forward_hook``), the modules are called one
        by one instead, as while recording, so that every hook fires (under
        ``no_grad`` too); the logits are the same either way."""
        in_idx = _check_in_idx(data_of(in_idx), self.pos_emb.num_embeddings,
                               self.tok_emb.num_embeddings)
        if not recording(*self.parameters()):
            args = self._one_call_arguments()
            if args is not None:
                return _C.gpt_forward(in_idx, *args)
        # Recording gradients, hooks, or a customised model: run the modules
        # one by one, as the book writes it.
        return _forward_through_modules(self, in_idx)


class DummyTransformerBlock(Module):
    """The placeholder block of section 4.1: returns its input unchanged."""

    def __init__(self, cfg):
        super().__init__()

    def forward(self, x):
        return x


class DummyLayerNorm(Module):
    """The placeholder layer norm of section 4.1: returns its input unchanged."""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()

    def forward(self, x):
        return x


class DummyGPTModel(Module):
    """The placeholder GPT of section 4.1: embeddings, dropout, placeholder
    blocks and norm, output head. It already turns (batch, seq_len) token ids
    into (batch, seq_len, vocab_size) logits."""

    def __init__(self, cfg):
        super().__init__()
        check_config(cfg, ("vocab_size", "context_length", "emb_dim", "n_layers", "drop_rate"))
        self.tok_emb = Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = Dropout(cfg["drop_rate"])
        self.trf_blocks = Sequential(*[DummyTransformerBlock(cfg)
                                       for _ in range(cfg["n_layers"])])
        self.final_norm = DummyLayerNorm(cfg["emb_dim"])
        self.out_head = Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        in_idx = _check_in_idx(data_of(in_idx), self.pos_emb.num_embeddings,
                               self.tok_emb.num_embeddings)
        return _forward_through_modules(self, in_idx)
