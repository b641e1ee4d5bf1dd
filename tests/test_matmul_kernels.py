"""Every matmul kernel the CPU supports (GPTC_ISA=generic|avx2|avx512) computes
the right values and never reads outside its operands.

Each kernel runs in its own interpreter (the kernel is chosen once per
process). The operands are placed so that they end exactly at a page that
is made inaccessible: a kernel that reads even one float past the end of x
or W faults instead of silently passing.
"""
import os
import subprocess
import sys
import textwrap

import pytest

import gptc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import ctypes, mmap, sys
    import numpy as np
    import gptc

    libc = ctypes.CDLL(None)
    PAGE = mmap.PAGESIZE
    keep = []

    def guarded(shape):
        # a float32 array whose last element is followed by a PROT_NONE page
        n = int(np.prod(shape))
        pages = (n * 4 + PAGE - 1) // PAGE + 1
        buf = mmap.mmap(-1, pages * PAGE)
        keep.append(buf)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        assert libc.mprotect(ctypes.c_void_p(addr + (pages - 1) * PAGE), PAGE, 0) == 0
        arr = np.frombuffer(buf, np.float32, n, (pages - 1) * PAGE - n * 4).reshape(shape)
        return arr

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


def supported_isas():
    isas = ["generic"]
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        pass
    if " avx2" in flags and " fma" in flags:
        isas.append("avx2")
    if " avx512f" in flags and "avx2" in isas:
        isas.append("avx512")
    return isas


@pytest.mark.parametrize("isa", supported_isas())
def test_kernel_is_correct_and_stays_inside_its_operands(isa, tmp_path):
    """The kernel selected by GPTC_ISA runs, reads only its operands (guard
    pages after x and W), and matches float64 NumPy to 1e-5 of the output scale."""
    env = dict(os.environ, GPTC_ISA=isa)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(gptc.__file__)), env.get("PYTHONPATH", "")])
    # run from an empty directory: `python -c` puts the current directory first
    # on sys.path, and a source checkout there would shadow the package under test
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, f"kernel {isa} failed (signal/exit {proc.returncode}):\n" \
                                 f"{proc.stderr[-2000:]}"
    chosen, worst = proc.stdout.split()
    print(f"{isa}: max error relative to output scale {float(worst):.3g}")
    assert chosen == isa
    assert float(worst) < 1e-5
