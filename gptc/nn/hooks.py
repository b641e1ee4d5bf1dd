"""Forward hooks and forward pre-hooks, as ``torch.nn.Module`` has them.

A pre-hook ``hook(module, args)`` runs before ``forward`` and may return new
positional arguments (a tuple, or one value that becomes a one-element
tuple); a forward hook ``hook(module, args, output)`` runs after it and may
return a new output. Registered with ``with_kwargs=True`` they also receive
the keyword arguments: ``hook(module, args, kwargs)`` returning
``(args, kwargs)`` or None, and ``hook(module, args, kwargs, output)``.
Hooks run in the order they were registered (``prepend=True`` puts one
first). Each registration returns a ``RemovableHandle``.

gptc's one-call C forwards (``GPTModel.forward``, ``MultiHeadAttention``
without gradients, the KV-cache decoder of ``gptc.generate``) do not call
the submodules, so they check ``has_hooks`` and run the modules one by one
while any hook is registered. The attention applies its dropout inside its
C kernel; while ``MultiHeadAttention.dropout`` itself has a hook, the
attention instead computes the (batch, num_heads, num_tokens, num_tokens)
weights, calls ``dropout`` on them and multiplies the values by what it
returns, so that hook fires like any other, once per forward.
"""
import itertools
import warnings
import weakref
from collections import namedtuple

__all__ = ["RemovableHandle", "add_hook", "call_with_hooks", "has_hooks", "has_own_hooks"]

_Hook = namedtuple("_Hook", ["fn", "with_kwargs", "always_call"])

_next_id = itertools.count()
# The modules that have at least one hook. While it is empty, which is the
# usual case, no module tree needs to be walked to know that none of its
# modules has a hook; a module dropped with its hooks leaves it by itself.
_hooked_modules = weakref.WeakSet()


class RemovableHandle:
    """What registering a hook returns: ``remove()`` unregisters it (once; a
    second call does nothing). Usable as a context manager that removes the
    hook on exit, as ``torch.utils.hooks.RemovableHandle``."""

    def __init__(self, module, hooks, hook_id):
        self._module = weakref.ref(module)
        self._hooks = hooks
        self.id = hook_id

    def remove(self):
        """Unregister the hook."""
        self._hooks.pop(self.id, None)
        module = self._module()
        if module is not None and not has_own_hooks(module):
            _hooked_modules.discard(module)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def add_hook(module, hooks, fn, prepend, with_kwargs, always_call=False):
    """Put ``fn`` into ``hooks``, one of the OrderedDicts of hooks of
    ``module`` (first when ``prepend``); returns its handle."""
    if not callable(fn):
        raise TypeError(f"hook must be callable, got {type(fn).__name__}")
    hook_id = next(_next_id)
    hooks[hook_id] = _Hook(fn, bool(with_kwargs), bool(always_call))
    if prepend:
        hooks.move_to_end(hook_id, last=False)
    _hooked_modules.add(module)
    return RemovableHandle(module, hooks, hook_id)


def has_own_hooks(module):
    """True if ``module`` itself has a forward hook or pre-hook."""
    return bool(module._forward_pre_hooks or module._forward_hooks)


def has_hooks(module):
    """True if ``module`` or any module below it has a forward hook or pre-hook."""
    if not _hooked_modules:
        return False
    return any(has_own_hooks(m) for m in module.modules())


def _run_pre_hooks(module, args, kwargs):
    for hook in tuple(module._forward_pre_hooks.values()):
        if hook.with_kwargs:
            result = hook.fn(module, args, kwargs)
            if result is None:
                continue
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError("a forward pre-hook registered with with_kwargs=True must "
                                   "return None or a tuple (new_args, new_kwargs), got "
                                   f"{type(result).__name__}")
            args, kwargs = result
        else:
            result = hook.fn(module, args)
            if result is None:
                continue
            args = result if isinstance(result, tuple) else (result,)
    return args, kwargs


def _call_hook(hook, module, args, kwargs, output):
    if hook.with_kwargs:
        return hook.fn(module, args, kwargs, output)
    return hook.fn(module, args, output)


def call_with_hooks(module, args, kwargs):
    """``module.forward(*args, **kwargs)`` with its pre-hooks before and its
    forward hooks after, as ``torch.nn.Module.__call__``. Hooks registered
    with ``always_call=True`` also run when forward or another hook raised
    (with output None if forward had not returned); the original error is
    then raised, and an error of theirs only becomes a warning."""
    called = set()
    output = None
    try:
        args, kwargs = _run_pre_hooks(module, args, kwargs)
        output = module.forward(*args, **kwargs)
        for hook_id, hook in tuple(module._forward_hooks.items()):
            called.add(hook_id)
            result = _call_hook(hook, module, args, kwargs, output)
            if result is not None:
                output = result
    except Exception:
        for hook_id, hook in tuple(module._forward_hooks.items()):
            if not hook.always_call or hook_id in called:
                continue
            try:
                result = _call_hook(hook, module, args, kwargs, output)
            except Exception as exc:
                warnings.warn("a forward hook with always_call=True raised an error, ignored "
                              f"because forward raised first: {exc}", stacklevel=2)
                continue
            if result is not None:
                output = result
        raise
    return output
