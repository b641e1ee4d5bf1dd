"""The whole GPTModel against the book's PyTorch model, and the chapter's numbers."""
import numpy as np
import pytest

import gptc
from gptc import nn
from conftest import BOOK_BATCH, HELLO_IDS, report, small_config, torch_state_to_gptc


def _pair(torch, ref, cfg, seed=0):
    """The book's model and a gptc model with the same weights, both in eval mode."""
    torch.manual_seed(seed)
    t_model = ref.GPTModel(cfg).eval()
    g_model = gptc.GPTModel(cfg).eval()
    torch_state_to_gptc(t_model, g_model)
    return t_model, g_model


@pytest.fixture(scope="module")
def gpt124m_pair(torch, ref):
    return _pair(torch, ref, dict(gptc.GPT_CONFIG_124M), seed=123)


def test_gpt2_124m_logits_match_torch(torch, gpt124m_pair):
    """GPT-2 124M on the book's batch: logits within 2e-4 absolute of PyTorch's."""
    t_model, g_model = gpt124m_pair
    batch = np.array(BOOK_BATCH)
    with torch.no_grad():
        expected = t_model(torch.from_numpy(batch)).numpy()
    logits = g_model(batch)
    assert logits.shape == (2, 4, 50257) and logits.dtype == np.float32
    report("GPT-2 124M logits", logits, expected, atol=2e-4)


CONFIGS = [
    small_config(n_layers=1),
    small_config(n_layers=3, qkv_bias=True),
    small_config(n_layers=3, qkv_bias=False),
    small_config(n_layers=1, emb_dim=16, n_heads=1, vocab_size=7, context_length=5),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"L{c['n_layers']}-E{c['emb_dim']}-"
                         f"H{c['n_heads']}-V{c['vocab_size']}-bias{c['qkv_bias']}")
@pytest.mark.parametrize("batch,seq_len", [(1, 1), (3, 1), (1, "ctx"), (3, "ctx"), (2, 7)])
def test_small_models_match_torch(torch, ref, cfg, batch, seq_len):
    """Odd configs (emb_dim 72 with 6 heads, vocab 1000, context 16, 1 and 3 layers,
    qkv_bias on and off) at seq_len 1 and seq_len == context_length, batch 1 and 3."""
    seq_len = cfg["context_length"] if seq_len == "ctx" else min(seq_len, cfg["context_length"])
    t_model, g_model = _pair(torch, ref, cfg, seed=batch * 100 + seq_len)
    ids = np.random.default_rng(seq_len).integers(0, cfg["vocab_size"], (batch, seq_len))
    with torch.no_grad():
        expected = t_model(torch.from_numpy(ids)).numpy()
    report(f"logits {cfg['n_layers']} layers, ({batch}, {seq_len})", g_model(ids), expected,
           rtol=1e-5, atol=1e-5)


def test_one_call_forward_equals_module_by_module(gpt124m_pair):
    """GPTModel.forward (one C call) gives what calling tok_emb, pos_emb, drop_emb,
    each TransformerBlock, final_norm and out_head in turn gives."""
    _, model = gpt124m_pair
    batch = np.array(BOOK_BATCH)
    x = model.tok_emb(batch) + model.pos_emb(np.arange(batch.shape[1]))
    x = model.drop_emb(x)
    for block in model.trf_blocks:
        x = block(x)
    stepwise = model.out_head(model.final_norm(x))
    report("one call vs module by module", model(batch), stepwise, atol=1e-5)


def test_training_mode_one_call_draws_what_the_modules_draw():
    """In training mode without gradients the one C call drops what the module-by-module
    forward drops: each dropout (embeddings, attention weights through the training
    kernel, both shortcuts) draws the same values in the same order, so the logits are
    the same bits and the generator ends in the same state."""
    gptc.manual_seed(5)
    model = gptc.GPTModel(small_config(drop_rate=0.3, qkv_bias=True))
    ids = np.random.default_rng(6).integers(0, 1000, (2, 16))
    gptc.manual_seed(9)
    stepwise = np.asarray(model(ids))   # recording: module by module
    after_stepwise = gptc.get_rng_state()
    gptc.manual_seed(9)
    with gptc.no_grad():
        one_call = model(ids)
    report("train-mode one call vs module by module", one_call, stepwise)
    np.testing.assert_array_equal(gptc.get_rng_state(), after_stepwise)


def test_customised_model_runs_its_own_modules():
    """If a user swaps a block for their own module, forward uses it (the one-call
    C path is only taken for the book's exact architecture)."""
    cfg = small_config(n_layers=2)
    model = gptc.GPTModel(cfg).eval()
    ids = np.array([[1, 2, 3]])
    before = model(ids)

    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    model.trf_blocks[1] = nn.Sequential(model.trf_blocks[1], Scale())
    after = model(ids)
    expected = model.out_head(model.final_norm(
        2 * model.trf_blocks[1][0](model.trf_blocks[0](
            model.tok_emb(ids) + model.pos_emb(np.arange(3))))))
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(after, before)


def test_generate_text_simple_matches_torch(torch, ref, gpt124m_pair):
    """Greedy generation from "Hello, I am" gives the same 10 new ids as the book's
    function with the same weights."""
    t_model, g_model = gpt124m_pair
    start = np.array([HELLO_IDS])
    expected = ref.generate_text_simple(t_model, torch.from_numpy(start), 10, 1024).numpy()
    out = gptc.generate_text_simple(g_model, start, max_new_tokens=10, context_size=1024)
    print("gptc :", out.tolist(), "\ntorch:", expected.tolist())
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)


def test_generate_text_simple_crops_the_context(torch, ref):
    """With a context of 5 tokens, generation keeps going past it by cropping,
    as the book's function does, and agrees with PyTorch."""
    cfg = small_config(context_length=5, n_layers=1)
    t_model, g_model = _pair(torch, ref, cfg, seed=3)
    start = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    expected = ref.generate_text_simple(t_model, torch.from_numpy(start), 8, 5).numpy()
    out = gptc.generate_text_simple(g_model, start, 8, context_size=5)
    assert out.shape == (2, 12)
    np.testing.assert_array_equal(out, expected)


def test_generate_crops_a_long_prompt():
    """generate_text_simple with a prompt longer than the context crops it and works, giving the
    same tokens as generating from the last context_length tokens."""
    model = gptc.GPTModel(small_config(n_layers=2)).eval()
    prompt = np.random.default_rng(0).integers(0, 1000, (2, 20))
    out = gptc.generate_text_simple(model, prompt, max_new_tokens=3, context_size=16)
    assert out.shape == (2, 23) and out.dtype == np.int64
    np.testing.assert_array_equal(out[:, :20], prompt)
    cropped = gptc.generate_text_simple(model, prompt[:, -16:], max_new_tokens=3, context_size=16)
    np.testing.assert_array_equal(out[:, 20:], cropped[:, 16:])


def test_state_dict_keys_are_the_books(torch, ref):
    """state_dict() has exactly the keys, order and shapes of the book's model."""
    cfg = small_config(n_layers=2)
    t_sd, g_sd = ref.GPTModel(cfg).state_dict(), gptc.GPTModel(cfg).state_dict()
    assert list(g_sd) == list(t_sd)
    for key in t_sd:
        assert g_sd[key].shape == tuple(t_sd[key].shape), key
    for key in ["tok_emb.weight", "trf_blocks.0.att.W_query.weight", "trf_blocks.0.norm1.scale",
                "trf_blocks.0.ff.layers.0.bias", "out_head.weight"]:
        assert key in g_sd


def test_state_dict_round_trip_through_torch_is_exact(torch, ref):
    """gptc -> PyTorch -> gptc keeps every value bit for bit."""
    cfg = small_config(qkv_bias=True)
    first = gptc.GPTModel(cfg)
    t_model = ref.GPTModel(cfg)
    t_model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in first.state_dict().items()})
    second = gptc.GPTModel(cfg)
    second.load_state_dict(t_model.state_dict())
    for key, value in first.state_dict().items():
        np.testing.assert_array_equal(second.state_dict()[key], value, err_msg=key)


def test_module_repr_is_pytorchs(ref):
    """print(model) shows the same tree as print() of the book's PyTorch model."""
    cfg = small_config(n_layers=2, qkv_bias=True)
    assert repr(gptc.GPTModel(cfg)) == repr(ref.GPTModel(cfg))
    assert repr(gptc.DummyGPTModel(cfg)) == repr(ref.DummyGPTModel(cfg))


SIZES = {
    # name: (total parameters, without out_head, MB of float32)
    "gpt2-small": (163_009_536, 124_412_160, 621.83),
    "gpt2-medium": (406_212_608, 354_749_440, 1549.58),
    "gpt2-large": (838_220_800, 773_891_840, 3197.56),
    "gpt2-xl": (1_637_792_000, 1_557_380_800, 6247.68),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_parameter_counts_and_sizes(name):
    """Parameters counted from a built model, as the chapter counts them:
    sum(p.numel() for p in model.parameters()), minus the output head, and
    the float32 size in MB (total * 4 / 1024**2)."""
    total, without_head, mb = SIZES[name]
    model = gptc.GPTModel(gptc.gpt2_config(name))
    counted = sum(p.numel() for p in model.parameters())
    assert counted == total
    assert counted - model.out_head.weight.numel() == without_head
    assert round(counted * 4 / 1024 ** 2, 2) == mb
    model.out_head.weight = model.tok_emb.weight
    assert sum(p.numel() for p in model.parameters()) == without_head


def test_weight_tying_shares_memory_and_counts_once():
    """GPTModel(cfg, tie_weights=True): out_head.weight is tok_emb.weight."""
    cfg = small_config()
    model = gptc.GPTModel(cfg, tie_weights=True).eval()
    assert model.out_head.weight is model.tok_emb.weight
    untied = sum(p.numel() for p in gptc.GPTModel(cfg).parameters())
    tied = sum(p.numel() for p in model.parameters())
    assert untied - tied == cfg["vocab_size"] * cfg["emb_dim"]
    ids = np.array([[1, 2, 3]])
    x = model.final_norm(model.trf_blocks(model.tok_emb(ids) + model.pos_emb(np.arange(3))))
    np.testing.assert_allclose(model(ids), x @ model.tok_emb.weight.T, rtol=1e-5, atol=1e-5)


def test_dummy_gpt_model_shapes():
    """DummyGPTModel already maps (2, 4) ids to (2, 4, vocab_size) logits."""
    cfg = small_config()
    logits = gptc.DummyGPTModel(cfg)(np.array([[1, 2, 3, 4], [5, 6, 7, 8]]))
    assert logits.shape == (2, 4, cfg["vocab_size"])


def test_configs_by_name():
    assert gptc.GPT_CONFIG_124M == {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768,
                                    "n_heads": 12, "n_layers": 12, "drop_rate": 0.1,
                                    "qkv_bias": False}
    dims = {name: (c["emb_dim"], c["n_layers"], c["n_heads"])
            for name, c in ((n, gptc.gpt2_config(n)) for n in gptc.GPT2_SIZES)}
    assert dims == {"gpt2-small": (768, 12, 12), "gpt2-medium": (1024, 24, 16),
                    "gpt2-large": (1280, 36, 20), "gpt2-xl": (1600, 48, 25)}


def test_forward_from_several_python_threads():
    """The GIL is released during the C forward: four Python threads running the
    same eval-mode model (and a second model) at once get the serial results."""
    import threading

    cfg = small_config(n_layers=2)
    models = [gptc.GPTModel(cfg).eval(), gptc.GPTModel(cfg).eval()]
    rng = np.random.default_rng(11)
    batches = [rng.integers(0, cfg["vocab_size"], (2, cfg["context_length"])) for _ in range(4)]
    expected = [models[i % 2](b) for i, b in enumerate(batches)]
    results = [None] * 4

    def work(i):
        for _ in range(20):
            results[i] = models[i % 2](batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
