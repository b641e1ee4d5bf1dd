"""``skip_init``: build a module without drawing its initial weights, as
``torch.nn.utils.skip_init``.

Loading a checkpoint overwrites every weight, so drawing them first is wasted
work: GPT-2 XL's 1.6 billion random numbers take longer than reading the file.
Inside ``skip_init``, ``Linear`` and ``Embedding`` leave their weights as
allocated (``np.empty``: uninitialised memory that the loader then fills) and
the default generator does not advance.
"""
import threading

__all__ = ["skip_init"]

_state = threading.local()


def init_skipped():
    """True while this thread builds modules inside ``skip_init``."""
    return getattr(_state, "depth", 0) > 0


def skip_init(module_cls, *args, **kwargs):
    """``module_cls(*args, **kwargs)`` with uninitialised Linear and Embedding
    weights (layer norms still start at ones and zeros). Every weight must be
    loaded before the module is used."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        return module_cls(*args, **kwargs)
    finally:
        _state.depth -= 1
