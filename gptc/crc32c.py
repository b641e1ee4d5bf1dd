"""CRC-32C (Castagnoli), the checksum of TensorFlow checkpoints, in NumPy.

TensorFlow checks every block of a checkpoint's index and every tensor of
its data file with CRC-32C (``crc32c(b"123456789") == 0xE3069283``), stored
"masked" (``mask``). A byte-at-a-time loop in Python runs at about 5 MB/s,
too slow for GPT-2's 0.5-6.2 GB of weights, so the bulk is done in NumPy.

How: the CRC register after a message is a linear function (over GF(2)) of
the message's bits. With ``M`` the map "advance the register by four bytes",
a message of 32-bit little-endian words w_0 .. w_{n-1} leaves the register
at XOR_k M^(n-k)(w_k) (the initial register folded into w_0). Splitting the
words into ``N`` interleaved lanes (word k goes to lane k mod N), each lane
accumulates ``acc = P(acc) ^ w`` with ``P = M^N``: one NumPy step processes a
whole row of N consecutive words. The lanes then combine as XOR_i
M^(N-i)(acc_i), which is the register after processing the N accumulators
themselves as words: the same function, on a message N times shorter.
Each linear map is applied through two tables indexed by 16-bit halves.
About 0.5-0.8 GB/s on one core.
"""
import functools

import numpy as np

__all__ = ["crc32c", "mask", "unmask"]

_POLY = 0x82F63B78          # CRC-32C, bit-reflected
_MASK_DELTA = 0xA282EAD8    # TensorFlow's (and LevelDB's) mask constant
# Lane counts, largest first; a message shorter than two rows of the
# smallest is finished word by word in Python.
_LANES = (16384, 512, 16)


def _byte_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_T8 = _byte_table()


def _advance_byte(x):
    """The register after one zero byte (A); advancing by byte b is A(x ^ b)."""
    return (x >> 8) ^ _T8[x & 0xFF]


def _columns(linear_map):
    """A 32-bit GF(2)-linear map as the images of the 32 unit vectors."""
    return [linear_map(1 << bit) for bit in range(32)]


def _apply(columns, x):
    result = 0
    bit = 0
    while x:
        if x & 1:
            result ^= columns[bit]
        x >>= 1
        bit += 1
    return result


def _power(columns, n):
    """The map applied n times, by repeated squaring."""
    result = [1 << bit for bit in range(32)]
    while n:
        if n & 1:
            result = [_apply(columns, c) for c in result]
        columns = [_apply(columns, c) for c in columns]
        n >>= 1
    return result


def _advance_word(x):
    for _ in range(4):
        x = _advance_byte(x)
    return x


@functools.lru_cache(maxsize=None)
def _word_map():
    """M as 32 columns, and as four byte tables for the word-by-word Python loop
    (built on first use, not at import)."""
    columns = _columns(_advance_word)
    return columns, [[_apply(columns, v << (8 * k)) for v in range(256)] for k in range(4)]


def _half_tables(columns):
    """Two 65536-entry tables giving the map of the low and the high 16 bits."""
    values = np.arange(1 << 16, dtype=np.uint32)
    low = np.zeros(1 << 16, np.uint32)
    high = np.zeros(1 << 16, np.uint32)
    for bit in range(16):
        has_bit = (values >> bit) & 1 == 1
        low[has_bit] ^= np.uint32(columns[bit])
        high[has_bit] ^= np.uint32(columns[bit + 16])
    return low, high


@functools.lru_cache(maxsize=None)
def _tables_for(lanes):
    """The half tables of P = M^lanes, the map one row of lanes advances by."""
    return _half_tables(_power(_word_map()[0], lanes))


def _words_one_by_one(register, words):
    t0, t1, t2, t3 = _word_map()[1]
    for w in words.tolist():
        x = register ^ w
        register = t0[x & 0xFF] ^ t1[(x >> 8) & 0xFF] ^ t2[(x >> 16) & 0xFF] ^ t3[x >> 24]
    return register


def _lane_accumulators(register, rows, lanes):
    low_table, high_table = _tables_for(lanes)
    acc = rows[0].copy()
    acc[0] ^= np.uint32(register)
    low_part = np.empty(lanes, np.uint32)
    low_index = np.empty(lanes, np.intp)
    high_index = np.empty(lanes, np.intp)
    halves = acc.view(np.uint16)
    for row in rows[1:]:
        np.copyto(low_index, halves[0::2])
        np.copyto(high_index, halves[1::2])
        np.take(low_table, low_index, out=low_part, mode="clip")
        np.take(high_table, high_index, out=acc, mode="clip")
        acc ^= low_part
        acc ^= row
    return acc


def _advance_words(register, words):
    """The register after the little-endian uint32 ``words``."""
    for lanes in _LANES:
        if len(words) >= 2 * lanes:
            steps = len(words) // lanes
            rows = words[:steps * lanes].reshape(steps, lanes)
            acc = _lane_accumulators(register, rows, lanes)
            register = _advance_words(0, acc)
            return _advance_words(register, words[steps * lanes:])
    return _words_one_by_one(register, words)


def crc32c(data, value=0):
    """The CRC-32C of ``data`` (bytes, a memoryview or a NumPy array, read as its
    raw bytes), continuing from a previous ``value`` (0 to start)."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) \
        else np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    register = value ^ 0xFFFFFFFF
    n_words = raw.size // 4
    if n_words:
        register = _advance_words(register, raw[:4 * n_words].view("<u4"))
    for byte in raw[4 * n_words:].tolist():
        register = _advance_byte(register ^ byte)
    return register ^ 0xFFFFFFFF


def mask(crc):
    """TensorFlow's masked form of a CRC (rotated and offset), as stored in files."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked):
    """The CRC whose masked form is ``masked``."""
    rotated = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF
