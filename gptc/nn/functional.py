"""Layer operations as functions, as ``torch.nn.functional``.

Each function calls the C forward. While gradients are recorded (see
gptc.autograd) it returns a Tensor whose backward calls the matching C
backward kernel; parameter gradients are accumulated straight into
``param.grad`` by that kernel. Otherwise it returns a plain NumPy array.
"""
import numpy as np

from .. import _C
from .._convert import as_float32, as_token_ids
from ..autograd import Tensor, data_of, grad_buffer, recording
from ..random import default_generator

__all__ = ["linear", "layer_norm", "gelu", "relu", "dropout", "embedding",
           "causal_attention", "attention_weights", "attention_context", "softmax",
           "cross_entropy", "mse_loss"]


def _needs(x):
    return bool(getattr(x, "requires_grad", False))


def _zeros_if(needed, like):
    return _C.zeros(like.shape) if needed else None


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` (csrc/matmul.c); with a weight kept in
    bfloat16 or int8 (``Module.to_dtype``), the product reads that copy."""
    x = as_float32(data_of(input))
    copy = getattr(weight, "inference_copy", None)
    if copy is not None:
        out = _C.linear(x, copy, bias)
        if not recording(input, weight, bias):
            return out
        dtype = weight.inference_dtype

        def inference_only(dout):
            raise RuntimeError(f"this Linear layer's weight is stored in {dtype} for "
                               f"inference (to_dtype({dtype!r})); call to_dtype('float32') "
                               "before computing gradients")
        return Tensor(out, parents=(input,), backward=inference_only, op="LinearBackward")
    out = _C.linear(x, weight, bias)
    if not recording(input, weight, bias):
        return out

    def backward(dout):
        dinp = _zeros_if(_needs(input), x)
        _C.linear_backward(dout, x, weight, dinp, grad_buffer(weight),
                           grad_buffer(bias) if bias is not None else None)
        return (dinp,)
    return Tensor(out, parents=(input,), backward=backward, op="LinearBackward")


def layer_norm(input, scale, shift, eps=1e-5):
    """The book's LayerNorm over the last axis (csrc/layernorm.c)."""
    x = as_float32(data_of(input))
    out = _C.layer_norm(x, scale, shift, eps)
    if not recording(input, scale, shift):
        return out

    def backward(dout):
        dinp = _zeros_if(_needs(input), x)
        _C.layer_norm_backward(dout, x, scale, eps, dinp, grad_buffer(scale), grad_buffer(shift))
        return (dinp,)
    return Tensor(out, parents=(input,), backward=backward, op="LayerNormBackward")


def _elementwise(input, forward, backward_kernel, op):
    x = as_float32(data_of(input))
    out = forward(x)
    if not recording(input):
        return out

    def backward(dout):
        dinp = _C.zeros(x.shape)
        backward_kernel(dout, x, dinp)
        return (dinp,)
    return Tensor(out, parents=(input,), backward=backward, op=op)


def gelu(input):
    """GELU, tanh approximation (csrc/gelu.c)."""
    return _elementwise(input, _C.gelu, _C.gelu_backward, "GeluBackward")


def relu(input):
    """max(0, x) (csrc/gelu.c)."""
    return _elementwise(input, _C.relu, _C.relu_backward, "ReluBackward")


def dropout(input, p=0.5, training=True):
    """Inverted dropout with PyTorch's masks (csrc/dropout.c); identity when
    not training or p == 0."""
    x = as_float32(data_of(input))
    if not training or p == 0:
        return input if isinstance(input, Tensor) else x
    if not recording(input):
        return _C.dropout(x, p, default_generator)
    out, noise = _C.dropout_train(x, p, default_generator)

    def backward(dout):
        dinp = _C.zeros(x.shape)
        _C.dropout_backward(dout, noise, dinp)
        return (dinp,)
    return Tensor(out, parents=(input,), backward=backward, op="DropoutBackward")


def embedding(input, weight):
    """Rows of ``weight`` for integer ids (csrc/embedding.c)."""
    idx = as_token_ids(data_of(input), name="input")
    out = _C.embedding(idx, weight)
    if not recording(weight):
        return out

    def backward(dout):
        _C.embedding_backward(dout, idx, grad_buffer(weight))
        return ()
    return Tensor(out, parents=(), backward=backward, op="EmbeddingBackward")


def causal_attention(queries, keys, values, num_heads, dropout_p=0.0):
    """Causal scaled dot-product attention over heads (csrc/attention.c):
    (batch, tokens, d_out) queries/keys/values -> (batch, tokens, d_out).
    Uses the training kernel, which also returns the attention weights; for
    inference MultiHeadAttention calls the one-call C module instead."""
    q, k, v = (as_float32(data_of(t)) for t in (queries, keys, values))
    if not recording(queries, keys, values):
        out, _, _ = _C.attention_train(q, k, v, num_heads, dropout_p, default_generator)
        return out
    out, att, noise = _C.attention_train(q, k, v, num_heads, dropout_p, default_generator)

    def backward(dout):
        dq, dk, dv = (_zeros_if(_needs(t), a) for t, a in ((queries, q), (keys, k), (values, v)))
        _C.attention_backward(dout, q, k, v, att, noise, num_heads, dq, dk, dv)
        return (dq, dk, dv)
    return Tensor(out, parents=(queries, keys, values), backward=backward,
                  op="AttentionBackward")


def attention_weights(queries, keys, num_heads):
    """The causal softmax weights of every head, the book's ``attn_weights``
    before dropout (csrc/attention.c): (batch, tokens, d_out) queries and keys
    -> (batch, num_heads, tokens, tokens), each row summing to 1 and zero
    above the diagonal. The first half of ``causal_attention``; with
    ``attention_context`` it lets a module act on the weights in between."""
    q, k = (as_float32(data_of(t)) for t in (queries, keys))
    att = _C.attention_weights(q, k, num_heads)
    if not recording(queries, keys):
        return att

    def backward(datt):
        dq, dk = (_zeros_if(_needs(t), a) for t, a in ((queries, q), (keys, k)))
        _C.attention_weights_backward(datt, q, k, att, num_heads, dq, dk)
        return (dq, dk)
    return Tensor(att, parents=(queries, keys), backward=backward,
                  op="AttentionWeightsBackward")


def attention_context(weights, values, num_heads):
    """``weights @ values`` for every head, the heads merged back
    (csrc/attention.c): (batch, num_heads, tokens, tokens) weights and
    (batch, tokens, d_out) values -> (batch, tokens, d_out), ready for
    ``out_proj``. Every entry of ``weights`` counts, above the diagonal too."""
    w, v = (as_float32(data_of(t)) for t in (weights, values))
    out = _C.attention_context(w, v, num_heads)
    if not recording(weights, values):
        return out

    def backward(dout):
        dw, dv = (_zeros_if(_needs(t), a) for t, a in ((weights, w), (values, v)))
        _C.attention_context_backward(dout, w, v, num_heads, dw, dv)
        return (dw, dv)
    return Tensor(out, parents=(weights, values), backward=backward,
                  op="AttentionContextBackward")


def softmax(input):
    """Softmax over the last axis (csrc/softmax.c); not differentiable here."""
    if recording(input):
        raise TypeError("softmax is not differentiable in gptc (use cross_entropy on the "
                        "logits for training)")
    return _C.softmax(as_float32(data_of(input)))


def cross_entropy(input, target):
    """Mean cross-entropy of logits (N, V) against integer targets (N,), as
    ``torch.nn.functional.cross_entropy`` (csrc/loss.c). Returns a one-element
    Tensor (call ``.item()`` for the number, ``.backward()`` to train)."""
    logits = as_float32(data_of(input))
    targets = as_token_ids(data_of(target), name="target")
    losses = _C.cross_entropy(logits, targets)
    if losses.shape[0] == 0:
        raise ValueError("cross_entropy of an empty batch is undefined")
    loss = np.float32(losses.mean(dtype=np.float64))
    if not recording(input):
        return Tensor(loss)

    def backward(dout):
        dlosses = np.full(losses.shape, dout / losses.shape[0], np.float32)
        dlogits = _C.zeros(logits.shape)
        _C.cross_entropy_backward(dlosses, logits, targets, dlogits)
        return (dlogits,)
    return Tensor(loss, parents=(input,), backward=backward, op="NllLossBackward")


def mse_loss(input, target):
    """Mean squared error, as ``torch.nn.functional.mse_loss`` (csrc/loss.c)."""
    pred = as_float32(data_of(input))
    tgt = np.broadcast_to(as_float32(data_of(target)), pred.shape)
    diff = pred.astype(np.float64) - tgt
    loss = np.float32(np.mean(diff * diff))
    if not recording(input):
        return Tensor(loss)
    tgt = np.ascontiguousarray(tgt)

    def backward(dout):
        dpred = _C.zeros(pred.shape)
        _C.mse_backward(pred, tgt, float(dout) / pred.size, dpred)
        return (dpred,)
    return Tensor(loss, parents=(input,), backward=backward, op="MseLossBackward")
