"""A fuzzer over gptc's C entry points: every function of gptc._C and gptc._C._testing and
every method of its Generator and Decoder types.

    python tests/fuzz_c_api.py --seconds 60 [--seed N] [--verbose]

For the given time it calls entry points chosen at random with arguments drawn from a
seeded generator: a valid call with one or two arguments changed (an array of another
dtype, shape, layout, an aliased, read-only, misaligned or empty array, a weights mapping
with an entry missing or replaced), or arguments made entirely of random values (arrays of
random shapes, sizes 0 and beyond what an int holds, many dtypes, None, huge and negative
numbers, NaN, strings, objects whose conversions raise). A call must return or raise an
ordinary Python exception naming the problem. A crash, a sanitizer report (the sanitizer
build aborts on the first one: .ci/run runs this under it) or a SystemError or other
unexpected exception fails the run. It prints the number of calls made and, per entry
point, how many returned and how many raised.

The sequence of calls depends on the seed alone, so a failure is reproduced by running the
same seed again (--verbose prints each call before making it). Arguments that only set how
long a call runs (fma_peak's iterations and threads, randperm's n) are kept small, and
sizes are either small or beyond what an int holds: a valid call of a mid-sized shape may
legitimately ask for gigabytes.
"""
import argparse
import operator
import os
import random
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gptc  # noqa: E402
from gptc import _C  # noqa: E402
from conftest import c_entry_points, small_config  # noqa: E402


class FuzzError(Exception):
    """Raised by the fuzzer's own hostile objects; the binding must let it through."""


# Python exceptions a binding may raise for bad input.
EXPECTED = (TypeError, ValueError, IndexError, KeyError, OverflowError, MemoryError,
            RuntimeError, FuzzError)


class RaisingNumber:
    """A number whose conversions raise."""

    def __float__(self):
        raise FuzzError("__float__")

    def __index__(self):
        raise FuzzError("__index__")


class RaisingMapping:
    """A mapping whose keys() works and whose items raise."""

    def __init__(self, keys):
        self._keys = list(keys)

    def keys(self):
        return self._keys

    def __getitem__(self, key):
        raise FuzzError(f"__getitem__({key!r})")


HUGE_INTS = [2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30,
             -1, -2, -2 ** 31, -2 ** 63, -2 ** 63 - 1]
SMALL_INTS = [0, 1, 2, 3, 4, 5, 7, 8, 16]
FLOATS = [0.0, -0.0, 0.5, 1.0, 1e-5, -0.1, 1.5, 2.0, float("nan"), float("inf"),
          float("-inf"), 1e308, -1e308, 5e-324]
DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint16, np.uint8,
          np.uint64, np.bool_, np.complex64, object]
# Dimensions: small, or (only beside a 0, so the array stays empty) beyond an int.
DIMS = [0, 1, 2, 3, 4, 5, 7, 8, 16]
HUGE_DIMS = [2 ** 31 - 1, 2 ** 31, 2 ** 33]


class Fuzzer:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.generator = gptc.Generator().manual_seed(seed)
        self.models = self._models()
        self.templates = self._templates()

    # -- random values ---------------------------------------------------------------
    def shape(self):
        rng = self.rng
        shape = [rng.choice(DIMS) for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 3, 4]))]
        if shape and rng.random() < 0.1:
            # empty, with another dimension beyond an int
            shape[rng.randrange(len(shape))] = 0
            shape[rng.randrange(len(shape))] = rng.choice(HUGE_DIMS)
            if 0 not in shape:
                shape[0] = 0
        return tuple(shape)

    def values(self, shape, dtype):
        """An array of shape and dtype holding ordinary and extreme values."""
        size = int(np.prod(shape, dtype=np.float64))
        if dtype is object:
            return np.array([None] * size, dtype=object).reshape(shape)
        if size > 1 << 16:
            return np.zeros(shape, dtype)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            data = self.np_rng.integers(-3, 40, size=size)
            out = np.clip(data, info.min, info.max).astype(dtype)
            if size and self.rng.random() < 0.3:
                out.flat[self.rng.randrange(size)] = self.rng.choice([info.min, info.max])
            return out.reshape(shape)
        data = self.np_rng.standard_normal(size)
        if size and self.rng.random() < 0.3:
            data[self.rng.randrange(size)] = self.rng.choice(FLOATS)
        with np.errstate(all="ignore"):
            return data.astype(dtype).reshape(shape)

    def layout(self, a):
        """a, or an equal array in another memory form."""
        rng = self.rng
        kind = rng.choice(["same", "same", "strided", "transposed", "fortran", "read-only",
                           "misaligned"])
        if not isinstance(a, np.ndarray) or a.ndim == 0 or a.dtype == object:
            return a
        if kind == "strided" and a.size < 1 << 16:
            wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
            wide[..., ::2] = a
            return wide[..., ::2]
        if kind == "transposed":
            return a.T
        if kind == "fortran" and a.size < 1 << 16:
            return np.asfortranarray(a)
        if kind == "read-only":
            b = a.copy() if a.size < 1 << 16 else a
            b.flags.writeable = False
            return b
        if kind == "misaligned" and a.size < 1 << 16 and a.itemsize > 1:
            raw = np.zeros(a.nbytes + 1, np.uint8)
            b = raw[1:].view(a.dtype).reshape(a.shape)
            b[...] = a
            return b
        return a

    def array(self):
        dtype = self.rng.choice(DTYPES[:4] + [np.float32] * 4 + DTYPES[4:])
        return self.layout(self.values(self.shape(), dtype))

    def value(self, depth=0):
        """Any argument at all."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.45:
            return self.array()
        if kind < 0.55:
            return rng.choice(SMALL_INTS + HUGE_INTS)
        if kind < 0.63:
            return rng.choice(FLOATS)
        if kind < 0.68:
            return None
        if kind < 0.72:
            return rng.choice([True, False])
        if kind < 0.76:
            return rng.choice(["", "x", "avx2", "generic", "1e-5", "0.1", b"\x00" * 8])
        if kind < 0.80:
            return self.generator if rng.random() < 0.8 else gptc.default_generator
        if kind < 0.84 and depth == 0:
            return [self.value(1) for _ in range(rng.randrange(4))]
        if kind < 0.88 and depth == 0:
            return {rng.choice(["W_query.weight", "tok_emb.weight", "dropout.p", 3]):
                    self.value(1) for _ in range(rng.randrange(4))}
        if kind < 0.92:
            return RaisingNumber()
        if kind < 0.95:
            return np.float32(rng.choice(FLOATS))
        return object()

    def changed(self, a, others):
        """a changed in one way: another form, dtype, shape, or another argument."""
        rng = self.rng
        kind = rng.random()
        if isinstance(a, dict):
            return self.changed_weights(a)
        if isinstance(a, tuple) and a and kind < 0.5:
            # an int8 weight: one of its arrays changed, or one too many or too few
            parts = list(a)
            if kind < 0.1:
                return tuple(parts[:-1] if rng.random() < 0.5 else parts + [parts[-1]])
            i = rng.randrange(len(parts))
            parts[i] = self.changed(parts[i], parts)
            return tuple(parts)
        if not isinstance(a, np.ndarray) or kind < 0.15:
            return self.value()
        if kind < 0.35:
            return self.layout(a)
        if kind < 0.5:
            with np.errstate(all="ignore"):
                return a.astype(rng.choice(DTYPES)) if a.size < 1 << 16 else a
        if kind < 0.7:
            shape = list(a.shape)
            if shape and rng.random() < 0.7:
                i = rng.randrange(len(shape))
                shape[i] = max(0, shape[i] + rng.choice([-1, 1, 2]))
            elif rng.random() < 0.5:
                shape.append(rng.choice([1, 2]))
            else:
                shape = shape[1:]
            return self.values(tuple(shape), a.dtype.type if a.dtype != object else object)
        if kind < 0.85 and others:
            other = rng.choice(others)
            if isinstance(other, np.ndarray) and other.size and rng.random() < 0.5:
                return other.reshape(-1)[: max(1, other.size // 2)]   # a part of another
            return other                                               # aliased
        return self.values(a.shape, a.dtype.type if a.dtype != object else object)

    def changed_weights(self, weights):
        rng = self.rng
        weights = dict(weights)
        keys = list(weights)
        kind = rng.random()
        if kind < 0.1:
            return RaisingMapping(keys)
        if kind < 0.15:
            return rng.choice([keys, tuple(weights.items()), self.value()])
        for _ in range(rng.choice([1, 1, 2])):
            key = rng.choice(keys)
            action = rng.random()
            if action < 0.3:
                weights.pop(key, None)
            elif action < 0.4:
                weights[rng.choice([7, ("a",), key + "x"])] = self.value(1)
            else:
                weights[key] = self.changed(weights[key], list(weights.values()))
        return weights

    # -- valid calls ---------------------------------------------------------------------
    def _models(self):
        """Small GPTModels as gpt_forward and Decoder take them: float32, bfloat16 and
        int8 weights, with and without biases, in eval and training mode."""
        models = []
        for i, (cfg, dtype, train) in enumerate([
                (small_config(vocab_size=20, context_length=8, emb_dim=8, n_heads=2,
                              n_layers=1), "float32", False),
                (small_config(vocab_size=20, context_length=8, emb_dim=8, n_heads=2,
                              n_layers=2, qkv_bias=True), "bfloat16", False),
                (small_config(vocab_size=11, context_length=4, emb_dim=4, n_heads=1,
                              n_layers=1, drop_rate=0.5), "float32", True),
                (small_config(vocab_size=20, context_length=8, emb_dim=40, n_heads=4,
                              n_layers=1), "int8", False)]):
            gptc.manual_seed(i)
            model = gptc.GPTModel(cfg).to_dtype(dtype).train(train)
            models.append((cfg, model._one_call_arguments()))
        return models

    def f32(self, *shape):
        return self.values(shape, np.float32)

    def ids(self, vocab, *shape):
        return self.np_rng.integers(0, vocab, size=shape).astype(np.int64)

    def model_call(self):
        cfg, args = self.rng.choice(self.models)
        return cfg, dict(args, weights=dict(args["weights"]))

    def decoder(self):
        cfg, args = self.models[self.rng.choice([0, 1, 3])]   # the eval-mode ones
        dec = _C.Decoder(**args, batch=2, capacity=cfg["context_length"])
        if self.rng.random() < 0.7:
            dec.prefill(self.ids(cfg["vocab_size"], 2, self.rng.randint(1, 3)))
        return cfg, dec

    def mha_weights(self, d_in, d_out, bias):
        w = {"W_query.weight": self.f32(d_out, d_in), "W_key.weight": self.f32(d_out, d_in),
             "W_value.weight": self.f32(d_out, d_in), "out_proj.weight": self.f32(d_out, d_out),
             "out_proj.bias": self.f32(d_out), "dropout.p": self.rng.choice([0.0, 0.0, 0.3])}
        if bias:
            for name in ("W_query", "W_key", "W_value"):
                w[name + ".bias"] = self.f32(d_out)
        if self.rng.random() < 0.3:
            w["W_key.weight"] = _C.to_bfloat16(w["W_key.weight"])
        if self.rng.random() < 0.3:
            w["W_value.weight"] = _C.to_int8(w["W_value.weight"])
        return w

    def _templates(self):
        """For each entry point, a function giving (callable, args, kwargs) of a valid call."""
        r = self.rng
        g = lambda: self.generator  # noqa: E731
        def B():
            return r.randint(1, 3)

        def T():
            return r.randint(1, 5)

        def C():
            return r.choice([4, 6, 8])

        def linear():
            k, n = C(), r.randint(1, 6)
            w = self.f32(n, k)
            kwargs = {}
            if r.random() < 0.3:
                kwargs["gelu"] = r.choice([True, False])
            elif r.random() < 0.3:
                kwargs["out"] = self.f32(2, n)
            stored = r.choice([w, w, _C.to_bfloat16(w), _C.to_int8(w)])
            return _C.linear, [self.f32(2, k), stored,
                               self.f32(n) if r.random() < 0.5 else None], kwargs

        def linear_backward():
            m, k, n = r.randint(0, 3), r.randint(0, 4), r.randint(0, 4)
            return _C.linear_backward, [self.f32(m, n), self.f32(m, k), self.f32(n, k),
                                        np.zeros((m, k), np.float32), np.zeros((n, k), np.float32),
                                        np.zeros(n, np.float32)], {}

        def layer_norm_backward():
            c = C()
            return _C.layer_norm_backward, [self.f32(2, c), self.f32(2, c), self.f32(c), 1e-5,
                                            np.zeros((2, c), np.float32), np.zeros(c, np.float32),
                                            np.zeros(c, np.float32)], {}

        def elementwise_backward(fn):
            return lambda: (fn, [self.f32(3, 2), self.f32(3, 2), np.zeros((3, 2), np.float32)], {})

        def attention_train():
            b, t, nh = B(), T(), r.choice([1, 2])
            q = self.f32(b, t, 4 * nh)
            return _C.attention_train, [q, self.f32(*q.shape), self.f32(*q.shape), nh,
                                        r.choice([0.0, 0.5]), g()], {}

        def attention_backward():
            b, t, nh = B(), T(), r.choice([1, 2])
            q = self.f32(b, t, 4 * nh)
            att = self.f32(b, nh, t, t)
            noise = self.f32(b, nh, t, t) if r.random() < 0.5 else None
            grads = [np.zeros_like(q) if r.random() < 0.7 else None for _ in range(3)]
            return _C.attention_backward, [self.f32(*q.shape), q, self.f32(*q.shape),
                                           self.f32(*q.shape), att, noise, nh] + grads, {}

        def attention_weights():
            b, t, nh = B(), T(), r.choice([1, 2])
            q = self.f32(b, t, 4 * nh)
            return _C.attention_weights, [q, self.f32(*q.shape), nh], {}

        def attention_weights_backward():
            b, t, nh = B(), T(), r.choice([1, 2])
            q = self.f32(b, t, 4 * nh)
            grads = [np.zeros_like(q) if r.random() < 0.7 else None for _ in range(2)]
            return _C.attention_weights_backward, [self.f32(b, nh, t, t), q, self.f32(*q.shape),
                                                   self.f32(b, nh, t, t), nh] + grads, {}

        def attention_context():
            b, t, nh = B(), T(), r.choice([1, 2])
            return _C.attention_context, [self.f32(b, nh, t, t), self.f32(b, t, 4 * nh), nh], {}

        def attention_context_backward():
            b, t, nh = B(), T(), r.choice([1, 2])
            v = self.f32(b, t, 4 * nh)
            grads = [np.zeros((b, nh, t, t), np.float32) if r.random() < 0.7 else None,
                     np.zeros_like(v) if r.random() < 0.7 else None]
            return _C.attention_context_backward, [self.f32(*v.shape), self.f32(b, nh, t, t), v,
                                                   nh] + grads, {}

        def attention_cached():
            b, tq, cap, nh = B(), r.randint(1, 3), r.randint(3, 6), r.choice([1, 2])
            q = self.f32(b, tq, 4 * nh)
            return _C._testing.attention_cached, [q, self.f32(b, cap, 4 * nh),
                                                  self.f32(b, cap, 4 * nh), nh,
                                                  r.randint(0, cap - tq)], {}

        def gpt_forward():
            cfg, args = self.model_call()
            idx = self.ids(cfg["vocab_size"], B(), r.randint(1, cfg["context_length"]))
            return _C.gpt_forward, [idx], dict(args, generator=g())

        def decoder_new():
            cfg, args = self.model_call()
            capacity = r.randint(1, cfg["context_length"])
            return _C.Decoder, [], dict(args, batch=B(), capacity=capacity)

        def decoder_prefill():
            cfg, dec = self.decoder()
            return dec.prefill, [self.ids(cfg["vocab_size"], 2, r.randint(1, 3))], {}

        def decoder_step():
            cfg, dec = self.decoder()
            return dec.step, [self.ids(cfg["vocab_size"], 2)], {}

        def cross_entropy_backward():
            n, v = r.randint(0, 3), r.randint(1, 5)
            return _C.cross_entropy_backward, [self.f32(n), self.f32(n, v), self.ids(v, n),
                                               np.zeros((n, v), np.float32)], {}

        def adamw_update():
            shape = (r.randint(0, 3), 2)
            return _C.adamw_update, [self.f32(*shape), self.f32(*shape),
                                     np.zeros(shape, np.float32), np.ones(shape, np.float32),
                                     1e-3, 0.9, 0.999, 1e-8, 0.1, r.randint(1, 5)], {}

        def generator_method(name, *args):
            return lambda: (getattr(gptc.Generator(), name), list(args), {})

        return {
            "uniform_": lambda: (_C.uniform_, [self.f32(3, 2), -1.0, 1.0, g()], {}),
            "normal_": lambda: (_C.normal_, [self.f32(5), 0.0, 1.0, g()], {}),
            "bernoulli_": lambda: (_C.bernoulli_, [self.f32(4), 0.5, g()], {}),
            "randperm": lambda: (_C.randperm, [r.randint(0, 20), g()], {}),
            "random_int64": lambda: (_C.random_int64, [g()], {}),
            "linear": linear,
            "linear_backward": linear_backward,
            "to_bfloat16": lambda: (_C.to_bfloat16, [self.f32(2, 3)], {}),
            "to_int8": lambda: (_C.to_int8, [self.f32(2, 40)], {}),
            "layer_norm": lambda: (_C.layer_norm, [self.f32(2, 4), self.f32(4), self.f32(4),
                                                   1e-5], {}),
            "layer_norm_backward": layer_norm_backward,
            "gelu": lambda: (_C.gelu, [self.f32(2, 3)], {}),
            "gelu_backward": elementwise_backward(_C.gelu_backward),
            "relu": lambda: (_C.relu, [self.f32(2, 3)], {}),
            "relu_backward": elementwise_backward(_C.relu_backward),
            "softmax": lambda: (_C.softmax, [self.f32(2, 3)], {}),
            "dropout": lambda: (_C.dropout, [self.f32(2, 3), 0.5, g()], {}),
            "dropout_train": lambda: (_C.dropout_train, [self.f32(2, 3), 0.5, g()], {}),
            "dropout_backward": elementwise_backward(_C.dropout_backward),
            "embedding": lambda: (_C.embedding, [self.ids(5, 2, 3), self.f32(5, 4)], {}),
            "embedding_backward": lambda: (_C.embedding_backward,
                                           [self.f32(2, 3, 4), self.ids(5, 2, 3),
                                            np.zeros((5, 4), np.float32)], {}),
            "multihead_attention": lambda: (_C.multihead_attention,
                                            [self.f32(B(), T(), 6),
                                             self.mha_weights(6, 4, r.random() < 0.5),
                                             r.choice([1, 2]), g()], {}),
            "attention_train": attention_train,
            "attention_backward": attention_backward,
            "attention_weights": attention_weights,
            "attention_weights_backward": attention_weights_backward,
            "attention_context": attention_context,
            "attention_context_backward": attention_context_backward,
            "gpt_forward": gpt_forward,
            "check_in_idx": lambda: (_C.check_in_idx, [self.ids(20, 2, 3), 20, "in_idx", 8], {}),
            "Decoder": decoder_new,
            "Decoder.prefill": decoder_prefill,
            "Decoder.step": decoder_step,
            "cross_entropy": lambda: (_C.cross_entropy, [self.f32(3, 5), self.ids(5, 3)], {}),
            "cross_entropy_backward": cross_entropy_backward,
            "mse_backward": lambda: (_C.mse_backward, [self.f32(4), self.f32(4), 0.25,
                                                       np.zeros(4, np.float32)], {}),
            "adamw_update": adamw_update,
            "next_tokens": lambda: (_C.next_tokens, [self.f32(2, 6), r.choice([0.0, 0.7]),
                                                     r.choice([None, 1, 3]), g()], {}),
            "check_sampling": lambda: (_C.check_sampling, [r.choice([0.0, 0.7, 2]),
                                                           r.choice([None, 1, 40]),
                                                           r.choice([None, 50])], {}),
            "set_num_threads": lambda: (_C.set_num_threads, [r.randint(1, 2)], {}),
            "get_num_threads": lambda: (_C.get_num_threads, [], {}),
            "isa": lambda: (_C.isa, [], {}),
            "set_isa": lambda: (_C.set_isa, [r.choice(_C.supported_isas())], {}),
            "supported_isas": lambda: (_C.supported_isas, [], {}),
            "fma_peak": lambda: (_C.fma_peak, [1, 10], {}),
            "read_bandwidth": lambda: (_C.read_bandwidth, [self.f32(r.randint(1, 40)),
                                                           r.randint(1, 3)], {}),
            "build_info": lambda: (_C.build_info, [], {}),
            "zeros": lambda: (_C.zeros, [r.choice([(3, 5), (70000,), (0, 4), 5, ()])], {}),
            "empty_cache": lambda: (_C.empty_cache, [], {}),
            "buffer_pool_stats": lambda: (_C.buffer_pool_stats, [], {}),
            "Generator": lambda: (_C.Generator, [], {}),
            "Generator.manual_seed": generator_method("manual_seed", 123),
            "Generator.initial_seed": generator_method("initial_seed"),
            "Generator.get_state": generator_method("get_state"),
            "Generator.set_state": lambda: (
                gptc.Generator().set_state,
                [gptc.Generator().manual_seed(r.randint(0, 9)).get_state()], {}),
            "_testing.attention_cached": attention_cached,
        }

    # -- one call --------------------------------------------------------------------------
    def arguments(self, name):
        """(callable, args, kwargs): a valid call, changed or not, or random arguments."""
        fn, args, kwargs = self.templates[name]()
        kind = self.rng.random()
        if kind < 0.15:
            return fn, args, kwargs
        if kind < 0.8:
            slots = [("a", i) for i in range(len(args))] + [("k", k) for k in kwargs]
            for _ in range(self.rng.choice([1, 1, 2])):
                if not slots:
                    break
                where, i = self.rng.choice(slots)
                others = list(args) + list(kwargs.values())
                if where == "a":
                    args[i] = self.changed(args[i], others)
                else:
                    kwargs[i] = self.changed(kwargs[i], others)
            if self.rng.random() < 0.05:
                args = args[:-1] if args else [self.value()]   # a wrong number of arguments
            return fn, args, kwargs
        return fn, [self.value() for _ in range(self.rng.randrange(len(args) + 3))], {}


def _as_int(value):
    """value as the integer a C binding would read from it, or None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except (TypeError, FuzzError):
        return None


def bounded(name, args):
    """The arguments with the ones that only set how long the call runs kept small."""
    if name == "fma_peak" and len(args) == 2:
        # nthreads is checked to be in [1, 4096], iterations to be >= 1 and to fit a long
        limits = [(4096, 4), (2 ** 63 - 1, 1000)]
        out = []
        for a, (top, small) in zip(args, limits):
            v = _as_int(a)
            out.append(min(v, small) if v is not None and 1 <= v <= top else a)
        return out
    if name == "read_bandwidth" and len(args) == 2:
        # nthreads is checked to be in [1, 4096]: a team of thousands is slow to start
        v = _as_int(args[1])
        return [args[0], min(v, 4) if v is not None and 1 <= v <= 4096 else args[1]]
    if name == "randperm" and args:
        v = _as_int(args[0])
        if v is not None and 0 <= v < 2 ** 32:
            return [min(v, 100_000)] + list(args[1:])
    return args


def describe(value):
    if isinstance(value, np.ndarray):
        flags = "" if value.flags.c_contiguous else " non-contiguous"
        flags += "" if value.flags.writeable else " read-only"
        flags += "" if value.flags.aligned else " misaligned"
        return f"array{value.shape} {value.dtype}{flags}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in list(value.items())[:4]) + \
            (", ..." if len(value) > 4 else "") + "}"
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None,
                        help="default: $GPTC_FUZZ_SEED, else the time")
    parser.add_argument("--verbose", action="store_true", help="print each call first")
    args = parser.parse_args(argv)
    seed = args.seed
    if seed is None:
        seed = int(os.environ.get("GPTC_FUZZ_SEED", time.time_ns() % 2 ** 32))
    print(f"fuzz_c_api: seed {seed} (rerun: python tests/fuzz_c_api.py --seed {seed}), "
          f"{args.seconds:g} s, build {_C.build_info()}", flush=True)
    fuzzer = Fuzzer(seed)
    names = c_entry_points()
    missing = sorted(set(names) - set(fuzzer.templates))
    if missing:
        print(f"fuzz_c_api: FAILED: no template for {', '.join(missing)}")
        return 1
    threads, isa = _C.get_num_threads(), _C.isa()
    counts = {name: [0, 0] for name in names}   # returned, raised
    calls = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        name = fuzzer.rng.choice(names)
        try:
            fn, call_args, kwargs = fuzzer.arguments(name)
        except EXPECTED:
            continue   # a template's own setup (a decoder) met a changed global state
        call_args = bounded(name, call_args)
        if args.verbose:
            print(f"{calls}: {name}({', '.join(map(describe, call_args))}"
                  f"{', ' if call_args and kwargs else ''}"
                  f"{', '.join(f'{k}={describe(v)}' for k, v in kwargs.items())})", flush=True)
        calls += 1
        try:
            fn(*call_args, **kwargs)
            counts[name][0] += 1
        except EXPECTED:
            counts[name][1] += 1
        except Exception as exc:   # SystemError, or an exception no binding should raise
            print(f"fuzz_c_api: FAILED at call {calls} (seed {seed}): {name}("
                  f"{', '.join(map(describe, call_args))}, "
                  f"{', '.join(f'{k}={describe(v)}' for k, v in kwargs.items())}) raised "
                  f"{type(exc).__name__}: {exc}")
            return 1
        finally:
            _C.set_num_threads(threads)
            if _C.isa() != isa:
                _C.set_isa(isa)
    print(f"fuzz_c_api: {calls} calls in {args.seconds:g} s, no crash, no sanitizer report, "
          "no unexpected exception")
    for name in names:
        returned, raised = counts[name]
        print(f"  {name:28s} {returned:6d} returned {raised:7d} raised")
    return 0


if __name__ == "__main__":
    sys.exit(main())
