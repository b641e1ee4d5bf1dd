"""Bad input never crashes and never returns silent garbage: it raises an exception whose
message names the argument, the value and what was expected. Each fact about an input is
checked in one place (the C binding for arrays, token ids and probabilities; the classes
for their constructor arguments), and every entry point of gptc._C has a case here
(test_every_C_entry_point_refuses_bad_input). tests/test_input_forms.py: input that is
merely in an unusual form works."""
import functools

import numpy as np
import pytest

import gptc
from gptc import _C, nn
from conftest import c_entry_points, report, small_config


@pytest.fixture(scope="module")
def model():
    """A small GPTModel (vocab 1000, context 16) in eval mode."""
    return gptc.GPTModel(small_config(n_layers=2)).eval()


# -- token ids of a model -----------------------------------------------------------
# Every entry point that runs a model on token ids makes the one check of the C binding
# (gpt_forward, or check_in_idx before the modules run one by one), named as its argument.

def _one_call(model, ids):
    with gptc.no_grad():
        return model(ids)


@functools.lru_cache(maxsize=None)
def _dummy_model():
    return gptc.DummyGPTModel(small_config()).eval()


MODEL_INPUTS = {
    "GPTModel-recording": (lambda m, ids: m(ids), "in_idx"),
    "GPTModel-one-call": (_one_call, "in_idx"),
    "DummyGPTModel": (lambda m, ids: _dummy_model()(ids), "in_idx"),
    "generate": (lambda m, ids: gptc.generate(m, ids, 1, 16), "idx"),
    "attention_weights": (gptc.attention_weights, "idx"),
}
ENTRY = pytest.mark.parametrize("call,name", list(MODEL_INPUTS.values()), ids=list(MODEL_INPUTS))


@pytest.mark.parametrize("bad_id", [-1, 1000, 5000, -(2 ** 40)])
@ENTRY
def test_token_id_out_of_range(model, call, name, bad_id):
    """An id < 0 or >= vocab_size raises IndexError naming the id, where it is and the
    vocabulary size."""
    ids = np.array([[1, 2, 3], [4, bad_id, 6]])
    with pytest.raises(IndexError, match=rf"^{name} contains token id {bad_id} at flat position 4"
                                         r".*vocab_size 1000"):
        call(model, ids)


@ENTRY
def test_huge_unsigned_token_id(model, call, name):
    """A uint64 id beyond int64 raises IndexError naming it (not a wrapped negative id)."""
    with pytest.raises(IndexError, match=rf"{name}.*18446744073709551615"):
        call(model, np.array([[1, 2 ** 64 - 1]], np.uint64))


@pytest.mark.parametrize("call,name", [MODEL_INPUTS[k] for k in MODEL_INPUTS if k != "generate"],
                         ids=[k for k in MODEL_INPUTS if k != "generate"])
def test_sequence_longer_than_context(model, call, name):
    """seq_len > context_length raises ValueError naming both lengths (generate crops the
    prompt instead)."""
    with pytest.raises(ValueError, match=rf"{name} holds sequences of 17 tokens, longer than the "
                                         r"context_length 16"):
        call(model, np.zeros((1, 17), np.int64))


@pytest.mark.parametrize("ids", [np.zeros((1, 3)), np.zeros((1, 3), np.float32),
                                 np.array([[True, False]]), np.array([["a", "b"]]),
                                 [[1.0, 2.0]], np.zeros((1, 2), complex)],
                         ids=["float64", "float32", "bool", "str", "float-list", "complex"])
@ENTRY
def test_non_integer_token_ids(model, call, name, ids):
    """Float, bool, string and complex token arrays raise TypeError naming the argument and
    the dtype."""
    dtype = np.asarray(ids).dtype
    with pytest.raises(TypeError, match=rf"{name} must hold integer token ids.*{dtype}"):
        call(model, ids)


def re_shape(shape):
    """The regex of a shape tuple as printed."""
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("shape", [(3,), (1, 2, 3), ()])
@ENTRY
def test_token_ids_of_wrong_rank(model, call, name, shape):
    """1-D, 3-D and 0-D token arrays raise ValueError naming the argument and the shape."""
    with pytest.raises(ValueError, match=rf"{name} must have shape \(batch_size, seq_len\), "
                                         rf"got shape {re_shape(shape)}"):
        call(model, np.zeros(shape, np.int64))


@pytest.mark.parametrize("shape", [(0, 4), (2, 0), (0, 0)])
@ENTRY
def test_empty_batch_or_sequence(model, call, name, shape):
    """An empty batch or a zero-length sequence raises ValueError naming the shape."""
    with pytest.raises(ValueError, match=rf"{name} has shape {re_shape(shape)}.*at least one token"):
        call(model, np.zeros(shape, np.int64))


def test_generate_checks_the_whole_prompt(model):
    """A bad id in the part of a long prompt that the window crops away is still refused."""
    prompt = np.ones((1, 20), np.int64)
    prompt[0, 0] = 1000
    with pytest.raises(IndexError, match=r"idx contains token id 1000 at flat position 0"):
        gptc.generate(model, prompt, 2, 16)


def test_generate_rejects_bad_arguments(model):
    """generate_text_simple names idx, max_new_tokens and context_size when they are wrong."""
    with pytest.raises(TypeError, match=r"idx must hold integer token ids.*float64"):
        gptc.generate_text_simple(model, np.zeros((1, 3)), 2, 16)
    with pytest.raises(ValueError, match=r"idx must have shape.*\(3,\)"):
        gptc.generate_text_simple(model, np.zeros(3, np.int64), 2, 16)
    with pytest.raises(ValueError, match=r"max_new_tokens.*non-negative.*-1"):
        gptc.generate_text_simple(model, [[1, 2]], -1, 16)
    with pytest.raises(ValueError, match=r"context_size.*positive.*0"):
        gptc.generate_text_simple(model, [[1, 2]], 2, 0)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(max_new_tokens=-1), ValueError, r"max_new_tokens must be a non-negative integer, got -1"),
    (dict(max_new_tokens=2.5), ValueError, r"max_new_tokens must be a non-negative integer"),
    (dict(context_size=0), ValueError, r"context_size must be a positive integer, got 0"),
    (dict(context_size=-3), ValueError, r"context_size must be a positive integer, got -3"),
    (dict(context_size=17), ValueError, r"context_size must be at most the model's "
                                        r"context_length 16, got 17"),
    (dict(temperature=-0.5), ValueError, r"temperature must be a finite number >= 0, got -0.5"),
    (dict(temperature=float("nan")), ValueError, r"temperature must be .* got nan"),
    (dict(temperature=float("inf")), ValueError, r"temperature must be .* got inf"),
    (dict(temperature="hot"), TypeError, r"temperature must be .* got 'hot'"),
    (dict(top_k=0), ValueError, r"top_k must be None or an integer in \[1, vocab_size\] = "
                                r"\[1, 1000\], got 0"),
    (dict(top_k=1001), ValueError, r"top_k .* got 1001"),
    (dict(top_k=-2), ValueError, r"top_k .* got -2"),
    (dict(top_k=2.0), TypeError, r"top_k .* got 2.0"),
    (dict(top_k=True), TypeError, r"top_k .* got True"),
    (dict(top_k=np.int64(0)), ValueError, r"top_k .* got np.int64\(0\)"),
    (dict(eos_id=1000), ValueError, r"eos_id must be None or a token id in \[0, 1000\), got 1000"),
])
def test_generate_rejects_bad_settings(model, kwargs, exc, match):
    """gptc.generate names each of its settings when it is wrong."""
    args = dict(max_new_tokens=3, context_size=16)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        gptc.generate(model, np.array([[1, 2, 3]]), **args)


# -- layer inputs ---------------------------------------------------------------------

TINY = small_config(emb_dim=8, n_heads=2, context_length=6, vocab_size=20, n_layers=1)


@pytest.mark.parametrize("layer,shape,expect", [
    (lambda: nn.Linear(4, 3), (2, 5), r"input has shape \(2, 5\).*expected 4"),
    (lambda: nn.LayerNorm(4), (2, 3, 5), r"input has shape \(2, 3, 5\).*expected 4"),
    (lambda: nn.MultiHeadAttention(4, 4, 8, 0.0, 2), (1, 2, 5),
     r"input has shape \(1, 2, 5\).*expected 4"),
    (lambda: nn.TransformerBlock(TINY), (1, 2, 5), r"input has shape \(1, 2, 5\).*expected 8"),
    (lambda: nn.FeedForward(TINY), (1, 2, 5), r"input has shape \(1, 2, 5\).*expected 8"),
], ids=["Linear", "LayerNorm", "MultiHeadAttention", "TransformerBlock", "FeedForward"])
def test_wrong_last_dimension(layer, shape, expect):
    """A layer input whose last dimension is wrong raises ValueError naming the shape and the
    expected size."""
    with pytest.raises(ValueError, match=expect):
        layer()(np.zeros(shape, np.float32))


def test_attention_needs_3d_input():
    """MultiHeadAttention (and TransformerBlock) on 2-D input raise ValueError naming the shape."""
    with pytest.raises(ValueError, match=r"input must have 3 dimensions, got shape \(2, 4\)"):
        nn.MultiHeadAttention(4, 4, 8, 0.0, 2)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"3 dimensions, got shape \(3, 8\)"):
        nn.TransformerBlock(TINY)(np.zeros((3, 8), np.float32))


def test_attention_more_tokens_than_context():
    """MultiHeadAttention on more tokens than context_length raises ValueError naming both."""
    with pytest.raises(ValueError, match=r"9 tokens.*context_length 8"):
        nn.MultiHeadAttention(4, 4, 8, 0.0, 2)(np.zeros((1, 9, 4), np.float32))


def test_scalar_input_to_row_layers():
    """A 0-d input to Linear or LayerNorm raises ValueError (no dimension to work on)."""
    with pytest.raises(ValueError, match="input must have at least 1 dimension"):
        nn.Linear(1, 1)(np.float32(1.0))
    with pytest.raises(ValueError, match="input must have at least 1 dimension"):
        nn.LayerNorm(1)(np.float32(1.0))


NON_NUMERIC = {
    "str-array": np.array([["a", "b", "c", "d"]]),
    "str": "abcd",
    "complex": np.zeros((1, 2, 4), complex),
    "bool": np.ones((1, 2, 4), bool),
    "None": None,
    "object": np.array([[object()] * 4]),
}

LAYERS = {
    "Linear": lambda: nn.Linear(4, 3),
    "LayerNorm": lambda: nn.LayerNorm(4),
    "GELU": nn.GELU,
    "ReLU": nn.ReLU,
    "Dropout": lambda: nn.Dropout(0.5),
    "MultiHeadAttention": lambda: nn.MultiHeadAttention(4, 4, 8, 0.0, 2),
    "TransformerBlock": lambda: nn.TransformerBlock(small_config(emb_dim=4, n_heads=2)),
    "FeedForward": lambda: nn.FeedForward({"emb_dim": 4}),
}


@pytest.mark.parametrize("value", list(NON_NUMERIC.values()), ids=list(NON_NUMERIC))
@pytest.mark.parametrize("layer", list(LAYERS.values()), ids=list(LAYERS))
def test_non_numeric_layer_input(layer, value):
    """Strings, complex, bool and object inputs raise TypeError naming input and the dtype."""
    dtype = np.asarray(value).dtype
    with pytest.raises(TypeError, match=rf"input must hold real numbers.*{dtype}"):
        layer()(value)


def test_embedding_rejects_float_ids_and_out_of_range():
    """Embedding names float ids (TypeError) and out-of-range ids (IndexError)."""
    emb = nn.Embedding(5, 3)
    with pytest.raises(TypeError, match=r"input must hold integer token ids.*float64"):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(IndexError, match=r"token id 5.*\[0, 5\)"):
        emb(np.array([[0, 5]]))


# -- configs --------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["vocab_size", "context_length", "emb_dim", "n_heads",
                                 "n_layers", "drop_rate", "qkv_bias"])
@pytest.mark.parametrize("cls", [gptc.GPTModel, nn.TransformerBlock],
                         ids=["GPTModel", "TransformerBlock"])
def test_config_missing_key(cls, key):
    """A config missing a key raises ValueError naming the key."""
    cfg = small_config()
    del cfg[key]
    with pytest.raises(ValueError, match=rf"cfg is missing '{key}'"):
        cls(cfg)


def test_feed_forward_config_missing_emb_dim():
    """FeedForward({}) raises ValueError naming emb_dim."""
    with pytest.raises(ValueError, match="cfg is missing 'emb_dim'"):
        nn.FeedForward({})


def test_config_not_a_dict():
    """A config that is not a mapping raises TypeError naming its type."""
    with pytest.raises(TypeError, match="cfg must be a dict.*NoneType"):
        gptc.GPTModel(None)


def test_emb_dim_not_divisible_by_heads():
    """emb_dim not divisible by n_heads raises ValueError naming both values."""
    with pytest.raises(ValueError, match=r"'emb_dim'\] \(70\) must be divisible by "
                                         r"cfg\['n_heads'\] \(6\)"):
        gptc.GPTModel(small_config(emb_dim=70))


@pytest.mark.parametrize("key", ["vocab_size", "context_length", "emb_dim", "n_heads",
                                 "n_layers"])
@pytest.mark.parametrize("value", [0, -3, 72.0, True, "8"])
def test_config_non_positive_or_non_integer_sizes(key, value):
    """Sizes that are not positive integers raise ValueError naming the key and the value."""
    with pytest.raises(ValueError, match=rf"cfg\['{key}'\] must be a positive integer, "
                                         rf"got {value!r}"):
        gptc.GPTModel(small_config(**{key: value}))


@pytest.mark.parametrize("value,exc", [(-0.1, ValueError), (1.5, ValueError),
                                       (float("nan"), ValueError), ("0.1", TypeError)])
def test_config_drop_rate_outside_unit_interval(value, exc):
    """drop_rate outside [0, 1] or NaN raises ValueError naming it, a string TypeError (the
    message of every dropout probability)."""
    with pytest.raises(exc, match=r"cfg\['drop_rate'\] must be a (probability|number) in \[0, 1\]"):
        nn.TransformerBlock(small_config(drop_rate=value))


def test_config_qkv_bias_must_be_bool():
    """qkv_bias that is not True/False raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"cfg\['qkv_bias'\] must be True or False, got 'yes'"):
        gptc.GPTModel(small_config(qkv_bias="yes"))


def test_mha_d_out_not_divisible_by_heads():
    """MultiHeadAttention(d_out=6, num_heads=4) raises ValueError naming both."""
    with pytest.raises(ValueError, match=r"d_out \(6\) must be divisible by num_heads \(4\)"):
        nn.MultiHeadAttention(4, 6, 8, 0.0, 4)


@pytest.mark.parametrize("kwargs,expect", [
    (dict(num_heads=0), r"num_heads must be a positive integer, got 0"),
    (dict(num_heads=2.0), r"num_heads must be a positive integer, got 2.0"),
    (dict(context_length=0), r"context_length must be a positive integer, got 0"),
    (dict(d_in=-4), r"d_in must be a positive integer, got -4"),
])
def test_mha_bad_sizes(kwargs, expect):
    """Non-positive or non-integer MultiHeadAttention sizes raise ValueError naming the value."""
    args = dict(d_in=4, d_out=4, context_length=8, dropout=0.0, num_heads=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=expect):
        nn.MultiHeadAttention(**args)


def test_mha_dropout_outside_unit_interval_names_dropout():
    """MultiHeadAttention(dropout=1.5) raises ValueError naming dropout."""
    with pytest.raises(ValueError, match=r"dropout.*\[0, 1\].*1.5"):
        nn.MultiHeadAttention(4, 4, 8, 1.5, 2)


@pytest.mark.parametrize("p", [1.5, -0.1, float("nan")])
def test_dropout_probability_outside_unit_interval(p):
    """Dropout(p) with p outside [0, 1] raises ValueError naming p and the value."""
    with pytest.raises(ValueError, match=rf"p must be a probability in \[0, 1\], got {p}"):
        nn.Dropout(p)


def test_dropout_probability_not_a_number():
    """Dropout("0.5") raises TypeError naming p and the type."""
    with pytest.raises(TypeError, match="p must be a number.*str"):
        nn.Dropout("0.5")


@pytest.mark.parametrize("make,exc,expect", [
    (lambda: nn.Linear(-1, 3), ValueError, "in_features must be positive, got -1"),
    (lambda: nn.Linear(3, 2.0), TypeError, "out_features must be an integer, got float"),
    (lambda: nn.Embedding(0, 3), ValueError, "num_embeddings must be positive, got 0"),
    (lambda: nn.Embedding(3, True), TypeError, "embedding_dim must be an integer, got bool"),
    (lambda: nn.LayerNorm(0), ValueError, "emb_dim must be positive, got 0"),
])
def test_layer_constructor_sizes(make, exc, expect):
    """Bad layer sizes raise an exception naming the argument and the value."""
    with pytest.raises(exc, match=expect):
        make()


def test_unknown_gpt2_size():
    """gpt2_config("gpt2-huge") raises ValueError naming it and listing the known sizes."""
    with pytest.raises(ValueError, match=r"unknown model 'gpt2-huge'.*gpt2-small.*gpt2-xl"):
        gptc.gpt2_config("gpt2-huge")
    with pytest.raises(ValueError, match=r"unknown config keys: n_head"):
        gptc.gpt2_config("gpt2-small", n_head=4)


# -- the low-level binding ---------------------------------------------------------------

X = np.random.default_rng(5).normal(size=(2, 3, 8)).astype(np.float32)
W = np.random.default_rng(6).normal(size=(5, 8)).astype(np.float32)
B = np.zeros(5, np.float32)


@pytest.mark.parametrize("args,exc,expect", [
    ((X.astype(np.float64), W, B), TypeError, r"input must have dtype float32, got float64"),
    ((X, W.astype(np.float64), B), TypeError, r"weight must have dtype float32 or uint16 \(bfloat16 bits\), got float64"),
    ((X, W.astype(np.int64), B), TypeError, r"weight must have dtype float32 or uint16 \(bfloat16 bits\), got int64"),
    ((X, W.tolist(), B), TypeError, r"weight must be a float32 or uint16 \(bfloat16 bits\) NumPy array, or an int8 weight \(values, scales\) from to_int8, got list"),
    ((X, W[None], B), ValueError, r"weight must have 2 dimensions, got shape \(1, 5, 8\)"),
    ((X, W[0], B), ValueError, r"weight must have 2 dimensions, got shape \(8,\)"),
    ((X, np.asfortranarray(W), B), ValueError, r"weight must be a C-contiguous"),
    ((X, np.zeros((8, 5), np.float32).T, B), ValueError, r"weight must be a C-contiguous"),
    ((X[:, :, ::2], W[:, :4].copy(), B), ValueError, r"input must be a C-contiguous"),
    ((X, np.zeros((5, 7), np.float32), B), ValueError,
     r"input has shape \(2, 3, 8\): its last dimension is 8, expected 7"),
    ((X, W, np.zeros(4, np.float32)), ValueError, r"bias has shape \(4,\), expected \(5,\)"),
    ((X, W, np.zeros((5, 1), np.float32)), ValueError, r"bias must have 1 dimension"),
    ((X, W, B.astype(np.float64)), TypeError, r"bias must have dtype float32, got float64"),
    ((X, W, [0.0] * 5), TypeError, r"bias must be a float32 NumPy array, got list"),
    ((X, W), TypeError, r"linear\(\) missing required argument 'bias' \(pos 3\)"),
], ids=["input-f64", "weight-f64", "weight-int", "weight-list", "weight-3d", "weight-1d",
        "weight-fortran", "weight-transposed", "input-strided", "weight-shape", "bias-shape",
        "bias-2d", "bias-f64", "bias-list", "too-few-args"])
def test_C_linear_rejects_bad_arrays(args, exc, expect):
    """gptc._C.linear names the argument and the problem for wrong dtype/ndim/shape/layout."""
    with pytest.raises(exc, match=expect):
        _C.linear(*args)


def _linear_out_cases():
    x = np.ones((2, 3, 8), np.float32)
    w = np.ones((5, 8), np.float32)
    read_only = np.zeros((2, 3, 5), np.float32)
    read_only.flags.writeable = False
    shared = np.zeros(2 * 3 * 8 + 5 * 8, np.float32)
    return [
        ((x, w, None), {"out": np.zeros((2, 3, 4), np.float32)}, ValueError,
         r"out has shape \(2, 3, 4\), expected \(2, 3, 5\)"),
        ((x, w, None), {"out": np.zeros((2, 3, 5), np.float64)}, TypeError, r"out must have dtype float32"),
        ((x, w, None), {"out": read_only}, ValueError, r"out .*writ"),
        ((x, w, None), {"out": [0.0]}, TypeError, r"out must be a float32 NumPy array"),
        ((x, w, None), {"out": np.zeros((2, 3, 5), np.float32), "gelu": True}, ValueError,
         r"gelu=True .* cannot be combined with out="),
        ((shared[:48].reshape(2, 3, 8), w, None), {"out": shared[8:38].reshape(2, 3, 5)},
         ValueError, r"out must not share memory with input"),
        ((x, w, None), {"gelu": "yes"}, TypeError, r"gelu must be True or False, got str"),
        ((x, w, None, True), {}, TypeError, r"at most 3 positional"),
    ]


@pytest.mark.parametrize("args, kwargs, exc, expect", _linear_out_cases(),
                         ids=["out-shape", "out-f64", "out-read-only", "out-list", "gelu-with-out",
                              "out-aliases-input", "gelu-not-bool", "gelu-positional"])
def test_C_linear_rejects_bad_fused_arguments(args, kwargs, exc, expect):
    """The fused forms of gptc._C.linear (gelu=, out=) check what they write into."""
    before = None if "out" not in kwargs or isinstance(kwargs["out"], list) else kwargs["out"].copy()
    with pytest.raises(exc, match=expect):
        _C.linear(*args, **kwargs)
    if before is not None:
        np.testing.assert_array_equal(kwargs["out"], before)


SC, SH = np.ones(8, np.float32), np.zeros(8, np.float32)


@pytest.mark.parametrize("args,exc,expect", [
    ((X.astype(np.float64), SC, SH, 1e-5), TypeError, r"input must have dtype float32"),
    ((X, SC.astype(np.float64), SH, 1e-5), TypeError, r"scale must have dtype float32, got float64"),
    ((X, SC, SH.astype(np.int64), 1e-5), TypeError, r"shift must have dtype float32, got int64"),
    ((X, SC[None], SH, 1e-5), ValueError, r"scale must have 1 dimension, got shape \(1, 8\)"),
    ((X, np.ones(16, np.float32)[::2], SH, 1e-5), ValueError, r"scale must be a C-contiguous"),
    ((X, SC, np.zeros(7, np.float32), 1e-5), ValueError, r"shift has shape \(7,\), expected \(8,\)"),
    ((X, np.ones(7, np.float32), SH, 1e-5), ValueError, r"last dimension is 8, expected 7"),
    ((X, None, SH, 1e-5), TypeError, r"scale must be a float32 NumPy array, got NoneType"),
    ((X, SC, SH, 0.0), ValueError, r"eps must be positive, got 0.0"),
    ((X, SC, SH, -1.0), ValueError, r"eps must be positive, got -1.0"),
    ((X, SC, SH, float("nan")), ValueError, r"eps must be positive, got nan"),
], ids=["input-f64", "scale-f64", "shift-int", "scale-2d", "scale-strided", "shift-shape",
        "scale-shape", "scale-none", "eps-0", "eps-neg", "eps-nan"])
def test_C_layer_norm_rejects_bad_arrays(args, exc, expect):
    """gptc._C.layer_norm names the argument and the problem."""
    with pytest.raises(exc, match=expect):
        _C.layer_norm(*args)


def _mha_args(**over):
    """multihead_attention's arguments for the (2, 3, 8) input X, with changes: a key of
    the weights mapping (None: leave it out) or one of x, heads, gen."""
    z = np.zeros((8, 8), np.float32)
    weights = {"W_query.weight": z, "W_key.weight": z, "W_value.weight": z,
               "out_proj.weight": z, "out_proj.bias": np.zeros(8, np.float32), "dropout.p": 0.0}
    args = dict(x=X, weights=weights, heads=2, gen=gptc.default_generator)
    for key, value in over.items():
        if key in args:
            args[key] = value
        elif value is None:
            del weights[key]
        else:
            weights[key] = value
    return list(args.values())


@pytest.mark.parametrize("over,exc,expect", [
    ({"dropout.p": 1.5}, ValueError, r"dropout.p must be a probability in \[0, 1\], got 1.5"),
    ({"dropout.p": -0.5}, ValueError, r"dropout.p must be a probability in \[0, 1\], got -0.5"),
    ({"dropout.p": None}, KeyError, r"the weights have no entry 'dropout.p'"),
    (dict(heads=3), ValueError, r"d_out \(8\) must be divisible by num_heads \(3\)"),
    (dict(heads=0), ValueError, r"d_out \(8\) must be divisible by num_heads \(0\)"),
    ({"W_key.weight": np.zeros((8, 7), np.float32)}, ValueError,
     r"W_key.weight has shape \(8, 7\), expected \(8, 8\)"),
    ({"W_value.bias": np.zeros(3, np.float32)}, ValueError,
     r"W_value.bias has shape \(3,\), expected \(8,\)"),
    ({"out_proj.weight": np.zeros((8, 8))}, TypeError, r"out_proj.weight must have dtype float32"),
    ({"W_query.weight": None}, KeyError, r"the weights have no entry 'W_query.weight'"),
    (dict(weights=[1, 2]), TypeError, r"weights must be a mapping from state-dict keys to "
                                      r"arrays, got list"),
    (dict(x=X[0]), ValueError, r"input must have 3 dimensions, got shape \(3, 8\)"),
    (dict(gen=None), TypeError, r"generator must be a gptc.Generator, got NoneType"),
], ids=["p-high", "p-neg", "p-missing", "heads-3", "heads-0", "wk-shape", "bv-shape", "wo-f64",
        "wq-missing", "not-a-mapping", "x-2d", "gen"])
def test_C_multihead_attention_rejects_bad_arguments(over, exc, expect):
    """gptc._C.multihead_attention names the argument (a weight by its key) and the problem."""
    with pytest.raises(exc, match=expect):
        _C.multihead_attention(*_mha_args(**over))


@pytest.mark.parametrize("p", [1.5, -0.1, float("nan")])
def test_C_dropout_probability_outside_unit_interval(p):
    """gptc._C.dropout, dropout_train and bernoulli_ refuse probabilities outside [0, 1]
    (and NaN)."""
    for fn in (_C.dropout, _C.dropout_train, _C.bernoulli_):
        with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\]"):
            fn(np.ones(4, np.float32), p, gptc.default_generator)


# -- the whole model: gpt_forward and the decoder, the weights by their keys ----------------

def _model_args(model):
    """The model as GPTModel hands it to gptc._C.gpt_forward, with a fresh weights dict
    to perturb."""
    args = model._one_call_arguments()
    return dict(args, weights=dict(args["weights"]))


def test_C_gpt_forward_accepts_the_models_arguments(model):
    """Sanity: the unmodified arguments work, so the failures below are the perturbations'."""
    ids = np.array([[1, 2, 3]])
    # model(ids) records gradients (module by module, the training attention kernel):
    # equal to gpt_forward's inference kernel to rounding, not bit for bit
    report("gpt_forward vs recorded model(ids)",
           _C.gpt_forward(ids, generator=gptc.default_generator, **_model_args(model)),
           np.asarray(model(ids)), rtol=1e-5, atol=1e-5)


# changes of one weight: another dtype, layout, rank or shape, or no entry at all
F64, FORTRAN, THREE_D = (lambda a: a.astype(np.float64)), np.asfortranarray, (lambda a: a[None])
TRANSPOSED, COLS = (lambda a: np.ascontiguousarray(a.T).T), (lambda a: a[:, :-1].copy())
SHORTER, MISSING = (lambda a: a[:-1].copy()), object()


@pytest.mark.parametrize("key,change,exc,expect", [
    ("tok_emb.weight", F64, TypeError, r"tok_emb.weight must have dtype float32, got float64"),
    ("tok_emb.weight", FORTRAN, ValueError, r"tok_emb.weight must be a C-contiguous"),
    ("tok_emb.weight", THREE_D, ValueError, r"tok_emb.weight must have 2 dimensions"),
    ("pos_emb.weight", COLS, ValueError, r"pos_emb.weight has shape \(16, 71\), expected \(16, 72\)"),
    ("final_norm.scale", SHORTER, ValueError, r"final_norm.scale has shape \(71,\), expected \(72,\)"),
    ("final_norm.eps", 0.0, ValueError, r"final_norm.eps must be positive, got 0.0"),
    ("final_norm.eps", "1e-5", TypeError, r"final_norm.eps must be a number, got str"),
    ("out_head.weight", COLS, ValueError,
     r"out_head.weight has shape \(1000, 71\), expected \(1000, 72\)"),
    ("out_head.weight", TRANSPOSED, ValueError, r"out_head.weight must be a C-contiguous"),
    ("out_head.weight", F64, TypeError,
     r"out_head.weight must have dtype float32 or uint16 \(bfloat16 bits\), got float64"),
    ("out_head.bias", np.zeros(3, np.float32), ValueError,
     r"out_head.bias has shape \(3,\), expected \(1000,\)"),
    ("drop_emb.p", 1.5, ValueError, r"drop_emb.p must be a probability in \[0, 1\], got 1.5"),
    ("drop_emb.p", -0.5, ValueError, r"drop_emb.p must be a probability in \[0, 1\], got -0.5"),
    ("drop_emb.p", "0.1", TypeError, r"drop_emb.p must be a number in \[0, 1\], got str"),
    ("trf_blocks.0.att.W_query.weight", F64, TypeError,
     r"trf_blocks.0.att.W_query.weight must have dtype float32"),
    ("trf_blocks.1.att.W_query.weight", TRANSPOSED, ValueError,
     r"trf_blocks.1.att.W_query.weight must be a C-contiguous"),
    ("trf_blocks.0.att.W_query.weight", COLS, ValueError,
     r"trf_blocks.0.att.W_query.weight has shape \(72, 71\)"),
    ("trf_blocks.0.norm1.scale", None, TypeError,
     r"trf_blocks.0.norm1.scale must be a float32 NumPy array, got NoneType"),
    ("trf_blocks.0.norm1.eps", 0.0, ValueError, r"trf_blocks.0.norm1.eps must be positive, got 0.0"),
    ("trf_blocks.0.att.dropout.p", 1.5, ValueError,
     r"trf_blocks.0.att.dropout.p must be a probability.*1.5"),
    ("trf_blocks.1.drop_shortcut.p", -1.0, ValueError,
     r"trf_blocks.1.drop_shortcut.p must be a probability"),
    ("trf_blocks.0.ff.layers.2.weight", COLS, ValueError,
     r"trf_blocks.0.ff.layers.2.weight has shape \(72, 287\)"),
    ("trf_blocks.0.ff.layers.0.bias", np.zeros(3, np.float32), ValueError,
     r"trf_blocks.0.ff.layers.0.bias has shape \(3,\), expected \(288,\)"),
    ("trf_blocks.1.ff.layers.0.weight", MISSING, KeyError,
     r"the weights have no entry 'trf_blocks.1.ff.layers.0.weight'"),
    ("trf_blocks.1.norm2.eps", MISSING, KeyError, r"no entry 'trf_blocks.1.norm2.eps'"),
])
def test_C_gpt_forward_rejects_bad_weights(model, key, change, exc, expect):
    """gptc._C.gpt_forward names the weight by its state-dict key and the problem: wrong
    dtype, dimensions, shape or layout, a bad eps or probability, a missing entry."""
    args = _model_args(model)
    weights = args["weights"]
    if change is MISSING:
        del weights[key]
    else:
        weights[key] = change(weights[key]) if callable(change) else change
    with pytest.raises(exc, match=expect):
        _C.gpt_forward(np.array([[1, 2, 3]]), generator=gptc.default_generator, **args)


@pytest.mark.parametrize("over,exc,expect", [
    (dict(in_idx=np.array([[1, 2]], np.int32)), TypeError, r"in_idx must have dtype int64, got int32"),
    (dict(in_idx=np.array([[1, 2]], np.float32)), TypeError, r"in_idx must have dtype int64"),
    (dict(in_idx=np.array([1, 2])), ValueError, r"in_idx must have 2 dimensions, got shape \(2,\)"),
    (dict(in_idx=np.zeros((1, 6), np.int64)[:, ::2]), ValueError, r"in_idx must be a C-contiguous"),
    (dict(in_idx=np.array([[1, 1000]])), IndexError, r"in_idx contains token id 1000.*vocab_size 1000"),
    (dict(in_idx=np.zeros((1, 17), np.int64)), ValueError, r"17 tokens.*context_length 16"),
    (dict(in_idx=np.zeros((1, 0), np.int64)), ValueError, r"in_idx has shape \(1, 0\)"),
    (dict(n_heads=5), ValueError, r"emb_dim \(72\) must be divisible by n_heads \(5\)"),
    (dict(n_heads=0), ValueError, r"emb_dim \(72\) must be divisible by n_heads \(0\)"),
    (dict(n_layers=3), KeyError, r"the weights have no entry 'trf_blocks.2.norm1.scale'"),
    (dict(n_layers=-1), ValueError, r"n_layers must be >= 0, got -1"),
    (dict(generator=None), TypeError, r"generator must be a gptc.Generator, got NoneType"),
    (dict(weights=5), TypeError, r"weights must be a mapping from state-dict keys to arrays, got int"),
], ids=["ids-int32", "ids-float", "ids-1d", "ids-strided", "ids-range", "ids-long", "ids-empty",
        "heads-5", "heads-0", "layers-3", "layers-neg", "generator", "weights-int"])
def test_C_gpt_forward_rejects_bad_arguments(model, over, exc, expect):
    """gptc._C.gpt_forward names its other arguments and their problem."""
    args = dict(_model_args(model), in_idx=np.array([[1, 2]]), generator=gptc.default_generator)
    args.update(over)
    with pytest.raises(exc, match=expect):
        _C.gpt_forward(**args)


def test_C_decoder_rejects_bad_arguments(model):
    """The KV-cache decoder names its sizes, a model not in eval mode (by the key of the
    first dropout that is not 0), and bad ids, shapes or order of its steps."""
    args = _model_args(model)
    with pytest.raises(ValueError, match=r"capacity must be in \[1, context_length\] = "
                                         r"\[1, 16\], got 17"):
        _C.Decoder(**args, batch=1, capacity=17)
    with pytest.raises(ValueError, match=r"capacity must be .* got 0"):
        _C.Decoder(**args, batch=1, capacity=0)
    with pytest.raises(ValueError, match=r"batch must be a positive integer, got 0"):
        _C.Decoder(**args, batch=0, capacity=4)
    for key in ("drop_emb.p", "trf_blocks.1.att.dropout.p", "trf_blocks.0.drop_shortcut.p"):
        noisy = _model_args(model)
        noisy["weights"][key] = 0.1
        with pytest.raises(ValueError, match=rf"inference mode, but {key} is not 0"):
            _C.Decoder(**noisy, batch=1, capacity=4)
    dec = _C.Decoder(**args, batch=2, capacity=4)
    assert (dec.batch, dec.capacity, dec.length) == (2, 4, 0)
    with pytest.raises(RuntimeError, match=r"step\(\) needs a prefill\(\) first"):
        dec.step(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"idx has shape \(1, 3\), expected \(2, T\) with "
                                         r"1 <= T <= capacity 4"):
        dec.prefill(np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"idx has shape \(2, 5\)"):
        dec.prefill(np.zeros((2, 5), np.int64))
    with pytest.raises(IndexError, match=r"idx contains token id 1000"):
        dec.prefill(np.array([[1, 2], [3, 1000]]))
    dec.prefill(np.array([[1, 2], [3, 4]]))
    with pytest.raises(ValueError, match=r"next_ids has shape \(3,\), expected \(2,\)"):
        dec.step(np.array([1, 2, 3]))
    with pytest.raises(IndexError, match=r"next_ids contains token id -5"):
        dec.step(np.array([1, -5]))
    with pytest.raises(TypeError, match=r"next_ids must have dtype int64"):
        dec.step(np.array([1, 2], np.int32))
    assert dec.length == 2
    dec.step(np.array([5, 6]))
    dec.step(np.array([7, 8]))
    with pytest.raises(RuntimeError, match=r"cache is full \(4 of capacity 4"):
        dec.step(np.array([1, 2]))


def test_C_next_tokens_rejects_bad_arguments():
    g = gptc.default_generator
    logits = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"top_k must be None or an integer in \[1, vocab_size\] "
                                         r"= \[1, 5\], got 6"):
        _C.next_tokens(logits, 1.0, 6, g)
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0, got -1.0"):
        _C.next_tokens(logits, -1.0, None, g)
    with pytest.raises(TypeError, match=r"logits must have dtype float32"):
        _C.next_tokens(logits.astype(np.float64), 1.0, None, g)
    bad = logits.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"logits row 1 has no token to choose: it holds NaN"):
        _C.next_tokens(bad, 0.0, None, g)
    inf = logits.copy()
    inf[0, 0] = np.inf
    assert _C.next_tokens(inf, 0.0, None, g)[0] == 0
    with pytest.raises(ValueError, match=r"logits row 0 has no token to choose"):
        _C.next_tokens(inf, 1.0, None, g)


def test_losses_name_their_bad_input():
    """cross_entropy wants (N, num_classes) logits and (N,) integer targets; mse_loss
    real numbers."""
    F = nn.functional
    with pytest.raises(ValueError, match=r"input must be \(N, num_classes\) logits, got shape "
                                         r"\(2, 3, 4\) \(flatten"):
        F.cross_entropy(np.zeros((2, 3, 4)), np.zeros(6, np.int64))
    with pytest.raises(ValueError, match=r"target has shape \(3,\), expected \(2,\)"):
        F.cross_entropy(np.zeros((2, 4)), np.zeros(3, np.int64))
    with pytest.raises(TypeError, match=r"target must hold integer token ids"):
        F.cross_entropy(np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(IndexError, match=r"target\[1\] = 4 is out of range: target must be in "
                                         r"\[0, 4\) for input with V = 4 classes"):
        F.cross_entropy(np.zeros((2, 4)), np.array([0, 4]))
    with pytest.raises(TypeError, match=r"input must hold real numbers"):
        F.mse_loss(np.array(["a"]), np.zeros(1))


# -- the backward kernels -------------------------------------------------------------------

def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_C_backward_kernels_name_the_bad_argument():
    """Every backward names the gradient or input that is wrong: shape, dtype, writability,
    layout, memory shared with an input or another gradient, ids, targets."""
    rng = np.random.default_rng(23)
    x, w, dout = _f32(rng, 4, 5), _f32(rng, 3, 5), _f32(rng, 4, 3)
    with pytest.raises(ValueError, match=r"dout has shape \(4, 2\), expected \(4, 3\)"):
        _C.linear_backward(_f32(rng, 4, 2), x, w, None, None, None)
    with pytest.raises(ValueError, match=r"inp .*last dimension is 5, expected 6"):
        _C.linear_backward(dout, x, _f32(rng, 3, 6), None, None, None)
    with pytest.raises(TypeError, match=r"dweight must have dtype float32"):
        _C.linear_backward(dout, x, w, None, np.zeros((3, 5)), None)
    with pytest.raises(ValueError, match=r"dbias has shape \(4,\), expected \(3,\)"):
        _C.linear_backward(dout, x, w, None, None, np.zeros(4, np.float32))
    ro = np.zeros((4, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"dinp must be writable"):
        _C.linear_backward(dout, x, w, ro, None, None)
    with pytest.raises(ValueError, match=r"C-contiguous"):
        _C.linear_backward(dout, x, w, np.zeros((5, 4), np.float32).T, None, None)
    with pytest.raises(ValueError, match=r"dinp must not share memory with inp"):
        _C.linear_backward(dout, x, w, x, None, None)
    with pytest.raises(ValueError, match=r"dinp and dweight must not share memory"):
        buf = np.zeros(20, np.float32)
        _C.linear_backward(dout, x, w, buf.reshape(4, 5), buf[:15].reshape(3, 5), None)
    with pytest.raises(ValueError, match=r"eps must be positive"):
        _C.layer_norm_backward(x, x, _f32(rng, 5), 0.0, None, None, None)
    with pytest.raises(ValueError, match=r"dout has shape \(4, 3\), expected \(4, 5\)"):
        _C.gelu_backward(dout, x, None)
    with pytest.raises(ValueError, match=r"dout has shape \(4, 5\), expected \(4, 3\)"):
        _C.dropout_backward(x, dout, np.zeros_like(x))
    with pytest.raises(TypeError, match=r"dinp must have dtype float32"):
        _C.relu_backward(x, x, np.zeros((4, 5)))
    with pytest.raises(IndexError, match=r"idx contains token id 7 .*\[0, 7\)"):
        _C.embedding_backward(_f32(rng, 2, 5), np.array([1, 7]), np.zeros((7, 5), np.float32))
    with pytest.raises(ValueError, match=r"dout must have 2 dimensions, got shape \(\)"):
        _C.embedding_backward(np.array(1.0, np.float32), np.array([1]), None)
    with pytest.raises(ValueError, match=r"divisible by num_heads"):
        _C.attention_train(_f32(rng, 1, 2, 6), _f32(rng, 1, 2, 6), _f32(rng, 1, 2, 6), 4,
                           0.0, gptc.Generator())
    q = _f32(rng, 1, 3, 4)
    with pytest.raises(ValueError, match=r"noise has shape \(1, 2, 3, 2\), expected \(1, 2, 3, 3\)"):
        _C.attention_backward(q, q, q, q, _f32(rng, 1, 2, 3, 3), _f32(rng, 1, 2, 3, 2), 2,
                              None, None, None)
    with pytest.raises(ValueError, match=r"att has shape"):
        _C.attention_backward(q, q, q, q, _f32(rng, 1, 1, 3, 3), None, 2, None, None, None)
    att = _f32(rng, 1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"the last dimension of v \(4\) must be divisible by "
                                         r"num_heads \(3\)"):
        _C.attention_context(att, q, 3)
    with pytest.raises(ValueError, match=r"weights has shape \(1, 2, 3, 3\), expected "
                                         r"\(1, 1, 3, 3\)"):
        _C.attention_context(att, q, 1)
    with pytest.raises(ValueError, match=r"att has shape \(1, 2, 3, 2\), expected \(1, 2, 3, 3\)"):
        _C.attention_weights_backward(att, q, q, _f32(rng, 1, 2, 3, 2), 2, None, None)
    with pytest.raises(ValueError, match=r"dq and dk must not share memory"):
        dq = np.zeros_like(q)
        _C.attention_weights_backward(att, q, q, att, 2, dq, dq)
    with pytest.raises(ValueError, match=r"dweights must not share memory with weights"):
        _C.attention_context_backward(q, att, q, 2, att, None)
    with pytest.raises(ValueError, match=r"dv has shape \(1, 3, 2\), expected \(1, 3, 4\)"):
        _C.attention_context_backward(q, att, q, 2, None, np.zeros((1, 3, 2), np.float32))
    with pytest.raises(IndexError, match=r"target\[1\] = 13 .*\[0, 13\).*13 classes"):
        _C.cross_entropy(_f32(rng, 2, 13), np.array([0, 13]))
    with pytest.raises(IndexError, match=r"targets\[0\] = -1"):
        _C.cross_entropy_backward(_f32(rng, 1), _f32(rng, 1, 13), np.array([-1]), None)
    with pytest.raises(TypeError, match=r"target must have dtype int64"):
        _C.cross_entropy(_f32(rng, 2, 13), np.array([0, 1], np.int32))
    with pytest.raises(ValueError, match=r"target has shape"):
        _C.mse_backward(x, dout, 1.0, None)
    with pytest.raises(ValueError, match=r"exp_avg must be writable"):
        _C.adamw_update(x, x.copy(), ro, x.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match=r"step must be >= 1, got 0"):
        _C.adamw_update(x, x.copy(), x.copy(), x.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.0, 0)


@pytest.mark.parametrize("call,exc,match", [
    (lambda q: _C._testing.attention_cached(q, q, q, 5, 0), ValueError,
     r"last dimension of q \(24\) must be divisible by num_heads \(5\)"),
    (lambda q: _C._testing.attention_cached(q, q, q, 2, 1), ValueError,
     r"past must be in \[0, capacity - num_tokens\] = \[0, 0\], got 1"),
    (lambda q: _C._testing.attention_cached(q, q, q, 2, -1), ValueError, r"past must be in .* got -1"),
    (lambda q: _C._testing.attention_cached(q, *[np.ascontiguousarray(q[:, :2])] * 2, 2, 0),
     ValueError, r"past must be in \[0, capacity - num_tokens\] = \[0, -1\]"),
    (lambda q: _C._testing.attention_cached(q, q, np.ascontiguousarray(q[:, :2]), 2, 0),
     ValueError, r"v_cache has shape \(2, 2, 24\), expected \(2, 3, 24\)"),
    (lambda q: _C._testing.attention_cached(q, q.astype(np.float64), q, 2, 0), TypeError,
     r"k_cache must have dtype float32"),
    (lambda q: _C._testing.attention_cached(q[0], q, q, 2, 0), ValueError,
     r"q must have 3 dimensions"),
], ids=["heads", "past-high", "past-neg", "cache-short", "v-shape", "k-f64", "q-2d"])
def test_C_attention_cached_rejects_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call(np.zeros((2, 3, 24), np.float32))


# -- every entry point ------------------------------------------------------------------------

_Z = np.zeros((2, 4), np.float32)
_READ_ONLY = np.zeros((2, 4), np.float32)
_READ_ONLY.flags.writeable = False
_G = gptc.default_generator

# One bad call per entry point of gptc._C (the detailed cases are above); the test below
# fails for an entry point added without one. Methods of Generator and Decoder count too.
ONE_BAD_CALL = {
    "uniform_": (lambda: _C.uniform_(_Z, 1.0, 0.0, _G), ValueError,
                 r"from <= to, got from=1.0, to=0.0"),
    "normal_": (lambda: _C.normal_(_Z, 0.0, -1.0, _G), ValueError, r"std >= 0, got std=-1.0"),
    "bernoulli_": (lambda: _C.bernoulli_(_READ_ONLY, 0.5, _G), ValueError,
                   r"tensor must be writable"),
    "randperm": (lambda: _C.randperm(-1, _G), ValueError, r"0 <= n < 2\*\*32, got n=-1"),
    "random_int64": (lambda: _C.random_int64(5), TypeError, r"generator must be a gptc.Generator"),
    "linear": (lambda: _C.linear(_Z, _Z[:, :3].copy(), None), ValueError,
               r"input has shape \(2, 4\): its last dimension is 4, expected 3"),
    "linear_backward": (lambda: _C.linear_backward(_Z, _Z, _Z[0], None, None, None), ValueError,
                        r"weight must have 2 dimensions"),
    "to_bfloat16": (lambda: _C.to_bfloat16([1.0]), TypeError, r"input must be a float32 NumPy"),
    "to_int8": (lambda: _C.to_int8(np.array(1.0, np.float32)), ValueError,
                r"input must have at least 1 dimension"),
    "layer_norm": (lambda: _C.layer_norm(_Z, _Z[0], _Z[0], -1.0), ValueError,
                   r"eps must be positive"),
    "layer_norm_backward": (lambda: _C.layer_norm_backward(_Z, _Z, _Z[0], 1e-5, _Z, None, None),
                            ValueError, r"dinp must not share memory with dout"),
    "gelu": (lambda: _C.gelu(np.zeros(3)), TypeError, r"input must have dtype float32, got float64"),
    "gelu_backward": (lambda: _C.gelu_backward(_Z, _Z[0], None), ValueError, r"dout has shape"),
    "relu": (lambda: _C.relu(_Z.T), ValueError, r"input must be a C-contiguous"),
    "relu_backward": (lambda: _C.relu_backward(_Z, _Z, _Z[:1]), ValueError, r"dinp has shape"),
    "softmax": (lambda: _C.softmax(np.array(1.0, np.float32)), ValueError,
                r"input must have at least 1 dimension"),
    "dropout": (lambda: _C.dropout(_Z, "p", _G), TypeError, r"p must be a number in \[0, 1\]"),
    "dropout_train": (lambda: _C.dropout_train(_Z, float("nan"), _G), ValueError,
                      r"p must be a probability in \[0, 1\], got nan"),
    "dropout_backward": (lambda: _C.dropout_backward(_Z, np.ones((2, 2), np.float32), None),
                         ValueError, r"dout has shape \(2, 4\), expected \(2, 2\)"),
    "embedding": (lambda: _C.embedding(np.array([1, 3]), _Z), IndexError, r"token id 3.*\[0, 2\)"),
    "embedding_backward": (lambda: _C.embedding_backward(_Z, np.array([0, 1]), _Z[0]), ValueError,
                           r"dweight must have 2 dimensions"),
    "multihead_attention": (lambda: _C.multihead_attention(X, {}, 2, _G), KeyError,
                            r"no entry 'W_query.weight'"),
    "attention_train": (lambda: _C.attention_train(X, X, X[:1], 2, 0.0, _G), ValueError,
                        r"v has shape"),
    "attention_backward": (lambda: _C.attention_backward(X, X, X, X, X, None, 2, None, None, None),
                           ValueError, r"att must have 4 dimensions|att has shape"),
    "attention_weights": (lambda: _C.attention_weights(X, X[:, :2].copy(), 2), ValueError,
                          r"k has shape \(2, 2, 8\), expected \(2, 3, 8\)"),
    "attention_weights_backward": (
        lambda: _C.attention_weights_backward(X, X, X, X, 2, None, None), ValueError,
        r"datt has shape \(2, 3, 8\), expected \(2, 2, 3, 3\)"),
    "attention_context": (lambda: _C.attention_context(np.zeros((2, 2, 3, 3)), X, 2), TypeError,
                          r"weights must have dtype float32, got float64"),
    "attention_context_backward": (
        lambda: _C.attention_context_backward(X, np.zeros((2, 2, 3, 3), np.float32), X, 3,
                                              None, None), ValueError,
        r"last dimension of v \(8\) must be divisible by num_heads \(3\)"),
    "gpt_forward": (lambda: _C.gpt_forward(np.array([[1]]), {}, 1, 1, _G), KeyError,
                    r"no entry 'tok_emb.weight'"),
    "check_in_idx": (lambda: _C.check_in_idx(np.array([[1, 9]]), 5, "ids", 4), IndexError,
                     r"ids contains token id 9 at flat position 1"),
    "Decoder": (lambda: _C.Decoder({}, 1, 1, 1, 1), KeyError, r"no entry 'tok_emb.weight'"),
    "Decoder.prefill": (lambda: _small_decoder().prefill(np.array([[1, 2, 3]])), ValueError,
                        r"idx has shape \(1, 3\), expected \(1, T\) with 1 <= T <= capacity 2"),
    "Decoder.step": (lambda: _small_decoder().step(np.array([1])), RuntimeError,
                     r"needs a prefill"),
    "cross_entropy": (lambda: _C.cross_entropy(_Z, np.array([0])), ValueError,
                      r"target has shape \(1,\), expected \(2,\)"),
    "cross_entropy_backward": (lambda: _C.cross_entropy_backward(_Z, _Z, np.array([0, 1]), None),
                               ValueError, r"dlosses must have 1 dimension"),
    "mse_backward": (lambda: _C.mse_backward(_Z, _Z[:1], 1.0, None), ValueError,
                     r"target has shape \(1, 4\), expected \(2, 4\)"),
    "adamw_update": (lambda: _C.adamw_update(_Z, _Z, _Z[0], _Z, 0.1, 0.9, 0.9, 1e-8, 0.0, 1),
                     ValueError, r"exp_avg has shape"),
    "next_tokens": (lambda: _C.next_tokens(np.zeros((2, 0), np.float32), 0.0, None, _G),
                    ValueError, r"at least one value per row"),
    "check_sampling": (lambda: _C.check_sampling(0.5, 3, 2), ValueError,
                       r"top_k must be None or an integer in \[1, vocab_size\] = \[1, 2\], got 3"),
    "set_num_threads": (lambda: _C.set_num_threads(0), ValueError, r"num_threads must be in"),
    "get_num_threads": (lambda: _C.get_num_threads(1), TypeError, r"takes no arguments"),
    "isa": (lambda: _C.isa(1), TypeError, r"takes no arguments"),
    "set_isa": (lambda: _C.set_isa("sse9"), ValueError, r"kernel set 'sse9' is not available"),
    "supported_isas": (lambda: _C.supported_isas(None), TypeError, r"takes no arguments"),
    "fma_peak": (lambda: _C.fma_peak(1, 0), ValueError, r"iterations must be >= 1, got 0"),
    "read_bandwidth": (lambda: _C.read_bandwidth(np.zeros(0, np.float32), 1), ValueError,
                       r"read_bandwidth: data must hold at least one value, got an empty array"),
    "build_info": (lambda: _C.build_info(1), TypeError, r"takes no arguments"),
    "zeros": (lambda: _C.zeros((3, -2)), ValueError,
              r"zeros: shape must not hold negative sizes, got -2 at position 1"),
    "empty_cache": (lambda: _C.empty_cache(1), TypeError, r"takes no arguments"),
    "buffer_pool_stats": (lambda: _C.buffer_pool_stats(1), TypeError, r"takes no arguments"),
    "Generator": (lambda: _C.Generator(1), TypeError, r"takes (no|at most 0) arguments"),
    "Generator.manual_seed": (lambda: _C.Generator().manual_seed(-2 ** 63 - 1), ValueError,
                              r"seed must be in"),
    "Generator.initial_seed": (lambda: _C.Generator().initial_seed(0), TypeError,
                               r"takes no arguments"),
    "Generator.get_state": (lambda: _C.Generator().get_state(0), TypeError, r"takes no arguments"),
    "Generator.set_state": (lambda: _C.Generator().set_state(np.zeros(5056, np.uint8)),
                            ValueError, r"not a valid generator state"),
    "_testing.attention_cached": (lambda: _C._testing.attention_cached(X, X, X, 3, 0), ValueError,
                                  r"divisible by num_heads \(3\)"),
}


def _small_decoder():
    gptc.manual_seed(0)
    tiny = gptc.GPTModel(small_config(n_layers=1, emb_dim=8, n_heads=2, vocab_size=10)).eval()
    return _C.Decoder(**tiny._one_call_arguments(), batch=1, capacity=2)


def test_every_C_entry_point_has_a_bad_input_case():
    """ONE_BAD_CALL covers gptc._C completely: an entry point added without a case here fails."""
    assert set(c_entry_points()) == set(ONE_BAD_CALL)


@pytest.mark.parametrize("name", sorted(ONE_BAD_CALL))
def test_every_C_entry_point_refuses_bad_input(name):
    """Each entry point refuses a bad argument with the exception and message it should."""
    call, exc, expect = ONE_BAD_CALL[name]
    with pytest.raises(exc, match=expect):
        call()


# -- threads and random numbers ------------------------------------------------------------

@pytest.mark.parametrize("n", [0, -1, 5000])
def test_set_num_threads_out_of_range(n):
    """set_num_threads(n) outside [1, 4096] raises ValueError naming the value; the thread
    count is unchanged."""
    before = gptc.get_num_threads()
    with pytest.raises(ValueError, match=rf"num_threads must be in \[1, 4096\], got {n}"):
        gptc.set_num_threads(n)
    assert gptc.get_num_threads() == before


def test_set_num_threads_non_integer_names_it():
    """set_num_threads("2") raises TypeError naming num_threads."""
    with pytest.raises(TypeError, match="num_threads"):
        gptc.set_num_threads("2")


@pytest.mark.parametrize("seed", ["x", 1.5, None])
def test_manual_seed_non_integer(seed):
    """Generator().manual_seed(non-integer) raises TypeError naming seed and the type."""
    with pytest.raises(TypeError, match=rf"seed must be an integer, got {type(seed).__name__}"):
        gptc.Generator().manual_seed(seed)


def test_manual_seed_out_of_range():
    """A seed outside [-2**63, 2**64) raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"seed must be in \[-2\*\*63, 2\*\*64\)"):
        gptc.Generator().manual_seed(2 ** 64)


@pytest.mark.parametrize("fn", [gptc.rand, gptc.randn])
def test_rand_negative_size(fn):
    """rand(-1) / randn(2, -1) raise ValueError naming the sizes; a string size raises TypeError."""
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"{name}\(\) expects non-negative sizes, got \(-1,\)"):
        fn(-1)
    with pytest.raises(ValueError, match=rf"{name}\(\) expects non-negative sizes, got \(2, -1\)"):
        fn(2, -1)
    with pytest.raises(TypeError, match=rf"{name}\(\) expects integer sizes"):
        fn("a")
    with pytest.raises(TypeError, match="generator must be a gptc.Generator"):
        fn(2, generator=123)


def test_set_rng_state_rejects_bad_state():
    """set_rng_state with the wrong size or type raises ValueError/TypeError naming state."""
    with pytest.raises(ValueError, match=r"state must hold \d+ bytes, got 3"):
        gptc.Generator().set_state(np.zeros(3, np.uint8))
    with pytest.raises(TypeError, match=r"state must be a 1-D uint8 array"):
        gptc.Generator().set_state("abc")
