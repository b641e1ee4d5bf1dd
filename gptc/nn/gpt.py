"""The chapter-4 GPT model: the book's classes, with the book's names.

Reading order, as in the chapter: ``DummyGPTModel`` (4.1), ``LayerNorm`` and
``GELU`` (layers.py), ``FeedForward`` (4.3), ``MultiHeadAttention`` (from
chapter 3), ``TransformerBlock`` (4.5), ``GPTModel`` (4.6).

Every module can be called on its own. Without gradients ``GPTModel.forward``
runs the whole network in one C call (csrc/model.c) that reads the weights
where these modules hold them; while recording it calls the modules one by one.
"""
import numpy as np

from .. import _C
from .._convert import as_float32, as_token_ids
from ..autograd import Tensor, data_of, recording
from ..config import check_config, check_probability
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


def _c_weights(module):
    """The arrays C reads for ``module``, under their state-dict keys: each
    parameter and buffer, a Linear weight as it is stored (``_stored``)."""
    return {key: _stored(value) if isinstance(owner, Linear) and name == "weight" else value
            for key, owner, name, value in module._state_entries()}


class MultiHeadAttention(Module):
    """Causal multi-head self-attention (chapter 3; csrc/attention.c).

    ``W_query``, ``W_key``, ``W_value`` project the (batch, num_tokens, d_in)
    input to d_out features, split into ``num_heads`` heads of ``head_dim``;
    each position attends to itself and the positions before it (``mask``
    marks the rest); the weights pass through ``dropout`` in training mode;
    the heads are merged and projected by ``out_proj``.

    The C kernels apply that dropout themselves, but while ``dropout`` has a
    forward hook or pre-hook the forward calls it as the book does, on the
    (batch, num_heads, num_tokens, num_tokens) weights, and multiplies the
    values by whatever it (or a hook) returns.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        for arg, value in (("d_in", d_in), ("d_out", d_out), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        check_probability(dropout, "dropout")
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
        # (its last dimension is checked by the binding, as every Linear's input)
        if x.ndim != 3:
            raise ValueError(f"input must have 3 dimensions, got shape {x.shape}")
        if x.shape[1] > self.context_length:
            raise ValueError(f"input holds {x.shape[1]} tokens, more than context_length "
                             f"{self.context_length}")
        if has_hooks(self) or recording(x, *self.parameters()):
            # Step by step, so that backward can run through each part and
            # the hooks of the projections fire.
            queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
            if has_own_hooks(self.dropout):
                # The book's steps, so that the dropout's hooks see the
                # weights and what they return is what multiplies the values.
                weights = F.attention_weights(queries, keys, self.num_heads)
                context = F.attention_context(self.dropout(weights), values, self.num_heads)
            else:
                context = F.causal_attention(queries, keys, values, self.num_heads,
                                             _dropout_p(self.dropout))
            return self.out_proj(context)
        weights = _c_weights(self)
        weights["dropout.p"] = _dropout_p(self.dropout)
        return _C.multihead_attention(x, weights, self.num_heads, default_generator)


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
    """Token ids as a (batch, seq_len) int64 array, checked as the one-call C
    forward checks them (a non-empty batch and sequence, seq_len <=
    context_length, ids in [0, vocab_size)), for the module-by-module forward."""
    in_idx = as_token_ids(in_idx, name=name, ndim=2)
    _C.check_in_idx(in_idx, vocab_size, name, context_length)
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
        """The model as gptc._C.gpt_forward and gptc._C.Decoder take it
        (``weights``, ``n_layers``, ``n_heads``), or None if a submodule was
        replaced by something the C forward does not know, or if a module of
        the model has a hook (the C forward would skip it).

        ``weights`` maps every state-dict key to the array C reads (a Linear
        weight as stored, see ``_stored``) and the numbers of the modules to
        their attribute names: ``trf_blocks.0.norm1.eps``, ``drop_emb.p``
        (the probability dropout applies now: 0 in eval mode) and so on."""
        if has_hooks(self) or not self._is_book_model():
            return None
        blocks = self.trf_blocks
        weights = _c_weights(self)
        weights["drop_emb.p"] = _dropout_p(self.drop_emb)
        weights["final_norm.eps"] = self.final_norm.eps
        for i, block in enumerate(blocks):
            prefix = f"trf_blocks.{i}."
            weights[prefix + "norm1.eps"] = block.norm1.eps
            weights[prefix + "att.dropout.p"] = _dropout_p(block.att.dropout)
            weights[prefix + "norm2.eps"] = block.norm2.eps
            weights[prefix + "drop_shortcut.p"] = _dropout_p(block.drop_shortcut)
        return {"weights": weights, "n_layers": len(blocks),
                "n_heads": blocks[0].att.num_heads}

    def forward(self, in_idx):
        """Logits (batch, seq_len, vocab_size), float32, for integer token ids
        of shape (batch, seq_len) with seq_len <= context_length.

        Ids of any integer dtype and any memory layout are accepted (converted
        to contiguous int64 once); float ids raise TypeError, ids outside
        [0, vocab_size) raise IndexError naming the id.

        Two paths compute the same logits:

        - recording gradients (the default, as in PyTorch, whenever a
          parameter requires them) or with a forward hook or pre-hook on the
          model or any module in it (``register_forward_hook``, under
          ``no_grad`` too): the modules are called one by one, as the book
          writes it, so that backward can run through each of them and every
          hook fires. The C behind each module is listed in the README's
          book-to-C table.
        - otherwise (under ``gptc.no_grad()``, after ``requires_grad_(False)``
          on every parameter, and in ``generate``): one C call,
          ``gptc._C.gpt_forward`` (csrc/py/py_model.c), which runs
          ``gptc_gpt_forward`` and its block loop ``forward_tokens``
          (csrc/model.c) on the weights where these modules hold them.

        A model whose submodules were replaced by other kinds of module
        always takes the first path."""
        in_idx = as_token_ids(data_of(in_idx), ndim=2)
        if not recording(*self.parameters()):
            args = self._one_call_arguments()
            if args is not None:
                return _C.gpt_forward(in_idx, generator=default_generator, **args)
        # Recording gradients, hooks, or a customised model: run the modules
        # one by one, as the book writes it.
        _check_in_idx(in_idx, self.pos_emb.num_embeddings, self.tok_emb.num_embeddings)
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
