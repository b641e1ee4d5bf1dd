"""gptc.attention_weights equals the attn_weights of the book's MultiHeadAttention
(tests/torch_reference.py) in every block and head, within 1e-6."""
import numpy as np
import pytest

import gptc
from conftest import BOOK_BATCH, report, small_config, torch_state_to_gptc


def _pair(torch, ref, cfg, seed=0):
    torch.manual_seed(seed)
    t_model = ref.GPTModel(cfg).eval()
    g_model = torch_state_to_gptc(t_model, gptc.GPTModel(cfg)).eval()
    return t_model, g_model


def _book_attn_weights(torch, t_model, ids):
    """attn_weights of every block of the PyTorch model, computed from the input
    each MultiHeadAttention receives exactly as the book's forward computes them."""
    inputs = []
    handles = [block.att.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
               for block in t_model.trf_blocks]
    with torch.no_grad():
        t_model(torch.from_numpy(ids))
        weights = []
        for block, x in zip(t_model.trf_blocks, inputs):
            att = block.att
            b, num_tokens, _ = x.shape
            queries = att.W_query(x).view(b, num_tokens, att.num_heads, att.head_dim)
            keys = att.W_key(x).view(b, num_tokens, att.num_heads, att.head_dim)
            queries, keys = queries.transpose(1, 2), keys.transpose(1, 2)
            attn_scores = queries @ keys.transpose(2, 3)
            mask_bool = att.mask.bool()[:num_tokens, :num_tokens]
            attn_scores.masked_fill_(mask_bool, -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            weights.append(attn_weights.numpy())
    for handle in handles:
        handle.remove()
    return np.stack(weights)


def _check_rows(weights):
    """Rows sum to 1 and nothing is above the diagonal."""
    above_diagonal = np.triu(np.ones(weights.shape[-2:], bool), k=1)
    report("row sums", weights.sum(axis=-1), np.ones(weights.shape[:-1]), atol=1e-5)
    assert np.all(weights[..., above_diagonal] == 0)
    assert np.all(weights >= 0)


@pytest.mark.parametrize("cfg,batch,seq_len", [
    (small_config(), 2, 16),
    (small_config(qkv_bias=True, n_layers=2), 3, 7),
    (small_config(n_layers=1, emb_dim=16, n_heads=1, vocab_size=7, context_length=5), 1, 1),
], ids=["emb72-6heads-full-context", "qkv-bias", "one-head-one-token"])
def test_small_models_match_the_books_attn_weights(torch, ref, cfg, batch, seq_len):
    t_model, g_model = _pair(torch, ref, cfg, seed=seq_len)
    ids = np.random.default_rng(batch).integers(0, cfg["vocab_size"], (batch, seq_len))
    weights = gptc.attention_weights(g_model, ids)
    assert weights.shape == (cfg["n_layers"], batch, cfg["n_heads"], seq_len, seq_len)
    assert weights.dtype == np.float32
    report("attention weights", weights, _book_attn_weights(torch, t_model, ids), atol=1e-6)
    _check_rows(weights)


def test_gpt2_124m_on_the_book_batch_matches_the_books_attn_weights(torch, ref):
    """GPT-2 124M at seed 123, "Every effort moves you" / "Every day holds a":
    (12, 2, 12, 4, 4) weights within 1e-6 of PyTorch's."""
    t_model, g_model = _pair(torch, ref, dict(gptc.GPT_CONFIG_124M), seed=123)
    ids = np.array(BOOK_BATCH)
    weights = gptc.attention_weights(g_model, ids)
    assert weights.shape == (12, 2, 12, 4, 4)
    report("GPT-2 124M attention weights", weights, _book_attn_weights(torch, t_model, ids),
           atol=1e-6)
    _check_rows(weights)


def test_bfloat16_weights_give_nearly_the_float32_maps():
    """After to_dtype('bfloat16') the maps come from the rounded projections:
    within 1e-2 of the float32 maps, still rows of probabilities."""
    gptc.manual_seed(5)
    model = gptc.GPTModel(small_config()).eval()
    ids = np.random.default_rng(5).integers(0, 1000, (2, 9))
    full = gptc.attention_weights(model, ids)
    half = gptc.attention_weights(model.to_dtype("bfloat16"), ids)
    model.to_dtype("float32")
    err = report("bfloat16 vs float32 attention weights", half, full, atol=1e-2)
    assert err > 0
    _check_rows(half)


def test_leaves_no_hook_behind_and_fires_the_users_hooks():
    gptc.manual_seed(6)
    model = gptc.GPTModel(small_config()).eval()
    seen = []
    model.trf_blocks[1].register_forward_hook(lambda m, args, out: seen.append(out.shape))
    gptc.attention_weights(model, [[1, 2, 3]])
    assert seen == [(1, 3, 72)]
    assert all(not block.att._forward_pre_hooks for block in model.trf_blocks)


def test_a_pre_hook_that_changes_the_attention_input_changes_the_map():
    """The maps are those of the input the attention really receives."""
    gptc.manual_seed(7)
    model = gptc.GPTModel(small_config()).eval()
    ids = np.array([[5, 6, 7, 8]])
    before = gptc.attention_weights(model, ids)
    model.trf_blocks[0].att.register_forward_pre_hook(lambda m, args: args[0] * 4.0)
    after = gptc.attention_weights(model, ids)
    assert not np.allclose(after[0], before[0], atol=1e-3)
    _check_rows(after)


def test_training_mode_is_refused_with_what_to_do():
    gptc.manual_seed(8)
    model = gptc.GPTModel(small_config())
    with pytest.raises(RuntimeError, match=r"eval mode.*the model is in training mode: "
                                           r"call model\.eval\(\) first"):
        gptc.attention_weights(model, [[1, 2]])
    model.eval()
    model.trf_blocks[2].att.dropout.train()
    with pytest.raises(RuntimeError, match=r"trf_blocks\.2\.att\.dropout is in training mode"):
        gptc.attention_weights(model, [[1, 2]])


def test_only_a_gpt_model_with_the_books_blocks_is_accepted():
    with pytest.raises(TypeError, match="model must be a gptc.GPTModel, got DummyGPTModel"):
        gptc.attention_weights(gptc.DummyGPTModel(small_config()).eval(), [[1]])
    model = gptc.GPTModel(small_config()).eval()
    model.trf_blocks[1] = gptc.nn.Linear(72, 72)
    with pytest.raises(TypeError, match=r"trf_blocks\[1\] is a Linear without a "
                                        "MultiHeadAttention"):
        gptc.attention_weights(model, [[1]])
