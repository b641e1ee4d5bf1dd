"""int8 weights for inference (Module.to_dtype("int8")): the quantisation matches a
NumPy reference bit for bit; every int8 kernel of every kernel set (the `isa`
fixture) computes exact integer block sums, never reads outside its operands
(guard pages), for odd K, 1..20 rows and many rows; and a model in int8 stays
consistent across its forward paths and close to float32."""
import numpy as np
import pytest

import gptc
from gptc import _C
from gptc.nn import Int8Weight
from guard_pages import guarded

BLOCK = 32


def numpy_to_int8(x):
    """The reference quantiser: per block of 32 along the last axis, d = bfloat16(max
    |x| / 127) and q = clamp(rint(x / d), -127, 127), in float32 (zeros: d = 0; inf or
    NaN in a block: d = NaN, q = 0)."""
    x = np.asarray(x, np.float32)
    K = x.shape[-1]
    nb = -(-K // BLOCK)
    padded = np.zeros(x.shape[:-1] + (nb * BLOCK,), np.float32)
    padded[..., :K] = x
    blocks = padded.reshape(x.shape[:-1] + (nb, BLOCK))
    amax = np.abs(blocks).max(axis=-1)
    finite = np.isfinite(amax)
    d = np.where(finite, amax, 0).astype(np.float32) / np.float32(127)
    bits = d.view(np.uint32)
    scales = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    scales[~finite] = 0x7FC0
    stored = (scales.astype(np.uint32) << 16).view(np.float32)
    usable = finite & (stored != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(blocks / np.where(usable, stored, 1)[..., None])
    q = np.where(usable[..., None], np.clip(q, -127, 127), 0)
    return q.reshape(padded.shape)[..., :K].astype(np.int8), scales


def widen(scales):
    return (np.asarray(scales).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def dequantized(values, scales):
    """q * d, the weight an int8 pair stands for (float64; exact)."""
    d = np.repeat(widen(scales), BLOCK, axis=-1)[..., :values.shape[-1]]
    return values.astype(np.float64) * d


def block_sums(x, w):
    """What the few-rows kernel computes, from the same quantised values: per block the
    exact integer dot product (int64) times both scales, summed in float64; and the same
    sum of |products|, which bounds every partial sum the kernel rounds."""
    xq, xs = _C.to_int8(x)
    wq, ws = _C.to_int8(w)
    total = np.zeros((x.shape[0], w.shape[0]))
    magnitude = np.zeros_like(total)
    for b in range(xs.shape[1]):
        cols = slice(b * BLOCK, (b + 1) * BLOCK)
        xb, wb = xq[:, cols].astype(np.int64), wq[:, cols].astype(np.int64)
        scale = widen(xs[:, b])[:, None] * widen(ws[:, b])[None, :]
        total += (xb @ wb.T) * scale
        magnitude += (np.abs(xb) @ np.abs(wb).T) * scale
    return total, magnitude


def guarded_int8(w):
    """The int8 pair of w with both arrays ending at a guard page."""
    values, scales = _C.to_int8(w)
    gv, gs = guarded(values.shape, np.int8), guarded(scales.shape, np.uint16)
    gv[...], gs[...] = values, scales
    return gv, gs


# ---------------------------------------------------------------- quantisation

def test_to_int8_matches_the_numpy_reference_bit_for_bit():
    """Blocks of every magnitude (1e-40 to 1e30), zeros, subnormals, exact ties (x / d
    at k + 0.5 rounds to even), inf and NaN, K not a multiple of 32, any leading shape:
    the same values and scales as the NumPy reference."""
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(100).astype(np.float32) * np.float32(10.0 ** e)
            for e in range(-40, 31, 5)]
    ties = np.full(100, 127, np.float32)             # block max 127: d = 1 exactly
    ties[1:32] = np.arange(31, dtype=np.float32) - 15.5
    ties[33:40] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]
    special = rng.standard_normal(100).astype(np.float32)
    special[0:32] = 0.0
    special[40], special[70] = np.inf, np.nan
    special[96:] = np.float32(1e-45)
    x = np.stack(rows + [ties, special])
    ours = _C.to_int8(x)
    theirs = numpy_to_int8(x)
    print(f"to_int8: {x.size} values, {int((ours[0] != theirs[0]).sum())} values and "
          f"{int((ours[1] != theirs[1]).sum())} scales differ")
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert list(ours[0][-2, 33:40]) == [0, 2, 2, 0, -2, -2, 126]   # ties to even
    assert np.isnan(widen(ours[1][-1, 1])) and np.isnan(widen(ours[1][-1, 2]))
    assert ours[1][-1, 0] == 0 and not ours[0][-1, :32].any()
    x3 = rng.standard_normal((2, 3, 45)).astype(np.float32)
    values, scales = _C.to_int8(x3)
    assert values.shape == (2, 3, 45) and values.dtype == np.int8
    assert scales.shape == (2, 3, 2) and scales.dtype == np.uint16
    np.testing.assert_array_equal(values, numpy_to_int8(x3)[0])


def test_int8_values_are_within_half_a_step_of_the_weights():
    """|w - q * d| <= d / 2 for every weight: the values are the nearest multiples of
    the stored scale (also where that scale was rounded down and q clamped at 127)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 200)).astype(np.float32) * rng.uniform(0.001, 10, (64, 1))
    w = w.astype(np.float32)
    values, scales = _C.to_int8(w)
    err = np.abs(dequantized(values, scales) - w)
    half_step = np.repeat(widen(scales), BLOCK, axis=-1)[:, :200] / 2
    print(f"to_int8: max |w - q d| / (d / 2) = {float((err / half_step).max()):.4f}")
    assert np.all(err <= half_step * (1 + 1e-6))


# ---------------------------------------------------------------- kernels

# Few rows (the int8 dot products on quantised rows) and many (the packed product with
# widened weights): each kernel set has its crossing (packed_min_rows in csrc/kernels.h),
# between 8 and 21 rows. K odd, shorter than a block, longer than the quantiser's
# 4096-value segment (and than the product's 4096-step slab); N odd.
MIN_MANY_ROWS, MAX_FEW_ROWS = 8, 20
SHAPES = [(m, k, n) for m, k, n in
          [(1, 1, 1), (1, 31, 3), (2, 33, 5), (3, 64, 2), (4, 100, 7), (5, 768, 9),
           (6, 95, 33), (7, 4100, 5), (8, 33, 7), (9, 77, 31), (13, 768, 17), (16, 160, 2),
           (17, 4100, 3), (20, 45, 3), (21, 50, 6), (100, 300, 41), (30, 8300, 5)]]


def test_int8_kernels_sum_blocks_exactly(isa):
    """Integer values with a block maximum of 127 (every scale exactly 1): each kernel
    set's int8 product is the exact int64 dot product, for 1..20 rows and many, with
    x, the values and the scales all ending at a guard page."""
    rng = np.random.default_rng(2)
    for m, k, n in SHAPES:
        x, w = guarded((m, k)), rng.integers(-127, 128, (n, k)).astype(np.float32)
        x[...] = rng.integers(-127, 128, (m, k))
        x[:, ::BLOCK], w[:, ::BLOCK] = 127, -127
        exact = x.astype(np.int64) @ w.astype(np.int64).T
        got = _C.linear(x, guarded_int8(w), None)
        assert np.array_equal(got, exact), (isa, m, k, n, float(np.abs(got - exact).max()))
    print(f"{isa}: {len(SHAPES)} shapes, every int8 product equal to the exact integer one")


def test_int8_kernels_match_the_quantised_reference(isa):
    """Random values: a few rows give sum_b (integer block sum) * d_x * d_w over the
    values to_int8 makes of x and W, within the float32 rounding of that sum; many rows
    give x . (q * d)^T, to 1e-5 of the output scale (from 8 to 20 rows either, as the
    kernel set's crossing decides); bias, GELU and out= as for float32; every operand
    ends at a guard page."""
    rng = np.random.default_rng(3)
    worst = {"few": 0.0, "many": 0.0}
    for m, k, n in SHAPES:
        x = guarded((m, k))
        x[...] = rng.standard_normal((m, k))
        w = rng.standard_normal((n, k)).astype(np.float32) * np.float32(0.05)
        b = rng.standard_normal(n).astype(np.float32)
        pair = guarded_int8(w)
        got = _C.linear(x, pair, b)
        errors = {}
        if m <= MAX_FEW_ROWS:
            # float32 sums of the block terms: at most (terms + a few) roundings of
            # 2^-24 times the sum of the products' magnitudes
            ref, magnitude = block_sums(x, w)
            bound = (-(-k // BLOCK) + 16) * 2.0 ** -24 * (magnitude + np.abs(b)) + 1e-30
            errors["few"] = float((np.abs(got - (ref + b)) / bound).max())
        if m >= MIN_MANY_ROWS:
            ref = x.astype(np.float64) @ dequantized(*pair).T + b
            errors["many"] = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-30)) / 1e-5
        path = min(errors, key=errors.get)
        worst[path] = max(worst[path], errors[path])
        gelu = _C.linear(x, pair, b, gelu=True)
        np.testing.assert_allclose(gelu, _C.gelu(got), rtol=1e-6, atol=1e-6)
        acc = guarded((m, n))
        acc[...] = rng.standard_normal((m, n))
        before = acc.copy()
        assert _C.linear(x, pair, b, out=acc) is acc
        np.testing.assert_allclose(acc, before + got, rtol=1e-6, atol=1e-6)
    print(f"{isa}: int8 few rows max error / float32 rounding bound {worst['few']:.3g}; "
          f"many rows max error / (1e-5 of the output scale) {worst['many']:.3g}")
    assert worst["few"] <= 1.0 and worst["many"] <= 1.0


def test_int8_rows_do_not_depend_on_their_neighbours(isa):
    """A decode step's row gives the same bits alone as among up to 7 others."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 200)).astype(np.float32)
    pair = _C.to_int8(rng.standard_normal((45, 200)).astype(np.float32))
    together = _C.linear(x, pair, None)
    for r in range(7):
        np.testing.assert_array_equal(_C.linear(x[r:r + 1], pair, None), together[r:r + 1])


def test_int8_kernels_propagate_non_finite_input(isa):
    """A block of x holding inf or NaN makes its outputs NaN instead of garbage."""
    x = np.full((3, 64), 127, np.float32)      # scales exactly 1
    x[0, 5], x[1, 40] = np.inf, np.nan
    pair = _C.to_int8(np.full((3, 64), 127, np.float32))
    got = _C.linear(x, pair, None)
    assert np.isnan(got[:2]).all() and np.all(got[2] == 64 * 127 * 127)


# ---------------------------------------------------------------- bad input

def test_int8_weights_are_checked():
    x = np.ones((2, 40), np.float32)
    values, scales = _C.to_int8(np.ones((3, 40), np.float32))
    with pytest.raises(ValueError, match=r"weight must be an int8 weight \(values, scales\), "
                                         r"a tuple of 2 arrays, got a tuple of 3 items"):
        _C.linear(x, (values, scales, scales), None)
    with pytest.raises(TypeError, match="weight values must have dtype int8, got uint8"):
        _C.linear(x, (values.view(np.uint8), scales), None)
    with pytest.raises(TypeError, match=r"weight scales must have dtype uint16 \(bfloat16 "
                                        r"bits\), got int16"):
        _C.linear(x, (values, scales.view(np.int16)), None)
    with pytest.raises(ValueError, match=r"weight scales has shape \(3, 1\), expected \(3, 2\)"):
        _C.linear(x, (values, scales[:, :1].copy()), None)
    with pytest.raises(ValueError, match="weight values must be a C-contiguous"):
        _C.linear(np.ones((2, 3), np.float32), (values[:, ::2].T, scales), None)
    with pytest.raises(ValueError, match="its last dimension is 39, expected 40"):
        _C.linear(np.ones((2, 39), np.float32), (values, scales), None)
    with pytest.raises(TypeError, match=r"weight must be a float32 or uint16 \(bfloat16 bits\) "
                                        r"NumPy array, or an int8 weight"):
        _C.linear(x, [values, scales], None)
    with pytest.raises(TypeError, match="input must have dtype float32, got float64"):
        _C.to_int8(np.ones(3))
    with pytest.raises(ValueError, match="input must have at least 1 dimension"):
        _C.to_int8(np.array(1.0, np.float32))
    net = gptc.nn.Linear(4, 2)
    with pytest.raises(ValueError, match=r"dtype must be 'float32', 'bfloat16' or 'int8', "
                                         r"got 'int4'"):
        net.to_dtype("int4")


# ---------------------------------------------------------------- modules and models

def _small_network():
    from gptc.nn import Linear, ReLU, Sequential
    gptc.manual_seed(1)
    return Sequential(Linear(40, 12), ReLU(), Linear(12, 5, bias=False))


def test_to_dtype_int8_round_trip_and_read_only_parameters():
    """to_dtype('int8') keeps an Int8Weight of every Linear weight (1.0625 bytes a weight
    for K a multiple of 32) and makes the float32 parameters read-only; state_dict and
    parameter counts are unchanged; loading a state dict and backward name the fix;
    bfloat16 and int8 replace each other; to_dtype('float32') restores the float32
    results bit for bit."""
    net = _small_network()
    x = np.random.default_rng(5).standard_normal((3, 40)).astype(np.float32)
    with gptc.no_grad():
        before = net(x)
        state = {k: v.copy() for k, v in net.state_dict().items()}
        count = sum(p.numel() for p in net.parameters())
        assert net.to_dtype("int8") is net
        got = net(x)
    assert "weight_dtype=int8" in repr(net)
    first = net[0].weight
    assert isinstance(first.int8, Int8Weight) and first.bfloat16 is None
    assert first.inference_dtype == "int8" and not first.flags.writeable
    np.testing.assert_array_equal(first.int8.values, numpy_to_int8(first)[0])
    assert first.int8.nbytes == 12 * 40 + 12 * 2 * 2
    assert sum(p.numel() for p in net.parameters()) == count
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    print(f"int8 Sequential: max |diff| to float32 {float(np.abs(got - before).max()):.3g}")
    np.testing.assert_allclose(got, before, atol=0.05 * float(np.abs(before).max()))
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0
    with pytest.raises(RuntimeError, match=r"stored in int8 for inference \(to_dtype\('int8'\)\);"
                                           r" call to_dtype\('float32'\) before loading"):
        net.load_state_dict(net.state_dict())
    loss = net(x).sum()
    with pytest.raises(RuntimeError, match=r"stored in int8 .* call to_dtype\('float32'\) "
                                           r"before computing"):
        loss.backward()
    net.to_dtype("bfloat16")
    assert first.int8 is None and first.bfloat16 is not None and not first.flags.writeable
    net.to_dtype("int8")
    np.testing.assert_array_equal(first.int8.scales, numpy_to_int8(first)[1])
    net.to_dtype("float32")
    assert first.inference_copy is None and first.flags.writeable
    with gptc.no_grad():
        np.testing.assert_array_equal(net(x), before)


def test_functional_linear_and_multihead_attention_read_the_int8_copy():
    """F.linear with an int8 parameter, and MultiHeadAttention's one C call against its
    layer-by-layer path (recording), both read the int8 weights."""
    from gptc.nn import MultiHeadAttention, functional as F
    gptc.manual_seed(2)
    mha = MultiHeadAttention(64, 64, context_length=10, dropout=0.0, num_heads=4).eval()
    x = np.random.default_rng(6).standard_normal((2, 10, 64)).astype(np.float32)
    with gptc.no_grad():
        f32 = mha(x)
        mha.to_dtype("int8")
        one_call = mha(x)
        weight = mha.W_query.weight
        np.testing.assert_array_equal(F.linear(x, weight), _C.linear(x, weight.int8, None))
    steps = np.asarray(mha(gptc.tensor(x, requires_grad=True)))
    diff = float(np.abs(one_call - steps).max())
    print(f"int8 MultiHeadAttention: one call vs layer by layer {diff:.3g}, vs float32 "
          f"{float(np.abs(one_call - f32).max()):.3g}")
    np.testing.assert_allclose(one_call, steps, rtol=1e-5, atol=1e-6)
    assert np.abs(one_call - f32).max() > 0


def test_gpt_model_in_int8_small_config():
    """A GPTModel in int8 (tied weights: the embedding keeps reading float32): the
    one-call forward equals the module-by-module forward, the KV-cache decoder (a few
    rows: quantised activations) stays close to it; going back to float32 restores the
    logits exactly."""
    from conftest import small_config
    gptc.manual_seed(5)
    model = gptc.GPTModel(small_config(drop_rate=0.0), tie_weights=True).eval()
    ids = np.random.default_rng(7).integers(0, 1000, (2, 12))
    with gptc.no_grad():
        f32 = model(ids)
        embedded = model.tok_emb(ids)
        model.to_dtype("int8")
        one_call = model(ids)
        np.testing.assert_array_equal(model.tok_emb(ids), embedded)
    assert model.out_head.weight.int8 is not None
    modules = np.asarray(model(ids))           # recording: runs layer by layer
    np.testing.assert_allclose(one_call, modules, rtol=1e-5, atol=1e-5)
    # the prefill runs the blocks on 12 rows (packed, as the one call) and out_head on
    # the last position's 2 rows (quantised), as each step runs everything
    decoder = _C.Decoder(**model._one_call_arguments(), batch=2, capacity=12)
    step_worst = float(np.abs(decoder.prefill(np.ascontiguousarray(ids[:, :6]))
                              - one_call[:, 5]).max())
    for t in range(6, 12):
        step = decoder.step(np.ascontiguousarray(ids[:, t]))
        step_worst = max(step_worst, float(np.abs(step - one_call[:, t]).max()))
    scale = float(np.abs(one_call).max())
    print(f"int8 small model: one call vs modules {float(np.abs(one_call - modules).max()):.3g}; "
          f"decoder steps vs one call {step_worst:.3g} (logits up to {scale:.3g}); "
          f"one call vs float32 {float(np.abs(one_call - f32).max()):.3g}")
    assert step_worst < 0.02 * scale
    assert np.abs(one_call - f32).max() > 0
    greedy = gptc.generate(model, ids[:, :4], max_new_tokens=20, context_size=16)
    assert greedy.shape == (2, 24) and ((greedy >= 0) & (greedy < 1000)).all()
    model.to_dtype("float32")
    with gptc.no_grad():
        np.testing.assert_array_equal(model(ids), f32)


def test_gpt2_124m_in_int8_stays_close_to_float32():
    """GPT-2 124M (seed 123) in int8: the book's batch's logits within 0.05 of float32;
    the top-1 choice along the float32 continuation of "Hello, I am" (100 tokens,
    teacher-forced) agrees with float32 at least 95% of the time, in one forward
    (widened weights) and in KV-cache decoder steps (quantised activations)."""
    from conftest import gpt2_124m_against_float32
    model, text, diff, ref_next, forward_next = gpt2_124m_against_float32("int8")
    decoder = _C.Decoder(**model._one_call_arguments(), batch=1, capacity=text.shape[1])
    step_next = [int(decoder.prefill(np.ascontiguousarray(text[:, :4])).argmax())]
    for t in range(4, text.shape[1] - 1):
        step_next.append(int(decoder.step(np.ascontiguousarray(text[:, t])).argmax()))
    agree_forward = float((forward_next == ref_next).mean())
    agree_steps = float((np.array(step_next) == ref_next).mean())
    print(f"GPT-2 124M int8: max |logit diff| on the book's batch {diff:.3g}; top-1 agreement "
          f"over 100 tokens: one forward {agree_forward:.0%}, decoder steps {agree_steps:.0%}")
    assert diff < 0.05
    assert agree_forward >= 0.95 and agree_steps >= 0.95
