"""Optimisers: AdamW as ``torch.optim.AdamW`` (decoupled weight decay).

Each step works on whole parameter arrays with NumPy (no per-element Python
loop), updating the parameters in place so every module holding them (and
any weight tying) sees the new values.
"""
import math

import numpy as np

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
            # A plain view of the parameter's memory: updated in place, so every
            # module holding the parameter sees the new values.
            p = param.view(np.ndarray)
            g = np.asarray(param.grad.data, dtype=np.float32)
            step, m, v = self.state.get(id(param), (0, None, None))
            if m is None:
                m, v = np.zeros_like(g), np.zeros_like(g)
            step += 1
            p *= np.float32(1.0 - self.lr * self.weight_decay)
            m += np.float32(1.0 - beta1) * (g - m)
            v *= np.float32(beta2)
            v += np.float32(1.0 - beta2) * (g * g)
            step_size = self.lr / (1.0 - beta1 ** step)
            denom = np.sqrt(v) / np.float32(math.sqrt(1.0 - beta2 ** step)) + np.float32(self.eps)
            p -= np.float32(step_size) * (m / denom)
            self.state[id(param)] = (step, m, v)
