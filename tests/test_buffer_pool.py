"""The buffer pool behind gptc's float32 arrays (csrc/py/buffer_pool.c): a dropped
array's block goes to the next array of its size, zeroed where zeros were asked
for; nothing still in use (a view, another reference) is handed out twice; small
arrays are not kept; empty_cache() releases what is kept; arrays from the pool are
ordinary NumPy arrays (own their data, aligned to 64 bytes, resizable)."""
import threading

import numpy as np
import pytest

import gptc
from gptc import _C

KEEPS = gptc.buffer_pool_stats()["limit_bytes"] > 0
needs_keeping = pytest.mark.skipif(not KEEPS, reason="a sanitizer build keeps no blocks")
SHAPE = (1024, 1031)   # 4 MiB and a bit: above the pool's 256 KiB minimum


@needs_keeping
def test_a_dropped_array_gives_its_block_to_the_next_of_its_size():
    a = _C.zeros(SHAPE)
    a[...] = 7.0
    address = a.ctypes.data
    before = gptc.buffer_pool_stats()
    del a
    assert gptc.buffer_pool_stats()["kept_blocks"] == before["kept_blocks"] + 1
    b = _C.zeros(SHAPE)
    after = gptc.buffer_pool_stats()
    print(f"reused: {after['reused'] - before['reused']}, address {address:#x} -> "
          f"{b.ctypes.data:#x}")
    assert b.ctypes.data == address
    assert after["reused"] == before["reused"] + 1
    assert not b.any(), "a reused block must come back zeroed from zeros()"


def test_memory_in_use_is_never_handed_out_again():
    """A view (or any other reference) keeps the block; the next array gets other
    memory and the view's values stay."""
    a = _C.zeros(SHAPE)
    a[...] = 3.0
    view = a[10:20]
    address = a.ctypes.data
    del a
    b = _C.zeros(SHAPE)
    assert b.ctypes.data != address
    b[...] = 5.0
    assert np.all(view == 3.0)


def test_layer_outputs_come_from_the_pool_and_are_ordinary_arrays():
    x = np.ones((300, 768), np.float32)
    y = gptc.nn.functional.gelu(x)
    assert y.ctypes.data % 64 == 0
    assert y.flags.owndata and y.flags.c_contiguous and y.flags.writeable
    y.resize((600, 768), refcheck=False)       # numpy reallocates through the pool
    assert y.shape == (600, 768)
    np.testing.assert_array_equal(y[:300], gptc.nn.functional.gelu(x))
    assert not y[300:].any()


@needs_keeping
def test_small_arrays_are_not_kept():
    before = gptc.buffer_pool_stats()
    small = _C.zeros((before["min_bytes"] // 4 - 1,))
    del small
    assert gptc.buffer_pool_stats()["kept_blocks"] == before["kept_blocks"]


@needs_keeping
def test_empty_cache_releases_what_is_kept():
    arrays = [_C.zeros(SHAPE) for _ in range(3)]
    del arrays
    kept = gptc.buffer_pool_stats()["kept_bytes"]
    assert kept >= 3 * 4 * SHAPE[0] * SHAPE[1]
    assert gptc.empty_cache() == kept
    stats = gptc.buffer_pool_stats()
    assert stats["kept_bytes"] == 0 and stats["kept_blocks"] == 0


@needs_keeping
def test_the_pool_keeps_a_bounded_number_of_blocks():
    """More blocks dropped than the pool has slots (512): the oldest are freed."""
    gptc.empty_cache()
    n = gptc.buffer_pool_stats()["min_bytes"] // 4
    arrays = [_C.zeros((n,)) for _ in range(600)]
    del arrays
    stats = gptc.buffer_pool_stats()
    print(f"kept {stats['kept_blocks']} blocks, {stats['kept_bytes']} bytes")
    assert 0 < stats["kept_blocks"] <= 512
    gptc.empty_cache()


def test_arrays_made_and_dropped_from_several_threads():
    errors = []

    def work(value):
        for _ in range(50):
            a = _C.zeros(SHAPE)
            a += value
            if not np.all(a == value):
                errors.append(value)
            del a

    threads = [threading.Thread(target=work, args=(v,)) for v in (1.0, 2.0, 3.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("shape, error", [((-1, 3), ValueError), ("ab", TypeError),
                                          ((2.5,), TypeError)])
def test_zeros_rejects_bad_shapes(shape, error):
    with pytest.raises(error, match=r"zeros: shape must"):
        _C.zeros(shape)
