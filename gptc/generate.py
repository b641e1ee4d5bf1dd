"""Greedy text generation, as ``generate_text_simple`` of section 4.7."""
import numpy as np

from . import _C
from ._convert import as_token_ids
from .autograd import no_grad

__all__ = ["generate_text_simple"]


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Append ``max_new_tokens`` greedily chosen tokens to ``idx`` (batch, n_tokens).

    At each step the model sees at most the last ``context_size`` tokens,
    the last position's logits become probabilities (softmax) and the most
    likely token is appended. Returns an int64 array (batch, n_tokens +
    max_new_tokens). Like the book's function it recomputes the whole
    context at every step.
    """
    idx = as_token_ids(idx, name="idx", ndim=2)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if isinstance(context_size, bool) or not isinstance(context_size, (int, np.integer)) \
            or context_size <= 0:
        raise ValueError(f"context_size must be a positive integer, got {context_size!r}")
    for _ in range(int(max_new_tokens)):
        idx_cond = idx[:, -context_size:]
        with no_grad():
            logits = np.asarray(model(idx_cond))
        logits = np.ascontiguousarray(logits[:, -1, :], dtype=np.float32)
        probas = _C.softmax(logits)
        idx_next = np.argmax(probas, axis=-1).astype(np.int64)[:, None]
        idx = np.concatenate((idx, idx_next), axis=1)
    return idx
