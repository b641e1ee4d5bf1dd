"""gptc.save / gptc.load: state dicts as safetensors files, interchangeable
with PyTorch's safetensors.torch."""
import os

import numpy as np
import pytest

import gptc
from gptc.io import CheckpointFormatError
from conftest import BOOK_BATCH, report, small_config

safetensors = pytest.importorskip("safetensors")


def small_model(seed=1, **cfg_overrides):
    gptc.manual_seed(seed)
    return gptc.GPTModel(small_config(**cfg_overrides)).eval()


BATCH = np.array([[1, 2, 3, 4, 5], [900, 17, 0, 999, 42]])


@pytest.fixture
def saved(tmp_path):
    """A small model and the path of its saved state dict."""
    model = small_model()
    path = tmp_path / "model.safetensors"
    gptc.save(model.state_dict(), path)
    return model, path


def test_round_trip_is_exact(saved):
    """Every key, the mask buffers included, comes back with equal dtype, shape and values."""
    model, path = saved
    sd = model.state_dict()
    loaded = gptc.load(path)
    assert set(loaded) == set(sd)
    assert any(key.endswith("att.mask") for key in loaded)
    for key, value in sd.items():
        assert loaded[key].dtype == value.dtype, key
        assert np.array_equal(loaded[key], value), key


def test_loaded_model_gives_the_same_logits(saved):
    """A differently seeded model loaded from the file computes identical logits."""
    model, path = saved
    other = small_model(seed=99)
    assert not np.array_equal(other(BATCH), model(BATCH))
    other.load_state_dict(gptc.load(path))
    assert np.array_equal(other(BATCH), model(BATCH))


def test_tied_weights_save_one_copy_per_key(tmp_path):
    """A tied model's state dict saves both names; loading keeps the tie and the values."""
    gptc.manual_seed(5)
    tied = gptc.GPTModel(small_config(), tie_weights=True).eval()
    path = tmp_path / "tied.safetensors"
    gptc.save(tied.state_dict(), path)
    loaded = gptc.load(path)
    assert np.array_equal(loaded["out_head.weight"], loaded["tok_emb.weight"])

    gptc.manual_seed(6)
    again = gptc.GPTModel(small_config(), tie_weights=True).eval()
    again.load_state_dict(loaded)
    assert again.out_head.weight is again.tok_emb.weight
    assert np.array_equal(again(BATCH), tied(BATCH))

    untied = small_model(seed=7)
    untied.load_state_dict(loaded)
    assert np.array_equal(untied(BATCH), tied(BATCH))


def test_views_torch_tensors_and_metadata(tmp_path, torch):
    """Non-contiguous views and PyTorch tensors save as their values; metadata is kept."""
    from safetensors import safe_open
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    state = {"view": base.T, "strided": base[:, ::2], "torch": torch.arange(5.0),
             "scalar": np.float32(3.5), "ints": np.arange(3, dtype=np.int64)}
    path = tmp_path / "mixed.safetensors"
    gptc.save(state, path, metadata={"note": "hello"})
    loaded = gptc.load(path)
    for key, value in state.items():
        assert np.array_equal(loaded[key], np.asarray(value)), key
        assert loaded[key].shape == np.shape(np.asarray(value)), key
    with safe_open(path, framework="np") as f:
        assert f.metadata() == {"note": "hello"}


def test_missing_file_and_directory(tmp_path):
    """A path that does not exist, or is a directory, raises the usual OSError, naming it."""
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        gptc.load(tmp_path / "nothing.safetensors")
    with pytest.raises(IsADirectoryError):
        gptc.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no-dir"):
        gptc.save({"a": np.ones(2)}, tmp_path / "no-dir" / "x.safetensors")
    with pytest.raises(IsADirectoryError):
        gptc.save({"a": np.ones(2)}, tmp_path)


@pytest.mark.parametrize("content", ["random", "truncated", "empty", "text"])
def test_not_a_safetensors_file(saved, tmp_path, content):
    """Random bytes, a truncated real file, an empty file or text: CheckpointFormatError
    (a ValueError) naming the file."""
    _, real = saved
    data = {"random": np.random.default_rng(0).bytes(4096),
            "truncated": real.read_bytes()[:-100],
            "empty": b"",
            "text": b'{"not": "a checkpoint"}\n'}[content]
    path = tmp_path / f"{content}.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointFormatError, match=content) as info:
        gptc.load(path)
    assert isinstance(info.value, ValueError)


def test_unsupported_dtype_is_a_clear_error(tmp_path, torch):
    """A bfloat16 file (which NumPy has no dtype for) is a clear CheckpointFormatError."""
    from safetensors.torch import save_file
    path = tmp_path / "bf16.safetensors"
    save_file({"w": torch.ones(3, dtype=torch.bfloat16)}, str(path))
    with pytest.raises(CheckpointFormatError, match="float32"):
        gptc.load(path)


def test_bad_arguments_to_save(tmp_path):
    """save() takes a mapping of str to numeric arrays, and says so."""
    model = small_model()
    with pytest.raises(TypeError, match="state_dict()"):
        gptc.save(model, tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="'names'"):
        gptc.save({"names": np.array(["a", "b"])}, tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="keys must be strings"):
        gptc.save({1: np.ones(2)}, tmp_path / "m.safetensors")
    assert not os.path.exists(tmp_path / "m.safetensors")


def test_missing_tensor_names_the_key(saved, tmp_path):
    """A file lacking a tensor fails to load into the model, naming the key."""
    model, path = saved
    state = gptc.load(path)
    del state["trf_blocks.1.ff.layers.0.bias"]
    partial = tmp_path / "partial.safetensors"
    gptc.save(state, partial)
    with pytest.raises(KeyError, match="trf_blocks.1.ff.layers.0.bias"):
        small_model().load_state_dict(gptc.load(partial))


def test_wrong_shape_names_the_key(tmp_path):
    """A file of another config fails to load, naming the key and both shapes."""
    path = tmp_path / "wide.safetensors"
    gptc.save(small_model(emb_dim=48, n_heads=4).state_dict(), path)
    with pytest.raises(ValueError, match=r"tok_emb.weight.*\(1000, 48\).*\(1000, 72\)"):
        small_model().load_state_dict(gptc.load(path))


def test_file_from_safetensors_torch_loads_into_gptc(torch, ref, tmp_path):
    """The book's PyTorch model saved with safetensors.torch.save_file loads into
    gptc.GPTModel and gives the same logits."""
    from safetensors.torch import save_file
    cfg = small_config(vocab_size=50257, context_length=32)
    torch.manual_seed(123)
    t_model = ref.GPTModel(cfg).eval()
    path = tmp_path / "torch.safetensors"
    save_file(t_model.state_dict(), str(path))

    g_model = gptc.GPTModel(cfg).eval()
    g_model.load_state_dict(gptc.load(path))
    with torch.no_grad():
        expected = t_model(torch.tensor(BOOK_BATCH)).numpy()
    report("logits from a torch safetensors file", g_model(np.array(BOOK_BATCH)), expected,
           rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_gptc_file_loads_into_the_books_torch_model(torch, ref, tmp_path, tie):
    """A gptc.save file (tied or not) loads with safetensors.torch.load_file into
    the book's PyTorch model, strictly, and gives the same logits."""
    from safetensors.torch import load_file
    cfg = small_config(vocab_size=50257, context_length=32)
    gptc.manual_seed(321)
    g_model = gptc.GPTModel(cfg, tie_weights=tie).eval()
    path = tmp_path / "gptc.safetensors"
    gptc.save(g_model.state_dict(), path)

    t_model = ref.GPTModel(cfg).eval()
    t_model.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        got = t_model(torch.tensor(BOOK_BATCH)).numpy()
    report("torch logits from a gptc file", got, g_model(np.array(BOOK_BATCH)),
           rtol=1e-4, atol=1e-5)
