"""Each layer of gptc.nn against the book's PyTorch layer with the same weights."""
import numpy as np
import pytest

import gptc
from gptc import nn
from conftest import report, small_config, torch_state_to_gptc


def _t(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def test_layer_norm_matches_torch_on_the_chapter_shapes(torch, ref):
    """LayerNorm on a (2, 6) batch (section 4.2) and on (2, 4, 768), with
    non-trivial scale and shift, equals the book's LayerNorm; also on widths
    the row sums' 8 lanes split unevenly (1, 6, and 1003 = 125 x 8 + 3)."""
    rng = np.random.default_rng(0)
    for shape in [(2, 6), (2, 4, 768), (3, 1), (5, 1000), (4, 1003)]:
        d = shape[-1]
        t_ln, g_ln = ref.LayerNorm(d), nn.LayerNorm(d)
        with torch.no_grad():
            t_ln.scale.copy_(_t(torch, rng.normal(size=d)))
            t_ln.shift.copy_(_t(torch, rng.normal(size=d)))
        torch_state_to_gptc(t_ln, g_ln)
        x = rng.normal(3.0, 2.0, size=shape).astype(np.float32)
        with torch.no_grad():
            expected = t_ln(_t(torch, x)).numpy()
        report(f"LayerNorm{shape}", g_ln(x), expected, rtol=1e-5, atol=1e-5)


def test_layer_norm_normalises_to_mean_zero_biased_variance_one():
    """The output rows have mean 0 and biased variance ~1 (not exactly 1:
    eps = 1e-5 sits inside the square root)."""
    x = np.array([[0.2260, 0.3470, 0.0, 0.2216, 0.0, 0.0],
                  [0.2133, 0.2394, 0.0, 0.5198, 0.3297, 0.0]], np.float32)
    out = nn.LayerNorm(6)(x)
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-6)
    var = out.var(axis=-1)
    np.testing.assert_allclose(var, 1.0, atol=1e-3)
    assert np.all(var < 1.0), "eps inside the square root makes the variance slightly below 1"


def test_gelu_and_relu_match_torch(torch, ref):
    """GELU (tanh approximation) equals the book's GELU; ReLU equals torch's."""
    x = np.linspace(-8, 8, 10001, dtype=np.float32)
    with torch.no_grad():
        expected = ref.GELU()(_t(torch, x)).numpy()
    report("GELU", nn.GELU()(x), expected, rtol=1e-5, atol=1e-6)
    report("ReLU", nn.ReLU()(x), torch.relu(_t(torch, x)).numpy())
    assert nn.GELU()(np.float32(0.0)) == 0.0


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5,), (2, 5), (2, 3, 5), (7, 1, 4, 5), (0, 5)])
def test_linear_matches_torch(torch, bias, shape):
    """Linear keeps every leading dimension and computes x W^T + b as torch."""
    rng = np.random.default_rng(1)
    t_lin, g_lin = torch.nn.Linear(5, 11, bias=bias), nn.Linear(5, 11, bias=bias)
    torch_state_to_gptc(t_lin, g_lin)
    x = rng.normal(size=shape).astype(np.float32)
    with torch.no_grad():
        expected = t_lin(_t(torch, x)).numpy()
    out = g_lin(x)
    assert out.dtype == np.float32 and out.shape == shape[:-1] + (11,)
    report(f"Linear{shape} bias={bias}", out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("m,k,n", [(1, 768, 768), (13, 77, 31), (64, 768, 3072),
                                   (3, 3072, 768), (9, 8, 1)])
def test_linear_large_and_odd_shapes(m, k, n):
    """The tiled, threaded matmul equals float64 NumPy on model-sized and odd shapes
    (tile remainders in every direction)."""
    rng = np.random.default_rng(2)
    lin = nn.Linear(k, n)
    x = rng.normal(size=(m, k)).astype(np.float32)
    expected = x.astype(np.float64) @ lin.weight.astype(np.float64).T + lin.bias
    report(f"Linear {m}x{k}x{n}", lin(x), expected, rtol=1e-4, atol=2e-5)


def test_embedding_matches_torch(torch):
    """Embedding looks up rows for ids of any shape."""
    t_emb, g_emb = torch.nn.Embedding(50, 7), nn.Embedding(50, 7)
    torch_state_to_gptc(t_emb, g_emb)
    ids = np.array([[0, 49, 3], [7, 7, 1]])
    with torch.no_grad():
        expected = t_emb(torch.from_numpy(ids)).numpy()
    report("Embedding", g_emb(ids), expected)
    assert g_emb(np.int32(3)).shape == (7,)


def test_softmax_rows_sum_to_one_and_match_torch(torch):
    x = np.random.default_rng(3).normal(0, 30, size=(4, 50257)).astype(np.float32)
    out = gptc._C.softmax(x)
    report("softmax", out, torch.softmax(_t(torch, x), dim=-1).numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_feed_forward_matches_torch(torch, ref):
    """FeedForward on (2, 3, 768), as in section 4.3: Linear, GELU, Linear."""
    cfg = dict(gptc.GPT_CONFIG_124M)
    t_ff, g_ff = ref.FeedForward(cfg), nn.FeedForward(cfg)
    torch_state_to_gptc(t_ff, g_ff)
    x = np.random.default_rng(4).random((2, 3, 768), dtype=np.float32)
    with torch.no_grad():
        expected = t_ff(_t(torch, x)).numpy()
    out = g_ff(x)
    assert out.shape == (2, 3, 768)
    assert [type(m).__name__ for m in g_ff.layers] == ["Linear", "GELU", "Linear"]
    report("FeedForward", out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("d_in,d_out,heads,batch,tokens,ctx", [
    (72, 72, 6, 1, 1, 16), (72, 72, 6, 3, 16, 16), (16, 24, 4, 2, 5, 8), (3, 2, 2, 2, 6, 6),
    (768, 768, 12, 2, 4, 1024)])
def test_multihead_attention_matches_torch(torch, ref, qkv_bias, d_in, d_out, heads, batch,
                                           tokens, ctx):
    """Causal multi-head attention (eval mode) equals the book's, including d_in != d_out,
    one token, and a full context."""
    torch.manual_seed(5)
    t_mha = ref.MultiHeadAttention(d_in, d_out, ctx, 0.0, heads, qkv_bias=qkv_bias).eval()
    g_mha = nn.MultiHeadAttention(d_in, d_out, ctx, 0.0, heads, qkv_bias=qkv_bias).eval()
    torch_state_to_gptc(t_mha, g_mha)
    assert g_mha.head_dim == d_out // heads
    x = np.random.default_rng(6).normal(size=(batch, tokens, d_in)).astype(np.float32)
    with torch.no_grad():
        expected = t_mha(_t(torch, x)).numpy()
    report(f"MultiHeadAttention({d_in},{d_out},h={heads},bias={qkv_bias}) on "
           f"{(batch, tokens, d_in)}", g_mha(x), expected, rtol=1e-5, atol=1e-5)


def test_attention_is_causal():
    """Changing a later token never changes an earlier position's output."""
    mha = nn.MultiHeadAttention(8, 8, 10, 0.0, 2).eval()
    x = np.random.default_rng(7).normal(size=(1, 10, 8)).astype(np.float32)
    y = x.copy()
    y[0, 6:] += 5.0
    np.testing.assert_array_equal(mha(x)[0, :6], mha(y)[0, :6])
    assert not np.allclose(mha(x)[0, 6:], mha(y)[0, 6:])


def test_mask_buffer_is_the_books_upper_triangle():
    mha = nn.MultiHeadAttention(4, 4, 5, 0.0, 2)
    np.testing.assert_array_equal(mha.mask, np.triu(np.ones((5, 5)), k=1))


@pytest.mark.parametrize("cfg", [dict(gptc.GPT_CONFIG_124M),
                                 small_config(qkv_bias=True), small_config()])
def test_transformer_block_matches_torch(torch, ref, cfg):
    """TransformerBlock on (2, 4, emb_dim) keeps the shape and equals the book's block."""
    torch.manual_seed(8)
    t_blk, g_blk = ref.TransformerBlock(cfg).eval(), nn.TransformerBlock(cfg).eval()
    torch_state_to_gptc(t_blk, g_blk)
    x = np.random.default_rng(9).random((2, 4, cfg["emb_dim"]), dtype=np.float32)
    with torch.no_grad():
        expected = t_blk(_t(torch, x)).numpy()
    out = g_blk(x)
    assert out.shape == x.shape
    report(f"TransformerBlock emb_dim={cfg['emb_dim']}", out, expected, rtol=1e-5, atol=1e-5)


def test_dropout_eval_mode_is_identity_and_train_mode_scales():
    """Dropout returns its input in eval mode or with p = 0; in training mode
    kept values are scaled by 1 / (1 - p) and about p of them are zeroed."""
    x = np.ones((200, 100), np.float32)
    drop = nn.Dropout(0.2)
    np.testing.assert_array_equal(drop.eval()(x), x)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)
    out = drop.train()(x)
    kept = out != 0
    np.testing.assert_allclose(out[kept], np.float32(1) / np.float32(0.8))
    assert abs(1 - kept.mean() - 0.2) < 0.02
    np.testing.assert_array_equal(nn.Dropout(1.0)(x), 0 * x)


def test_dummy_layers_pass_input_through():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert nn.DummyLayerNorm(3)(x) is x
    assert nn.DummyTransformerBlock({})(x) is x
