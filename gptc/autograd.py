"""Gradients for the operations of chapters 4 and 5, and nothing more.

``Tensor`` is a float32 NumPy array plus what backpropagation needs: the
operation that produced it and a function that turns the gradient of its
output into gradients of its inputs. gptc's layers return a ``Tensor``
whenever gradients are being recorded (grad mode on and some input or
parameter requiring a gradient); the arithmetic the book writes between
layer outputs (``x + shortcut``, ``logits.flatten(0, 1)``, ``.mean()``)
records too. ``loss.backward()`` then walks the recorded graph once, in
reverse, and the gradients of parameters land in ``param.grad`` (the C
backward kernels accumulate into those buffers directly).

With ``gptc.no_grad()`` (and in ``generate_text_simple``) nothing is recorded
and layers return plain NumPy arrays, keeping no activations.

This is deliberately not a general framework: operations outside the list
below, applied to something that needs a gradient, raise TypeError instead
of silently dropping the gradient.
"""
import functools
import threading

import numpy as np

from . import _C

__all__ = ["Tensor", "no_grad", "enable_grad", "is_grad_enabled", "tensor"]

_state = threading.local()


def is_grad_enabled():
    """True unless inside ``no_grad()`` (per thread, as in PyTorch)."""
    return getattr(_state, "enabled", True)


class _GradMode:
    def __init__(self, enabled):
        self._enabled = enabled

    def __enter__(self):
        self._previous = is_grad_enabled()
        _state.enabled = self._enabled
        return self

    def __exit__(self, *exc):
        _state.enabled = self._previous
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Context manager (or decorator) that records no operations, as ``torch.no_grad``."""

    def __init__(self):
        super().__init__(False)


class enable_grad(_GradMode):
    """Context manager (or decorator) that turns recording back on inside ``no_grad``."""

    def __init__(self):
        super().__init__(True)


def _needs_grad(x):
    """Whether a gradient must flow to x (a Tensor or a Parameter)."""
    return bool(getattr(x, "requires_grad", False))


def recording(*inputs):
    """True if an operation on these inputs must be recorded."""
    return is_grad_enabled() and any(_needs_grad(x) for x in inputs)


def data_of(x):
    """The float32 array behind a Tensor, or the value itself."""
    return x.data if isinstance(x, Tensor) else x


def grad_buffer(param):
    """The float32 array a parameter's gradient accumulates into (created on
    first use, like PyTorch's .grad); None if the parameter is frozen."""
    if not getattr(param, "requires_grad", False):
        return None
    if param.grad is None:
        # from gptc's buffer pool: after zero_grad() the next backward gets the
        # memory of the gradient it dropped (csrc/py/buffer_pool.c)
        param.grad = Tensor(_C.zeros(param.shape))
    return param.grad.data


class Tensor:
    """A float32 array that remembers how it was computed.

    Behaves as a NumPy array for reading (``np.asarray(t)``, indexing, shape,
    dtype, printing); ``backward()`` computes gradients. Made by gptc's
    layers while gradients are recorded, or directly with
    ``gptc.tensor(data, requires_grad=True)``.
    """

    # Let NumPy route `array + tensor` and ufuncs through __array_ufunc__.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, parents=(), backward=None, op=None):
        self.data = np.asarray(data, dtype=np.float32)
        self.requires_grad = bool(requires_grad) or backward is not None
        self.grad = None
        self._parents = parents      # the Tensors / Parameters this one came from
        self._backward = backward    # dout -> gradients for the parents, in order
        self.grad_fn = op            # the name of the operation, for printing

    # -- reading it as an array -------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._backward is None)

    def __len__(self):
        return len(self.data)

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and dtype != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def numpy(self):
        """The values as a NumPy array (shares memory)."""
        return self.data

    def item(self):
        """The value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self):
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def numel(self):
        return int(self.data.size)

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        suffix = f", grad_fn=<{self.grad_fn}>" if self.grad_fn else ""
        if self.requires_grad and not self.grad_fn:
            suffix = ", requires_grad=True"
        return f"tensor({body}{suffix})"

    # -- backpropagation ------------------------------------------------------
    def backward(self, gradient=None):
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf Tensor and
        Parameter that requires a gradient. ``gradient`` defaults to 1 for a
        one-element tensor (a loss)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (was it "
                               "computed under no_grad(), or from frozen parameters only?)")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element "
                                   f"tensor (a loss), got shape {self.shape}")
            gradient = np.ones_like(self.data)
        gradient = np.asarray(data_of(gradient), dtype=np.float32)
        if gradient.shape != self.shape:
            raise ValueError(f"gradient has shape {gradient.shape}, expected {self.shape}")

        # Order the graph so that every node comes after everything it feeds.
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))

        grads = {id(self): gradient}
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:        # a leaf tensor the user made
                node.grad = Tensor(g.copy()) if node.grad is None else Tensor(node.grad.data + g)
                continue
            parent_grads = node._backward(g)
            parents = node._parents
            # Free what the node saved for backward (its inputs, activations,
            # dropout noise) as soon as it has been used, as PyTorch does: a
            # training step then never holds two steps' activations at once.
            node._backward, node._parents = _used_backward, ()
            for parent, pg in zip(parents, parent_grads):
                if pg is None or not isinstance(parent, Tensor) or not parent.requires_grad:
                    continue
                if id(parent) in grads:
                    grads[id(parent)] = grads[id(parent)] + pg
                else:
                    grads[id(parent)] = pg

    # -- recorded operations ------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = _UFUNCS.get(ufunc) if method == "__call__" and not kwargs else None
        if fn is not None:
            return fn(*inputs)
        if recording(*inputs) and not _ufunc_gives_no_gradient(ufunc):
            raise TypeError(f"numpy.{ufunc.__name__} is not differentiable in gptc; compute it "
                            "under gptc.no_grad() or on .detach()ed values")
        arrays = [data_of(x) for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(data_of(o) for o in kwargs["out"])
        return getattr(ufunc, method)(*arrays, **kwargs)

    def __add__(self, other):
        return _add(self, other)

    def __radd__(self, other):
        return _add(other, self)

    def __sub__(self, other):
        return _sub(self, other)

    def __rsub__(self, other):
        return _sub(other, self)

    def __mul__(self, other):
        return _mul(self, other)

    def __rmul__(self, other):
        return _mul(other, self)

    def __truediv__(self, other):
        return _div(self, other)

    def __neg__(self):
        return _mul(self, -1.0)

    def __matmul__(self, other):
        return _matmul(self, other)

    def __rmatmul__(self, other):
        return _matmul(other, self)

    def __getitem__(self, key):
        key = data_of(key)
        out = self.data[key]
        if not recording(self):
            return np.array(out) if isinstance(out, np.ndarray) else out

        def backward(dout):
            g = np.zeros_like(self.data)
            np.add.at(g, key, dout)
            return (g,)
        return Tensor(out, parents=(self,), backward=backward, op="IndexBackward")

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        out = self.data.reshape(shape)
        if not recording(self):
            return Tensor(out)
        return Tensor(out, parents=(self,), backward=lambda d: (d.reshape(self.shape),),
                      op="ViewBackward")

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge dims start_dim..end_dim, as ``torch.flatten`` (the book flattens
        (batch, seq, vocab) logits with ``flatten(0, 1)``)."""
        nd = self.ndim
        start, end = start_dim % nd if nd else 0, end_dim % nd if nd else 0
        shape = self.shape[:start] + (int(np.prod(self.shape[start:end + 1])),) + \
            self.shape[end + 1:]
        return self.reshape(shape)

    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None, out=None):
        """Sum over ``dim`` (PyTorch's name) or ``axis`` (NumPy's, so np.sum works)."""
        dim, keepdim = _reduction_args(dim, keepdim, axis, keepdims, dtype, out)
        out = self.data.sum(axis=dim, keepdims=keepdim)
        if not recording(self):
            return Tensor(out)

        def backward(dout):
            d = dout if keepdim or dim is None else np.expand_dims(dout, dim)
            return (np.broadcast_to(d, self.shape).astype(np.float32),)
        return Tensor(out, parents=(self,), backward=backward, op="SumBackward")

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None, out=None):
        """Mean over ``dim`` or ``axis`` (all elements by default)."""
        dim, keepdim = _reduction_args(dim, keepdim, axis, keepdims, dtype, out)
        count = self.data.size if dim is None else np.prod(
            [self.shape[d] for d in np.atleast_1d(dim)])
        return self.sum(dim, keepdim) * np.float32(1.0 / count)

    def var(self, dim=None, keepdim=False, unbiased=True, *, axis=None, keepdims=None,
            ddof=None, dtype=None, out=None):
        """Variance over ``dim``/``axis``. Called PyTorch-style (``dim``) it divides
        by n - 1 unless ``unbiased=False`` (the book's LayerNorm passes that);
        called NumPy-style (``axis``, or ``np.var(t)``) it divides by n - ddof."""
        numpy_style = axis is not None or keepdims is not None
        dim, keepdim = _reduction_args(dim, keepdim, axis, keepdims, dtype, out)
        if ddof is None:
            ddof = 0 if numpy_style else (1 if unbiased else 0)
        count = self.data.size if dim is None else np.prod(
            [self.shape[d] for d in np.atleast_1d(dim)])
        centred = self - self.mean(dim, keepdim=True)
        return (centred * centred).sum(dim, keepdim) * np.float32(1.0 / (count - ddof))

    def __lt__(self, other):
        return self.data < data_of(other)

    def __le__(self, other):
        return self.data <= data_of(other)

    def __gt__(self, other):
        return self.data > data_of(other)

    def __ge__(self, other):
        return self.data >= data_of(other)

    def abs(self):
        out = np.abs(self.data)
        if not recording(self):
            return Tensor(out)
        return Tensor(out, parents=(self,), backward=lambda d: (d * np.sign(self.data),),
                      op="AbsBackward")


def _ufunc_gives_no_gradient(ufunc):
    """Comparisons and tests (np.less, np.isfinite, ...) return booleans: there is
    no gradient to lose, so they work on recorded tensors too."""
    return all(t.split("->")[-1] in ("?",) for t in ufunc.types)


def _used_backward(dout):
    raise RuntimeError("backward() through the same graph a second time: the values it "
                       "saved were freed after the first backward; compute the loss again")


def _reduction_args(dim, keepdim, axis, keepdims, dtype, out):
    """Accept both PyTorch's (dim, keepdim) and NumPy's (axis, keepdims) names."""
    if dtype is not None or out is not None:
        raise TypeError("gptc Tensor reductions take no dtype or out argument")
    if axis is not None:
        if dim is not None:
            raise TypeError("give dim or axis, not both")
        dim = axis
    if isinstance(dim, list):
        dim = tuple(dim)
    return dim, keepdim if keepdims is None else keepdims


def tensor(data, requires_grad=False):
    """A float32 Tensor from array-like data (as ``torch.tensor``)."""
    return Tensor(np.array(data_of(data), dtype=np.float32), requires_grad=requires_grad)


def _unbroadcast(grad, shape):
    """Sum a broadcast gradient back to the shape of the input it came from."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _binary(a, b, forward, grad_a, grad_b, op):
    """Record an elementwise op of two array-likes (Tensors, Parameters, arrays)."""
    da = np.asarray(data_of(a), dtype=np.float32)
    db = np.asarray(data_of(b), dtype=np.float32)
    out = forward(da, db)
    if not recording(a, b):
        return Tensor(out) if isinstance(a, Tensor) or isinstance(b, Tensor) else out

    def backward(dout):
        return (_unbroadcast(grad_a(dout, da, db), da.shape) if _needs_grad(a) else None,
                _unbroadcast(grad_b(dout, da, db), db.shape) if _needs_grad(b) else None)
    return Tensor(out, parents=(a, b), backward=backward, op=op)


def _add(a, b):
    return _binary(a, b, np.add, lambda d, x, y: d, lambda d, x, y: d, "AddBackward")


def _sub(a, b):
    return _binary(a, b, np.subtract, lambda d, x, y: d, lambda d, x, y: -d, "SubBackward")


def _mul(a, b):
    return _binary(a, b, np.multiply, lambda d, x, y: d * y, lambda d, x, y: d * x,
                   "MulBackward")


def _div(a, b):
    return _binary(a, b, np.divide, lambda d, x, y: d / y, lambda d, x, y: -d * x / (y * y),
                   "DivBackward")


def _matmul(a, b):
    da = np.asarray(data_of(a), dtype=np.float32)
    db = np.asarray(data_of(b), dtype=np.float32)
    if da.ndim < 2 or db.ndim < 2:
        raise ValueError("gptc records matmul of arrays with at least 2 dimensions only; "
                         f"got shapes {da.shape} and {db.shape}")
    out = np.matmul(da, db)
    if not recording(a, b):
        return Tensor(out) if isinstance(a, Tensor) or isinstance(b, Tensor) else out

    def backward(dout):
        ga = _unbroadcast(dout @ np.swapaxes(db, -1, -2), da.shape) if _needs_grad(a) else None
        gb = _unbroadcast(np.swapaxes(da, -1, -2) @ dout, db.shape) if _needs_grad(b) else None
        return ga, gb
    return Tensor(out, parents=(a, b), backward=backward, op="MmBackward")


_UFUNCS = {np.add: _add, np.subtract: _sub, np.multiply: _mul, np.true_divide: _div,
           np.negative: lambda x: _mul(x, -1.0), np.matmul: _matmul}
