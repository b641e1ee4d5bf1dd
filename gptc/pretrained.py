"""OpenAI's GPT-2 weights: the loading functions of the book's section 5.5, without TensorFlow.

The book's three steps, under the book's names and signatures::

    settings, params = gptc.download_and_load_gpt2(model_size="124M", models_dir="gpt2")
    gpt = gptc.GPTModel(cfg)                  # cfg with qkv_bias=True, context 1024
    gptc.load_weights_into_gpt(gpt, params)

``load_gpt2_params_from_tf_ckpt(ckpt_path, settings)`` reads the checkpoint
with gptc's own reader (gptc/tf_checkpoint.py) and returns the book's
``params``: ``wte``, ``wpe``, ``g`` and ``b`` (the final layer norm) and
``blocks[i]["attn"]["c_attn"]["w"]`` and so on, the Conv1D weights with their
leading axis of 1 squeezed away, as the book's ``np.squeeze`` leaves them.

``gpt2_model_from_tf_ckpt(model_dir)`` skips the intermediate dict: it
builds the GPTModel (output head tied to the token embedding, as GPT-2's)
straight from the checkpoint, one memory-mapped tensor at a time.
"""
import contextlib
import os

import numpy as np

from .download import download_file
from .gpt2_layout import LM_HEAD, gpt2_tensor_shapes, load_gpt2_tensors
from .io import CheckpointFormatError
from .json_file import read_json_object
from .tf_checkpoint import CheckpointIndex, TFCheckpoint, latest_checkpoint

__all__ = ["download_and_load_gpt2", "load_gpt2_params_from_tf_ckpt", "load_weights_into_gpt",
           "gpt2_model_from_tf_ckpt", "gpt2_config_from_hparams", "read_hparams", "BASE_URL",
           "BACKUP_BASE_URL", "MODEL_SIZES", "MODEL_FILES"]

#: Where OpenAI publishes the checkpoints: BASE_URL/124M/model.ckpt.index, ...
BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
#: The book's mirror of the same files, tried when BASE_URL fails.
BACKUP_BASE_URL = "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2"

#: OpenAI's sizes and the matching gptc.gpt2_config names.
MODEL_SIZES = {"124M": "gpt2-small", "355M": "gpt2-medium", "774M": "gpt2-large",
               "1558M": "gpt2-xl"}

#: What the loader reads, in the order fetched (the index tells the data
#: file's size). OpenAI's directory also holds encoder.json and vocab.bpe,
#: which gptc ships itself, and model.ckpt.meta, TensorFlow's graph, which
#: nothing here needs.
MODEL_FILES = ("checkpoint", "hparams.json", "model.ckpt.index",
               "model.ckpt.data-00000-of-00001")

_HPARAMS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")


def _checked_hparams(settings, where):
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be the dict of hparams.json, got "
                        f"{type(settings).__name__}")
    for key in _HPARAMS:
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CheckpointFormatError(f"{where}: {key} must be a positive integer, got "
                                        f"{value!r} (hparams.json holds "
                                        f"{', '.join(_HPARAMS)})")
    if settings["n_embd"] % settings["n_head"]:
        raise CheckpointFormatError(f"{where}: n_embd {settings['n_embd']} is not divisible "
                                    f"by n_head {settings['n_head']}")
    return settings


def gpt2_config_from_hparams(settings):
    """The book's model config for OpenAI's hparams.json (``n_vocab``, ``n_ctx``,
    ``n_embd``, ``n_head``, ``n_layer``): GPT-2 has query/key/value biases."""
    settings = _checked_hparams(settings, "hparams.json")
    return {"vocab_size": settings["n_vocab"], "context_length": settings["n_ctx"],
            "emb_dim": settings["n_embd"], "n_heads": settings["n_head"],
            "n_layers": settings["n_layer"], "drop_rate": 0.1, "qkv_bias": True}


def _tf_name(name):
    return "model/" + name


def _tf_shape(name, shape):
    """OpenAI stores the Conv1D weights as [1, in, out]."""
    return (1,) + shape if name.endswith("/w") else shape


def _open_checked(ckpt_path, settings):
    """The checkpoint at ``ckpt_path``, its variables checked against ``settings``."""
    checkpoint = TFCheckpoint(ckpt_path)
    where = checkpoint.index_path
    settings = _checked_hparams(settings, "hparams.json")
    expected = {_tf_name(name): _tf_shape(name, shape) for name, shape in gpt2_tensor_shapes(
        settings["n_vocab"], settings["n_ctx"], settings["n_embd"], settings["n_layer"]).items()}
    unexpected = sorted(set(checkpoint.entries) - set(expected))
    if unexpected:
        raise CheckpointFormatError(
            f"{where}: {unexpected[0]} is not a variable of GPT-2 with n_layer "
            f"{settings['n_layer']}" + (f" ({len(unexpected) - 1} more)" if unexpected[1:] else ""))
    for name, shape in expected.items():
        if name not in checkpoint.entries:
            raise CheckpointFormatError(f"{where}: the variable {name} is missing")
        found = checkpoint.entries[name].shape
        if checkpoint.entries[name].dtype.kind != "f":
            raise CheckpointFormatError(f"{where}: {name} holds "
                                        f"{checkpoint.entries[name].dtype.name}, not floats")
        if found != shape:
            raise CheckpointFormatError(
                f"{where}: {name} has shape {list(found)}, but hparams.json (n_vocab "
                f"{settings['n_vocab']}, n_ctx {settings['n_ctx']}, n_embd {settings['n_embd']}, "
                f"n_layer {settings['n_layer']}) implies {list(shape)}")
    return checkpoint


def load_gpt2_params_from_tf_ckpt(ckpt_path, settings):
    """The book's ``params`` dict from the TensorFlow checkpoint at ``ckpt_path``
    (a prefix such as "gpt2/124M/model.ckpt") for the hyperparameters
    ``settings`` (hparams.json as a dict).

    Every variable is checked (name, shape against ``settings``, CRC-32C) before
    it is returned; problems raise gptc.io.CheckpointFormatError naming the file.
    """
    checkpoint = _open_checked(ckpt_path, settings)
    params = {"blocks": [{} for _ in range(settings["n_layer"])]}
    for name, _ in checkpoint.variables():
        value = checkpoint.read(name)
        if name.endswith("/w"):
            value = value.reshape(value.shape[1:])
        parts = name.split("/")[1:]             # without "model/"
        target = params
        if parts[0].startswith("h"):
            target = params["blocks"][int(parts[0][1:])]
        for part in parts[1:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return params


class _ParamsSource:
    """The book's params dict, seen by GPT-2 name (gptc/gpt2_layout.py)."""

    def __init__(self, params):
        if not isinstance(params, dict) or not isinstance(params.get("blocks"), list):
            raise TypeError("params must be the dict load_gpt2_params_from_tf_ckpt returns "
                            "(wte, wpe, g, b and a list of blocks)")
        self.params = params

    def _value(self, name):
        name = "wte" if name == LM_HEAD else name
        parts = name.split("/")
        if parts[0] == "ln_f":
            parts = parts[1:]
        node = self.params
        if parts[0].startswith("h") and parts[0][1:].isdigit():
            index = int(parts[0][1:])
            if index >= len(self.params["blocks"]):
                return None
            node, parts = self.params["blocks"][index], parts[1:]
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def shape(self, name):
        value = self._value(name)
        return None if value is None else np.shape(value)

    def mapped(self, name):
        return contextlib.nullcontext(np.asarray(self._value(name)))


class _CheckpointSource:
    """A checked TFCheckpoint, seen by GPT-2 name, each tensor memory-mapped."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    def shape(self, name):
        entry = self.checkpoint.entries.get(_tf_name("wte" if name == LM_HEAD else name))
        if entry is None:
            return None
        return entry.shape[1:] if name.endswith("/w") else entry.shape

    @contextlib.contextmanager
    def mapped(self, name):
        with self.checkpoint.mapped(_tf_name("wte" if name == LM_HEAD else name)) as array:
            yield array.reshape(self.shape(name))


def load_weights_into_gpt(gpt, params):
    """Copy the book's ``params`` into ``gpt`` (a GPTModel built with
    ``qkv_bias=True`` and the matching sizes), as the book's section 5.5 does:
    c_attn split into query, key and value, Conv1D weights transposed, the
    output head given the token embedding. With ``tie_weights=True`` the
    output head *is* the token embedding, so it is filled once.

    Parameters are filled in place (they keep their identity); every shape is
    checked before anything changes, and a mismatch raises ValueError naming
    the tensor, the parameter and both shapes.
    """
    load_gpt2_tensors(gpt, _ParamsSource(params), "params")
    return gpt


def gpt2_model_from_tf_ckpt(model_dir):
    """A GPTModel (tied output head, eval mode) built from OpenAI's files in
    ``model_dir`` (hparams.json and the checkpoint named by its ``checkpoint``
    file), reading each tensor straight into its parameter."""
    from .nn import GPTModel
    from .nn.utils import skip_init
    settings = read_hparams(os.path.join(model_dir, "hparams.json"))
    prefix = latest_checkpoint(model_dir) or os.path.join(model_dir, "model.ckpt")
    checkpoint = _open_checked(prefix, settings)
    model = skip_init(GPTModel, gpt2_config_from_hparams(settings), tie_weights=True)
    load_gpt2_tensors(model, _CheckpointSource(checkpoint), checkpoint.index_path)
    return model.eval()


def read_hparams(path):
    """OpenAI's hparams.json at ``path``, checked (five positive integers)."""
    return _checked_hparams(read_json_object(path, ", ".join(_HPARAMS), 1 << 16), path)


def _complete(model_dir, name):
    """Whether ``name`` in ``model_dir`` is already whole. Only the data file is
    large; its size must be the one its index records."""
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        return False
    try:
        if name == "checkpoint":
            latest_checkpoint(model_dir)
        elif name == "hparams.json":
            read_hparams(path)
        elif name == "model.ckpt.index":
            CheckpointIndex(path)
        else:
            index = CheckpointIndex(os.path.join(model_dir, "model.ckpt.index"))
            return os.path.getsize(path) == index.data_size()
    except (OSError, ValueError):
        return False
    return True


def _data_size(model_dir):
    return CheckpointIndex(os.path.join(model_dir, "model.ckpt.index")).data_size()


def download_and_load_gpt2(model_size, models_dir, base_url=None, backup_base_url=None):
    """The book's function: OpenAI's GPT-2 ``model_size`` ("124M", "355M", "774M"
    or "1558M") in ``models_dir/model_size``, downloaded if needed, then read.
    Returns ``(settings, params)``: hparams.json and the book's params dict.

    Files already there and whole are used as they are (the data file is
    checked by its size against the index; the three small files by reading
    them). Others are fetched from ``base_url`` (default BASE_URL, OpenAI's),
    else from ``backup_base_url`` (default BACKUP_BASE_URL, the book's
    mirror), with a progress bar; an interrupted download is resumed. When
    both fail, DownloadError names the file and what each URL answered.
    """
    if model_size not in MODEL_SIZES:
        raise ValueError(f"model_size must be one of {', '.join(MODEL_SIZES)}, "
                         f"got {model_size!r}")
    base_url = BASE_URL if base_url is None else base_url
    backup_base_url = BACKUP_BASE_URL if backup_base_url is None else backup_base_url
    model_dir = os.path.join(os.fspath(models_dir), model_size)
    os.makedirs(model_dir, exist_ok=True)
    for name in MODEL_FILES:
        if _complete(model_dir, name):
            continue
        path = os.path.join(model_dir, name)
        expected = _data_size(model_dir) if name.startswith("model.ckpt.data") else None
        if os.path.isfile(path):
            # An incomplete file left under its final name (e.g. by the book's own
            # downloader): a shorter data file is resumed, anything else replaced.
            if expected is not None and os.path.getsize(path) < expected:
                os.replace(path, path + ".part")
            else:
                os.remove(path)
        download_file(f"{base_url}/{model_size}/{name}", path,
                      f"{backup_base_url}/{model_size}/{name}", expected_size=expected)
    settings = read_hparams(os.path.join(model_dir, "hparams.json"))
    prefix = latest_checkpoint(model_dir) or os.path.join(model_dir, "model.ckpt")
    return settings, load_gpt2_params_from_tf_ckpt(prefix, settings)
