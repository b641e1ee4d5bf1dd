"""The attention maps of a GPTModel: which earlier tokens each token looks at.

``attention_weights(model, idx)`` runs the model's embeddings and transformer
blocks on ``idx`` and, as each block's ``MultiHeadAttention`` is called,
computes from that very input the softmax weights the book's
``MultiHeadAttention`` calls ``attn_weights``: the query and key projections
(csrc/matmul.c) and the causal softmax of their scaled products
(``gptc_attention_weights`` in csrc/attention.c, the weights the training
kernel multiplies the values by).
"""
import numpy as np

from .autograd import no_grad
from .nn import functional as F
from .nn.gpt import GPTModel, MultiHeadAttention, _check_in_idx

__all__ = ["attention_weights"]


def _attention_modules(model):
    """The MultiHeadAttention of every block of ``model``, first block first."""
    modules = []
    for i, block in enumerate(model.trf_blocks):
        att = getattr(block, "att", None)
        if not isinstance(att, MultiHeadAttention):
            raise TypeError(f"attention_weights needs the book's blocks: trf_blocks[{i}] is a "
                            f"{type(block).__name__} without a MultiHeadAttention as .att")
        modules.append(att)
    return modules


def _check_eval_mode(model):
    in_training = [name or "the model" for name, m in model.named_modules() if m.training]
    if in_training:
        raise RuntimeError(f"attention_weights needs the model in eval mode, but "
                           f"{in_training[0]} is in training mode: call model.eval() first "
                           "(in training mode dropout would change the weights at every call)")


def attention_weights(model, idx):
    """The softmax attention weights of every block and head of ``model`` for
    the token ids ``idx``: a float32 array of shape (n_layers, batch,
    n_heads, seq_len, seq_len).

    ``weights[l, b, h, i, j]`` is how much token i of sequence b attends to
    token j in head h of block l: each row sums to 1 and is 0 above the
    diagonal (a token sees only itself and the tokens before it). They are
    the ``attn_weights`` of the book's ``MultiHeadAttention`` in eval mode.

    ``model`` must be a GPTModel in eval mode (``model.eval()``), its
    weights float32, bfloat16 or int8 (``to_dtype``); ``idx`` a (batch, seq_len)
    integer array with seq_len <= context_length and ids in [0, vocab_size).
    Nothing is recorded for gradients. The model's hooks on its blocks and
    their modules fire as in a forward pass; ``final_norm`` and
    ``out_head`` are not run.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"model must be a gptc.GPTModel, got {type(model).__name__}")
    attention = _attention_modules(model)
    _check_eval_mode(model)
    idx = _check_in_idx(idx, model.pos_emb.num_embeddings, model.tok_emb.num_embeddings,
                        name="idx")
    batch, seq_len = idx.shape
    n_heads = {att.num_heads for att in attention}
    if len(n_heads) != 1:
        raise ValueError(f"the blocks of model have different numbers of heads "
                         f"{sorted(n_heads)}: the weights do not fit in one array")
    weights = np.empty((len(attention), batch, n_heads.pop(), seq_len, seq_len), np.float32)
    filled = []

    def record(att, args):
        # args[0] is what the block hands its attention: norm1 of the block input.
        if len(filled) == len(weights):
            raise RuntimeError("a MultiHeadAttention of model was called more often than "
                               f"the {len(weights)} blocks call their own")
        x = args[0]
        q = F.linear(x, att.W_query.weight, att.W_query.bias)
        k = F.linear(x, att.W_key.weight, att.W_key.bias)
        weights[len(filled)] = F.attention_weights(q, k, att.num_heads)
        filled.append(att)

    handles = [att.register_forward_pre_hook(record) for att in dict.fromkeys(attention)]
    try:
        with no_grad():
            x = model.tok_emb(idx) + model.pos_emb(np.arange(seq_len))
            model.trf_blocks(model.drop_emb(x))
    finally:
        for handle in handles:
            handle.remove()
    if len(filled) != len(weights):
        raise RuntimeError(f"the {len(weights)} blocks of model called their attention "
                           f"{len(filled)} times, not once each")
    return weights
