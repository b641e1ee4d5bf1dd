"""Input that is merely in an unusual form (strided, transposed, float64, integer, read-only,
a list) gives exactly the result of the contiguous float32 equivalent: gptc/_convert.py
converts it once, at the edge, and never modifies it."""
import numpy as np
import pytest

import gptc
from gptc import _C, nn
from conftest import small_config

TINY = small_config(emb_dim=8, n_heads=2, context_length=6, vocab_size=20, n_layers=1)


@pytest.fixture(scope="module")
def model():
    """A small GPTModel (vocab 1000, context 16) in eval mode."""
    return gptc.GPTModel(small_config(n_layers=2)).eval()


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


def test_lists_of_ints_work(model):
    """A list of lists of ints is accepted and equals the int64 array input."""
    ids = [[1, 2, 3], [4, 5, 6]]
    out = model(ids)
    assert out.shape == (2, 3, 1000) and out.dtype == np.float32
    np.testing.assert_array_equal(out, model(np.array(ids, np.int64)))


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
