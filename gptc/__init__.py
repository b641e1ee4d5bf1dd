"""gptc: the GPT model of chapter 4 of "Build a Large Language Model (From Scratch)"
in C, under a thin NumPy package with the book's names.

    >>> import gptc
    >>> gptc.manual_seed(123)
    >>> model = gptc.GPTModel(gptc.GPT_CONFIG_124M)
    >>> logits = model(batch)          # (batch, seq_len) ids -> (batch, seq_len, 50257)
"""
import os as _os
import warnings as _warnings

try:
    from . import _C
except ImportError as exc:   # e.g. `python -m gptc` run inside the source checkout
    raise ImportError(
        f"gptc's C extension (gptc._C) is not built next to {__file__}: this looks like the "
        "source tree. Install the package (pip install .) and run from another directory, or "
        "build in place with: python setup.py build_ext --inplace") from exc
from . import data, nn, optim, training
from .attention_maps import attention_weights
from .autograd import Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from .config import GPT2_SIZES, GPT_CONFIG_124M, check_config, gpt2_config
from .generate import generate, generate_stream, generate_text_simple
from .nn import (DummyGPTModel, DummyLayerNorm, DummyTransformerBlock, FeedForward, GPTModel,
                 LayerNorm, MultiHeadAttention, TransformerBlock)
from .random import (Generator, default_generator, get_rng_state, initial_seed, manual_seed,
                     rand, randn, randperm, set_rng_state)
from .tokenizer import TokenizerError, get_tokenizer
from .io import CheckpointFormatError, load, save
from .download import DownloadError
from .pretrained import (download_and_load_gpt2, gpt2_config_from_hparams,
                         load_gpt2_params_from_tf_ckpt, load_weights_into_gpt)

__version__ = "0.1.0"

if _os.environ.get("GPTC_ISA") not in (None, _C.isa()):
    _warnings.warn(f"GPTC_ISA={_os.environ['GPTC_ISA']!r} names no kernel set this build and "
                   f"CPU support ({', '.join(_C.supported_isas())}); running {_C.isa()!r}",
                   RuntimeWarning, stacklevel=2)


def set_num_threads(n):
    """Use ``n`` threads in gptc's parallel loops (default: the CPUs this
    process may use, or OMP_NUM_THREADS).

    A build without OpenMP (``build_info()["openmp"]`` is False, e.g. with
    Apple's clang) always runs on one thread: there ``n`` is still checked,
    but has no effect, get_num_threads() stays 1, and asking for more than
    one thread warns (RuntimeWarning)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"num_threads must be an integer, got {type(n).__name__}")
    _C.set_num_threads(n)
    if n > 1 and _C.get_num_threads() == 1:
        _warnings.warn(f"set_num_threads({n}) has no effect: this build of gptc has no "
                      "OpenMP and runs on one thread (see gptc.build_info())",
                      RuntimeWarning, stacklevel=2)


def get_num_threads():
    """The number of threads gptc's parallel loops use (always 1 in a build
    without OpenMP)."""
    return _C.get_num_threads()


def build_info():
    """How this gptc's C core was built: ``compiler`` (name and version),
    ``openmp`` (bool) and ``openmp_version`` (the _OPENMP date, yyyymm, or
    None), ``isas_compiled`` (the instruction-set kernels built in),
    ``sanitize`` (built with AddressSanitizer + UBSan) and ``isa`` (the
    kernel set in use, as gptc._C.isa())."""
    return _C.build_info()


def empty_cache():
    """Release the memory gptc keeps for reuse and return how many bytes that was.

    The float32 arrays gptc makes (layer outputs, gradients, logits) take their
    memory from a pool (csrc/py/buffer_pool.c): when such an array of 256 KiB or
    more is dropped, its block is kept for the next array of that size, so a
    training loop reuses one step's memory in the next instead of having the
    operating system map and zero it again. At most 2 GiB is kept, never more
    than the program once used at the same time. Call this after training to
    hand the memory back, as ``torch.cuda.empty_cache`` does for PyTorch's GPU
    pool."""
    return _C.empty_cache()


def buffer_pool_stats():
    """What the pool of ``empty_cache`` holds: a dict with ``kept_bytes`` and
    ``kept_blocks`` (memory waiting for reuse), ``reused`` and ``fresh`` (how
    many poolable arrays got a kept block, and how many new memory),
    ``min_bytes`` (smaller arrays are not kept) and ``limit_bytes`` (0 in a
    sanitizer build, which keeps nothing so that AddressSanitizer sees every
    free)."""
    return _C.buffer_pool_stats()


__all__ = ["nn", "GPT_CONFIG_124M", "GPT2_SIZES", "gpt2_config", "check_config",
           "GPTModel", "DummyGPTModel", "TransformerBlock", "DummyTransformerBlock",
           "MultiHeadAttention", "FeedForward", "LayerNorm", "DummyLayerNorm",
           "generate_text_simple", "generate", "generate_stream", "Generator", "default_generator", "manual_seed",
           "initial_seed", "get_rng_state", "set_rng_state", "rand", "randn", "randperm",
           "set_num_threads", "get_num_threads", "build_info", "empty_cache",
           "buffer_pool_stats", "get_tokenizer", "TokenizerError",
           "save", "load", "optim", "data", "training", "Tensor", "tensor", "no_grad",
           "enable_grad", "is_grad_enabled", "attention_weights", "download_and_load_gpt2",
           "load_gpt2_params_from_tf_ckpt", "load_weights_into_gpt", "gpt2_config_from_hparams",
           "CheckpointFormatError", "DownloadError"]
