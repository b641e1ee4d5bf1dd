"""The building-block layers: Linear, Embedding, Dropout, ReLU, GELU, LayerNorm.

Each holds its parameters and calls one function of gptc.nn.functional in
``forward``, which calls the C forward (csrc/<name>.c). Inputs may be any
real-valued array-like: they are converted to C-contiguous float32 (a copy
only when needed); outputs are new float32 arrays, as gptc.Tensor while
gradients are recorded. Parameters are initialised as PyTorch initialises them, drawing from
gptc's default generator in the same order.
"""
import math

import numpy as np

from .. import _C
from ..config import check_probability
from ..random import default_generator
from . import functional as F
from .module import Int8Weight, Module, Parameter
from .utils import init_skipped

__all__ = ["Linear", "Embedding", "Dropout", "ReLU", "GELU", "LayerNorm", "MSELoss"]


def _check_size(value, name, allow_zero=False):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


class Linear(Module):
    """``y = x W^T + b`` (csrc/matmul.c), as ``torch.nn.Linear``.

    ``weight`` has shape (out_features, in_features), as PyTorch stores it, and
    is initialised with kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in));
    ``bias`` (if any) with U(-1/sqrt(in), 1/sqrt(in)). The input's last
    dimension must be in_features; any leading dimensions are kept. Any
    real-valued array-like input (float64, integers, strided or read-only
    arrays) is converted to contiguous float32; the output is float32.
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _check_size(in_features, "in_features", allow_zero=True)
        self.out_features = _check_size(out_features, "out_features", allow_zero=True)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), np.float32))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, np.float32))
        else:
            self.register_parameter("bias", None)
        if not init_skipped():
            self.reset_parameters()

    def reset_parameters(self):
        """Draw fresh weights from the default generator, as PyTorch does."""
        fan_in = self.in_features
        if self.weight.size:
            # kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + a^2)),
            # bound = sqrt(3) * gain / sqrt(fan_in). Computed in Python floats
            # exactly as PyTorch does, so the bound is the same double.
            a = math.sqrt(5)
            gain = math.sqrt(2.0 / (1 + a ** 2))
            bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
            _C.uniform_(self.weight, -bound, bound, default_generator)
        if self.bias is not None:
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            _C.uniform_(self.bias, -bound, bound, default_generator)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def _store_weights_as(self, dtype):
        # Module.to_dtype: the bfloat16 or int8 copy C reads instead of the
        # weight, which stays read-only meanwhile so that the two cannot disagree.
        weight = self.weight
        if weight.inference_dtype == dtype:
            return
        copy = None
        if dtype != "float32":
            flat = np.ascontiguousarray(weight)
            copy = _C.to_bfloat16(flat) if dtype == "bfloat16" else Int8Weight(*_C.to_int8(flat))
        weight.inference_copy = copy
        weight.inference_dtype = dtype
        weight.flags.writeable = dtype == "float32"

    def extra_repr(self):
        text = (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
        dtype = self.weight.inference_dtype
        return text + (f", weight_dtype={dtype}" if dtype != "float32" else "")


class Embedding(Module):
    """A lookup table (csrc/embedding.c), as ``torch.nn.Embedding``.

    Called with integer ids of any shape, returns their rows: shape
    ``ids.shape + (embedding_dim,)``. ``weight`` is initialised N(0, 1). An id
    outside [0, num_embeddings) raises IndexError naming it.
    """

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.num_embeddings = _check_size(num_embeddings, "num_embeddings")
        self.embedding_dim = _check_size(embedding_dim, "embedding_dim")
        self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), np.float32))
        if not init_skipped():
            self.reset_parameters()

    def reset_parameters(self):
        """Draw fresh weights N(0, 1) from the default generator."""
        _C.normal_(self.weight, 0.0, 1.0, default_generator)

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Inverted dropout (csrc/dropout.c), as ``torch.nn.Dropout``.

    In training mode each value is zeroed with probability ``p`` and the
    others are scaled by 1 / (1 - p), with masks drawn from gptc's default
    generator exactly as PyTorch draws them. In eval mode (or with p = 0) it
    returns its input (converted to float32 if it was not a gptc Tensor).
    """

    def __init__(self, p=0.5):
        super().__init__()
        self.p = check_probability(p, "p")   # kept as given: Dropout(0) prints p=0, as in PyTorch

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace=False"


class ReLU(Module):
    """max(0, x) elementwise (csrc/gelu.c), as ``torch.nn.ReLU``."""

    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    """GELU, the tanh approximation of section 4.3 (csrc/gelu.c)::

        0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))
    """

    def forward(self, x):
        return F.gelu(x)


class LayerNorm(Module):
    """Layer normalisation of section 4.2 (csrc/layernorm.c).

    Normalises over the last axis to mean 0 and variance 1, using the biased
    variance (divide by n) and ``eps`` = 1e-5 inside the square root, then
    applies the learnable ``scale`` (ones) and ``shift`` (zeros).
    """

    def __init__(self, emb_dim):
        super().__init__()
        emb_dim = _check_size(emb_dim, "emb_dim")
        self.eps = 1e-5
        self.scale = Parameter(np.ones(emb_dim, np.float32))
        self.shift = Parameter(np.zeros(emb_dim, np.float32))

    def forward(self, x):
        return F.layer_norm(x, self.scale, self.shift, self.eps)


class MSELoss(Module):
    """Mean squared error between a prediction and a target, as ``torch.nn.MSELoss``."""

    def forward(self, input, target):
        return F.mse_loss(input, target)
