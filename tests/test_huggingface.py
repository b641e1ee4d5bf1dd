"""Hugging Face GPT-2 files both ways: GPTModel.from_pretrained and save_pretrained,
against transformers' GPT2LMHeadModel (the oracle, run on the CPU torch)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gptc
from gptc.io import CheckpointFormatError
from conftest import REPO_ROOT, report

CONFIG = dict(vocab_size=120, n_positions=24, n_embd=48, n_layer=3, n_head=4)
IDS = np.array([[5, 17, 119, 0, 42, 42, 7], [1, 2, 3, 4, 5, 6, 7]])


@pytest.fixture(scope="module")
def transformers(torch):
    return pytest.importorskip("transformers")


def _hf_model(transformers, torch, seed=0, **overrides):
    """A random GPT2LMHeadModel of a small config, in eval mode."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**dict(CONFIG, **overrides))
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        # Non-trivial layer norms and biases, so that every tensor counts, and weights
        # three times GPT-2's initial scale, so that greedy choices are no near-ties.
        for name, param in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
            else:
                param.mul_(3.0)
    return model


def _hf_logits(torch, model, ids=IDS):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def _gptc_logits(model, ids=IDS):
    with gptc.no_grad():
        return np.asarray(model(ids))


@pytest.fixture
def saved(transformers, torch, tmp_path):
    """A random GPT2LMHeadModel and the directory its save_pretrained wrote."""
    model = _hf_model(transformers, torch)
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_save_pretrained_directory_loads_with_transformers_logits(saved, torch):
    """model.safetensors + config.json of save_pretrained: logits within 1e-5."""
    hf, path = saved
    assert os.path.isfile(path / "model.safetensors")
    model = gptc.GPTModel.from_pretrained(path)
    assert not model.training
    assert model.out_head.weight is model.tok_emb.weight        # GPT-2 ties its head
    report("logits", _gptc_logits(model), _hf_logits(torch, hf), atol=1e-5)


def test_greedy_ids_equal_transformers_generate(saved, torch):
    """gptc.generate (temperature 0) gives the ids of model.generate(do_sample=False),
    up to the full context."""
    hf, path = saved
    model = gptc.GPTModel.from_pretrained(path)
    prompt = IDS[:1]
    with torch.no_grad():
        prompt_t = torch.tensor(prompt)
        expected = hf.generate(prompt_t, attention_mask=torch.ones_like(prompt_t),
                               max_new_tokens=17, do_sample=False, pad_token_id=0).numpy()
    got = gptc.generate(model, prompt, max_new_tokens=17, context_size=CONFIG["n_positions"])
    print("greedy ids:", got.tolist())
    assert got.tolist() == expected.tolist()


def test_loading_draws_no_random_numbers(saved):
    """No random initialisation: the default generator is where it was."""
    _, path = saved
    gptc.manual_seed(3)
    state = gptc.get_rng_state()
    gptc.GPTModel.from_pretrained(path)
    assert np.array_equal(gptc.get_rng_state(), state)


def test_gptc_save_pretrained_opens_in_transformers(saved, transformers, torch, tmp_path):
    """A model loaded by gptc and written back with save_pretrained: transformers
    reads it and computes the same logits."""
    _, path = saved
    model = gptc.GPTModel.from_pretrained(path)
    out = tmp_path / "from-gptc"
    model.save_pretrained(out)
    back = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    report("logits", _hf_logits(torch, back), _gptc_logits(model), atol=1e-5)


def test_book_model_trained_in_gptc_opens_in_transformers(transformers, torch, tmp_path):
    """The book's own GPTModel (no qkv biases, untied head, another eps is not possible):
    saved with zero c_attn biases and its own lm_head, it computes the same logits in
    transformers, and loads back into gptc unchanged."""
    gptc.manual_seed(11)
    cfg = {"vocab_size": 120, "context_length": 24, "emb_dim": 48, "n_heads": 4,
           "n_layers": 2, "drop_rate": 0.1, "qkv_bias": False}
    model = gptc.GPTModel(cfg).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["n_head"] == 4
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    report("logits", _hf_logits(torch, back), _gptc_logits(model), atol=1e-5)
    again = gptc.GPTModel.from_pretrained(tmp_path)
    assert np.array_equal(_gptc_logits(again), _gptc_logits(model))


def test_untied_head_is_loaded_as_its_own_weight(transformers, torch, tmp_path):
    hf = _hf_model(transformers, torch, seed=4, tie_word_embeddings=False)
    with torch.no_grad():
        hf.lm_head.weight.normal_(std=0.1)
    hf.save_pretrained(tmp_path)
    model = gptc.GPTModel.from_pretrained(tmp_path)
    assert model.out_head.weight is not model.tok_emb.weight
    report("logits", _gptc_logits(model), _hf_logits(torch, hf), atol=1e-5)


def _write_old_layout(hf, path, dtype="float32"):
    """The older hub layout: no "transformer." prefix, the attention mask buffers
    (attn.bias, attn.masked_bias) stored, lm_head.weight stored although tied."""
    from safetensors.torch import save_file
    import torch
    state = {}
    for key, value in hf.state_dict().items():
        state[key.removeprefix("transformer.")] = value.to(getattr(torch, dtype)).contiguous()
    n = CONFIG["n_positions"]
    for i in range(CONFIG["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    state["lm_head.weight"] = state["wte.weight"].clone()
    os.makedirs(path, exist_ok=True)
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    hf.config.to_json_file(os.path.join(path, "config.json"))


def test_older_layout_without_prefix_and_with_buffers_loads(saved, torch, tmp_path):
    hf, _ = saved
    _write_old_layout(hf, tmp_path)
    model = gptc.GPTModel.from_pretrained(tmp_path)
    report("logits", _gptc_logits(model), _hf_logits(torch, hf), atol=1e-5)


@pytest.mark.parametrize("dtype, atol", [("float16", 0.05), ("bfloat16", 0.2)])
def test_half_precision_files_are_widened_to_float32(saved, torch, tmp_path, dtype, atol):
    """F16 and BF16 tensors load as the float32 values of those numbers."""
    hf, _ = saved
    _write_old_layout(hf, tmp_path, dtype)
    model = gptc.GPTModel.from_pretrained(tmp_path)
    wte = hf.transformer.wte.weight.detach().to(getattr(torch, dtype)).float().numpy()
    assert np.array_equal(model.tok_emb.weight, wte)
    report("logits", _gptc_logits(model), _hf_logits(torch, hf), atol=atol)


def test_sharded_safetensors_load(saved, torch, tmp_path):
    """model.safetensors.index.json and its shards, as save_pretrained writes large models."""
    hf, _ = saved
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert os.path.isfile(tmp_path / "model.safetensors.index.json")
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".safetensors")]) > 1
    model = gptc.GPTModel.from_pretrained(tmp_path)
    report("logits", _gptc_logits(model), _hf_logits(torch, hf), atol=1e-5)


def _expect_refusal(path, *parts):
    with pytest.raises(CheckpointFormatError) as info:
        gptc.GPTModel.from_pretrained(path)
    message = str(info.value)
    print(message)
    for part in parts:
        assert part in message, message


@pytest.mark.parametrize("field, value", [
    ("activation_function", "gelu"), ("activation_function", "relu"),
    ("scale_attn_by_inverse_layer_idx", True), ("scale_attn_weights", False),
    ("add_cross_attention", True), ("n_inner", 100), ("attn_pdrop", 0.3),
    ("layer_norm_epsilon", -1.0), ("n_head", 5), ("model_type", "gpt_neo")])
def test_unsupported_config_field_is_refused_by_name(saved, field, value):
    """A config the book's model cannot represent: CheckpointFormatError naming
    config.json and the field."""
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config[field] = value
    (path / "config.json").write_text(json.dumps(config))
    _expect_refusal(path, str(path / "config.json"), field)


def test_layer_norm_epsilon_is_applied(saved, transformers, torch, tmp_path):
    """A config with another layer_norm_epsilon sets every LayerNorm's eps."""
    hf = _hf_model(transformers, torch, seed=2, layer_norm_epsilon=1e-2)
    hf.save_pretrained(tmp_path)
    model = gptc.GPTModel.from_pretrained(tmp_path)
    assert model.final_norm.eps == 1e-2 and model.trf_blocks[0].norm1.eps == 1e-2
    report("logits", _gptc_logits(model), _hf_logits(torch, hf), atol=1e-5)


def test_pytorch_bin_is_refused_with_a_conversion_hint(tmp_path, saved):
    """pytorch_model.bin is a pickle: refused, never opened, the message says how to
    convert it."""
    _, path = saved
    os.remove(path / "model.safetensors")
    (path / "pytorch_model.bin").write_bytes(b"\x80\x04 not opened")
    _expect_refusal(path, str(path / "pytorch_model.bin"), "pickle", "safetensors",
                    "save_pretrained")


def test_truncated_safetensors_is_refused(saved):
    _, path = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    _expect_refusal(path, str(weights), "data bytes")


def test_header_longer_than_the_file_is_refused(saved):
    _, path = saved
    weights = path / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes((10 ** 12).to_bytes(8, "little") + raw[8:])
    _expect_refusal(path, str(weights), "header claims")


def test_unknown_tensor_is_refused(saved, tmp_path):
    """A classification head (score.weight) is not part of GPT2LMHeadModel."""
    from safetensors.numpy import load_file, save_file
    _, path = saved
    state = load_file(str(path / "model.safetensors"))
    state["score.weight"] = np.zeros((2, CONFIG["n_embd"]), np.float32)
    save_file(state, str(path / "model.safetensors"))
    _expect_refusal(path, "score.weight", "not a tensor of GPT2LMHeadModel")


def test_wrong_shape_is_refused_naming_the_tensor(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["n_embd"], config["n_head"] = 64, 4
    (path / "config.json").write_text(json.dumps(config))
    _expect_refusal(path, "wte", "(120, 48)", "(120, 64)")


def test_tied_config_with_a_different_head_is_refused(saved, tmp_path):
    from safetensors.numpy import load_file, save_file
    _, path = saved
    state = load_file(str(path / "model.safetensors"))
    state["lm_head.weight"] = state["transformer.wte.weight"] + 1
    save_file(state, str(path / "model.safetensors"))
    _expect_refusal(path, "lm_head.weight differs", "tie_word_embeddings")


def test_missing_weights_file_is_named(tmp_path, saved):
    _, path = saved
    os.remove(path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        gptc.GPTModel.from_pretrained(path)


def test_customised_model_is_not_saved(tmp_path):
    """A GPTModel with a replaced submodule is not GPT2LMHeadModel: refused."""
    gptc.manual_seed(1)
    model = gptc.GPTModel({"vocab_size": 50, "context_length": 8, "emb_dim": 16,
                           "n_heads": 2, "n_layers": 1, "drop_rate": 0.0, "qkv_bias": True})
    model.trf_blocks[0].ff.layers[1] = gptc.nn.ReLU()
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        model.save_pretrained(tmp_path)


def _load_probe():
    """benchmarks/load_pretrained.py's loading probe: the test checks the figures
    the README reports."""
    import importlib.util
    path = os.path.join(REPO_ROOT, "benchmarks", "load_pretrained.py")
    spec = importlib.util.spec_from_file_location("load_pretrained", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LOAD


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_loading_peaks_at_the_parameters_plus_ten_percent(tmp_path):
    """A 170 MB model (vocabulary 8000, 12 layers of width 512) written by save_pretrained
    and loaded in a fresh process: the peak resident memory grows by at most 1.1 times
    the parameters (the tensors are copied from per-tensor memory maps)."""
    cfg = {"vocab_size": 8000, "context_length": 1024, "emb_dim": 512, "n_heads": 8,
           "n_layers": 12, "drop_rate": 0.0, "qkv_bias": True}
    gptc.manual_seed(0)
    gptc.GPTModel(cfg, tie_weights=True).save_pretrained(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(gptc.__file__)), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", _load_probe(), "safetensors", str(tmp_path)],
                            env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    before, peak, params, seconds = (float(v) for v in result.stdout.split())
    growth = (peak - before) / params
    print(f"parameters {params / 2**20:.1f} MiB, peak grew by {(peak - before) / 2**20:.1f} "
          f"MiB = {growth:.3f} x the parameters (load took {seconds:.2f} s)")
    assert growth <= 1.10


def test_model_with_a_forward_hook_is_saved(transformers, torch, tmp_path):
    """Hooks change no weight: a hooked model saves, and transformers computes its logits."""
    gptc.manual_seed(2)
    model = gptc.GPTModel({"vocab_size": 50, "context_length": 8, "emb_dim": 16,
                           "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
                           "qkv_bias": True}).eval()
    handle = model.trf_blocks[0].register_forward_hook(lambda module, args, output: None)
    model.save_pretrained(tmp_path)
    handle.remove()
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = np.array([[1, 2, 3, 49]])
    report("logits", _hf_logits(torch, back, ids), _gptc_logits(model, ids), atol=1e-5)
