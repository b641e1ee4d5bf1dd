"""Arrays with a guard page after their last element.

Operands are placed so that they end exactly at a page made inaccessible: a
kernel that reads or writes even one float past the end of an array faults
instead of silently passing.
"""
import ctypes
import mmap

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
