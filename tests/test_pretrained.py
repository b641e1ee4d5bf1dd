"""The book's section 5.5 on gptc: load_gpt2_params_from_tf_ckpt, load_weights_into_gpt
and download_and_load_gpt2, on the committed TensorFlow fixture. Downloads are
served by local HTTP servers on 127.0.0.1 (no other network)."""
import http.server
import json
import os
import re
import shutil
import socket
import sys
import threading

import numpy as np
import pytest

import gptc
from gptc import pretrained
from gptc.download import DownloadError
from gptc.io import CheckpointFormatError
from gptc.tf_checkpoint import latest_checkpoint
from tf_fixture import FIXTURE_DIR, HPARAMS, fixture_tensors

FILES = ("checkpoint", "hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001")
DATA = FILES[-1]
BATCH = np.array([[1, 5, 17, 95, 0, 42], [3, 3, 3, 3, 3, 3]])


def _settings():
    with open(os.path.join(FIXTURE_DIR, "hparams.json")) as f:
        return json.load(f)


def _params():
    return gptc.load_gpt2_params_from_tf_ckpt(latest_checkpoint(FIXTURE_DIR), _settings())


def _book_model(**overrides):
    """The book's way: GPTModel of the checkpoint's sizes, qkv_bias=True, random init."""
    gptc.manual_seed(7)
    cfg = dict(gptc.gpt2_config_from_hparams(_settings()), **overrides)
    return gptc.GPTModel(cfg).eval()


def test_params_dict_has_the_books_structure_and_values():
    """wte, wpe, g, b and blocks[i][...]: each the fixture's tensor, Conv1D weights squeezed
    from [1, nx, nf] to (nx, nf) as the book's np.squeeze leaves them."""
    params = _params()
    tensors = fixture_tensors()
    assert sorted(params) == ["b", "blocks", "g", "wpe", "wte"]
    assert len(params["blocks"]) == HPARAMS["n_layer"]
    assert sorted(params["blocks"][0]) == ["attn", "ln_1", "ln_2", "mlp"]
    assert sorted(params["blocks"][0]["attn"]) == ["c_attn", "c_proj"]
    assert np.array_equal(params["wte"], tensors["model/wte"])
    assert np.array_equal(params["g"], tensors["model/ln_f/g"])
    w = params["blocks"][1]["attn"]["c_attn"]["w"]
    assert w.shape == (16, 48)
    assert np.array_equal(w, np.squeeze(tensors["model/h1/attn/c_attn/w"]))
    assert np.array_equal(params["blocks"][1]["mlp"]["c_proj"]["b"],
                          tensors["model/h1/mlp/c_proj/b"])


def test_weights_land_where_the_book_puts_them():
    """c_attn split in three and transposed into W_query/W_key/W_value, Conv1D weights
    transposed, layer norms as scale/shift, wte copied into the untied output head."""
    model = _book_model()
    gptc.load_weights_into_gpt(model, _params())
    t = fixture_tensors()
    block = model.trf_blocks[1]
    c_attn = t["model/h1/attn/c_attn/w"][0]
    for k, layer in enumerate((block.att.W_query, block.att.W_key, block.att.W_value)):
        assert np.array_equal(layer.weight, c_attn[:, 16 * k:16 * (k + 1)].T)
        assert np.array_equal(layer.bias, t["model/h1/attn/c_attn/b"][16 * k:16 * (k + 1)])
    assert np.array_equal(block.att.out_proj.weight, t["model/h1/attn/c_proj/w"][0].T)
    assert np.array_equal(block.ff.layers[0].weight, t["model/h1/mlp/c_fc/w"][0].T)
    assert np.array_equal(block.ff.layers[2].bias, t["model/h1/mlp/c_proj/b"])
    assert np.array_equal(block.norm2.scale, t["model/h1/ln_2/g"])
    assert np.array_equal(model.final_norm.shift, t["model/ln_f/b"])
    assert np.array_equal(model.pos_emb.weight, t["model/wpe"])
    assert np.array_equal(model.out_head.weight, t["model/wte"])
    assert model.out_head.weight is not model.tok_emb.weight


def test_tied_model_head_is_the_token_embedding():
    """With tie_weights=True the output head *is* tok_emb.weight after loading."""
    gptc.manual_seed(7)
    model = gptc.GPTModel(gptc.gpt2_config_from_hparams(_settings()), tie_weights=True)
    embedding = model.tok_emb.weight
    gptc.load_weights_into_gpt(model, _params())
    assert model.out_head.weight is model.tok_emb.weight is embedding
    assert np.array_equal(embedding, fixture_tensors()["model/wte"])


def test_model_built_straight_from_the_checkpoint_equals_the_books_path():
    """gpt2_model_from_tf_ckpt (no params dict, no random init) computes the same logits
    as GPTModel + load_weights_into_gpt, and leaves the default generator untouched."""
    book = _book_model()
    gptc.load_weights_into_gpt(book, _params())
    state = gptc.get_rng_state()
    direct = pretrained.gpt2_model_from_tf_ckpt(FIXTURE_DIR)
    assert np.array_equal(gptc.get_rng_state(), state)
    assert not direct.training
    with gptc.no_grad():
        assert np.array_equal(direct(BATCH), book(BATCH))


def test_model_without_qkv_bias_is_refused_before_any_change():
    model = _book_model(qkv_bias=False)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="qkv_bias=True"):
        gptc.load_weights_into_gpt(model, _params())
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_model_with_inference_copies_is_refused_naming_the_dtype(dtype):
    """Weights kept in bfloat16 or int8 (to_dtype) cannot be overwritten: the error names
    the dtype and the fix."""
    model = _book_model().to_dtype(dtype)
    with pytest.raises(RuntimeError, match=rf"stored in {dtype} for inference "
                                           rf"\(to_dtype\('{dtype}'\)\); call "
                                           r"to_dtype\('float32'\) before loading weights"):
        gptc.load_weights_into_gpt(model, _params())


def test_params_of_another_size_name_tensor_parameter_and_shapes():
    """A model of another width: ValueError naming the GPT-2 tensor, the gptc parameter
    and both shapes; no parameter changes."""
    model = _book_model(emb_dim=32, n_heads=2)
    before = model.tok_emb.weight.copy()
    with pytest.raises(ValueError) as info:
        gptc.load_weights_into_gpt(model, _params())
    message = str(info.value)
    print(message)
    for part in ("wte", "(96, 16)", "(96, 32)", "tok_emb.weight"):
        assert part in message
    assert np.array_equal(model.tok_emb.weight, before)


def test_shape_not_matching_hparams_is_refused(tmp_path):
    """hparams.json saying n_embd 8 for a checkpoint of width 16: CheckpointFormatError
    naming the index file, the variable and hparams.json."""
    settings = dict(_settings(), n_embd=8)
    with pytest.raises(CheckpointFormatError) as info:
        gptc.load_gpt2_params_from_tf_ckpt(latest_checkpoint(FIXTURE_DIR), settings)
    message = str(info.value)
    print(message)
    assert os.path.join(FIXTURE_DIR, "model.ckpt.index") in message
    assert "hparams.json" in message and "[96, 16]" in message and "[96, 8]" in message


def test_more_layers_in_hparams_than_in_the_checkpoint_is_refused():
    with pytest.raises(CheckpointFormatError, match="model/h2/.* is missing"):
        gptc.load_gpt2_params_from_tf_ckpt(latest_checkpoint(FIXTURE_DIR),
                                           dict(_settings(), n_layer=3))


def test_hugging_face_layout_of_the_same_tensors_gives_the_same_weights(tmp_path):
    """The fixture's tensors written in Hugging Face's layout (transformer.h.0...,
    Conv1D (in, out)) load through GPTModel.from_pretrained into exactly the
    parameters the TensorFlow path gives."""
    from safetensors.numpy import save_file
    names = {"w": "weight", "g": "weight", "b": "bias"}
    tensors = {}
    for name, value in fixture_tensors().items():
        parts = name.split("/")[1:]
        if re.fullmatch(r"h\d+", parts[0]):
            parts[0] = "h." + parts[0][1:]
        key = ".".join(parts[:-1] + [names[parts[-1]]]) if len(parts) > 1 else \
            parts[0] + ".weight"
        tensors["transformer." + key] = value.reshape(value.shape[1:]) \
            if name.endswith("/w") else value
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "vocab_size": 96, "n_positions": 12, "n_embd": 16,
        "n_layer": 2, "n_head": 2}))
    from_hf = gptc.GPTModel.from_pretrained(tmp_path)
    from_tf = pretrained.gpt2_model_from_tf_ckpt(FIXTURE_DIR)
    hf_state, tf_state = from_hf.state_dict(), from_tf.state_dict()
    assert list(hf_state) == list(tf_state)
    for key in tf_state:
        assert np.array_equal(hf_state[key], tf_state[key]), key


# -- download_and_load_gpt2 against local servers --------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves FIXTURE_DIR's files under /<anything>/<size>/<name>, with Range support
    unless told otherwise; records every request."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if server.status:
            self.send_error(server.status)
            return
        path = os.path.join(FIXTURE_DIR, os.path.basename(self.path))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None and os.path.basename(self.path) == DATA:
            body = body[:server.cut_after]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    """Two local servers: the primary and the backup (each configurable per test)."""
    running = []
    for _ in range(2):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.requests, server.status, server.ignore_range, server.cut_after = [], 0, False, None
        server.base = f"http://127.0.0.1:{server.server_address[1]}/gpt-2/models"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        running.append(server)
    yield running
    for server in running:
        server.shutdown()
        server.server_close()


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gpt-2/models"


def _download(models_dir, primary, backup):
    return gptc.download_and_load_gpt2("124M", models_dir, base_url=primary,
                                       backup_base_url=backup)


def _assert_fixture_params(settings, params, model_dir):
    assert settings == HPARAMS
    assert np.array_equal(params["wte"], fixture_tensors()["model/wte"])
    for name in FILES:
        with open(os.path.join(FIXTURE_DIR, name), "rb") as a, \
                open(os.path.join(model_dir, name), "rb") as b:
            assert a.read() == b.read(), name
    assert not [n for n in os.listdir(model_dir) if n.endswith(".part")]


def test_downloads_every_file_then_loads(servers, tmp_path):
    primary, backup = servers
    settings, params = _download(tmp_path, primary.base, backup.base)
    _assert_fixture_params(settings, params, tmp_path / "124M")
    assert [os.path.basename(p) for p, _ in primary.requests] == list(FILES)
    assert backup.requests == []


def test_complete_files_are_used_without_any_request(servers, tmp_path):
    primary, backup = servers
    shutil.copytree(FIXTURE_DIR, tmp_path / "124M")
    settings, params = _download(tmp_path, primary.base, backup.base)
    _assert_fixture_params(settings, params, tmp_path / "124M")
    assert primary.requests == [] and backup.requests == []


@pytest.mark.parametrize("failure", ["http 404", "http 503", "connection refused"])
def test_primary_failing_falls_back_to_the_backup(servers, tmp_path, failure):
    primary, backup = servers
    primary.status = int(failure[5:]) if failure.startswith("http") else 0
    base = primary.base if failure.startswith("http") else _closed_port_url()
    settings, params = _download(tmp_path, base, backup.base)
    _assert_fixture_params(settings, params, tmp_path / "124M")
    assert [os.path.basename(p) for p, _ in backup.requests] == list(FILES)


@pytest.mark.parametrize("where", [DATA + ".part", DATA])
def test_partial_data_file_is_resumed(servers, tmp_path, where):
    """A cut-off data file (gptc's .part, or one left under the final name by another
    downloader) is completed with a Range request for the missing bytes only."""
    primary, backup = servers
    model_dir = tmp_path / "124M"
    shutil.copytree(FIXTURE_DIR, model_dir)
    os.remove(model_dir / DATA)
    with open(os.path.join(FIXTURE_DIR, DATA), "rb") as f:
        (model_dir / where).write_bytes(f.read()[:10000])
    settings, params = _download(tmp_path, primary.base, backup.base)
    _assert_fixture_params(settings, params, model_dir)
    assert primary.requests == [(f"/gpt-2/models/124M/{DATA}", "bytes=10000-")]


def test_partial_file_is_replaced_when_the_server_cannot_resume(servers, tmp_path):
    """A server that ignores Range sends the whole file (200): the part is replaced,
    not appended to."""
    primary, backup = servers
    primary.ignore_range = True
    model_dir = tmp_path / "124M"
    shutil.copytree(FIXTURE_DIR, model_dir)
    os.remove(model_dir / DATA)
    (model_dir / (DATA + ".part")).write_bytes(b"\xff" * 5000)
    _assert_fixture_params(*_download(tmp_path, primary.base, backup.base), model_dir)


def test_part_longer_than_the_file_is_replaced(servers, tmp_path):
    primary, backup = servers
    model_dir = tmp_path / "124M"
    shutil.copytree(FIXTURE_DIR, model_dir)
    os.remove(model_dir / DATA)
    (model_dir / (DATA + ".part")).write_bytes(b"\0" * 40000)
    _assert_fixture_params(*_download(tmp_path, primary.base, backup.base), model_dir)
    assert primary.requests == [(f"/gpt-2/models/124M/{DATA}", None)]


def test_corrupt_small_file_is_downloaded_again(servers, tmp_path):
    """An index cut short (its footer gone) is not whole: it is fetched again."""
    primary, backup = servers
    model_dir = tmp_path / "124M"
    shutil.copytree(FIXTURE_DIR, model_dir)
    (model_dir / "model.ckpt.index").write_bytes(b"\0" * 100)
    _assert_fixture_params(*_download(tmp_path, primary.base, backup.base), model_dir)
    assert [os.path.basename(p) for p, _ in primary.requests] == ["model.ckpt.index"]


def test_connection_cut_midway_is_resumed_from_the_backup(servers, tmp_path):
    """The primary stops after 20,000 bytes of the data file: the backup is asked for
    the rest only."""
    primary, backup = servers
    primary.cut_after = 20000
    settings, params = _download(tmp_path, primary.base, backup.base)
    _assert_fixture_params(settings, params, tmp_path / "124M")
    assert backup.requests == [(f"/gpt-2/models/124M/{DATA}", "bytes=20000-")]


def test_both_urls_failing_is_one_clear_error(servers, tmp_path):
    """DownloadError names the file and what each URL answered; nothing is loaded."""
    primary, backup = servers
    primary.status, backup.status = 404, 500
    with pytest.raises(DownloadError) as info:
        _download(tmp_path, primary.base, backup.base)
    message = str(info.value)
    print(message)
    assert isinstance(info.value, OSError)
    for part in ("cannot download checkpoint", f"{primary.base}/124M/checkpoint", "HTTP 404",
                 f"{backup.base}/124M/checkpoint", "HTTP 500"):
        assert part in message


def test_module_constants_are_the_default_urls(servers, tmp_path, monkeypatch):
    """BASE_URL and BACKUP_BASE_URL (OpenAI's and the book's) are read at call time."""
    assert pretrained.BASE_URL == "https://openaipublic.blob.core.windows.net/gpt-2/models"
    assert pretrained.BACKUP_BASE_URL == "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2"
    primary, backup = servers
    monkeypatch.setattr(pretrained, "BASE_URL", _closed_port_url())
    monkeypatch.setattr(pretrained, "BACKUP_BASE_URL", backup.base)
    _assert_fixture_params(*gptc.download_and_load_gpt2("124M", tmp_path), tmp_path / "124M")


def test_unknown_model_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M.*'125M'"):
        gptc.download_and_load_gpt2("125M", tmp_path)


def test_progress_without_tqdm_is_a_plain_line(servers, tmp_path, monkeypatch, capsys):
    """With tqdm absent, each download prints plain progress lines on stderr."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    primary, backup = servers
    _download(tmp_path, primary.base, backup.base)
    err = capsys.readouterr().err
    assert f"{DATA}: 0.0 of 0.0 MiB (0%)" in err
    assert f"{DATA}: 0.0 of 0.0 MiB (100%)" in err


def test_progress_with_tqdm_is_its_bar(servers, tmp_path, capsys):
    pytest.importorskip("tqdm")
    primary, backup = servers
    _download(tmp_path, primary.base, backup.base)
    err = capsys.readouterr().err
    assert DATA in err and "32.5k/32.5k" in err
