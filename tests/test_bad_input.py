"""Bad input never crashes and never returns silent garbage: it raises an exception whose
message names the argument, the value and what was expected. Input that is merely in an
unusual form (strided, float64, integer, read-only) gives the same result as the
contiguous float32 equivalent."""
import numpy as np
import pytest

import gptc
from gptc import _C, nn
from conftest import report, small_config


@pytest.fixture(scope="module")
def model():
    """A small GPTModel (vocab 1000, context 16) in eval mode."""
    return gptc.GPTModel(small_config(n_layers=2)).eval()


def _one_call_args(model):
    """The weights as GPTModel passes them to gptc._C.gpt_forward, as a mutable list."""
    args = list(model._one_call_arguments())
    args[2] = [list(block) for block in args[2]]
    return args


def _call_gpt_forward(ids, args):
    args = list(args)
    if isinstance(args[2], list):
        args[2] = [tuple(block) for block in args[2]]
    return _C.gpt_forward(ids, *args)


# -- GPTModel token ids -----------------------------------------------------------

@pytest.mark.parametrize("bad_id", [-1, 1000, 5000, -(2 ** 40)])
def test_token_id_out_of_range(model, bad_id):
    """An id < 0 or >= vocab_size raises IndexError naming the id and the vocabulary size."""
    ids = np.array([[1, 2, 3], [4, bad_id, 6]])
    with pytest.raises(IndexError, match=rf"in_idx.*token id {bad_id}.*vocab_size 1000"):
        model(ids)


def test_huge_unsigned_token_id(model):
    """A uint64 id beyond int64 raises IndexError naming it (not a wrapped negative id)."""
    with pytest.raises(IndexError, match=r"in_idx.*18446744073709551615"):
        model(np.array([[1, 2 ** 64 - 1]], np.uint64))


def test_sequence_longer_than_context(model):
    """seq_len > context_length raises ValueError naming both lengths."""
    with pytest.raises(ValueError, match=r"17 tokens.*context_length 16"):
        model(np.zeros((1, 17), np.int64))


def test_generate_crops_a_long_prompt(model):
    """generate_text_simple with a prompt longer than the context crops it and works, giving the
    same tokens as generating from the last context_length tokens."""
    prompt = np.random.default_rng(0).integers(0, 1000, (2, 20))
    out = gptc.generate_text_simple(model, prompt, max_new_tokens=3, context_size=16)
    assert out.shape == (2, 23) and out.dtype == np.int64
    np.testing.assert_array_equal(out[:, :20], prompt)
    cropped = gptc.generate_text_simple(model, prompt[:, -16:], max_new_tokens=3, context_size=16)
    np.testing.assert_array_equal(out[:, 20:], cropped[:, 16:])


@pytest.mark.parametrize("ids", [np.zeros((1, 3)), np.zeros((1, 3), np.float32),
                                 np.array([[True, False]]), np.array([["a", "b"]]),
                                 [[1.0, 2.0]], np.zeros((1, 2), complex)],
                         ids=["float64", "float32", "bool", "str", "float-list", "complex"])
def test_non_integer_token_ids(model, ids):
    """Float, bool, string and complex token arrays raise TypeError naming in_idx and the dtype."""
    dtype = np.asarray(ids).dtype
    with pytest.raises(TypeError, match=rf"in_idx must hold integer token ids.*{dtype}"):
        model(ids)


@pytest.mark.parametrize("shape", [(3,), (1, 2, 3), ()])
def test_token_ids_of_wrong_rank(model, shape):
    """1-D, 3-D and 0-D token arrays raise ValueError naming in_idx and the shape."""
    with pytest.raises(ValueError, match=rf"in_idx must have shape \(batch_size, seq_len\), "
                                         rf"got shape {re_shape(shape)}"):
        model(np.zeros(shape, np.int64))


def re_shape(shape):
    """The regex of a shape tuple as printed."""
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("shape", [(0, 4), (2, 0), (0, 0)])
def test_empty_batch_or_sequence(model, shape):
    """An empty batch or a zero-length sequence raises ValueError naming the shape."""
    with pytest.raises(ValueError, match=rf"in_idx has shape {re_shape(shape)}.*at least one token"):
        model(np.zeros(shape, np.int64))


def test_lists_of_ints_work(model):
    """A list of lists of ints is accepted and equals the int64 array input."""
    ids = [[1, 2, 3], [4, 5, 6]]
    out = model(ids)
    assert out.shape == (2, 3, 1000) and out.dtype == np.float32
    np.testing.assert_array_equal(out, model(np.array(ids, np.int64)))


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


# -- layer inputs ---------------------------------------------------------------------

TINY = small_config(emb_dim=8, n_heads=2, context_length=6, vocab_size=20, n_layers=1)


@pytest.mark.parametrize("layer,shape,expect", [
    (lambda: nn.Linear(4, 3), (2, 5), r"input has shape \(2, 5\).*expected 4"),
    (lambda: nn.LayerNorm(4), (2, 3, 5), r"input has shape \(2, 3, 5\).*expected 4"),
    (lambda: nn.MultiHeadAttention(4, 4, 8, 0.0, 2), (1, 2, 5),
     r"input has shape \(1, 2, 5\).*must be 4"),
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


def test_linear_with_zero_in_features_returns_the_bias():
    """Linear(0, 5) on (2, 0) input returns the bias on every row (torch does), not
    uninitialised memory."""
    lin = nn.Linear(0, 5)
    lin.bias[:] = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(lin(np.zeros((2, 0), np.float32)),
                                  np.tile(np.arange(5, dtype=np.float32), (2, 1)))
    out = _C.linear(np.zeros((3, 0), np.float32), np.zeros((4, 0), np.float32), None)
    np.testing.assert_array_equal(out, np.zeros((3, 4), np.float32))


def test_empty_leading_dimensions_are_fine():
    """Zero rows give empty outputs of the right shape (not an error, not a crash)."""
    assert nn.Linear(4, 3)(np.zeros((0, 4))).shape == (0, 3)
    assert nn.LayerNorm(4)(np.zeros((0, 2, 4))).shape == (0, 2, 4)
    assert nn.GELU()(np.zeros((0,))).shape == (0,)
    mha = nn.MultiHeadAttention(4, 4, 8, 0.0, 2).eval()
    assert mha(np.zeros((0, 3, 4))).shape == (0, 3, 4)
    assert mha(np.zeros((2, 0, 4))).shape == (2, 0, 4)


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


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.1"])
def test_config_drop_rate_outside_unit_interval(value):
    """drop_rate outside [0, 1] (or NaN, or a string) raises ValueError naming it."""
    with pytest.raises(ValueError, match=rf"cfg\['drop_rate'\] must be in \[0, 1\], got"):
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


# -- the conversion policy -----------------------------------------------------------------

def _variants(x):
    """Equivalent forms of the float32 array x: float64, strided, transposed, read-only."""
    out = {"float64": x.astype(np.float64)}
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), np.float32)
    wide[..., ::2] = x
    out["strided"] = wide[..., ::2]
    out["transposed"] = np.ascontiguousarray(np.swapaxes(x, 0, -1)).swapaxes(0, -1)
    ro = x.copy()
    ro.flags.writeable = False
    out["read-only"] = ro
    out["list"] = x.tolist()
    for name, v in out.items():
        if isinstance(v, np.ndarray) and name in ("strided", "transposed"):
            assert not v.flags.c_contiguous
    return out


CONVERSION_LAYERS = {
    "Linear": (lambda: nn.Linear(8, 5), (3, 4, 8)),
    "LayerNorm": (lambda: nn.LayerNorm(8), (3, 4, 8)),
    "GELU": (nn.GELU, (3, 4, 8)),
    "ReLU": (nn.ReLU, (3, 4, 8)),
    "MultiHeadAttention": (lambda: nn.MultiHeadAttention(8, 6, 6, 0.0, 3), (3, 4, 8)),
    "TransformerBlock": (lambda: nn.TransformerBlock(TINY), (3, 4, 8)),
    "FeedForward": (lambda: nn.FeedForward(TINY), (3, 4, 8)),
}


@pytest.mark.parametrize("layer,shape", list(CONVERSION_LAYERS.values()),
                         ids=list(CONVERSION_LAYERS))
def test_conversion_policy_gives_identical_results(layer, shape):
    """Strided, transposed, float64, read-only and list inputs give exactly the result of the
    contiguous float32 input, as a float32 array (no_grad: inference returns plain
    arrays); the input is not modified."""
    module = layer().eval()
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    with gptc.no_grad():
        expected = module(x)
    assert expected.dtype == np.float32
    for name, variant in _variants(x).items():
        before = np.array(variant, copy=True)
        with gptc.no_grad():
            out = module(variant)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32, name
        np.testing.assert_array_equal(out, expected, err_msg=name)
        np.testing.assert_array_equal(np.asarray(variant), before, err_msg=name)


@pytest.mark.parametrize("layer,shape", list(CONVERSION_LAYERS.values()),
                         ids=list(CONVERSION_LAYERS))
def test_integer_input_equals_its_float32_value(layer, shape):
    """Integer input (int64, int32, uint8) gives the result of the same values as float32."""
    module = layer().eval()
    xi = np.random.default_rng(2).integers(0, 5, size=shape)
    expected = module(xi.astype(np.float32))
    for dtype in (np.int64, np.int32, np.uint8):
        out = module(xi.astype(dtype))
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected, err_msg=str(dtype))


def test_gpt_model_token_id_forms(model):
    """int32, uint16, uint8, strided, transposed and read-only token ids give the same logits
    as contiguous int64 ids."""
    ids = np.random.default_rng(3).integers(0, 200, (2, 5))
    expected = model(ids)
    wide = np.zeros((2, 10), np.int64)
    wide[:, ::2] = ids
    ro = ids.copy()
    ro.flags.writeable = False
    forms = {"int32": ids.astype(np.int32), "uint16": ids.astype(np.uint16),
             "uint8": ids.astype(np.uint8), "strided": wide[:, ::2],
             "transposed": np.ascontiguousarray(ids.T).T, "read-only": ro}
    for name, form in forms.items():
        out = model(form)
        assert out.dtype == np.float32 and out.shape == (2, 5, 1000), name
        np.testing.assert_array_equal(out, expected, err_msg=name)


def test_float32_contiguous_input_is_not_copied_or_modified():
    """A float32 C-contiguous input is used as is and left untouched; the output is a new array."""
    x = np.random.default_rng(4).normal(size=(2, 8)).astype(np.float32)
    keep = x.copy()
    for module in (nn.Linear(8, 8), nn.LayerNorm(8), nn.GELU(), nn.ReLU()):
        out = module(x)
        assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(x, keep)


# -- the low-level binding ---------------------------------------------------------------

X = np.random.default_rng(5).normal(size=(2, 3, 8)).astype(np.float32)
W = np.random.default_rng(6).normal(size=(5, 8)).astype(np.float32)
B = np.zeros(5, np.float32)


@pytest.mark.parametrize("args,exc,expect", [
    ((X.astype(np.float64), W, B), TypeError, r"input must have dtype float32, got float64"),
    ((X, W.astype(np.float64), B), TypeError, r"weight must have dtype float32 or uint16 \(bfloat16 bits\), got float64"),
    ((X, W.astype(np.int64), B), TypeError, r"weight must have dtype float32 or uint16 \(bfloat16 bits\), got int64"),
    ((X, W.tolist(), B), TypeError, r"weight must be a float32 or uint16 \(bfloat16 bits\) NumPy array, got list"),
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


def test_C_elementwise_reject_bad_arrays():
    """gelu/relu/softmax/embedding refuse the wrong dtype, layout or a non-array."""
    with pytest.raises(TypeError, match="input must have dtype float32, got float64"):
        _C.gelu(np.zeros(3))
    with pytest.raises(ValueError, match="input must be a C-contiguous"):
        _C.relu(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="input must be a float32 NumPy array, got list"):
        _C.softmax([1.0, 2.0])
    with pytest.raises(ValueError, match="input must have at least 1 dimension"):
        _C.softmax(np.array(1.0, np.float32))
    with pytest.raises(TypeError, match="input must have dtype int64, got int32"):
        _C.embedding(np.array([1, 2], np.int32), np.zeros((3, 4), np.float32))
    with pytest.raises(IndexError, match=r"token id 3.*\[0, 3\)"):
        _C.embedding(np.array([1, 3]), np.zeros((3, 4), np.float32))


def _mha_args(**over):
    z = np.zeros((8, 8), np.float32)
    args = dict(x=X, wq=z, bq=None, wk=z, bk=None, wv=z, bv=None, wo=z, bo=None, heads=2,
                p=0.0, gen=gptc.default_generator)
    args.update(over)
    return list(args.values())


@pytest.mark.parametrize("over,exc,expect", [
    (dict(p=1.5), ValueError, r"dropout must be a probability in \[0, 1\], got 1.5"),
    (dict(p=-0.5), ValueError, r"dropout must be a probability in \[0, 1\], got -0.5"),
    (dict(heads=3), ValueError, r"d_out \(8\) must be divisible by num_heads \(3\)"),
    (dict(heads=0), ValueError, r"d_out \(8\) must be divisible by num_heads \(0\)"),
    (dict(wk=np.zeros((8, 7), np.float32)), ValueError,
     r"W_key.weight has shape \(8, 7\), expected \(8, 8\)"),
    (dict(bv=np.zeros(3, np.float32)), ValueError, r"W_value.bias has shape \(3,\), expected \(8,\)"),
    (dict(wo=np.zeros((8, 8))), TypeError, r"out_proj.weight must have dtype float32"),
    (dict(x=X[0]), ValueError, r"input must have 3 dimensions, got shape \(3, 8\)"),
    (dict(gen=None), TypeError, r"generator must be a gptc.Generator, got NoneType"),
], ids=["p-high", "p-neg", "heads-3", "heads-0", "wk-shape", "bv-shape", "wo-f64", "x-2d", "gen"])
def test_C_multihead_attention_rejects_bad_arguments(over, exc, expect):
    """gptc._C.multihead_attention names the argument and the problem."""
    with pytest.raises(exc, match=expect):
        _C.multihead_attention(*_mha_args(**over))


@pytest.mark.parametrize("p", [1.5, -0.1, float("nan")])
def test_C_dropout_probability_outside_unit_interval(p):
    """gptc._C.dropout and bernoulli_ refuse probabilities outside [0, 1] (and NaN)."""
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\]"):
        _C.dropout(np.ones(4, np.float32), p, gptc.default_generator)
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\]"):
        _C.bernoulli_(np.ones(4, np.float32), p, gptc.default_generator)


def test_C_random_fills_reject_bad_arguments():
    """uniform_/normal_ refuse a read-only array, from > to and a negative std."""
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="tensor must be writable"):
        _C.uniform_(ro, 0.0, 1.0, gptc.default_generator)
    with pytest.raises(ValueError, match=r"from <= to, got from=1.0, to=0.0"):
        _C.uniform_(np.zeros(3, np.float32), 1.0, 0.0, gptc.default_generator)
    with pytest.raises(ValueError, match=r"std >= 0, got std=-1.0"):
        _C.normal_(np.zeros(3, np.float32), 0.0, -1.0, gptc.default_generator)


def test_C_gpt_forward_accepts_the_models_arguments(model):
    """Sanity: the unmodified arguments work, so the failures below are the perturbations'."""
    ids = np.array([[1, 2, 3]])
    # model(ids) records gradients here (its parameters require them), so it runs
    # module by module with the training attention kernel; gpt_forward runs the
    # blocked inference kernel, which sums in another order: equal to rounding,
    # not bit for bit.
    report("gpt_forward vs recorded model(ids)", _call_gpt_forward(ids, _one_call_args(model)),
           np.asarray(model(ids)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("where,value,exc,expect", [
    ("ids:int32", None, TypeError, r"in_idx must have dtype int64, got int32"),
    ("ids:float", None, TypeError, r"in_idx must have dtype int64, got float32"),
    ("ids:1d", None, ValueError, r"in_idx must have 2 dimensions, got shape \(3,\)"),
    ("ids:strided", None, ValueError, r"in_idx must be a C-contiguous"),
    ("ids:range", None, IndexError, r"in_idx contains token id 1000.*vocab_size 1000"),
    ("ids:long", None, ValueError, r"17 tokens.*context_length 16"),
    ("ids:empty", None, ValueError, r"in_idx has shape \(1, 0\)"),
    ("0:f64", None, TypeError, r"tok_emb.weight must have dtype float32, got float64"),
    ("0:fortran", None, ValueError, r"tok_emb.weight must be a C-contiguous"),
    ("0:3d", None, ValueError, r"tok_emb.weight must have 2 dimensions"),
    ("1:cols", None, ValueError, r"pos_emb.weight has shape \(16, 71\), expected \(16, 72\)"),
    ("3:len", None, ValueError, r"final_norm.scale has shape \(71,\), expected \(72,\)"),
    ("5", 0.0, ValueError, r"final_norm.eps must be positive, got 0.0"),
    ("6:cols", None, ValueError, r"out_head.weight has shape \(1000, 71\), expected \(1000, 72\)"),
    ("6:transposed", None, ValueError, r"out_head.weight must be a C-contiguous"),
    ("6:f64", None, TypeError, r"out_head.weight must have dtype float32 or uint16 \(bfloat16 bits\), got float64"),
    ("7", np.zeros(3, np.float32), ValueError, r"out_head.bias has shape \(3,\), expected \(1000,\)"),
    ("8", 5, ValueError, r"emb_dim \(72\) must be divisible by n_heads \(5\)"),
    ("8", 0, ValueError, r"emb_dim \(72\) must be divisible by n_heads \(0\)"),
    ("9", 1.5, ValueError, r"drop_emb.p must be a probability in \[0, 1\], got 1.5"),
    ("9", -0.5, ValueError, r"drop_emb.p must be a probability in \[0, 1\], got -0.5"),
    ("10", None, TypeError, r"generator must be a gptc.Generator, got NoneType"),
    ("2", 5, TypeError, r"blocks must be a sequence of tuples"),
    ("b0:3:f64", None, TypeError, r"trf_blocks.0.att.W_query.weight must have dtype float32"),
    ("b1:3:transposed", None, ValueError, r"trf_blocks.1.att.W_query.weight must be a C-contiguous"),
    ("b0:3:cols", None, ValueError, r"trf_blocks.0.att.W_query.weight has shape \(72, 71\)"),
    ("b0:0", None, TypeError, r"trf_blocks.0.norm1.scale must be a float32 NumPy array, got None"),
    ("b0:2", 0.0, ValueError, r"trf_blocks.0.norm1.eps must be positive, got 0.0"),
    ("b0:11", 1.5, ValueError, r"trf_blocks.0.att.dropout.p must be a probability.*1.5"),
    ("b1:19", -1.0, ValueError, r"trf_blocks.1.drop_shortcut.p must be a probability"),
    ("b0:17:cols", None, ValueError, r"trf_blocks.0.ff.layers.2.weight has shape \(72, 287\)"),
    ("b0:16", np.zeros(3, np.float32), ValueError,
     r"trf_blocks.0.ff.layers.0.bias has shape \(3,\), expected \(288,\)"),
])
def test_C_gpt_forward_rejects_bad_arguments(model, where, value, exc, expect):
    """gptc._C.gpt_forward names the argument (with the book's key) and the problem for
    wrong dtype/ndim/shape/layout, bad sizes, probabilities and token ids."""
    args = _one_call_args(model)
    ids = np.array([[1, 2, 3]])
    parts = where.split(":")

    def perturb(a):
        kind = parts[-1]
        return {"f64": lambda: a.astype(np.float64), "fortran": lambda: np.asfortranarray(a),
                "3d": lambda: a[None], "transposed": lambda: np.ascontiguousarray(a.T).T,
                "cols": lambda: a[:, :-1].copy(),
                "len": lambda: a[:-1].copy()}[kind]()

    if parts[0] == "ids":
        ids = {"int32": ids.astype(np.int32), "float": ids.astype(np.float32),
               "1d": ids[0], "strided": np.zeros((1, 6), np.int64)[:, ::2],
               "range": np.array([[1, 1000]]), "long": np.zeros((1, 17), np.int64),
               "empty": np.zeros((1, 0), np.int64)}[parts[1]]
    elif parts[0].startswith("b"):
        block, item = args[2][int(parts[0][1:])], int(parts[1])
        block[item] = value if len(parts) == 2 else perturb(block[item])
    else:
        i = int(parts[0])
        args[i] = value if len(parts) == 1 else perturb(args[i])
    with pytest.raises(exc, match=expect):
        _call_gpt_forward(ids, args)


@pytest.mark.parametrize("block,exc,got", [(lambda b: tuple(b[:-1]), ValueError, "got 19 items"),
                                           (lambda b: tuple(b) + (None,), ValueError, "got 21 items"),
                                           (lambda b: list(b), TypeError, "got list")],
                         ids=["19-items", "21-items", "list"])
def test_C_gpt_forward_block_of_wrong_length(model, block, exc, got):
    """A block that is not a tuple of 20 items raises an error naming the block,
    the 20 items expected and what it got."""
    args = list(model._one_call_arguments())
    args[2] = [block(args[2][0]), args[2][1]]
    with pytest.raises(exc, match=rf"blocks\[0\] must be a tuple of 20 items, {got}"):
        _C.gpt_forward(np.array([[1, 2]]), *args)


def test_C_gpt_forward_non_numeric_eps_names_it(model):
    """A string eps raises TypeError naming final_norm.eps."""
    args = list(model._one_call_arguments())
    args[5] = "1e-5"
    with pytest.raises(TypeError, match=r"final_norm.eps"):
        _C.gpt_forward(np.array([[1, 2]]), *args)


def test_C_gpt_forward_non_numeric_dropout_names_it(model):
    """A string dropout probability raises TypeError naming it (not a crash)."""
    args = list(model._one_call_arguments())
    args[9] = "0.1"
    with pytest.raises(TypeError, match=r"drop_emb.p|must be real number"):
        _C.gpt_forward(np.array([[1, 2]]), *args)


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
