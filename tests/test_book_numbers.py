"""The numbers chapter 4 prints, reproduced by gptc from its own seeded generator.

The constants below are the book's printed values; these tests need no
PyTorch. Where PyTorch is installed, the same steps are also compared with it
directly (every weight, and a training-mode forward with dropout active).
"""
import numpy as np
import pytest

import gptc
from gptc import nn
from conftest import BOOK_BATCH, HELLO_IDS, is_intel_cpu, report, torch_state_to_gptc


def _close_to_book(values, book):
    """Equal to the book's 4-decimal print, within 1 in the last place."""
    values = np.asarray(values, dtype=np.float64)
    print("gptc:", np.round(values, 4).tolist(), " book:", book)
    np.testing.assert_allclose(values, book, atol=1.5e-4, rtol=0)


def test_sequential_linear_relu_on_randn():
    """manual_seed(123); randn(2, 5) through Sequential(Linear(5, 6), ReLU())
    prints the book's layer-normalisation example input (section 4.2)."""
    gptc.manual_seed(123)
    batch_example = gptc.randn(2, 5)
    layer = nn.Sequential(nn.Linear(5, 6), nn.ReLU())
    out = layer(batch_example)
    _close_to_book(out, [[0.2260, 0.3470, 0.0000, 0.2216, 0.0000, 0.0000],
                         [0.2133, 0.2394, 0.0000, 0.5198, 0.3297, 0.0000]])


def test_dummy_gpt_model_train_mode_logits():
    """DummyGPTModel right after manual_seed(123), in training mode (dropout on the
    embeddings active), gives the logits section 4.1 prints."""
    gptc.manual_seed(123)
    model = gptc.DummyGPTModel(gptc.GPT_CONFIG_124M)
    logits = model(np.array(BOOK_BATCH))
    assert logits.shape == (2, 4, 50257)
    _close_to_book(logits[0, 0, :3], [-1.2034, 0.3201, -0.7130])


@pytest.fixture(scope="module")
def seeded_model():
    gptc.manual_seed(123)
    return gptc.GPTModel(gptc.GPT_CONFIG_124M)


def test_gpt_model_train_mode_logits(seeded_model):
    """GPTModel right after manual_seed(123), still in training mode (dropout 0.1
    active everywhere), gives the logits section 4.6 prints."""
    gptc.manual_seed(123)
    model = gptc.GPTModel(gptc.GPT_CONFIG_124M)
    out = model(np.array(BOOK_BATCH))
    _close_to_book(out[0, 0, :3], [0.3613, 0.4222, -0.0711])
    _close_to_book(out[0, 0, -3:], [0.3483, 0.4661, -0.2838])
    _close_to_book(out[0, 3, :3], [-1.0076, 0.3418, -0.1190])
    _close_to_book(out[1, 3, -3:], [1.2630, -0.1858, 0.0388])


def test_generate_text_simple_gives_the_books_ids(seeded_model):
    """Eval mode, "Hello, I am" + 10 greedy tokens: the ids of section 4.7
    ("Hello, I am Featureiman Byeswickattribute argue logger Normandy Compton analogous")."""
    model = seeded_model.eval()
    out = gptc.generate_text_simple(model, np.array([HELLO_IDS]), max_new_tokens=10,
                                    context_size=gptc.GPT_CONFIG_124M["context_length"])
    print(out.tolist())
    assert out.tolist() == [[15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267,
                             49706, 43231, 47062, 34657]]


def test_every_initial_weight_equals_torchs(torch, ref, seeded_model):
    """manual_seed(123); GPTModel(GPT_CONFIG_124M) draws every parameter exactly as
    the book's PyTorch constructor does (same generator, same order, same
    transformations): all 163,009,536 values are bit-identical."""
    torch.manual_seed(123)
    t_model = ref.GPTModel(gptc.GPT_CONFIG_124M)
    g_sd = seeded_model.state_dict()
    mismatched = [k for k, v in t_model.state_dict().items()
                  if not np.array_equal(g_sd[k], v.numpy())]
    print(f"{len(g_sd)} tensors compared, {len(mismatched)} differ")
    assert mismatched == []


@pytest.mark.skipif(is_intel_cpu(), reason="on Intel CPUs PyTorch's CPU dropout draws its masks "
                    "through MKL, which gptc does not reproduce")
def test_train_mode_forward_equals_torchs(torch, ref):
    """A training-mode forward right after the same seed, on a small model: every
    dropout mask (embeddings, attention weights, both shortcuts) is drawn from
    the same stream in the same order, so the logits agree with PyTorch's, and
    so does the generator state afterwards."""
    cfg = {"vocab_size": 500, "context_length": 8, "emb_dim": 48, "n_heads": 4,
           "n_layers": 2, "drop_rate": 0.3, "qkv_bias": True}
    torch.manual_seed(7)
    t_model = ref.GPTModel(cfg)
    g_model = gptc.GPTModel(cfg)
    torch_state_to_gptc(t_model, g_model)
    ids = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
    torch.manual_seed(99)
    gptc.manual_seed(99)
    with torch.no_grad():
        expected = t_model(torch.from_numpy(ids)).numpy()
    got = g_model(ids)
    report("train-mode logits", got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(gptc.get_rng_state(), torch.get_rng_state().numpy())
