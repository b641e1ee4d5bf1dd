"""Optimisers: AdamW as ``torch.optim.AdamW`` (decoupled weight decay).

Each step updates every parameter in place with one fused C pass
(csrc/optim.c), so every module holding it (and any weight tying) sees the
new values.
"""
import numpy as np

from . import _C

__all__ = ["AdamW"]


class AdamW:
    """``AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)``, with PyTorch's
    defaults ``betas=(0.9, 0.999)``, ``eps=1e-8`` and its update, in this order::

        p *= 1 - lr * weight_decay                 # decoupled weight decay
        m += (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.params = []
        seen = set()
        for p in params:
            if id(p) not in seen:      # a tied parameter is updated once
                seen.add(id(p))
                self.params.append(p)
        if not self.params:
            raise ValueError("AdamW got an empty parameter list")
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.state = {}   # id(param) -> (step, exp_avg, exp_avg_sq)

    def zero_grad(self, set_to_none=True):
        """Reset the gradients (to None by default, as PyTorch)."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0.0

    def step(self):
        """One update of every parameter that has a gradient."""
        beta1, beta2 = self.betas
        for param in self.params:
            if param.grad is None:
                continue
            g = np.ascontiguousarray(param.grad.data, dtype=np.float32)
            step, m, v = self.state.get(id(param), (0, None, None))
            if m is None:
                m, v = np.zeros_like(g), np.zeros_like(g)
            step += 1
            # One fused pass in C (csrc/optim.c), in place on the parameter's
            # memory, so every module holding it sees the new values.
            _C.adamw_update(param, g, m, v, self.lr, beta1, beta2, self.eps,
                            self.weight_decay, step)
            self.state[id(param)] = (step, m, v)
