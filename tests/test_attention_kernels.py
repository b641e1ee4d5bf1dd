"""The inference attention kernel (csrc/attention.c, csrc/arch/flash_attention.h):
values against float64, rows computed alone (a KV-cache decode step) equal to the
same rows of a whole-sequence forward bit for bit, the causal mask holding even
against NaN and inf in the future, and every instruction set it is built for
staying inside its operands (guard pages, tests/guard_pages.py)."""
import numpy as np
import pytest

import gptc
from gptc import _C
from guard_pages import guarded


def reference(q, k, v, num_heads):
    """The book's causal attention in float64 (full T x T scores, -inf mask)."""
    B, T, C = q.shape
    hs = C // num_heads
    heads = lambda a: a.astype(np.float64).reshape(B, T, num_heads, hs).transpose(0, 2, 1, 3)
    scores = heads(q) @ heads(k).transpose(0, 1, 3, 2)
    scores[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = -np.inf
    weights = np.exp(scores / np.sqrt(hs) - (scores / np.sqrt(hs)).max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ heads(v)).transpose(0, 2, 1, 3).reshape(B, T, C)


def qkv(seed, B, T, C, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((B, T, C)) * scale).astype(np.float32) for _ in range(3)]


# (B, T, num_heads, head_dim): block edges (31, 32, 33, 64, 65), head sizes that are
# not multiples of the 16-wide chunks (1, 12, 17), GPT-2's 12 x 64, and rows of scores
# over many blocks of keys (700: 22 blocks, the last one partly filled).
SHAPES = [(1, 1, 1, 64), (2, 5, 2, 12), (1, 31, 3, 17), (2, 33, 6, 12), (1, 65, 2, 1),
          (3, 64, 4, 16), (1, 130, 2, 64), (1, 300, 12, 64), (2, 97, 5, 20),
          (1, 700, 2, 64)]


@pytest.mark.parametrize("B,T,NH,HS", SHAPES)
def test_inference_attention_matches_float64(B, T, NH, HS):
    """attention_cached with past = 0 is the book's causal softmax attention."""
    q, k, v = qkv(B * T + HS, B, T, NH * HS)
    out = _C._testing.attention_cached(q, k, v, NH, 0)
    expected = reference(q, k, v, NH)
    err = float(np.abs(out - expected).max())
    print(f"B={B} T={T} NH={NH} HS={HS}: max abs error {err:.3g}")
    assert err < 2e-6


def test_large_scores_stay_finite():
    """Scores in the hundreds (softmax saturated on a few keys) stay finite and
    accurate: float32 scores of that size carry ~1e-5 relative error into the
    weights, as in the row-at-a-time training kernel."""
    q, k, v = qkv(3, 1, 70, 64, scale=6.0)
    out = _C._testing.attention_cached(q, k, v, 4, 0)
    expected = reference(q, k, v, 4)
    assert np.isfinite(out).all()
    scale = float(np.abs(expected).max())
    err = float(np.abs(out - expected).max())
    train_err = float(np.abs(_C.attention_train(q, k, v, 4, 0.0, gptc.Generator())[0]
                             - expected).max())
    print(f"saturated softmax: max abs error {err:.3g} (training kernel {train_err:.3g}), "
          f"output scale {scale:.3g}")
    assert err < 1e-5 * scale


@pytest.mark.parametrize("B,T,NH,HS", SHAPES)
def test_rows_alone_equal_the_whole_sequence_bit_for_bit(B, T, NH, HS):
    """Each position computed alone over the cache (Tq = 1, past = i, as a decode
    step does) and the sequence in uneven chunks both give exactly the rows of the
    whole-sequence call: a KV-cache generation sees the same attention."""
    q, k, v = qkv(T, B, T, NH * HS)
    whole = _C._testing.attention_cached(q, k, v, NH, 0)
    for i in range(T):
        row = _C._testing.attention_cached(np.ascontiguousarray(q[:, i:i + 1]), k, v, NH, i)
        np.testing.assert_array_equal(row[:, 0], whole[:, i], err_msg=f"position {i}")
    start = 0
    for size in [3, 1, 40, 7] * T:
        if start >= T:
            break
        part = _C._testing.attention_cached(np.ascontiguousarray(q[:, start:start + size]), k, v, NH,
                                   start)
        np.testing.assert_array_equal(part, whole[:, start:start + size])
        start += size


def test_cache_larger_than_the_filled_part():
    """Caches with more rows than filled: the rows past past + Tq are never read
    (NaN there changes nothing)."""
    q, k, v = qkv(5, 2, 20, 24)
    whole = _C._testing.attention_cached(q, k, v, 2, 0)
    kc = np.full((2, 32, 24), np.nan, np.float32)
    vc = np.full((2, 32, 24), np.nan, np.float32)
    kc[:, :20], vc[:, :20] = k, v
    np.testing.assert_array_equal(_C._testing.attention_cached(q, kc, vc, 2, 0), whole)
    np.testing.assert_array_equal(
        _C._testing.attention_cached(np.ascontiguousarray(q[:, 12:]), kc, vc, 2, 12), whole[:, 12:])


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_future_positions_never_leak(poison):
    """NaN or inf in the keys and values of later positions leave every earlier
    output exactly unchanged (the masked half is never read)."""
    q, k, v = qkv(8, 1, 70, 48)
    clean = _C._testing.attention_cached(q, k, v, 4, 0)
    k2, v2 = k.copy(), v.copy()
    k2[0, 37:], v2[0, 37:] = poison, poison
    poisoned = _C._testing.attention_cached(q, k2, v2, 4, 0)
    np.testing.assert_array_equal(poisoned[0, :37], clean[0, :37])


def test_any_thread_count_gives_the_same_bits():
    q, k, v = qkv(9, 2, 150, 96)
    before = gptc.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            gptc.set_num_threads(n)
            results.append(_C._testing.attention_cached(q, k, v, 6, 0))
    finally:
        gptc.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_kernel_per_isa_is_correct_and_stays_inside_its_operands(isa):
    """Each kernel set's attention reads nothing past q, k or v (each ends at a
    guard page), matches float64 and gives a decode row equal to the
    whole-sequence row bit for bit."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for B, T, NH, HS in [(1, 1, 1, 64), (1, 7, 2, 12), (2, 33, 3, 17), (1, 70, 2, 1),
                         (1, 64, 12, 64), (2, 45, 1, 16), (1, 100, 3, 20)]:
        C = NH * HS
        q, k, v = guarded((B, T, C)), guarded((B, T, C)), guarded((B, T, C))
        for a in (q, k, v):
            a[...] = rng.normal(size=a.shape)
        out = gptc._C._testing.attention_cached(q, k, v, NH, 0)
        ref = reference(q, k, v, NH)
        worst = max(worst, float(np.abs(out - ref).max() / np.abs(ref).max()))
        # the last position alone, from a guarded one-row query: a decode step
        q1 = guarded((B, 1, C))
        q1[...] = q[:, -1:]
        last = gptc._C._testing.attention_cached(q1, k, v, NH, T - 1)
        assert np.array_equal(last[:, 0], out[:, -1]), (B, T, NH, HS)
    print(f"attention {isa}: max error relative to output scale {worst:.3g}")
    assert worst < 1e-5
