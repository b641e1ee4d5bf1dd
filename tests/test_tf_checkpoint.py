"""gptc's TensorFlow checkpoint reader (no TensorFlow): CRC-32C, the committed
fixture read value by value, bad files, and a bounded fuzz of the index parser."""
import os
import random
import shutil
import struct
import time

import numpy as np
import pytest

from gptc.crc32c import crc32c, mask, unmask
from gptc.io import CheckpointFormatError
from gptc.tf_checkpoint import CheckpointIndex, TFCheckpoint, latest_checkpoint
from tf_fixture import FIXTURE_DIR, fixture_tensors, variable_shapes

DATA_NAME = "model.ckpt.data-00000-of-00001"


def _bytewise_crc32c(data, value=0):
    """CRC-32C by its definition: reflected polynomial 0x82F63B78, one bit at a time."""
    crc = value ^ 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_check_value():
    """The standard check value of CRC-32C: crc32c(b"123456789") = 0xE3069283."""
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@pytest.mark.parametrize("length", [1, 3, 4, 5, 31, 32, 33, 127, 128, 129, 1023, 1024, 1025,
                                    131071, 131072, 131075, 400_003])
def test_crc32c_equals_the_bitwise_definition_at_every_lane_boundary(length):
    """Lengths around the word size and the lane counts (16, 512, 16384 words), whole,
    continued from a prefix's value, and from an unaligned start."""
    data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()
    expected = _bytewise_crc32c(data)
    assert crc32c(data) == expected
    cut = length // 3
    assert crc32c(data[cut:], crc32c(data[:cut])) == expected
    unaligned = np.frombuffer(b"\0" + data, np.uint8)[1:]
    assert crc32c(unaligned) == expected


def test_mask_is_tensorflows_rotation_and_offset():
    """mask rotates right by 15 bits and adds 0xa282ead8; unmask inverts it."""
    for crc in (0, 1, 0x12345678, 0xFFFFFFFF):
        rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
        assert mask(crc) == (rotated + 0xA282EAD8) & 0xFFFFFFFF
        assert unmask(mask(crc)) == crc


@pytest.fixture
def checkpoint_dir(tmp_path):
    """A writable copy of the committed fixture."""
    target = tmp_path / "tiny"
    shutil.copytree(FIXTURE_DIR, target)
    return target


def test_fixture_is_small_and_written_by_tensorflow():
    """The committed files: a few kB, an index that ends with TensorFlow's magic."""
    sizes = {name: os.path.getsize(os.path.join(FIXTURE_DIR, name))
             for name in os.listdir(FIXTURE_DIR)}
    assert set(sizes) == {"checkpoint", "hparams.json", "model.ckpt.index", DATA_NAME}
    assert sum(sizes.values()) < 100_000
    with open(os.path.join(FIXTURE_DIR, "model.ckpt.index"), "rb") as f:
        assert f.read()[-8:] == struct.pack("<Q", 0xDB4775248B80FB57)


def test_variables_are_openais_names_and_shapes():
    """list_variables' answer: every GPT-2 variable, [1, nx, nf] Conv1D weights included."""
    ckpt = TFCheckpoint(latest_checkpoint(FIXTURE_DIR))
    assert ckpt.variables() == sorted(variable_shapes().items())
    assert dict(ckpt.variables())["model/h1/attn/c_attn/w"] == [1, 16, 48]


def test_every_tensor_equals_the_rule_value_by_value():
    """Each tensor read (CRC-verified) is float32 and equal to what tests/tf_fixture.py
    recomputes with NumPy alone."""
    ckpt = TFCheckpoint(latest_checkpoint(FIXTURE_DIR))
    expected = fixture_tensors()
    for name, value in expected.items():
        got = ckpt.read(name)
        assert got.dtype == np.float32 and got.shape == value.shape, name
        assert np.array_equal(got, value), name
    print(f"{len(expected)} tensors equal")


def test_index_records_the_size_of_the_data_file():
    """The data file holds exactly the bytes the index describes (what the
    downloader checks a data file against)."""
    index = CheckpointIndex(os.path.join(FIXTURE_DIR, "model.ckpt.index"))
    assert index.num_shards == 1
    assert index.data_size() == os.path.getsize(os.path.join(FIXTURE_DIR, DATA_NAME))


def test_latest_checkpoint_reads_the_state_file(checkpoint_dir):
    """The prefix named in `checkpoint`, relative to the directory; None without one."""
    assert latest_checkpoint(checkpoint_dir) == os.path.join(checkpoint_dir, "model.ckpt")
    (checkpoint_dir / "checkpoint").write_text('model_checkpoint_path: "/abs/other.ckpt"\n')
    assert latest_checkpoint(checkpoint_dir) == "/abs/other.ckpt"
    (checkpoint_dir / "checkpoint").write_text("all_model_checkpoint_paths: \n")
    with pytest.raises(CheckpointFormatError, match="model_checkpoint_path"):
        latest_checkpoint(checkpoint_dir)
    os.remove(checkpoint_dir / "checkpoint")
    assert latest_checkpoint(checkpoint_dir) is None


def _flip(path, position):
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x40]))


def _expect_error(prefix, *parts):
    with pytest.raises(CheckpointFormatError) as info:
        ckpt = TFCheckpoint(prefix)
        for name, _ in ckpt.variables():
            ckpt.read(name)
    message = str(info.value)
    for part in parts:
        assert part in message, message
    print(message)
    return message


@pytest.mark.parametrize("keep", [0, 20, 47, 400, -1])
def test_truncated_index_is_refused(checkpoint_dir, keep):
    """An index cut anywhere: the error names the file and says it is truncated."""
    index = checkpoint_dir / "model.ckpt.index"
    raw = index.read_bytes()
    index.write_bytes(raw[:keep if keep >= 0 else len(raw) + keep])
    _expect_error(str(checkpoint_dir / "model.ckpt"), str(index), "truncated")


def test_wrong_magic_number_is_refused(checkpoint_dir):
    index = checkpoint_dir / "model.ckpt.index"
    _flip(index, os.path.getsize(index) - 1)
    _expect_error(str(checkpoint_dir / "model.ckpt"), str(index), "wrong magic number")


def test_corrupt_index_block_fails_its_crc(checkpoint_dir):
    """One flipped bit inside the data block of the index: its masked CRC-32C disagrees."""
    index = checkpoint_dir / "model.ckpt.index"
    _flip(index, 100)
    _expect_error(str(checkpoint_dir / "model.ckpt"), str(index), "CRC-32C mismatch",
                  "data block")


def test_corrupt_tensor_fails_its_crc(checkpoint_dir):
    """One flipped byte in the data file: reading that tensor names it and the file."""
    ckpt = TFCheckpoint(checkpoint_dir / "model.ckpt")
    entry = ckpt.entries["model/h1/mlp/c_fc/w"]
    data = checkpoint_dir / DATA_NAME
    _flip(data, entry.offset + entry.size // 2)
    _expect_error(str(checkpoint_dir / "model.ckpt"), str(data), "CRC-32C mismatch",
                  "model/h1/mlp/c_fc/w")


def test_entry_past_the_end_of_the_data_file_is_refused(checkpoint_dir):
    """A data file shorter than the index says: refused when the checkpoint is opened."""
    data = checkpoint_dir / DATA_NAME
    data.write_bytes(data.read_bytes()[:-4])
    _expect_error(str(checkpoint_dir / "model.ckpt"), str(data), "past the end of the data file",
                  "model/wte", "(33276 bytes)")


def test_missing_data_file_is_named(checkpoint_dir):
    os.remove(checkpoint_dir / DATA_NAME)
    with pytest.raises(FileNotFoundError) as info:
        TFCheckpoint(checkpoint_dir / "model.ckpt")
    assert info.value.filename == str(checkpoint_dir / DATA_NAME)


def _reseal(raw, start, end):
    """Recompute the trailer CRC of the block at raw[start:end] (it follows the block)."""
    crc = mask(crc32c(raw[end:end + 1], crc32c(bytes(raw[start:end]))))
    raw[end + 1:end + 5] = struct.pack("<I", crc)


def _blocks(raw):
    """(start, end) of the data block and the index block, from the footer."""
    footer = raw[-48:]

    def varint(pos):
        value = shift = 0
        while True:
            byte = footer[pos]
            value |= (byte & 0x7F) << shift
            pos += 1
            if byte < 0x80:
                return value, pos
            shift += 7

    pos = 0
    handles = []
    for _ in range(2):
        offset, pos = varint(pos)
        size, pos = varint(pos)
        handles.append((offset, offset + size))
    # The fixture's index has one data block, starting at 0, just before the metaindex.
    return [(0, handles[0][0] - 5), handles[1]]


def test_fuzzed_indexes_raise_only_checkpoint_errors(tmp_path):
    """A seeded mutation loop for a bounded time: random bytes changed, inserted or
    cut, half the time with the block checksums recomputed so the mutation reaches
    the entry and protobuf parsers. Every case either reads or raises
    CheckpointFormatError (or FileNotFoundError for a data file it names); never
    anything else, never a crash."""
    with open(os.path.join(FIXTURE_DIR, "model.ckpt.index"), "rb") as f:
        raw0 = f.read()
    shutil.copy(os.path.join(FIXTURE_DIR, DATA_NAME),
                tmp_path / DATA_NAME.replace("model.ckpt", "fuzz"))
    blocks = _blocks(raw0)
    rng = random.Random(1234)
    index = tmp_path / "fuzz.index"
    cases = parsed = 0
    outcomes = {}
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        raw = bytearray(raw0)
        resealed = rng.random() < 0.5
        for _ in range(rng.randint(1, 4)):
            if resealed:
                start, end = rng.choice(blocks)
                pos = rng.randrange(start, end)
                raw[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
            else:
                kind = rng.randrange(3)
                pos = rng.randrange(len(raw))
                if kind == 0:
                    raw[pos] = rng.randrange(256)
                elif kind == 1:
                    raw[pos:pos] = bytes([rng.randrange(256)])
                else:
                    del raw[pos:pos + rng.randint(1, 16)]
        if resealed:
            for start, end in blocks:
                _reseal(raw, start, end)
        index.write_bytes(bytes(raw))
        cases += 1
        try:
            ckpt = TFCheckpoint(tmp_path / "fuzz")
            for name, _ in ckpt.variables():
                ckpt.read(name)
            parsed += 1
            outcome = "read"
        except CheckpointFormatError as exc:
            outcome = str(exc).split(": ", 1)[1][:40]
        except FileNotFoundError:         # a mutated shard count names another data file
            outcome = "missing shard"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"{cases} fuzzed indexes: {parsed} read without error, the rest refused; "
          f"{len(outcomes)} distinct outcomes")
    assert cases > 100
