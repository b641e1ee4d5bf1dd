"""Module, Parameter and the containers: the parts of ``torch.nn`` the book uses.

A gptc model is built exactly as the book builds a PyTorch model: subclass
``Module``, assign layers and parameters as attributes in ``__init__``, write
``forward``. Assignment registers them, so ``parameters()``, ``state_dict()``,
``train()``/``eval()``, the printed module tree and forward hooks
(``register_forward_hook``, ``register_forward_pre_hook``; see hooks.py) work
as in PyTorch. Tensors are NumPy arrays; a ``Parameter`` is a float32 array that a module owns.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from .hooks import add_hook, call_with_hooks

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "Int8Weight"]


class Parameter(np.ndarray):
    """A learnable tensor: a C-contiguous float32 NumPy array owned by a module.

    ``Parameter(data)`` converts ``data`` to float32 (no copy when it already
    is a contiguous float32 array, so ``Parameter(other_param)`` shares
    memory, as in PyTorch). Arithmetic on a parameter returns plain arrays.
    """

    def __new__(cls, data):
        arr = np.ascontiguousarray(data, dtype=np.float32)
        if not arr.flags.writeable:
            arr = arr.copy()
        return arr.view(cls)

    #: The accumulated gradient (a gptc.Tensor) after backward(), else None.
    grad = None
    #: Whether backward() computes a gradient for this parameter.
    requires_grad = True
    #: The copy of a Linear weight that inference reads after ``Module.to_dtype``,
    #: else None: the weight rounded to bfloat16 (a uint16 array of the bits) for
    #: ``"bfloat16"``, an ``Int8Weight`` for ``"int8"``.
    inference_copy = None
    #: What inference reads: ``"float32"`` (the parameter itself), ``"bfloat16"`` or ``"int8"``.
    inference_dtype = "float32"

    @property
    def bfloat16(self):
        """The bfloat16 copy (uint16 bits) after ``to_dtype("bfloat16")``, else None."""
        return self.inference_copy if self.inference_dtype == "bfloat16" else None

    @property
    def int8(self):
        """The ``Int8Weight`` after ``to_dtype("int8")``, else None."""
        return self.inference_copy if self.inference_dtype == "int8" else None

    def numel(self):
        """Number of elements, as ``torch.Tensor.numel``."""
        return int(self.size)

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze (True) this parameter; returns it."""
        self.requires_grad = bool(requires_grad)
        return self

    # Results of ufuncs, reductions and indexing are values, not parameters:
    # returning plain arrays keeps `x = param * 2` from being registered as a
    # parameter when assigned to a module attribute.
    def __array_wrap__(self, obj, context=None, return_scalar=False):
        if obj.shape == () and return_scalar:
            return obj[()]
        return obj.view(np.ndarray)

    def __getitem__(self, key):
        item = super().__getitem__(key)
        return item.view(np.ndarray) if isinstance(item, np.ndarray) else item

    def __repr__(self):
        return "Parameter containing:\n" + repr(self.view(np.ndarray))


def _checked_parameter(param, name):
    """A Parameter the C code can use as it is: float32 and C-contiguous.

    NumPy hands views and conversions of a Parameter (param.T, param.astype(...),
    param.reshape(...)) back as Parameter objects; registering one of those would
    break that guarantee, so it is refused here instead of failing later."""
    if param.dtype != np.float32 or not param.flags.c_contiguous:
        raise TypeError(f"parameter {name!r} must be a C-contiguous float32 array; got "
                        f"dtype {param.dtype}, {'' if param.flags.c_contiguous else 'non-'}"
                        "contiguous (a view or conversion of a parameter: wrap a copy in "
                        "gptc.nn.Parameter(...))")
    return param


_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Int8Weight(namedtuple("Int8Weight", ["values", "scales"])):
    """A Linear weight (out_features, in_features) in int8 blocks, as
    ``Module.to_dtype("int8")`` keeps it (gptc._C.to_int8 makes it).

    Each row is cut into blocks of 32 consecutive input features (the last
    one shorter when in_features is not a multiple of 32); a block is stored
    as int8 ``values`` q (same shape as the weight) and one ``scales`` entry d
    (out_features, ceil(in_features / 32)), the bfloat16 bits of d as uint16:
    d = max |w| / 127 and q = w / d, both rounded to nearest even. The weight
    it stands for is q * d.
    """

    __slots__ = ()

    @property
    def nbytes(self):
        """Bytes of the values and the scales: 1.0625 per weight (blocks of 32)."""
        return self.values.nbytes + self.scales.nbytes


_INFERENCE_DTYPES = ("float32", "bfloat16", "int8")


def _shape_of(value):
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else np.shape(value)


class Module:
    """Base class of every gptc layer and model, as ``torch.nn.Module``.

    Subclasses call ``super().__init__()`` first, then assign submodules and
    ``Parameter`` objects as attributes; calling the module runs ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- attribute registration ------------------------------------------
    def _check_initialised(self, name):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called "
                f"(call super().__init__() first in {type(self).__name__}.__init__)")

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)):
            self._check_initialised(name)
        if isinstance(value, Parameter):
            self._register(self._parameters, name, _checked_parameter(value, name))
        elif isinstance(value, Module):
            self._register(self._modules, name, value)
        elif "_parameters" in self.__dict__ and name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} as parameter {name!r} "
                                "(wrap it in gptc.nn.Parameter, or assign None)")
            self._parameters[name] = None
        elif "_modules" in self.__dict__ and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} as child module "
                                f"{name!r} (expected a gptc.nn.Module or None)")
            self._modules[name] = None
        elif "_buffers" in self.__dict__ and name in self._buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"cannot assign a {type(value).__name__} as buffer {name!r} "
                                "(expected a NumPy array or None)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _register(self, registry, name, value):
        """Put value under name in registry. Replacing an entry of the same
        kind keeps its position, so the order of forward() in a Sequential
        and of state_dict() keys stays what it was, as in PyTorch."""
        self._check_initialised(name)
        if name not in registry:
            self._remove_attr(name)
        registry[name] = value

    def _remove_attr(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        self._non_persistent_buffers.discard(name)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter or None) under ``name``."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"parameter {name!r} must be a gptc.nn.Parameter or None, "
                            f"got {type(param).__name__}")
        if param is not None:
            _checked_parameter(param, name)
        self._register(self._parameters, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """Register a non-learnable array (e.g. the causal mask) under ``name``.

        Persistent buffers appear in ``state_dict()``. A read-only buffer is a
        constant: ``load_state_dict`` checks that the loaded value equals it.
        """
        if tensor is not None and not isinstance(tensor, np.ndarray):
            raise TypeError(f"buffer {name!r} must be a NumPy array or None, "
                            f"got {type(tensor).__name__}")
        self._register(self._buffers, name, tensor)
        self._non_persistent_buffers.discard(name)
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        """Register ``module`` (a Module or None) as a child named ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a gptc.nn.Module")
        self._register(self._modules, name, module)

    # -- traversal --------------------------------------------------------
    def named_modules(self, memo=None, prefix=""):
        """Yield (name, module) for this module and every descendant, once each."""
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub = f"{prefix}.{name}" if prefix else name
            yield from module.named_modules(memo, sub)

    def modules(self):
        """Every module in the tree, this one first."""
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        """Yield (name, module) for the direct children."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        """The direct child modules."""
        for _, module in self.named_children():
            yield module

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """Yield (name, Parameter); a parameter shared by several modules
        (weight tying) is yielded once, under its first name."""
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None:
                    continue
                if remove_duplicate:
                    if id(param) in seen:
                        continue
                    seen.add(id(param))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), param

    def parameters(self, recurse=True):
        """Every parameter once, as ``torch.nn.Module.parameters``."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True):
        """Yield (name, array) for every buffer."""
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, buf in module._buffers.items():
                if buf is None or id(buf) in seen:
                    continue
                seen.add(id(buf))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), buf

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    # -- state dict ---------------------------------------------------------
    def _state_entries(self, prefix=""):
        """(key, owner module, attribute name, array) in PyTorch's state_dict
        order: a module's parameters, then its persistent buffers, then its
        children, depth first. Shared parameters appear under every name."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, self, name, param
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers:
                yield prefix + name, self, name, buf
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_entries(prefix + name + ".")

    def state_dict(self):
        """An ordered dict from the book's key names (``trf_blocks.0.att.W_query.weight``,
        ...) to NumPy arrays that share memory with the module's parameters and buffers."""
        return OrderedDict((key, value.view(np.ndarray))
                           for key, _, _, value in self._state_entries())

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from ``state_dict`` into this module's parameters and buffers.

        Values may be NumPy arrays or anything with ``__array__`` (a PyTorch
        state dict loads directly); they are converted to float32 and copied
        in place, so parameters keep their identity (and any weight tying).
        Raises KeyError for missing or unexpected keys when ``strict``, and
        ValueError for a shape mismatch, naming the key and both shapes.
        Nothing is modified unless every check passes. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping from names to arrays, "
                            f"got {type(state_dict).__name__}")
        entries = list(self._state_entries())
        own_keys = {key for key, _, _, _ in entries}
        missing = [key for key, _, _, _ in entries if key not in state_dict]
        unexpected = [key for key in state_dict.keys() if key not in own_keys]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(repr(k) for k in missing))
            if unexpected:
                parts.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
            raise KeyError(f"error loading state_dict into {type(self).__name__}: "
                           + "; ".join(parts))

        copied = [(key, target.inference_dtype) for key, _, _, target in entries
                  if key in state_dict and getattr(target, "inference_copy", None) is not None]
        if copied:
            key, dtype = copied[0]
            raise RuntimeError(f"{key!r} is stored in {dtype} for inference "
                               f"(to_dtype({dtype!r})); call to_dtype('float32') before "
                               "loading a state dict")

        # Check everything before copying anything.
        planned = []
        written = {}
        for key, owner, name, target in entries:
            if key not in state_dict:
                continue
            source = state_dict[key]
            try:
                value = np.asarray(source)
            except Exception as exc:  # e.g. a torch tensor that requires grad
                raise TypeError(f"value for {key!r} cannot be converted to a NumPy array: "
                                f"{exc}") from exc
            if value.dtype.kind not in "fiub":
                raise TypeError(f"value for {key!r} must hold real numbers, got dtype "
                                f"{value.dtype}")
            if value.shape != target.shape:
                raise ValueError(f"size mismatch for {key!r}: the state dict holds shape "
                                 f"{_shape_of(value)}, the model expects {target.shape}")
            value = value.astype(target.dtype, copy=False)
            if not target.flags.writeable:
                if not np.array_equal(value, target):
                    raise ValueError(f"{key!r} is a constant of {type(owner).__name__} and "
                                     "the state dict holds a different value")
                continue
            previous = written.get(id(target))
            if previous is not None and not np.array_equal(previous[1], value):
                raise ValueError(f"{key!r} and {previous[0]!r} are the same (tied) parameter "
                                 "in this model, but the state dict holds different values "
                                 "for them")
            written[id(target)] = (key, value)
            planned.append((target, value))
        for target, value in planned:
            np.copyto(target, value)
        return _IncompatibleKeys(missing, unexpected)

    # -- modes and calling -------------------------------------------------
    def train(self, mode=True):
        """Set training mode (dropout active) on this module and all below it."""
        if not isinstance(mode, bool):
            raise TypeError(f"train() expects a bool, got {type(mode).__name__}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        """Set evaluation mode (dropout off), as ``train(False)``."""
        return self.train(False)

    def to_dtype(self, dtype):
        """Store the weights of every Linear layer (the output head included) in
        ``"bfloat16"`` or ``"int8"`` for inference, or go back to ``"float32"``;
        returns the module.

        A one-token decode step reads every weight once, so it is bound by
        memory bandwidth: bfloat16 halves the bytes it reads, int8 (blocks of
        32 values with a bfloat16 scale each, ``Int8Weight``: 1.0625 bytes a
        weight) takes them to about a quarter. Products accumulate in float32;
        with int8, a few rows (decode) are quantised the same way and
        multiplied in integers, many rows (a prompt) multiply the widened
        weights in float32.

        The float32 parameters are kept, so ``state_dict()`` and parameter
        counts are unchanged, but they become read-only while the copies are
        in use: the two can never disagree. Loading a state dict, or a
        backward pass through such a layer, raises an error that says to call
        ``to_dtype("float32")`` first. A weight shared with an Embedding
        (``tie_weights``) gets its copy for the output head only.
        """
        if dtype not in _INFERENCE_DTYPES:
            raise ValueError(f"dtype must be 'float32', 'bfloat16' or 'int8', got {dtype!r}")
        for module in self.modules():
            module._store_weights_as(dtype)
        return self

    def _store_weights_as(self, dtype):
        """The hook ``to_dtype`` calls on every module: keep this module's own
        weights in ``dtype`` for inference. Modules whose weights stay float32
        (all but Linear) do nothing."""

    def zero_grad(self, set_to_none=True):
        """Reset the gradients of every parameter (to None, as PyTorch does by default)."""
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.data[...] = 0.0

    def forward(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} does not define forward(); subclasses of "
                        "gptc.nn.Module must")

    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks or self._forward_hooks:
            return call_with_hooks(self, args, kwargs)
        return self.forward(*args, **kwargs)

    # -- hooks ---------------------------------------------------------------
    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(module, args)`` before every ``forward``, as PyTorch does.

        ``args`` is the tuple of positional arguments. A hook that returns
        something other than None replaces them: a tuple is the new arguments,
        any other value the single new argument. With ``with_kwargs=True`` the
        hook is ``hook(module, args, kwargs)`` and returns None or ``(args,
        kwargs)``. Hooks run in registration order (``prepend=True``: first).
        Returns a handle whose ``remove()`` unregisters the hook.

        A GPTModel with a hook on any of its modules runs its modules one by
        one (not the one-call C forward), so that every hook fires, except
        on ``MultiHeadAttention.dropout``, which the C attention kernel
        applies itself (see gptc/nn/hooks.py).
        """
        return add_hook(self, self._forward_pre_hooks, hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False,
                              always_call=False):
        """Call ``hook(module, args, output)`` after every ``forward``, as PyTorch does.

        A hook that returns something other than None replaces the output,
        for the hooks after it and for the caller. With ``with_kwargs=True``
        the hook is ``hook(module, args, kwargs, output)``; with
        ``always_call=True`` it also runs when forward raises. Hooks run in
        registration order (``prepend=True``: first). Returns a handle whose
        ``remove()`` unregisters the hook.

        A GPTModel with a hook on any of its modules runs its modules one by
        one (not the one-call C forward), so that every hook fires, except
        on ``MultiHeadAttention.dropout``, which the C attention kernel
        applies itself (see gptc/nn/hooks.py).
        """
        return add_hook(self, self._forward_hooks, hook, prepend, with_kwargs, always_call)

    # -- printing ----------------------------------------------------------
    def extra_repr(self):
        """The text inside the parentheses of this module's line in the tree."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({lines[0]})"
        return type(self).__name__ + "(\n  " + "\n  ".join(lines) + "\n)"


class _ModuleContainer(Module):
    """Children named "0", "1", ...: indexing, length, iteration, append."""

    def _key(self, idx):
        n = len(self._modules)
        if not isinstance(idx, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be integers or slices, "
                            f"got {type(idx).__name__}")
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for {type(self).__name__} "
                             f"of length {n}")
        return list(self._modules.keys())[idx % n]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self._from_items(list(self._modules.items())[idx])
        return self._modules[self._key(idx)]

    def __setitem__(self, idx, module):
        self.add_module(self._key(idx), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add ``module`` at the end; returns the container."""
        self.add_module(str(len(self._modules)), module)
        return self


class Sequential(_ModuleContainer):
    """Modules applied one after another, as ``torch.nn.Sequential``; indexable."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    @classmethod
    def _from_items(cls, items):
        return cls(OrderedDict(items))

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(_ModuleContainer):
    """A list of modules whose parameters are registered, as ``torch.nn.ModuleList``."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    @classmethod
    def _from_items(cls, items):
        return cls(module for _, module in items)

    def extend(self, modules):
        """Append every module of ``modules``; returns the list."""
        for module in modules:
            self.append(module)
        return self

    def forward(self, *args, **kwargs):
        raise TypeError("ModuleList is a container, not a layer: iterate over it in forward()")
