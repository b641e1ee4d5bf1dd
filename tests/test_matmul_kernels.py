"""Every matmul kernel the CPU supports (GPTC_ISA=generic|avx2|avx512) computes
the right values and never reads outside its operands.

Each kernel runs in its own interpreter, with x and W ending at a guard page
(tests/guard_pages.py).
"""
import textwrap

import pytest

from guard_pages import run_with_isa, supported_isas

SCRIPT = textwrap.dedent("""
    import numpy as np
    import gptc
    from guard_pages import guarded

    print(gptc._C.isa())
    rng = np.random.default_rng(0)
    worst = 0.0
    for m, k, n in [(1, 1, 1), (4, 8, 4), (5, 17, 3), (4, 3072, 768), (8, 768, 768),
                    (3, 15, 2), (7, 33, 5), (13, 77, 31), (1, 768, 50), (16, 16, 16)]:
        x, w = guarded((m, k)), guarded((n, k))
        x[...] = rng.normal(size=(m, k))
        w[...] = rng.normal(size=(n, k))
        b = rng.normal(size=n).astype(np.float32)
        got = gptc._C.linear(x, w, b)
        ref = x.astype(np.float64) @ w.astype(np.float64).T + b
        worst = max(worst, float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-30)))
    print(worst)
""")


@pytest.mark.parametrize("isa", supported_isas())
def test_kernel_is_correct_and_stays_inside_its_operands(isa, tmp_path):
    """The kernel selected by GPTC_ISA runs, reads only its operands (guard
    pages after x and W), and matches float64 NumPy to 1e-5 of the output scale."""
    chosen, worst = run_with_isa(isa, SCRIPT, tmp_path)
    print(f"{isa}: max error relative to output scale {worst:.3g}")
    assert chosen == isa
    assert worst < 1e-5
