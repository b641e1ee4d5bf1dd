"""Text generation: ``generate_text_simple`` of section 4.7 and ``generate`` of
chapter 5 (top-k, temperature, end-of-sequence), the latter with a KV cache
(and ``generate_stream``, its tokens step by step)."""
import numpy as np

from . import _C
from ._convert import as_token_ids
from .autograd import no_grad
from .random import default_generator

__all__ = ["generate_text_simple", "generate", "generate_stream"]


def _check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "non-negative" if minimum == 0 else "positive"
        raise ValueError(f"{name} must be a {what} integer, got {value!r}")
    return int(value)


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Append ``max_new_tokens`` greedily chosen tokens to ``idx`` (batch, n_tokens).

    At each step the model sees at most the last ``context_size`` tokens,
    the last position's logits become probabilities (softmax) and the most
    likely token is appended. Returns an int64 array (batch, n_tokens +
    max_new_tokens). Like the book's function it recomputes the whole
    context at every step (``generate`` is the fast way, with a KV cache).
    """
    idx = as_token_ids(idx, name="idx", ndim=2)
    max_new_tokens = _check_count(max_new_tokens, "max_new_tokens", 0)
    context_size = _check_count(context_size, "context_size", 1)
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with no_grad():
            logits = np.asarray(model(idx_cond))
        logits = np.ascontiguousarray(logits[:, -1, :], dtype=np.float32)
        probas = _C.softmax(logits)
        idx_next = np.argmax(probas, axis=-1).astype(np.int64)[:, None]
        idx = np.concatenate((idx, idx_next), axis=1)
    return idx


def _check_generate_args(model, idx, max_new_tokens, context_size, temperature, top_k, eos_id):
    idx = as_token_ids(idx, name="idx", ndim=2)
    if idx.shape[0] == 0 or idx.shape[1] == 0:
        raise ValueError(f"idx has shape {idx.shape}: the batch and the prompt must each hold "
                         "at least one token")
    max_new_tokens = _check_count(max_new_tokens, "max_new_tokens", 0)
    context_size = _check_count(context_size, "context_size", 1)
    pos_emb = getattr(model, "pos_emb", None)
    context_length = getattr(pos_emb, "num_embeddings", None)
    if context_length is not None and context_size > context_length:
        raise ValueError(f"context_size must be at most the model's context_length "
                         f"{context_length}, got {context_size}")
    tok_emb = getattr(model, "tok_emb", None)
    vocab_size = getattr(tok_emb, "num_embeddings", None)
    if vocab_size is not None:
        # all of the prompt, also what a window will crop away
        _C.check_in_idx(idx, vocab_size, "idx")
    temperature, top_k = _C.check_sampling(temperature, top_k, vocab_size)
    if eos_id is not None:
        if isinstance(eos_id, bool) or not isinstance(eos_id, (int, np.integer)) or eos_id < 0 \
                or (vocab_size is not None and eos_id >= vocab_size):
            raise ValueError(f"eos_id must be None or a token id in [0, {vocab_size}), "
                             f"got {eos_id!r}")
        eos_id = int(eos_id)
    if getattr(model, "training", False):
        raise RuntimeError("generate() runs the model for inference: put it in eval mode "
                           "first (model.eval()); in training mode dropout would change "
                           "every step")
    return idx, max_new_tokens, context_size, temperature, top_k, eos_id


def _cached_decoder(model, batch, capacity):
    """A KV-cache decoder for ``model``, or None when the one-call C forward
    does not apply (a customised GPTModel, one with hooks, or another kind
    of model)."""
    arguments = getattr(model, "_one_call_arguments", None)
    args = arguments() if arguments is not None else None
    if args is None:
        return None
    return _C.Decoder(**args, batch=batch, capacity=capacity)


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None,
             eos_id=None):
    """Chapter 5's ``generate``: append up to ``max_new_tokens`` tokens to ``idx``
    (batch, n_tokens) and return the int64 array (batch, n_tokens + generated).

    Each step looks at most at the last ``context_size`` tokens and takes the
    last position's logits. With ``top_k``, logits below the ``top_k``-th
    largest become -inf. With ``temperature > 0`` the logits are divided by it
    and the token is sampled from their softmax, drawing from
    ``gptc.default_generator`` (so ``gptc.manual_seed`` makes it repeatable;
    the tokens follow the same distribution as the book's torch.multinomial,
    not the same draws); ``temperature == 0`` takes the argmax (greedy, the
    same tokens as ``generate_text_simple``).

    ``eos_id``: generation stops at the step where a row produces ``eos_id``,
    and that step's tokens are not appended, as in the book. With several
    rows, it stops when every row has produced ``eos_id``; a row that
    finished earlier is padded with ``eos_id`` until then.

    The model must be in eval mode (RuntimeError otherwise). A GPTModel runs
    with a KV cache: the prompt is run once (prefill), keeping every layer's
    keys and values, then each new token is one step that attends over the
    cache. When the sequence outgrows ``context_size``, the window is
    cropped to its last ``context_size`` tokens and run again from position
    0, exactly what recomputing ``model(idx[:, -context_size:])`` sees. A
    model whose submodules were replaced or that has forward hooks (or any
    other model) is simply called on ``idx[:, -context_size:]`` at every
    step instead. Either way the model runs without recording gradients,
    as under torch.no_grad(). ``generate_stream`` gives the same tokens one
    step at a time.
    """
    for seq, length in _decode(model, idx, max_new_tokens, context_size, temperature, top_k,
                               eos_id):
        pass
    return seq[:, :length].copy()


def generate_stream(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None,
                    eos_id=None):
    """``generate``, one step at a time: yields each step's new tokens, an int64
    array of shape (batch,), as soon as they are chosen (e.g. to print text as
    it is produced). The arguments, checks and tokens are ``generate``'s; the
    checks run when the iteration starts."""
    steps = _decode(model, idx, max_new_tokens, context_size, temperature, top_k, eos_id)
    next(steps)                              # the checked prompt
    for seq, length in steps:
        yield seq[:, length - 1].copy()


def _decode(model, idx, max_new_tokens, context_size, temperature, top_k, eos_id):
    """Yields (seq, length) for the prompt, then after each appended step:
    ``seq[:, :length]`` is the sequence so far."""
    idx, max_new_tokens, context_size, temperature, top_k, eos_id = _check_generate_args(
        model, idx, max_new_tokens, context_size, temperature, top_k, eos_id)
    batch, n_tokens = idx.shape
    seq = np.empty((batch, n_tokens + max_new_tokens), dtype=np.int64)
    seq[:, :n_tokens] = idx
    length = n_tokens
    yield seq, length
    if max_new_tokens == 0:
        return
    # The longest input any step runs: the prompt plus all but the last new
    # token, or the window.
    capacity = min(context_size, n_tokens + max_new_tokens - 1)
    with no_grad():
        decoder = _cached_decoder(model, batch, capacity)
    finished = np.zeros(batch, dtype=bool)
    for step in range(max_new_tokens):
        window = seq[:, max(0, length - context_size):length]
        if decoder is None:
            with no_grad():
                logits = np.asarray(model(window))[:, -1, :]
            logits = np.ascontiguousarray(logits, dtype=np.float32)
        elif step > 0 and length <= context_size:
            # the cache holds positions 0 .. length - 2: add the newest token
            logits = decoder.step(np.ascontiguousarray(seq[:, length - 1]))
        else:
            # the first step, or the window slid: positions restart at 0
            logits = decoder.prefill(np.ascontiguousarray(window))
        idx_next = _C.next_tokens(logits, temperature, top_k, default_generator)
        if eos_id is not None:
            finished |= idx_next == eos_id
            if finished.all():
                break
            idx_next[finished] = eos_id
        seq[:, length] = idx_next
        length += 1
        yield seq, length
