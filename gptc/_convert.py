"""Turning user input into the arrays the C core expects.

The C functions take C-contiguous float32 activations and int64 token ids.
gptc accepts what a NumPy user naturally has (float64 arrays, lists,
strided views, read-only arrays) and converts it here, once, at the edge:
real-valued input is converted to float32 (a copy only when needed), and
anything that is not real numbers is refused with a TypeError that names
the argument.
"""
import numpy as np

__all__ = ["as_float32", "as_token_ids"]


def _aligned(arr):
    # An array viewed from a raw buffer can be contiguous but misaligned;
    # the C code reads whole floats, so such input is copied once.
    return arr if arr.flags.aligned else arr.copy()


def as_float32(x, name="input"):
    """Return ``x`` as a C-contiguous float32 array (no copy if it already is one).

    Integer and floating-point input is converted; booleans, complex numbers,
    strings and objects raise TypeError naming ``name``.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    return _aligned(np.asarray(arr, dtype=np.float32, order="C"))


def as_token_ids(idx, name="in_idx", ndim=None):
    """Return ``idx`` as a C-contiguous int64 array of token ids.

    Token ids must be integers: a float array raises TypeError (a float id
    is almost always a bug, such as passing embeddings where ids belong).
    With ``ndim`` set, the number of dimensions is checked too. The range
    of each id is checked by the C binding against the vocabulary size.
    """
    arr = np.asarray(idx)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token ids, got an array of dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        expected = "(batch_size, seq_len)" if ndim == 2 else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {expected}, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise IndexError(f"{name} contains token id {int(arr.max())}, far outside any vocabulary")
    return _aligned(np.asarray(arr, dtype=np.int64, order="C"))
