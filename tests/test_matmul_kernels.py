"""Every matmul kernel set this build and CPU support (the `isa` fixture of
conftest.py) computes the right values and never reads outside its operands,
with float32 weights and with weights kept in bfloat16: x and W end at a
guard page (tests/guard_pages.py).
"""
import numpy as np

import gptc
from guard_pages import guarded


def test_kernel_is_correct_and_stays_inside_its_operands(isa):
    """Each kernel set computes the product, its fused epilogues and its bfloat16
    variant to 1e-5 of the output scale against float64 NumPy, and reads only its
    operands (guard pages after x and W)."""

    rng = np.random.default_rng(0)
    worst = 0.0
    # Few rows (the dot-product path) and many rows (the packed path), with
    # every ragged edge: rows not a multiple of the tile, columns not a
    # multiple of the panel, reductions longer than one packed block, more
    # rows than one band (768), reductions longer than one slab (4096 steps,
    # the last slab ragged or of one step).
    for m, k, n in [(1, 1, 1), (4, 8, 4), (5, 17, 3), (4, 3072, 768), (8, 768, 768),
                    (2, 40, 9), (2, 768, 50), (6, 100, 14), (3, 24, 13), (1, 9, 27),
                    (3, 15, 2), (7, 33, 5), (13, 77, 31), (1, 768, 50), (16, 16, 16),
                    (37, 100, 45), (12, 256, 32), (25, 600, 97), (64, 768, 129),
                    (200, 1, 3), (50, 513, 1), (1000, 40, 33), (40, 8500, 37),
                    (30, 4097, 20)]:
        x, w = guarded((m, k)), guarded((n, k))
        x[...] = rng.normal(size=(m, k))
        w[...] = rng.normal(size=(n, k))
        b = rng.normal(size=n).astype(np.float32)
        ref = x.astype(np.float64) @ w.astype(np.float64).T + b
        scale = np.abs(ref).max() + 1e-30
        got = gptc._C.linear(x, w, b)
        worst = max(worst, float(np.abs(got - ref).max() / scale))
        # fused epilogues: GELU, and the accumulation of a shortcut connection
        gelu = gptc._C.linear(x, w, b, gelu=True)
        worst = max(worst, float(np.abs(gelu - gptc._C.gelu(got)).max() / scale))
        acc = guarded((m, n))
        acc[...] = rng.normal(size=(m, n))
        before = acc.astype(np.float64)
        assert gptc._C.linear(x, w, b, out=acc) is acc
        worst = max(worst, float(np.abs(acc - (before + ref)).max() / scale))
        # the same weight kept in bfloat16: the product of x with the rounded
        # weight, widened exactly, so float64 NumPy on the widened values is exact
        wb = guarded((n, k), np.uint16)
        wb[...] = gptc._C.to_bfloat16(w)
        wide = (wb.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        ref16 = x.astype(np.float64) @ wide.T + b
        scale16 = np.abs(ref16).max() + 1e-30
        got16 = gptc._C.linear(x, wb, b)
        worst = max(worst, float(np.abs(got16 - ref16).max() / scale16))
        gelu16 = gptc._C.linear(x, wb, b, gelu=True)
        worst = max(worst, float(np.abs(gelu16 - gptc._C.gelu(got16)).max() / scale16))
        acc[...] = before
        assert gptc._C.linear(x, wb, b, out=acc) is acc
        worst = max(worst, float(np.abs(acc - (before + ref16)).max() / scale16))
    print(f"{isa}: max error relative to output scale {worst:.3g}")
    assert worst < 1e-5


def test_few_rows_give_each_row_the_same_bits_for_any_count_of_rows(isa):
    """Below every kernel set's packed threshold (8 rows), each row of a product of 2 to
    7 rows equals the same row in a product of two rows, bit for bit, for float32 and
    bfloat16 weights, whatever tile shape each count of rows takes. (One row, a decode
    step, takes its own dot product, which sums in another order; the test above checks
    its values.)"""
    rng = np.random.default_rng(3)
    for k, n in [(768, 50), (37, 29), (8, 12)]:
        w = rng.normal(size=(n, k)).astype(np.float32)
        b = rng.normal(size=n).astype(np.float32)
        for weight in (w, gptc._C.to_bfloat16(w)):
            x = rng.normal(size=(8, k)).astype(np.float32)
            pairs = np.concatenate([gptc._C.linear(x[i:i + 2], weight, b) for i in (0, 2, 4, 6)])
            for m in range(2, 8):
                np.testing.assert_array_equal(gptc._C.linear(x[:m], weight, b), pairs[:m],
                                              err_msg=f"{isa}: {m} rows, K={k}, N={n}, "
                                                      f"{weight.dtype}")
