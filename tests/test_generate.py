"""gptc.generate: chapter 5's generate (top-k, temperature, eos) with a KV cache,
against generate_text_simple (full recompute), the book's numbers and PyTorch."""
import threading

import numpy as np
import pytest

import gptc
from gptc import _C, nn
from conftest import HELLO_IDS, report, small_config, torch_state_to_gptc

BOOK_HELLO_6 = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]


@pytest.fixture(scope="module")
def gpt124m():
    """GPT-2 124M with the book's seed-123 weights, in eval mode."""
    gptc.manual_seed(123)
    return gptc.GPTModel(gptc.GPT_CONFIG_124M).eval()


@pytest.fixture(scope="module")
def small():
    """A small model (context_length 16, vocab 1000) in eval mode."""
    gptc.manual_seed(7)
    return gptc.GPTModel(small_config()).eval()


def recompute_logits(model, seq, context_size):
    """The last position's logits of model(seq[:, -context_size:]), as the book computes."""
    with gptc.no_grad():
        return np.asarray(model(seq[:, -context_size:]))[:, -1, :]


# -- greedy: the same tokens as the recompute -------------------------------------

def test_greedy_hello_is_the_books(torch, ref, gpt124m):
    """"Hello, I am" + 6 greedy tokens on the seed-123 124M model: the book's ids, the
    ids of generate_text_simple and of the book's PyTorch generate_text_simple."""
    start = np.array([HELLO_IDS])
    out = gptc.generate(gpt124m, start, max_new_tokens=6, context_size=1024)
    simple = gptc.generate_text_simple(gpt124m, start, 6, 1024)
    t_model = ref.GPTModel(gptc.GPT_CONFIG_124M).eval()
    t_model.load_state_dict({k: torch.from_numpy(np.array(v))
                             for k, v in gpt124m.state_dict().items()})
    expected = ref.generate_text_simple(t_model, torch.from_numpy(start), 6, 1024).numpy()
    print("generate:", out.tolist())
    assert out.dtype == np.int64 and out.shape == (1, 10)
    assert out[0].tolist() == BOOK_HELLO_6
    np.testing.assert_array_equal(out, simple)
    np.testing.assert_array_equal(out, expected)


def test_cached_logits_equal_the_recompute_124m(gpt124m):
    """Prefill then one-token steps give the logits of the full recompute of each
    prefix (within 1e-4; the kernels make them equal bit for bit today)."""
    seq = np.array([BOOK_HELLO_6])
    dec = _C.Decoder(**gpt124m._one_call_arguments(), batch=1, capacity=10)
    worst = report("prefill logits", dec.prefill(seq[:, :4]),
                   recompute_logits(gpt124m, seq[:, :4], 1024), atol=1e-4)
    for n in range(5, 11):
        logits = dec.step(np.ascontiguousarray(seq[:, n - 1]))
        worst = max(worst, report(f"step logits, {n} tokens", logits,
                                  recompute_logits(gpt124m, seq[:, :n], 1024), atol=1e-4))
        assert dec.length == n
    print(f"124M cached vs recomputed logits: max abs error {worst:.3g}")


@pytest.mark.parametrize("cfg", [small_config(), small_config(qkv_bias=True, n_layers=2),
                                 small_config(n_heads=1, emb_dim=16, n_layers=1)],
                         ids=["L3", "L2-bias", "L1-H1"])
def test_cached_logits_equal_the_recompute_small(cfg):
    """Batch 2, every step up to a full cache: logits within 1e-4 of model(prefix)."""
    gptc.manual_seed(3)
    model = gptc.GPTModel(cfg).eval()
    seq = np.random.default_rng(1).integers(0, cfg["vocab_size"], (2, 16))
    dec = _C.Decoder(**model._one_call_arguments(), batch=2, capacity=16)
    worst = report("prefill", dec.prefill(np.ascontiguousarray(seq[:, :3])),
                   recompute_logits(model, seq[:, :3], 16),
                   atol=1e-4)
    for n in range(4, 17):
        worst = max(worst, report(f"step {n}", dec.step(np.ascontiguousarray(seq[:, n - 1])),
                                  recompute_logits(model, seq[:, :n], 16), atol=1e-4))
    print(f"cached vs recomputed logits: max abs error {worst:.3g}")
    with pytest.raises(RuntimeError, match=r"cache is full \(16 of capacity 16"):
        dec.step(np.array([1, 2]))


@pytest.mark.parametrize("prompt_len,context_size", [(4, 16), (20, 16), (1, 16), (4, 5),
                                                     (16, 16)])
def test_window_slides_like_the_recompute(small, prompt_len, context_size):
    """40 new tokens, well past the window: the same ids as generate_text_simple
    (which crops to idx[:, -context_size:] at every step), for prompts shorter and
    longer than the window, batch 2."""
    prompt = np.random.default_rng(prompt_len).integers(0, 1000, (2, prompt_len))
    out = gptc.generate(small, prompt, 40, context_size)
    expected = gptc.generate_text_simple(small, prompt, 40, context_size)
    assert out.shape == (2, prompt_len + 40)
    np.testing.assert_array_equal(out, expected)


def test_window_slides_like_pytorch(torch, ref):
    """The small model against the book's PyTorch generate_text_simple, past the window."""
    cfg = small_config()
    torch.manual_seed(11)
    t_model = ref.GPTModel(cfg).eval()
    g_model = torch_state_to_gptc(t_model, gptc.GPTModel(cfg).eval())
    prompt = np.array([[1, 2, 3, 4], [900, 8, 7, 6]])
    expected = ref.generate_text_simple(t_model, torch.from_numpy(prompt), 30, 16).numpy()
    np.testing.assert_array_equal(gptc.generate(g_model, prompt, 30, 16), expected)


def test_batch_rows_are_independent(small):
    """A batch of 2 gives each row what it gets alone."""
    prompt = np.array([[5, 6, 7], [400, 300, 200]])
    both = gptc.generate(small, prompt, 25, 16)
    for i in range(2):
        np.testing.assert_array_equal(both[i:i + 1], gptc.generate(small, prompt[i:i + 1], 25, 16))


def test_no_new_tokens_returns_the_prompt(small):
    prompt = np.array([[1, 2, 3]])
    out = gptc.generate(small, prompt, 0, 16)
    np.testing.assert_array_equal(out, prompt)
    assert out is not prompt and out.dtype == np.int64


def test_customised_model_falls_back_to_the_recompute(small):
    """A GPTModel with a replaced block (no one-call C forward, so no cache) and a
    DummyGPTModel are called on the cropped window at every step instead."""
    gptc.manual_seed(4)
    model = gptc.GPTModel(small_config(n_layers=2)).eval()

    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    model.trf_blocks[1] = nn.Sequential(model.trf_blocks[1], Scale())
    assert model._one_call_arguments() is None
    prompt = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(gptc.generate(model, prompt, 20, 16),
                                  gptc.generate_text_simple(model, prompt, 20, 16))
    dummy = gptc.DummyGPTModel(small_config()).eval()
    np.testing.assert_array_equal(gptc.generate(dummy, prompt, 20, 16),
                                  gptc.generate_text_simple(dummy, prompt, 20, 16))


def test_generate_while_gradients_are_enabled(small):
    """Parameters that require gradients, grad mode on: generate still runs without
    recording (as the book's generate under torch.no_grad()) and uses the cache."""
    assert gptc.is_grad_enabled() and small.out_head.weight.requires_grad
    prompt = np.array([[9, 8, 7]])
    np.testing.assert_array_equal(gptc.generate(small, prompt, 20, 16),
                                  gptc.generate_text_simple(small, prompt, 20, 16))


def test_training_mode_is_refused(small):
    """generate needs eval mode (dropout would change every step): a clear error."""
    small.train()
    try:
        with pytest.raises(RuntimeError, match=r"eval mode.*model\.eval\(\)"):
            gptc.generate(small, np.array([[1, 2]]), 3, 16)
    finally:
        small.eval()


# -- top-k, temperature ---------------------------------------------------------------

def test_top_k_1_is_greedy(small):
    """top_k=1 leaves one token, so sampling at any temperature is the argmax."""
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    greedy = gptc.generate(small, prompt, 30, 16)
    for temperature in (0.0, 0.7, 5.0):
        np.testing.assert_array_equal(
            gptc.generate(small, prompt, 30, 16, temperature=temperature, top_k=1), greedy)


def test_greedy_draws_nothing(small):
    """temperature 0 leaves the default generator untouched, top_k or not."""
    gptc.manual_seed(99)
    state = gptc.get_rng_state()
    gptc.generate(small, np.array([[1, 2]]), 10, 16, top_k=5)
    np.testing.assert_array_equal(gptc.get_rng_state(), state)


def test_sampling_is_reproducible_under_manual_seed(small):
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    gptc.manual_seed(123)
    first = gptc.generate(small, prompt, 30, 16, temperature=1.4, top_k=25)
    gptc.manual_seed(123)
    again = gptc.generate(small, prompt, 30, 16, temperature=1.4, top_k=25)
    gptc.manual_seed(124)
    other = gptc.generate(small, prompt, 30, 16, temperature=1.4, top_k=25)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, gptc.generate(small, prompt, 30, 16))


@pytest.mark.parametrize("top_k", [1, 3, 25])
def test_sampled_tokens_stay_in_the_top_k(small, top_k):
    """Every sampled token is among the top_k logits of its step (checked against
    the recomputed logits of each prefix)."""
    gptc.manual_seed(top_k)
    prompt = np.array([[10, 20, 30], [40, 50, 60]])
    out = gptc.generate(small, prompt, 40, 16, temperature=2.0, top_k=top_k)
    for n in range(3, out.shape[1]):
        logits = recompute_logits(small, out[:, :n], 16)
        kth = np.sort(logits, axis=-1)[:, -top_k]
        chosen = logits[np.arange(2), out[:, n]]
        assert np.all(chosen >= kth), f"step {n}: a token outside the top {top_k}"


def test_sampling_follows_the_softmax():
    """100,000 draws from fixed logits: frequencies match softmax(logits / t) within
    5 standard errors; top_k gives the tokens outside the top k no draws."""
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -30.0], np.float32)
    rows = np.tile(logits, (100_000, 1))
    gen = gptc.Generator().manual_seed(0)
    for temperature, top_k in [(1.0, None), (0.5, None), (2.0, None), (1.0, 3), (2.0, 2)]:
        tokens = _C.next_tokens(rows, temperature, top_k, gen)
        freq = np.bincount(tokens, minlength=6) / len(tokens)
        z = logits.astype(np.float64) / temperature
        if top_k is not None:
            z[np.argsort(logits)[:-top_k]] = -np.inf
        p = np.exp(z - z.max())
        p /= p.sum()
        se = np.sqrt(p * (1 - p) / len(tokens))
        print(f"t={temperature} top_k={top_k}: frequencies {np.round(freq, 4).tolist()}, "
              f"softmax {np.round(p, 4).tolist()}")
        assert np.all(np.abs(freq - p) <= 5 * se + 1e-12)
        assert np.all(freq[p == 0] == 0)


def test_top_k_keeps_ties_with_the_kth(small):
    """As the book's `logits < min_val` mask: values equal to the k-th largest stay."""
    logits = np.array([[1.0, 3.0, 3.0, 3.0, 0.0]], np.float32)
    gen = gptc.Generator().manual_seed(1)
    seen = {int(_C.next_tokens(logits, 1.0, 2, gen)[0]) for _ in range(200)}
    assert seen == {1, 2, 3}


def test_argmax_takes_the_first_maximum():
    logits = np.array([[0.0, 5.0, 5.0], [7.0, -np.inf, 7.0]], np.float32)
    assert _C.next_tokens(logits, 0.0, None, gptc.default_generator).tolist() == [1, 0]


# -- end of sequence ----------------------------------------------------------------

def test_eos_stops_as_in_the_book(small):
    """Generation stops at the step that produces eos_id, without appending it."""
    prompt = np.array([[1, 2, 3]])
    greedy = gptc.generate(small, prompt, 12, 16)
    eos = int(greedy[0, 6])            # the 4th generated token
    first = int(np.flatnonzero(greedy[0, 3:] == eos)[0]) + 3
    out = gptc.generate(small, prompt, 12, 16, eos_id=eos)
    np.testing.assert_array_equal(out, greedy[:, :first])
    unused = next(t for t in range(1000) if t not in greedy)
    np.testing.assert_array_equal(gptc.generate(small, prompt, 12, 16, eos_id=unused), greedy)


def test_eos_with_a_batch_stops_when_every_row_is_done(small):
    """Batch 2: a row that produced eos_id is padded with it; generation stops (that
    step not appended) once every row has produced it."""
    prompt = np.array([[1, 2, 3], [500, 600, 700]])
    greedy = gptc.generate(small, prompt, 30, 16)
    rows = [greedy[i, 3:].tolist() for i in range(2)]
    # an eos both rows reach, at different steps if possible
    common = [t for t in rows[0] if t in rows[1]]
    if not common:
        pytest.skip("the two greedy continuations share no token")
    eos = common[0]
    at = [r.index(eos) for r in rows]
    out = gptc.generate(small, prompt, 30, 16, eos_id=eos)
    assert out.shape == (2, 3 + max(at))
    for i in range(2):
        row = out[i, 3:].tolist()
        assert row[:at[i]] == rows[i][:at[i]]
        assert all(t == eos for t in row[at[i]:])


# -- threads --------------------------------------------------------------------------

def test_generate_from_several_python_threads(small):
    """The GIL is released in the C calls: four threads generating at once from the
    same eval model (greedy, past the window) get the serial results."""
    prompts = [np.random.default_rng(i).integers(0, 1000, (1 + i % 2, 3 + i)) for i in range(4)]
    expected = [gptc.generate(small, p, 30, 16) for p in prompts]
    results = [[] for _ in prompts]

    def work(i):
        for _ in range(3):
            results[i].append(gptc.generate(small, prompts[i], 30, 16))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        assert len(got) == 3
        for g in got:
            np.testing.assert_array_equal(g, want)


# -- generate_stream: the same tokens, step by step ----------------------------------

@pytest.mark.parametrize("temperature, top_k, eos", [(0.0, None, False), (1.3, 50, False),
                                                     (0.0, None, True)])
def test_stream_yields_generates_tokens_one_step_at_a_time(small, temperature, top_k, eos):
    """Each yielded (batch,) column is the next column generate returns (sampling from
    the same seed, eos stopping included), past the context window too."""
    idx = np.array([[1, 2, 3], [900, 5, 6]])[:1 if eos else 2]
    # eos: the token the prompt produces greedily at its fifth step
    eos_id = int(gptc.generate(small, idx, 5, 16)[0, -1]) if eos else None
    gptc.manual_seed(5)
    expected = gptc.generate(small, idx, 30, 16, temperature, top_k, eos_id)
    gptc.manual_seed(5)
    columns = list(gptc.generate_stream(small, idx, 30, 16, temperature, top_k, eos_id))
    assert all(c.shape == (len(idx),) and c.dtype == np.int64 for c in columns)
    assert np.concatenate([idx] + [c[:, None] for c in columns], axis=1).tolist() == \
        expected.tolist()
    assert (len(columns) < 30) == eos


def test_stream_checks_its_arguments_when_iterated(small):
    with pytest.raises(ValueError, match="max_new_tokens"):
        next(gptc.generate_stream(small, [[1, 2]], -1, 16))
