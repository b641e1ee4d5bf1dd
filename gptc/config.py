"""Model configurations: the book's GPT_CONFIG_124M and the four GPT-2 sizes."""
import numpy as np

__all__ = ["GPT_CONFIG_124M", "GPT2_SIZES", "gpt2_config", "check_config",
           "check_probability"]

#: The configuration of section 4.1, exactly as the book writes it.
GPT_CONFIG_124M = {
    "vocab_size": 50257,     # Vocabulary size
    "context_length": 1024,  # Context length
    "emb_dim": 768,          # Embedding dimension
    "n_heads": 12,           # Number of attention heads
    "n_layers": 12,          # Number of layers
    "drop_rate": 0.1,        # Dropout rate
    "qkv_bias": False,       # Query-Key-Value bias
}

#: What differs between the GPT-2 sizes (the exercise at the end of chapter 4).
GPT2_SIZES = {
    "gpt2-small": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},
    "gpt2-medium": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "gpt2-large": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "gpt2-xl": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},
}


def gpt2_config(name, **overrides):
    """A full config for a GPT-2 size by name ("gpt2-small" ... "gpt2-xl"),
    starting from GPT_CONFIG_124M; keyword arguments override any key."""
    if name not in GPT2_SIZES:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(GPT2_SIZES)}")
    cfg = dict(GPT_CONFIG_124M)
    cfg.update(GPT2_SIZES[name])
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    cfg.update(overrides)
    return cfg


def check_probability(p, name):
    """``p`` as a dropout probability: a real number in [0, 1]. Raises
    TypeError/ValueError naming ``name``, with the message the C binding
    gives for a probability (csrc/py/args.c). Returns ``p`` as given."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return p


_INT_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")


def check_config(cfg, keys=None):
    """Check that ``cfg`` holds ``keys`` (default: all the model needs) with
    sensible values; raises ValueError/TypeError naming the problem."""
    if not hasattr(cfg, "__getitem__") or not hasattr(cfg, "keys"):
        raise TypeError(f"cfg must be a dict like GPT_CONFIG_124M, got {type(cfg).__name__}")
    keys = tuple(GPT_CONFIG_124M) if keys is None else keys
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ValueError(f"cfg is missing {', '.join(repr(k) for k in missing)}; a GPT config "
                         f"holds {', '.join(GPT_CONFIG_124M)}")
    for key in keys:
        value = cfg[key]
        if key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"cfg[{key!r}] must be a positive integer, got {value!r}")
        elif key == "drop_rate":
            check_probability(value, "cfg['drop_rate']")
        elif key == "qkv_bias":
            if not isinstance(value, bool):
                raise ValueError(f"cfg['qkv_bias'] must be True or False, got {value!r}")
    if "emb_dim" in keys and "n_heads" in keys and cfg["emb_dim"] % cfg["n_heads"] != 0:
        raise ValueError(f"cfg['emb_dim'] ({cfg['emb_dim']}) must be divisible by "
                         f"cfg['n_heads'] ({cfg['n_heads']})")
