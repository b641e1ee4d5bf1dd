"""`gptc --weights PATH` for real models: an OpenAI checkpoint directory, a Hugging
Face directory or a gptc state dict (detected), chapter 5's sampling options,
text streamed token by token, --bf16, and one-line errors."""
import json
import os
import shutil

import numpy as np
import pytest

import gptc
from gptc import __main__ as cli
from gptc import pretrained
from test_cli import assert_one_line_error, output_ids, run_cli
from tf_fixture import FIXTURE_DIR

# A GPT-2-vocabulary model small enough for tests: real prompts tokenize into it.
HF_CFG = {"vocab_size": 50257, "context_length": 32, "emb_dim": 32, "n_heads": 4,
          "n_layers": 2, "drop_rate": 0.0, "qkv_bias": True}
PROMPT = "Every effort moves you"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random tied model of HF_CFG saved with save_pretrained."""
    path = tmp_path_factory.mktemp("hf")
    gptc.manual_seed(21)
    gptc.GPTModel(HF_CFG, tie_weights=True).save_pretrained(path)
    return path


def _expected(model, prompt_ids, n, seed=123, temperature=0.0, top_k=None):
    gptc.manual_seed(seed)
    return gptc.generate(model.eval(), np.array([prompt_ids]), n,
                         model.pos_emb.num_embeddings, temperature, top_k)[0].tolist()


def test_hugging_face_directory_generates_what_gptc_generate_does(hf_dir):
    """The directory's own config is used (vocab 50257, width 32, context 32); greedy ids
    equal gptc.generate's on GPTModel.from_pretrained; the streamed text line equals the
    decoded output; the last line gives tokens per second."""
    result = run_cli("--weights", str(hf_dir), "--prompt", PROMPT, "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Model: custom (Hugging Face weights from {hf_dir})" in out
    assert "emb_dim: 32" in out and "context_length: 32" in out
    model = gptc.GPTModel.from_pretrained(hf_dir)
    ids = output_ids(out)
    assert ids == _expected(model, ids[:4], 12)
    tokenizer = gptc.get_tokenizer()
    assert f"Text: {tokenizer.decode(ids)}\n" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("Elapsed:") and "to load the model" in last and \
        "generate 12 tokens" in last and "tokens/s" in last


def test_openai_checkpoint_directory_is_detected(tmp_path):
    """hparams.json + model.ckpt.*: built from the checkpoint (tied head); greedy ids
    equal gptc.generate's. (The fixture's 96-token vocabulary holds "!", id 0.)"""
    result = run_cli("--weights", FIXTURE_DIR, "--prompt", "!", "--max-new-tokens", "11")
    assert result.returncode == 0, result.stderr
    assert f"Model: custom (OpenAI's checkpoint from {FIXTURE_DIR})" in result.stdout
    assert "Total number of parameters: 8,320" in result.stdout
    model = pretrained.gpt2_model_from_tf_ckpt(FIXTURE_DIR)
    assert output_ids(result.stdout) == _expected(model, [0], 11)


def test_sampling_follows_temperature_top_k_and_seed(hf_dir):
    """--temperature/--top-k sample as gptc.generate does after manual_seed(--seed): the
    same seed gives the same text, another seed other text."""
    args = ("--weights", str(hf_dir), "--prompt", PROMPT, "--max-new-tokens", "20",
            "--temperature", "1.5", "--top-k", "40")
    first, again, other = (run_cli(*args, "--seed", seed) for seed in ("5", "5", "6"))
    for result in (first, again, other):
        assert result.returncode == 0, result.stderr
    model = gptc.GPTModel.from_pretrained(hf_dir)
    ids = output_ids(first.stdout)
    assert ids == _expected(model, ids[:4], 20, seed=5, temperature=1.5, top_k=40)
    assert output_ids(again.stdout) == ids
    assert output_ids(other.stdout) != ids


def test_bf16_runs_the_bfloat16_weights(hf_dir):
    result = run_cli("--weights", str(hf_dir), "--prompt", PROMPT, "--max-new-tokens", "8",
                     "--bf16")
    assert result.returncode == 0, result.stderr
    assert "bfloat16)" in result.stdout.splitlines()[0]
    model = gptc.GPTModel.from_pretrained(hf_dir).to_dtype("bfloat16")
    ids = output_ids(result.stdout)
    assert ids == _expected(model, ids[:4], 8)


def test_state_dict_file_is_built_without_random_weights(tmp_path, monkeypatch):
    """A gptc.save file: the model is built with skip_init (no random draws) and filled by
    load_state_dict."""
    gptc.manual_seed(3)
    model = gptc.GPTModel(gptc.gpt2_config("gpt2-small", context_length=64))
    path = tmp_path / "small.safetensors"
    gptc.save(model.state_dict(), path)
    weights = cli._Weights(str(path), None)
    assert weights.cfg["context_length"] == 64 and weights.cfg["qkv_bias"] is False
    state = gptc.get_rng_state()
    built = weights.build()
    assert np.array_equal(gptc.get_rng_state(), state)
    assert np.array_equal(built.out_head.weight, model.out_head.weight)


class _Recorder:
    """A stdout that records each write and flush."""

    def __init__(self):
        self.events = []

    def write(self, text):
        self.events.append(("write", text))

    def flush(self):
        self.events.append(("flush", None))

    def isatty(self):
        return False


def test_text_is_streamed_token_by_token(hf_dir, monkeypatch):
    """Each new token's text is written and flushed as soon as it is chosen, before the
    summary lines."""
    recorder = _Recorder()
    monkeypatch.setattr(cli.sys, "stdout", recorder)
    assert cli.main(["--weights", str(hf_dir), "--prompt", PROMPT,
                     "--max-new-tokens", "6"]) == 0
    events = recorder.events
    text_at = next(i for i, (kind, text) in enumerate(events)
                   if kind == "write" and text.startswith("Text: "))
    output_at = next(i for i, (kind, text) in enumerate(events)
                     if kind == "write" and text.startswith("Output: "))
    # print(..., end="", flush=True) may add an empty write before its flush
    streamed = [e for e in events[text_at + 1:output_at] if e != ("write", "")]
    token_writes = [i for i, (kind, text) in enumerate(streamed) if kind == "write"
                    and text != "\n"]
    assert len(token_writes) == 6
    assert all(streamed[i + 1][0] == "flush" for i in token_writes)


def test_weights_of_another_size_than_model_is_one_line(hf_dir):
    result = run_cli("--weights", str(hf_dir), "--model", "gpt2-medium")
    assert_one_line_error(result, str(hf_dir), "not --model gpt2-medium", "emb_dim 32")


def test_corrupt_checkpoint_is_one_line(tmp_path):
    """A flipped byte in the data file: one line naming the file and the CRC mismatch."""
    target = tmp_path / "ckpt"
    shutil.copytree(FIXTURE_DIR, target)
    data = target / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0xFF
    data.write_bytes(bytes(raw))
    result = run_cli("--weights", str(target), "--prompt", "!")
    assert_one_line_error(result, str(data), "CRC-32C mismatch")


@pytest.mark.parametrize("case", ["missing path", "empty directory", "pickle only",
                                  "unsupported config", "missing index"])
def test_unusable_weights_are_one_line(tmp_path, hf_dir, case):
    path = tmp_path / "weights"
    if case == "empty directory":
        path.mkdir()
        parts = ("neither config.json", "hparams.json")
    elif case == "pickle only":
        shutil.copytree(hf_dir, path)
        os.remove(path / "model.safetensors")
        (path / "pytorch_model.bin").write_bytes(b"\x80\x04")
        parts = ("pytorch_model.bin", "pickle", "safetensors")
    elif case == "unsupported config":
        shutil.copytree(hf_dir, path)
        config = json.loads((path / "config.json").read_text())
        config["activation_function"] = "relu"
        (path / "config.json").write_text(json.dumps(config))
        parts = ("activation_function", "config.json")
    elif case == "missing index":
        shutil.copytree(FIXTURE_DIR, path)
        os.remove(path / "model.ckpt.index")
        parts = ("model.ckpt.index",)
    else:
        parts = ("cannot read weights file", "No such file")
    assert_one_line_error(run_cli("--weights", str(path), "--prompt", "!"), str(path), *parts)


def test_bad_sampling_options_are_one_line(hf_dir):
    assert_one_line_error(run_cli("--temperature", "-1"), "--temperature")
    assert_one_line_error(run_cli("--temperature", "nan"), "--temperature")
    assert_one_line_error(run_cli("--top-k", "0"), "--top-k")
    assert_one_line_error(run_cli("--weights", FIXTURE_DIR, "--prompt", "!", "--top-k", "97"),
                          "--top-k 97", "96 tokens")
    assert_one_line_error(run_cli("--weights", FIXTURE_DIR, "--prompt", "Hello"),
                          "token 15496", "96 tokens")
