"""Running a kernel under each instruction set, with guard pages around its data.

The matmul kernel is chosen once per process (GPTC_ISA=generic|avx2|avx512), so
each instruction set runs in its own interpreter. Operands are placed so that
they end exactly at a page made inaccessible: a kernel that reads or writes
even one float past the end of an array faults instead of silently passing.
"""
import ctypes
import mmap
import os
import subprocess
import sys

import numpy as np

_libc = ctypes.CDLL(None)
_PAGE = mmap.PAGESIZE
_keep = []   # the mappings must outlive the arrays viewing them


def guarded(shape, dtype=np.float32):
    """An array (float32 unless told) whose last element is followed by a PROT_NONE page."""
    n = int(np.prod(shape))
    size = n * np.dtype(dtype).itemsize
    pages = (size + _PAGE - 1) // _PAGE + 1
    buf = mmap.mmap(-1, pages * _PAGE)
    _keep.append(buf)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert _libc.mprotect(ctypes.c_void_p(addr + (pages - 1) * _PAGE), _PAGE, 0) == 0
    return np.frombuffer(buf, dtype, n, (pages - 1) * _PAGE - size).reshape(shape)


def supported_isas():
    """The kernels this CPU can run: always generic, then avx2 and avx512 if present."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        flags = ""
    isas = ["generic"]
    if " avx2" in flags and " fma" in flags:
        isas.append("avx2")
    if " avx512f" in flags and "avx2" in isas:
        isas.append("avx512")
    return isas


def run_with_isa(isa, script, cwd):
    """Run `script` in a fresh interpreter with GPTC_ISA=isa, importing the gptc
    under test; it must print the kernel chosen, then the worst relative error.
    Returns (chosen, worst). The interpreter starts in `cwd`, an empty directory:
    `python -c` puts the current directory first on sys.path, and a source
    checkout there would shadow the package under test."""
    import gptc
    env = dict(os.environ, GPTC_ISA=isa)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [
        os.path.dirname(os.path.dirname(gptc.__file__)), os.path.dirname(__file__),
        env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, f"kernel {isa} failed (signal/exit {proc.returncode}):\n" \
                                 f"{proc.stderr[-2000:]}"
    chosen, worst = proc.stdout.split()
    return chosen, float(worst)
