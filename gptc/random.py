"""Seeded randomness, identical to PyTorch's CPU generator.

``gptc.manual_seed(123)`` followed by building a model, ``gptc.rand``,
``gptc.randn`` or a training-mode forward gives the same numbers as the same
steps after ``torch.manual_seed(123)``: the generator (a Mersenne Twister)
and the way each distribution consumes it live in C (csrc/rng.c).
"""
import numpy as np

from . import _C

__all__ = ["Generator", "default_generator", "manual_seed", "initial_seed", "get_rng_state",
           "set_rng_state", "rand", "randn", "randperm"]

Generator = _C.Generator

#: The generator used when none is given, as PyTorch's default CPU generator.
default_generator = Generator()


def manual_seed(seed):
    """Seed the default generator (as ``torch.manual_seed``) and return it."""
    return default_generator.manual_seed(seed)


def initial_seed():
    """The seed the default generator was last seeded with (as ``torch.initial_seed``)."""
    return default_generator.initial_seed()


def get_rng_state():
    """The default generator's state (as ``torch.get_rng_state``), a uint8 array."""
    return default_generator.get_state()


def set_rng_state(state):
    """Restore the default generator's state (as ``torch.set_rng_state``)."""
    default_generator.set_state(state)


def _shape(size, fname):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    try:
        shape = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise TypeError(f"{fname}() expects integer sizes, got {size!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{fname}() expects non-negative sizes, got {shape}")
    return shape


def _generator(generator):
    if generator is None:
        return default_generator
    if not isinstance(generator, Generator):
        raise TypeError(f"generator must be a gptc.Generator, got {type(generator).__name__}")
    return generator


def rand(*size, generator=None):
    """Uniform float32 samples in [0, 1), as ``torch.rand(*size)``."""
    out = np.empty(_shape(size, "rand"), dtype=np.float32)
    return _C.uniform_(out, 0.0, 1.0, _generator(generator))


def randn(*size, generator=None):
    """Standard normal float32 samples, as ``torch.randn(*size)``."""
    out = np.empty(_shape(size, "randn"), dtype=np.float32)
    return _C.normal_(out, 0.0, 1.0, _generator(generator))


def randperm(n, generator=None):
    """A random permutation of ``0 .. n - 1`` (int64), as ``torch.randperm(n)``:
    the same permutation from the same generator state."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"randperm() expects an integer n, got {type(n).__name__}")
    return _C.randperm(int(n), _generator(generator))
