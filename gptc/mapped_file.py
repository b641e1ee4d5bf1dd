"""One tensor of a large file, seen through a memory map for as long as it is needed.

Checkpoint readers copy each tensor straight from the file's pages into the
model's parameter. Mapping only that tensor's bytes, and unmapping them right
after the copy, keeps the process's resident memory at the parameters plus
one tensor: pages of a map stay counted in the process (VmRSS) while the map
exists, so one map of a whole 6 GB file would double the peak.
"""
import contextlib
import mmap

import numpy as np

__all__ = ["mapped_array"]


@contextlib.contextmanager
def mapped_array(file, offset, dtype, shape):
    """A read-only NumPy view of ``shape`` elements of ``dtype`` at byte ``offset``
    of the open binary ``file``, valid inside the ``with`` block only.

    The caller has checked that the bytes lie inside the file. On exit the
    pages are dropped from the process (madvise DONTNEED: a later read of a
    stray reference would fault them in again from the page cache, with the
    same bytes) and the map is closed as soon as no view of it is left.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    if nbytes == 0:
        yield np.empty(shape, dtype)
        return
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    region = mmap.mmap(file.fileno(), offset + nbytes - start, offset=start,
                       access=mmap.ACCESS_READ)
    try:
        yield np.frombuffer(region, dtype=dtype, count=count,
                            offset=offset - start).reshape(shape)
    finally:
        if hasattr(mmap, "MADV_DONTNEED"):   # not on Windows, which unmaps on close
            region.madvise(mmap.MADV_DONTNEED)
        try:
            region.close()
        except BufferError:   # the caller's `as` name still holds the view
            pass              # unmapped when that reference goes
