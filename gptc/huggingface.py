"""Hugging Face's GPT-2 files, both ways: ``GPTModel.from_pretrained(path)`` and
``model.save_pretrained(path)``.

The layout is that of ``GPT2LMHeadModel.save_pretrained``: a directory with
``config.json`` and ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``). The tensors are GPT-2's (see
gptc/gpt2_layout.py: Conv1D weights stored (in, out), a fused ``c_attn``),
named ``transformer.h.0.attn.c_attn.weight`` and so on, or without the
``transformer.`` prefix as older files have them; ``lm_head.weight`` is
absent or equal to the token embedding when the head is tied; the attention
mask buffers (``attn.bias``, ``attn.masked_bias``) of older files are ignored.

The config's ``n_embd``, ``n_layer``, ``n_head``, ``n_positions``,
``vocab_size``, ``layer_norm_epsilon``, the dropout rates and
``tie_word_embeddings`` become the book's config; a setting the book's model
cannot represent (another activation, ``scale_attn_by_inverse_layer_idx``,
cross-attention, ...) is refused with an error naming the field.

Reading never unpickles: ``pytorch_model.bin`` is refused with a message to
convert it. The safetensors header is parsed and bounds-checked here, and
each tensor is copied from a memory map of just its bytes into its parameter,
so loading peaks at about the parameters plus the largest tensor.
"""
import contextlib
import json
import math
import os
import re
import struct

import numpy as np

from .gpt2_layout import LM_HEAD, gpt2_tensor_shapes, gpt2_tensors, load_gpt2_tensors
from .io import CheckpointFormatError
from .json_file import read_json_object
from .mapped_file import mapped_array

__all__ = ["from_pretrained", "save_pretrained", "read_config", "weight_file_names"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# Formats that hold pickles (or need another framework): refused, never opened.
_PICKLED_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")

# safetensors' element types that can hold GPT-2's weights. BF16 is widened
# to float32 by a bit shift (NumPy has no bfloat16).
_FLOAT_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_HEADER_BYTES = 100_000_000          # the bound the safetensors library itself sets

# GPT2Config's defaults, used for fields a config.json leaves out.
_DEFAULTS = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
             "n_head": 12, "n_inner": None, "activation_function": "gelu_new",
             "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
             "layer_norm_epsilon": 1e-5, "scale_attn_weights": True,
             "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
             "tie_word_embeddings": True}
# Both names denote GELU's tanh approximation, the book's GELU.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")


def read_config(path):
    """The book's config from a GPT-2 ``config.json``: (cfg, layer_norm_epsilon,
    tie_word_embeddings). Raises CheckpointFormatError naming the field a
    GPTModel cannot represent."""
    path = os.fspath(path)
    given = read_json_object(path, "GPT-2's configuration")
    config = dict(_DEFAULTS, **given)

    def refuse(field, expected):
        raise CheckpointFormatError(f"{path}: {field} is {config[field]!r}, but the book's "
                                    f"GPTModel supports only {expected}")

    if given.get("model_type", "gpt2") != "gpt2":
        raise CheckpointFormatError(f"{path}: model_type is {given['model_type']!r}, not "
                                    "'gpt2'")
    for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        value = config[field]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            refuse(field, "a positive integer")
    if config["n_embd"] % config["n_head"]:
        refuse("n_head", f"a divisor of n_embd ({config['n_embd']})")
    if config["activation_function"] not in _TANH_GELU:
        refuse("activation_function", "GELU's tanh approximation (" + " or ".join(
            repr(a) for a in _TANH_GELU) + ")")
    if config["n_inner"] not in (None, 4 * config["n_embd"]):
        refuse("n_inner", f"None or 4 * n_embd = {4 * config['n_embd']}")
    for field, expected in (("scale_attn_weights", True),
                            ("scale_attn_by_inverse_layer_idx", False),
                            ("add_cross_attention", False)):
        if config[field] is not expected:
            refuse(field, repr(expected).lower())
    rates = {field: config[field] for field in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
    for field, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            refuse(field, "a dropout rate in [0, 1]")
    if len(set(rates.values())) > 1:
        refuse("attn_pdrop" if rates["attn_pdrop"] != rates["resid_pdrop"] else "embd_pdrop",
               f"the same rate as resid_pdrop ({rates['resid_pdrop']}): the book's model has "
               "one drop_rate")
    eps = config["layer_norm_epsilon"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (
            math.isfinite(eps) and eps > 0):
        refuse("layer_norm_epsilon", "a positive number")
    if not isinstance(config["tie_word_embeddings"], bool):
        refuse("tie_word_embeddings", "true or false")
    cfg = {"vocab_size": config["vocab_size"], "context_length": config["n_positions"],
           "emb_dim": config["n_embd"], "n_heads": config["n_head"],
           "n_layers": config["n_layer"], "drop_rate": rates["resid_pdrop"], "qkv_bias": True}
    return cfg, float(eps), config["tie_word_embeddings"]


class _SafetensorsFile:
    """The header of one safetensors file, parsed and checked: name -> (dtype,
    shape, absolute byte offset)."""

    def __init__(self, path):
        self.path = path
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                self.fail(f"{size} bytes, too short for the 8-byte header length")
            header_len = struct.unpack("<Q", head)[0]
            if header_len > min(_MAX_HEADER_BYTES, size - 8):
                self.fail(f"the header claims {header_len} bytes, but the file has {size}")
            raw = f.read(header_len)
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            self.fail(f"the header is not valid JSON ({exc})")
        if not isinstance(header, dict):
            self.fail("the header is not a JSON object")
        self.data_start = 8 + header_len
        data_size = size - self.data_start
        self.tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
                if dtype not in _ITEMSIZE or not all(
                        isinstance(d, int) and not isinstance(d, bool) and d >= 0
                        for d in list(shape) + [begin, end]):
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                self.fail(f"the header entry of {name!r} is malformed: {str(info)[:200]}")
            nbytes = math.prod(shape) * _ITEMSIZE[dtype]
            if end - begin != nbytes or end > data_size:
                self.fail(f"{name} ({dtype}, shape {shape}) is said to lie at bytes "
                          f"{begin}..{end} of the {data_size} data bytes; its shape needs "
                          f"{nbytes}")
            self.tensors[name] = (dtype, tuple(shape), self.data_start + begin)

    def fail(self, what):
        raise CheckpointFormatError(f"{self.path}: {what}")

    @contextlib.contextmanager
    def mapped(self, name):
        """Tensor ``name`` as a float array, valid inside the block."""
        dtype, shape, offset = self.tensors[name]
        with open(self.path, "rb") as f, mapped_array(f, offset, _FLOAT_DTYPES[dtype],
                                                      shape) as array:
            if dtype == "BF16":
                yield (array.astype(np.uint32) << 16).view(np.float32)
            else:
                yield array


def _hf_name(name):
    """GPT-2's name (gptc/gpt2_layout.py) -> the key of GPT2LMHeadModel's state dict,
    without "transformer.": h3/attn/c_attn/w -> h.3.attn.c_attn.weight."""
    if name == LM_HEAD:
        return "lm_head.weight"
    parts = name.split("/")
    last = {"w": "weight", "g": "weight", "b": "bias"}
    if len(parts) == 1:
        return f"{name}.weight"
    block = re.fullmatch(r"h(\d+)", parts[0])
    head = [f"h.{block.group(1)}"] if block else [parts[0]]
    return ".".join(head + parts[1:-1] + [last[parts[-1]]])


_IGNORED = re.compile(r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)")


class _HubSource:
    """The safetensors files of a Hugging Face directory, seen by GPT-2 name."""

    def __init__(self, directory, cfg, tied):
        self.location = {}                     # key -> the _SafetensorsFile holding it
        for filename in weight_file_names(directory):
            st = _SafetensorsFile(os.path.join(directory, filename))
            for key in st.tensors:
                self.location[key] = st
        keys = [k for k in self.location if not _IGNORED.fullmatch(k)]
        prefix = "transformer." if any(k.startswith("transformer.") for k in keys) else ""
        names = list(gpt2_tensor_shapes(cfg["vocab_size"], cfg["context_length"],
                                        cfg["emb_dim"], cfg["n_layers"]))
        self.keys = {name: prefix + _hf_name(name) for name in names}
        self.keys[LM_HEAD] = "lm_head.weight"
        known = set(self.keys.values())
        unknown = [k for k in keys if k not in known]
        if unknown:
            st = self.location[unknown[0]]
            raise CheckpointFormatError(
                f"{st.path}: {unknown[0]} is not a tensor of GPT2LMHeadModel with "
                f"{cfg['n_layers']} layers" + (f" ({len(unknown) - 1} more)"
                                                if unknown[1:] else ""))
        for key in keys:
            st = self.location[key]
            if st.tensors[key][0] not in _FLOAT_DTYPES:
                raise CheckpointFormatError(f"{st.path}: {key} holds {st.tensors[key][0]}, "
                                            "not floating-point weights")
        has_head = "lm_head.weight" in self.location
        if not tied and not has_head:
            raise CheckpointFormatError(
                f"{directory}: config.json sets tie_word_embeddings false, but the weights "
                "have no lm_head.weight")
        if tied and has_head:
            self._check_head_is_embedding()

    def _check_head_is_embedding(self):
        embedding = self.keys["wte"]
        if embedding not in self.location or self.shape(LM_HEAD) != self.shape("wte"):
            return                             # load_gpt2_tensors reports the problem
        with self.mapped("wte") as wte, self.mapped(LM_HEAD) as head:
            if not np.array_equal(wte, head):
                raise CheckpointFormatError(
                    f"{self.location['lm_head.weight'].path}: lm_head.weight differs from "
                    f"{embedding}, but config.json ties them (tie_word_embeddings true)")

    def shape(self, name):
        st = self.location.get(self.keys[name])
        return None if st is None else st.tensors[self.keys[name]][1]

    def mapped(self, name):
        return self.location[self.keys[name]].mapped(self.keys[name])


def weight_file_names(directory):
    """The safetensors files of ``directory``: model.safetensors, or the shards
    its index lists; a directory holding only pickles is refused."""
    if os.path.isfile(os.path.join(directory, WEIGHTS_NAME)):
        return [WEIGHTS_NAME]
    index_path = os.path.join(directory, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index_path):
        index = read_json_object(index_path, "a weight_map", 1 << 24)
        try:
            weight_map = index["weight_map"]
            names = sorted(set(weight_map.values()))
            if not all(isinstance(n, str) and n == os.path.basename(n) and n.endswith(
                    ".safetensors") and n not in (".", "..") for n in names):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointFormatError(f"{index_path}: not a safetensors index (a JSON "
                                        "weight_map from tensor names to .safetensors files "
                                        "in the same directory)") from None
        return names
    for name in _PICKLED_NAMES:
        if os.path.isfile(os.path.join(directory, name)):
            raise CheckpointFormatError(
                f"{os.path.join(directory, name)} is a pickle, which gptc never loads "
                "(unpickling can run arbitrary code). Convert it to safetensors first, "
                "e.g. with transformers: GPT2LMHeadModel.from_pretrained(DIR)"
                ".save_pretrained(DIR) writes model.safetensors")
    raise FileNotFoundError(2, f"no {WEIGHTS_NAME} (nor {WEIGHTS_INDEX_NAME}) in "
                               f"{directory}", os.path.join(directory, WEIGHTS_NAME))


def from_pretrained(path, model_cls=None):
    """A GPTModel (eval mode, as transformers returns it) from the Hugging Face
    GPT-2 directory ``path``; see the module's description."""
    from .nn import GPTModel, LayerNorm
    from .nn.utils import skip_init
    directory = os.fspath(path)
    if not os.path.isdir(directory):
        raise NotADirectoryError(20, "expected a directory holding config.json and "
                                     "model.safetensors", directory)
    cfg, eps, tied = read_config(os.path.join(directory, CONFIG_NAME))
    source = _HubSource(directory, cfg, tied)
    model = skip_init(model_cls or GPTModel, cfg, tie_weights=tied)
    for module in model.modules():
        if isinstance(module, LayerNorm):
            module.eps = eps
    load_gpt2_tensors(model, source, directory)
    return model.eval()


def _model_config(model):
    """config.json for ``model``, which must be the book's GPTModel exactly."""
    from .nn import LayerNorm
    if not getattr(model, "_is_book_model", lambda: False)():
        raise TypeError(f"save_pretrained writes the book's GPTModel; this "
                        f"{type(model).__name__} has submodules GPT2LMHeadModel does not have")
    block = model.trf_blocks[0]
    eps = {m.eps for m in model.modules() if isinstance(m, LayerNorm)}
    if len(eps) != 1:
        raise ValueError(f"the layer norms use different eps values {sorted(eps)}; GPT-2 has "
                         "one layer_norm_epsilon")
    vocab_size = model.tok_emb.num_embeddings
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
              "vocab_size": vocab_size, "n_positions": model.pos_emb.num_embeddings,
              "n_embd": model.tok_emb.embedding_dim, "n_layer": len(model.trf_blocks),
              "n_head": block.att.num_heads, "n_inner": None,
              "activation_function": "gelu_new", "resid_pdrop": block.drop_shortcut.p,
              "embd_pdrop": model.drop_emb.p, "attn_pdrop": block.att.dropout.p,
              "layer_norm_epsilon": eps.pop(), "initializer_range": 0.02,
              "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
              "reorder_and_upcast_attn": False, "use_cache": True,
              "tie_word_embeddings": model.out_head.weight is model.tok_emb.weight}
    if vocab_size == 50257:                   # GPT-2's vocabulary: <|endoftext|>
        config.update(bos_token_id=50256, eos_token_id=50256)
    return config


def _write_atomically(path, write):
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        write(f)
    os.replace(temporary, path)


def save_pretrained(model, path):
    """Write ``model`` (the book's GPTModel) to the directory ``path`` as
    ``GPT2LMHeadModel.save_pretrained`` does: config.json and model.safetensors
    (float32, keys with "transformer."), one tensor in memory at a time."""
    config = _model_config(model)
    directory = os.fspath(path)
    os.makedirs(directory, exist_ok=True)
    tensors = [("lm_head.weight" if name == LM_HEAD else "transformer." + _hf_name(name),
                shape, make) for name, shape, make in gpt2_tensors(model)]
    header, offset = {}, 0
    for key, shape, _ in tensors:
        nbytes = 4 * math.prod(shape)
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset,
                                                                              offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)     # the data starts 8-byte aligned

    def write_weights(f):
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for _, _, make in tensors:
            f.write(memoryview(np.ascontiguousarray(make(), dtype="<f4")).cast("B"))

    _write_atomically(os.path.join(directory, WEIGHTS_NAME), write_weights)
    _write_atomically(os.path.join(directory, CONFIG_NAME),
                      lambda f: f.write((json.dumps(config, indent=2) + "\n").encode()))
