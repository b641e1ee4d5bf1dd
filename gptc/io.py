"""Saving and loading state dicts as safetensors files.

``gptc.save(model.state_dict(), "model.safetensors")`` and
``model.load_state_dict(gptc.load("model.safetensors"))`` play the part of
the book's ``torch.save`` / ``torch.load``. The format is safetensors (a JSON
header, then the raw little-endian tensor bytes), written and read by the
``safetensors`` package's NumPy API, so the files are interchangeable with
PyTorch's ``safetensors.torch.save_file`` / ``load_file``: a checkpoint of
the book's PyTorch model loads into ``gptc.GPTModel`` and the other way round.

Tied weights: a state dict of ``GPTModel(cfg, tie_weights=True)`` holds the
same array under ``tok_emb.weight`` and ``out_head.weight``. ``save`` writes
every key as its own tensor, so the file holds two equal copies. That keeps
the file a plain state dict: it loads into a tied model (``load_state_dict``
checks that both values agree and fills the one shared array), into an
untied one, and into the book's PyTorch model, with no gptc-specific
metadata to interpret. The cost is one extra copy of the embedding on disk.
"""
import errno
import os

import numpy as np

__all__ = ["save", "load", "CheckpointFormatError"]

# The dtypes safetensors' NumPy API can write and read back.
_SUPPORTED_DTYPES = {"float64", "float32", "float16", "int64", "int32", "int16", "int8",
                     "uint64", "uint32", "uint16", "uint8", "bool", "complex64"}


class CheckpointFormatError(ValueError):
    """The file is not a safetensors file gptc can read (corrupt, truncated,
    another format, or holding a dtype NumPy has no type for)."""


def save(state_dict, path, metadata=None):
    """Write ``state_dict`` (names -> arrays) to ``path`` as a safetensors file.

    Values may be NumPy arrays or anything ``np.asarray`` accepts (e.g. CPU
    PyTorch tensors); read-only arrays such as the attention ``mask`` buffers
    are saved like the others, and arrays shared under several names (tied
    weights) are written once per name. ``metadata`` is an optional dict of
    strings stored in the header. The file is replaced atomically.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    from .nn.module import Module
    if isinstance(state_dict, Module):
        raise TypeError("gptc.save() takes a state dict: pass model.state_dict(), "
                        "as with torch.save")
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict must be a mapping from names to arrays, "
                        f"got {type(state_dict).__name__}")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError("metadata must be a dict of str to str")
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be strings, got {key!r}")
        try:
            array = np.asarray(value)
        except Exception as exc:  # e.g. a torch tensor that requires grad
            raise TypeError(f"value for {key!r} cannot be converted to a NumPy array: "
                            f"{exc}") from exc
        if array.dtype.name not in _SUPPORTED_DTYPES:
            raise TypeError(f"value for {key!r} has dtype {array.dtype}, which safetensors "
                            "cannot store")
        # safetensors reads the array's memory directly: it must be C-contiguous.
        tensors[key] = array if array.flags.c_contiguous else array.copy(order="C")

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"No such directory: {directory!r}, cannot save",
                                path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "Is a directory, cannot save", path)
    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as exc:
        raise OSError(f"cannot save to {path}: {exc}") from exc


def load(path):
    """Read a safetensors file: a dict from names to NumPy arrays, ready for
    ``model.load_state_dict``. Raises FileNotFoundError / IsADirectoryError /
    PermissionError for a path that cannot be read, and CheckpointFormatError
    (a ValueError) for a file that is not valid safetensors."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "Is a directory, not a safetensors file", path)
    with open(path, "rb"):  # raises PermissionError etc. with Python's usual message
        pass
    try:
        return dict(load_file(path))
    except SafetensorError as exc:
        raise CheckpointFormatError(f"{path} is not a valid safetensors file ({exc})") from exc
    except TypeError as exc:  # e.g. bfloat16, which NumPy has no dtype for
        raise CheckpointFormatError(
            f"{path} holds a tensor type NumPy cannot represent ({exc}); convert the "
            "tensors to float32 before saving") from exc
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc}") from exc
