"""TensorFlow checkpoints (``tf.train.Saver``'s tensor bundles) read without TensorFlow.

A checkpoint prefix such as ``models/124M/model.ckpt`` names two kinds of file:

``model.ckpt.index``
    A LevelDB-style sorted table (SSTable). It ends with a 48-byte footer: the
    handles (offset and size, two varints each) of the metaindex block and of
    the index block, zero padding to 40 bytes, and the magic number
    0xdb4775248b80fb57. The index block maps separator keys to the handles of
    the data blocks. Every block is followed by a 5-byte trailer: a
    compression type (0: none) and the masked CRC-32C of the block and that
    byte. A block holds entries (shared key-prefix length, unshared length
    and value length as varints, the unshared key bytes, the value) and ends
    with its restart offsets (uint32 each) and their count. The keys are the
    tensor names, in order; each value is a ``BundleEntryProto`` protobuf
    (dtype, shape, shard id, offset, size, masked CRC-32C of the bytes). The
    empty key holds the ``BundleHeaderProto`` (number of shards, endianness).
``model.ckpt.data-00000-of-00001`` (one file per shard)
    The tensors' raw little-endian bytes at the offsets the index gives.

Everything read is checked: block and tensor checksums, bounds, key order,
sizes against shapes. Any problem raises ``gptc.io.CheckpointFormatError``
(a ValueError) naming the file and what is wrong. Nothing is unpickled or
executed; tensors are read through memory maps (``np.frombuffer``).
"""
import contextlib
import errno
import os
import re
import struct

import numpy as np

from .crc32c import crc32c, mask, unmask
from .io import CheckpointFormatError
from .mapped_file import mapped_array

__all__ = ["TFCheckpoint", "CheckpointIndex", "TensorEntry", "latest_checkpoint"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_TRAILER_SIZE = 5
# GPT-2's indexes hold a few hundred entries (5 kB for 124M); anything near
# this is not an index of a model gptc can hold.
_MAX_INDEX_BYTES = 1 << 28

# TensorFlow's DataType enum (types.proto) -> NumPy, for the fixed-size types.
_DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
           9: "int64", 10: "bool", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}
_DTYPE_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128"}


class TensorEntry:
    """Where one tensor lies: NumPy dtype, shape, shard, byte offset and size, masked CRC."""
    __slots__ = ("name", "dtype", "shape", "shard", "offset", "size", "masked_crc")

    def __init__(self, name, dtype, shape, shard, offset, size, masked_crc):
        self.name, self.dtype, self.shape = name, dtype, shape
        self.shard, self.offset, self.size, self.masked_crc = shard, offset, size, masked_crc

    def __repr__(self):
        return (f"TensorEntry({self.name!r}, {self.dtype}, {list(self.shape)}, shard "
                f"{self.shard}, bytes {self.offset}..{self.offset + self.size})")


def _int64(value):
    """A protobuf int64 from its varint (negative numbers are ten-byte varints)."""
    return value - (1 << 64) if value >= 1 << 63 else value


class _Reader:
    """Bounds-checked decoding of one buffer; errors name the file and the part."""

    def __init__(self, path):
        self.path = path

    def fail(self, what):
        raise CheckpointFormatError(f"{self.path}: {what}")

    def varint(self, buf, pos, end, what):
        result = shift = 0
        while True:
            if pos >= end:
                self.fail(f"{what} is cut off (a varint runs past its end)")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                self.fail(f"{what} holds a varint longer than 10 bytes")

    def fields(self, buf, what):
        """(field number, wire type, value) of a protobuf message."""
        pos, end = 0, len(buf)
        while pos < end:
            tag, pos = self.varint(buf, pos, end, what)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                self.fail(f"{what} has a field number 0")
            if wire == 0:
                value, pos = self.varint(buf, pos, end, what)
            elif wire in (1, 5):
                width = 8 if wire == 1 else 4
                if pos + width > end:
                    self.fail(f"{what} is cut off (field {number})")
                value = int.from_bytes(buf[pos:pos + width], "little")
                pos += width
            elif wire == 2:
                length, pos = self.varint(buf, pos, end, what)
                if length > end - pos:
                    self.fail(f"{what} is cut off (field {number} claims {length} bytes)")
                value = buf[pos:pos + length]
                pos += length
            else:
                self.fail(f"{what} uses protobuf wire type {wire}, which tensor bundles "
                          "never contain")
            yield number, wire, value

    def field_values(self, buf, what, wire_types):
        """The message's fields as {number: [values]}, checking the wire type of
        the known ones (unknown fields are skipped, as protobuf does)."""
        values = {}
        for number, wire, value in self.fields(buf, what):
            if number in wire_types:
                if wire != wire_types[number]:
                    self.fail(f"{what}: field {number} has wire type {wire}, expected "
                              f"{wire_types[number]}")
                values.setdefault(number, []).append(value)
        return values


class CheckpointIndex:
    """The index of a checkpoint (``model.ckpt.index``), read and checked:
    ``num_shards`` and ``entries`` (tensor name -> TensorEntry)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        reader = _Reader(self.path)
        entries = _table_entries(_read_index_file(self.path), reader)
        if b"" not in entries:
            reader.fail("the header entry (the empty key) is missing: not a tensor bundle")
        self.num_shards = _parse_header(entries.pop(b""), reader)
        self.entries = {}
        for key, value in entries.items():
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                reader.fail(f"the tensor name {key[:60]!r} is not UTF-8")
            self.entries[name] = _parse_entry(name, value, self.num_shards, reader)

    def data_size(self, shard=0):
        """The bytes the data file of ``shard`` holds: where its last tensor ends."""
        return max((e.offset + e.size for e in self.entries.values() if e.shard == shard),
                   default=0)


class TFCheckpoint:
    """A TensorFlow checkpoint, opened from its prefix (``.../model.ckpt``).

    The index is read and checked at once, and every tensor is checked to lie
    inside its data file; the tensors themselves are read on demand, each
    verified against its CRC-32C.

        >>> ckpt = TFCheckpoint("models/124M/model.ckpt")
        >>> ckpt.variables()[:1]
        [('model/h0/attn/c_attn/b', [2304])]
        >>> wte = ckpt.read("model/wte")            # (50257, 768) float32
    """

    def __init__(self, prefix):
        self.prefix = os.fspath(prefix)
        self.index = CheckpointIndex(self.prefix + ".index")
        self.index_path = self.index.path
        self.entries = self.index.entries
        self.data_paths = [f"{self.prefix}.data-{shard:05d}-of-{self.index.num_shards:05d}"
                           for shard in range(self.index.num_shards)]
        for shard, path in enumerate(self.data_paths):
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, f"the data file of checkpoint "
                                        f"{self.prefix} is missing", path) from None
            last = max((e for e in self.entries.values() if e.shard == shard),
                       key=lambda e: e.offset + e.size, default=None)
            if last is not None and last.offset + last.size > size:
                raise CheckpointFormatError(
                    f"{path}: tensor {last.name} lies at bytes {last.offset}.."
                    f"{last.offset + last.size}, past the end of the data file "
                    f"({size} bytes): the file is truncated or not this index's")

    def variables(self):
        """[(name, shape as a list)], sorted by name, as ``tf.train.list_variables``."""
        return [(name, list(e.shape)) for name, e in sorted(self.entries.items())]

    def entry(self, name):
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(f"checkpoint {self.prefix} has no tensor {name!r}") from None

    @contextlib.contextmanager
    def mapped(self, name):
        """A read-only view of tensor ``name``, its CRC-32C verified, valid inside
        the ``with`` block (the file's pages are mapped only meanwhile)."""
        entry = self.entry(name)
        path = self.data_paths[entry.shard]
        with open(path, "rb") as f, mapped_array(f, entry.offset, entry.dtype,
                                                 entry.shape) as array:
            actual = crc32c(array)
            if actual != unmask(entry.masked_crc):
                raise CheckpointFormatError(
                    f"{path}: CRC-32C mismatch for tensor {name} (bytes {entry.offset}.."
                    f"{entry.offset + entry.size}): the index records "
                    f"{unmask(entry.masked_crc):#010x}, the data give {actual:#010x}; "
                    "the file is corrupt")
            yield array

    def read(self, name):
        """Tensor ``name`` as a new NumPy array (CRC-32C verified), as
        ``tf.train.load_variable``."""
        with self.mapped(name) as array:
            return np.array(array)


def latest_checkpoint(directory):
    """The prefix named by ``directory/checkpoint`` (TensorFlow's state file, as
    ``tf.train.latest_checkpoint`` reads it), or None if there is none."""
    path = os.path.join(os.fspath(directory), "checkpoint")
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    match = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\\n]|\\.)*)"', text, re.MULTILINE)
    if match is None:
        raise CheckpointFormatError(f"{path}: no model_checkpoint_path line (the file is "
                                    "cut off or not TensorFlow's checkpoint state)")
    prefix = re.sub(r"\\(.)", r"\1", match.group(1))
    return prefix if os.path.isabs(prefix) else os.path.join(os.fspath(directory), prefix)


def _read_index_file(path):
    size = os.stat(path).st_size    # FileNotFoundError names the path
    if size > _MAX_INDEX_BYTES:
        raise CheckpointFormatError(f"{path}: {size} bytes, far more than a checkpoint "
                                    f"index (at most {_MAX_INDEX_BYTES} bytes accepted)")
    with open(path, "rb") as f:
        return f.read()


def _table_entries(raw, reader):
    """Every (key, value) of the SSTable ``raw``, checked, as a dict in key order."""
    if len(raw) < _FOOTER_SIZE:
        reader.fail(f"truncated: {len(raw)} bytes, shorter than the {_FOOTER_SIZE}-byte "
                    "footer every index ends with")
    magic = struct.unpack_from("<Q", raw, len(raw) - 8)[0]
    if magic != _MAGIC:
        reader.fail(f"wrong magic number {magic:#018x} at the end (an index ends with "
                    f"{_MAGIC:#018x}): the file is truncated or not a checkpoint index")
    footer_start = len(raw) - _FOOTER_SIZE
    footer_end = len(raw) - 8
    pos = footer_start
    handles = []
    for what in ("metaindex", "index"):
        offset, pos = reader.varint(raw, pos, footer_end, f"the footer's {what} handle")
        size, pos = reader.varint(raw, pos, footer_end, f"the footer's {what} handle")
        handles.append((offset, size))
    index_block = _block(raw, *handles[1], "index block", footer_start, reader)
    entries = {}
    last_key = None
    for separator, handle in _block_entries(index_block, "index block", reader):
        offset, pos = reader.varint(handle, 0, len(handle), "a data block handle")
        size, pos = reader.varint(handle, pos, len(handle), "a data block handle")
        what = f"data block at byte {offset}"
        for key, value in _block_entries(_block(raw, offset, size, what, footer_start, reader),
                                         what, reader):
            if last_key is not None and key <= last_key:
                reader.fail(f"keys out of order across blocks ({key[:60]!r} after "
                            f"{last_key[:60]!r})")
            if key > separator:
                reader.fail(f"{what}: key {key[:60]!r} is past its index entry "
                            f"{separator[:60]!r}")
            entries[key] = value
            last_key = key
    return entries


def _block(raw, offset, size, what, blocks_end, reader):
    """The contents of the block at ``offset`` (``size`` bytes + trailer), checked."""
    end = offset + size
    if end + _TRAILER_SIZE > blocks_end:
        reader.fail(f"the {what} (bytes {offset}..{end} and its {_TRAILER_SIZE}-byte trailer) "
                    f"runs past the blocks, which end at byte {blocks_end}: the file is "
                    "truncated or corrupt")
    contents = raw[offset:end]
    kind = raw[end]
    stored = struct.unpack_from("<I", raw, end + 1)[0]
    actual = mask(crc32c(raw[end:end + 1], crc32c(contents)))
    if actual != stored:
        reader.fail(f"CRC-32C mismatch in the {what}: stored {stored:#010x}, computed "
                    f"{actual:#010x}; the file is corrupt")
    if kind != 0:
        reader.fail(f"the {what} is compressed (type {kind}); TensorFlow writes checkpoint "
                    "indexes uncompressed and gptc reads only those")
    return contents


def _block_entries(block, what, reader):
    """(key, value) for each entry of one block, keys rebuilt from their shared prefixes."""
    if len(block) < 4:
        reader.fail(f"the {what} is {len(block)} bytes, too short for its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    if num_restarts == 0 or num_restarts > (len(block) - 4) // 4:
        reader.fail(f"the {what} claims {num_restarts} restart points, impossible in "
                    f"{len(block)} bytes")
    entries_end = len(block) - 4 - 4 * num_restarts
    restarts = set(np.frombuffer(block, "<u4", num_restarts, entries_end).tolist())
    pos = 0
    key = b""
    starts = set()
    out = []
    while pos < entries_end:
        starts.add(pos)
        is_restart = pos in restarts
        shared, pos = reader.varint(block, pos, entries_end, f"an entry of the {what}")
        unshared, pos = reader.varint(block, pos, entries_end, f"an entry of the {what}")
        length, pos = reader.varint(block, pos, entries_end, f"an entry of the {what}")
        if shared > len(key) or (is_restart and shared):
            reader.fail(f"an entry of the {what} shares {shared} bytes with a key of "
                        f"{len(key) if not is_restart else 0} bytes")
        if unshared + length > entries_end - pos:
            reader.fail(f"an entry of the {what} runs past the block ({unshared} key and "
                        f"{length} value bytes at byte {pos} of {entries_end})")
        new_key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        if out and new_key <= key:
            reader.fail(f"keys out of order in the {what} ({new_key[:60]!r} after "
                        f"{key[:60]!r})")
        key = new_key
        out.append((key, block[pos:pos + length]))
        pos += length
    if not restarts <= starts | ({0} if not out else set()):
        reader.fail(f"the {what} has restart points that are not entry starts")
    return out


def _parse_header(value, reader):
    fields = reader.field_values(value, "the bundle header", {1: 0, 2: 0})
    num_shards = _int64(fields.get(1, [0])[-1])
    endianness = fields.get(2, [0])[-1]
    if endianness != 0:
        reader.fail("the checkpoint was written big-endian; gptc reads little-endian "
                    "checkpoints (TensorFlow's default)")
    if not 1 <= num_shards <= 4096:
        reader.fail(f"the bundle header gives {num_shards} shards")
    return num_shards


def _parse_shape(value, name, reader):
    what = f"the shape of {name}"
    fields = reader.field_values(value, what, {2: 2, 3: 0})
    if fields.get(3, [0])[-1]:
        reader.fail(f"{what} is of unknown rank")
    shape = []
    for dim in fields.get(2, []):
        size = _int64(reader.field_values(dim, what, {1: 0}).get(1, [0])[-1])
        if size < 0:
            reader.fail(f"{what} has a dimension of size {size}")
        shape.append(size)
    return tuple(shape)


def _parse_entry(name, value, num_shards, reader):
    what = f"the entry of {name}"
    fields = reader.field_values(value, what, {1: 0, 2: 2, 3: 0, 4: 0, 5: 0, 6: 5, 7: 2})
    if 7 in fields:
        reader.fail(f"{name} is saved in slices (a partitioned variable); gptc reads whole "
                    "tensors only")
    code = fields.get(1, [0])[-1]
    if code not in _DTYPES:
        kind = _DTYPE_NAMES.get(code, f"DataType {code}")
        reader.fail(f"{name} has type {kind}, which gptc does not read (it reads "
                    f"{', '.join(sorted(set(_DTYPES.values())))})")
    dtype = np.dtype(_DTYPES[code]).newbyteorder("<")
    shape = _parse_shape(fields.get(2, [b""])[-1], name, reader)
    shard = _int64(fields.get(3, [0])[-1])
    offset = _int64(fields.get(4, [0])[-1])
    size = _int64(fields.get(5, [0])[-1])
    if not 0 <= shard < num_shards:
        reader.fail(f"{name} is in shard {shard}, but the checkpoint has {num_shards}")
    if offset < 0:
        reader.fail(f"{name} has a negative offset {offset}")
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size != expected:
        reader.fail(f"{name} has {size} bytes, but its shape {list(shape)} of "
                    f"{dtype.name} needs {expected}")
    if 6 not in fields:
        reader.fail(f"{name} has no checksum")
    return TensorEntry(name, dtype, shape, shard, offset, size, fields[6][-1])
