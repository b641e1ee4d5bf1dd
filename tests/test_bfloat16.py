"""bfloat16 weights for inference: the conversion matches PyTorch's bit for bit,
and products with a bfloat16 weight equal the float32 product with the rounded
weight (tests/test_matmul_kernels.py runs those under every instruction set)."""
import numpy as np
import pytest

from gptc import _C


def test_to_bfloat16_rounds_like_torch(torch):
    """Round to nearest even, infinities kept, overflow to inf, NaN kept a NaN:
    the same bits as torch's .to(torch.bfloat16) for every non-NaN input."""
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(10000).astype(np.float32) * np.float32(1e3),
        np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-40, -1e-45,
                  1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -9], np.float32),
        # every float whose low 16 bits are exactly half way: ties go to even
        (np.arange(0, 2 ** 16, 257, dtype=np.uint32) << 16 | 0x8000).view(np.float32),
    ])
    ours = _C.to_bfloat16(values)
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    finite = ~np.isnan(values)
    print(f"to_bfloat16: {int(finite.sum())} values compared, "
          f"{int((ours[finite] != theirs[finite]).sum())} differ")
    np.testing.assert_array_equal(ours[finite], theirs[finite])
    widened = (ours[~finite].astype(np.uint32) << 16).view(np.float32)
    assert np.all(np.isnan(widened))


def test_to_bfloat16_keeps_the_shape():
    x = np.ones((2, 3, 4), np.float32)
    assert _C.to_bfloat16(x).shape == (2, 3, 4) and _C.to_bfloat16(x).dtype == np.uint16


def _small_network():
    import gptc
    from gptc.nn import Linear, ReLU, Sequential
    gptc.manual_seed(1)
    return Sequential(Linear(16, 12), ReLU(), Linear(12, 5, bias=False))


def test_to_dtype_bfloat16_uses_the_rounded_weights_and_back():
    """After to_dtype('bfloat16') a Linear computes with its weight rounded to
    bfloat16 (exactly the float32 product with the rounded weight); to_dtype('float32')
    restores the original results bit for bit. Parameters and state_dict are unchanged."""
    import gptc
    net = _small_network()
    x = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
    with gptc.no_grad():
        before = net(x)
        state = {k: v.copy() for k, v in net.state_dict().items()}
        assert net.to_dtype("bfloat16") is net
        assert "weight_dtype=bfloat16" in repr(net)
        got = net(x)
        rounded = []
        for layer in (net[0], net[2]):
            assert layer.weight.bfloat16.dtype == np.uint16
            assert not layer.weight.flags.writeable
            rounded.append((layer.weight.bfloat16.astype(np.uint32) << 16).view(np.float32))
        h = np.maximum(x.astype(np.float64) @ rounded[0].T + net[0].bias, 0)
        expected = h.astype(np.float32).astype(np.float64) @ rounded[1].T
        diff = float(np.abs(got - expected).max())
        print(f"bfloat16 Sequential: max |diff| to the rounded-weight product {diff:.3g}, "
              f"to float32 {float(np.abs(got - before).max()):.3g}")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        for key, value in net.state_dict().items():
            np.testing.assert_array_equal(value, state[key])
        net.to_dtype("float32")
        assert net[0].weight.bfloat16 is None and net[0].weight.flags.writeable
        np.testing.assert_array_equal(net(x), before)


def test_bfloat16_model_refuses_training_and_state_dict_loading():
    """The float32 weights cannot drift from their bfloat16 copies: writing them,
    loading a state dict and backward all fail with a message naming the fix."""
    net = _small_network().to_dtype("bfloat16")
    x = np.ones((2, 16), np.float32)
    with pytest.raises(ValueError, match="read-only"):
        net[0].weight[0, 0] = 1.0
    with pytest.raises(RuntimeError, match=r"call to_dtype\('float32'\) before loading"):
        net.load_state_dict(net.state_dict())
    loss = net(x).sum()
    with pytest.raises(RuntimeError, match=r"call to_dtype\('float32'\) before computing"):
        loss.backward()
    with pytest.raises(ValueError, match=r"dtype must be 'float32', 'bfloat16' or 'int8', "
                                         r"got 'float16'"):
        net.to_dtype("float16")


def test_gpt_model_in_bfloat16_small_config():
    """A GPTModel after to_dtype('bfloat16'): the one-call C forward, the module-by-module
    forward and the KV-cache decoder all read the bfloat16 weights and agree; going back
    to float32 restores the float32 logits exactly."""
    import gptc
    from conftest import small_config
    gptc.manual_seed(5)
    model = gptc.GPTModel(small_config(drop_rate=0.0)).eval()
    ids = np.random.default_rng(3).integers(0, 1000, (2, 9))
    with gptc.no_grad():
        f32 = model(ids)
        model.to_dtype("bfloat16")
        one_call = model(ids)
    modules = np.asarray(model(ids))          # recording: runs layer by layer
    diff = float(np.abs(one_call - modules).max())
    print(f"bfloat16 small model: one call vs module by module {diff:.3g}, "
          f"vs float32 {float(np.abs(one_call - f32).max()):.3g}")
    np.testing.assert_allclose(one_call, modules, rtol=1e-5, atol=1e-5)
    assert np.abs(one_call - f32).max() > 0          # the rounded weights are really used
    greedy = gptc.generate(model, ids[:, :4], max_new_tokens=20, context_size=16)
    recompute = gptc.generate_text_simple(model, ids[:, :4], max_new_tokens=20, context_size=16)
    np.testing.assert_array_equal(greedy, recompute)
    model.to_dtype("float32")
    with gptc.no_grad():
        np.testing.assert_array_equal(model(ids), f32)


def test_gpt2_124m_in_bfloat16_stays_close_to_float32():
    """GPT-2 124M (seed 123) in bfloat16: the book's batch's logits within 0.05 of
    float32, and the greedy choice of the float32 continuation of "Hello, I am"
    (100 tokens, teacher-forced) agrees at least 95% of the time."""
    from conftest import gpt2_124m_against_float32
    _, _, diff, ref_next, b16_next = gpt2_124m_against_float32("bfloat16")
    agree = float((b16_next == ref_next).mean())
    print(f"GPT-2 124M bfloat16: max |logit diff| on the book's batch {diff:.3g}; "
          f"top-1 agreement over 100 tokens {agree:.0%}")
    assert diff < 0.05
    assert agree >= 0.95
