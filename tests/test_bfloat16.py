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


def test_to_bfloat16_keeps_the_shape_and_checks_its_input():
    x = np.ones((2, 3, 4), np.float32)
    assert _C.to_bfloat16(x).shape == (2, 3, 4) and _C.to_bfloat16(x).dtype == np.uint16
    with pytest.raises(TypeError, match="input must have dtype float32, got float64"):
        _C.to_bfloat16(np.ones(3))
    with pytest.raises(TypeError, match=r"weight must have dtype uint16 \(bfloat16 bits\), got float32"):
        _C.linear_bf16(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32), None)
