"""``python -m gptc``: the end-to-end example of chapter 4, and real GPT-2 weights.

With no arguments: build GPT-2 124M ("gpt2-small") after gptc.manual_seed(123),
print its configuration, parameter counts and memory, encode "Hello, I am"
and greedily generate 10 tokens. The weights are random, so the continuation
is gibberish, the same gibberish as the book's.

``--weights PATH`` loads trained weights instead: a safetensors state dict
saved with gptc.save (for --model's configuration), a Hugging Face GPT-2
directory (config.json + model.safetensors) or a directory of OpenAI's
checkpoint (hparams.json + model.ckpt.*); the directories carry their own
configuration. ``--temperature`` and ``--top-k`` sample as chapter 5's
generate does. The text is printed as it is generated.
"""
import argparse
import codecs
import os
import sys
import time

import numpy as np

import gptc
from gptc import huggingface, pretrained
from gptc.nn.utils import skip_init

DEFAULT_PROMPT = "Hello, I am"
DEFAULT_MODEL = "gpt2-small"


class CLIError(Exception):
    """An error to report as one line on stderr, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line instead of argparse's usage block.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_in(low, high=None):
    """An argparse type: an integer in [low, high)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value >= high):
            bounds = f"at least {low}" if high is None else f"in [{low}, {high})"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    return parse


def _temperature(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _prog():
    """ "gptc" when run as the installed script, else "python -m gptc"."""
    return "gptc" if os.path.basename(sys.argv[0]) == "gptc" else "python -m gptc"


def parse_args(argv=None):
    parser = _Parser(prog=_prog(), description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT,
                        help=f"text to continue (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=_int_in(0), default=10,
                        help="tokens to generate (default: 10)")
    parser.add_argument("--model", choices=list(gptc.GPT2_SIZES),
                        help=f"GPT-2 size (default: {DEFAULT_MODEL}, the book's "
                             "GPT_CONFIG_124M; with a weights directory: the size its files "
                             "give, which --model must then match)")
    parser.add_argument("--seed", type=_int_in(-2 ** 63, 2 ** 64), default=123,
                        help="gptc.manual_seed before building the model and sampling "
                             "(default: 123)")
    parser.add_argument("--weights", metavar="PATH",
                        help="trained weights: a safetensors state dict saved by gptc.save "
                             "(for --model's config; its context length and qkv biases are "
                             "read from the file), a Hugging Face GPT-2 directory "
                             "(config.json, model.safetensors) or a directory of OpenAI's "
                             "checkpoint (hparams.json, model.ckpt.*)")
    parser.add_argument("--temperature", type=_temperature, default=0.0,
                        help="sample from softmax(logits / T); 0 takes the most likely token "
                             "(default: 0, greedy)")
    parser.add_argument("--top-k", type=_int_in(1),
                        help="sample among the k most likely tokens only (default: all)")
    parser.add_argument("--bf16", action="store_true",
                        help="run the linear layers with bfloat16 weights "
                             "(model.to_dtype('bfloat16')): about twice the tokens/s")
    parser.add_argument("--int8", action="store_true",
                        help="run the linear layers with int8 weights, blocks of 32 with a "
                             "scale each (model.to_dtype('int8')): faster still than --bf16")
    parser.add_argument("--threads", type=_int_in(1),
                        help="threads for gptc's parallel loops (default: all CPUs)")
    parser.add_argument("--bpe-dir", metavar="DIR",
                        help="directory holding GPT-2's encoder.json and vocab.bpe "
                             "(default: $GPTC_BPE_DIR, else the copies shipped with gptc)")
    args = parser.parse_args(argv)
    if args.bf16 and args.int8:
        parser.error("--bf16 and --int8 exclude each other")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except CLIError as exc:
        print(f"{_prog()}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_prog()}: interrupted", file=sys.stderr)
        return 130
    return 0


def run(args):
    if args.threads is not None:
        gptc.set_num_threads(args.threads)
    tokenizer = _tokenizer(args.bpe_dir)
    weights = _Weights(args.weights, args.model) if args.weights else None
    cfg = weights.cfg if weights else gptc.gpt2_config(args.model or DEFAULT_MODEL)
    encoded = _encode(tokenizer, args.prompt, cfg)
    if args.top_k is not None and args.top_k > cfg["vocab_size"]:
        raise CLIError(f"--top-k {args.top_k} is more than the model's vocabulary of "
                       f"{cfg['vocab_size']} tokens")

    start = time.perf_counter()
    gptc.manual_seed(args.seed)
    model = weights.build() if weights else gptc.GPTModel(cfg)
    model.eval()
    if args.bf16:
        model.to_dtype("bfloat16")
    if args.int8:
        model.to_dtype("int8")
    build_seconds = time.perf_counter() - start

    name = weights.name if weights else args.model or DEFAULT_MODEL
    source = (f"{weights.kind} from {args.weights}" if weights
              else f"random weights, seed {args.seed}")
    dtype = ", bfloat16" if args.bf16 else ", int8" if args.int8 else ""
    print(f"Model: {name} ({source}{dtype})")
    print("Configuration:")
    for key, value in cfg.items():
        print(f"  {key}: {value}")
    total = sum(p.numel() for p in model.parameters())
    print(f"Total number of parameters: {total:,}")
    print(f"Parameters without the output layer: {total - model.out_head.weight.numel():,}")
    size_mb = sum(p.nbytes for p in model.parameters()) / 1024 ** 2
    print(f"Memory for the parameters: {size_mb:.2f} MB")

    print(f"Prompt: {args.prompt!r}")
    print(f"Encoded: {encoded}")
    idx = np.array([encoded], dtype=np.int64)
    print(f"Encoded shape: {idx.shape}")

    print(f"Text: {args.prompt}", end="", flush=True)
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def show(token):
        print(text.decode(tokenizer.decode_single_token_bytes(token)), end="", flush=True)

    gptc.manual_seed(args.seed)
    start = time.perf_counter()
    out = _generate(model, idx, args.max_new_tokens, cfg["context_length"], args.temperature,
                    args.top_k, on_token=show)
    gen_seconds = time.perf_counter() - start
    print(text.decode(b"", final=True))

    print(f"Output: {out[0].tolist()}")
    print(f"Output length: {out.shape[1]}")
    print(f"Decoded: {tokenizer.decode(out[0].tolist())}")
    generated = out.shape[1] - idx.shape[1]
    rate = generated / gen_seconds if gen_seconds > 0 else float("inf")
    print(f"Elapsed: {build_seconds:.2f} s to {'load' if weights else 'build'} the model, "
          f"{gen_seconds:.2f} s to generate {generated} tokens ({rate:.2f} tokens/s)")


class _Weights:
    """--weights PATH: what it is, the configuration its files give, and how to
    build the model from them (never by first drawing random weights)."""

    def __init__(self, path, model_name):
        self.path = path
        if os.path.isdir(path):
            self._directory(path, model_name)
        else:
            self._state_dict_file(path, model_name or DEFAULT_MODEL)

    def _directory(self, path, model_name):
        hf = any(os.path.isfile(os.path.join(path, n)) for n in (
            huggingface.CONFIG_NAME, "pytorch_model.bin"))
        openai = os.path.isfile(os.path.join(path, "hparams.json"))
        if not (hf or openai):
            raise CLIError(f"weights directory {path} holds neither config.json (Hugging "
                           "Face) nor hparams.json and model.ckpt.* (OpenAI's checkpoint)")
        try:
            if hf:
                self.kind = "Hugging Face weights"
                self.cfg, _, _ = huggingface.read_config(os.path.join(path, "config.json"))
                huggingface.weight_file_names(path)      # refuses pickles before any work
                self.build = lambda: huggingface.from_pretrained(path)
            else:
                self.kind = "OpenAI's checkpoint"
                self.cfg = pretrained.gpt2_config_from_hparams(
                    pretrained.read_hparams(os.path.join(path, "hparams.json")))
                self.build = lambda: pretrained.gpt2_model_from_tf_ckpt(path)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read weights directory {path}: {exc}") from None
        self.name = next((name for name, sizes in gptc.GPT2_SIZES.items()
                          if all(self.cfg[k] == v for k, v in sizes.items())
                          and self.cfg["vocab_size"] == 50257), "custom")
        if model_name is not None and model_name != self.name:
            sizes = gptc.GPT2_SIZES[model_name]
            raise CLIError(f"the weights in {path} are {self.name} (emb_dim "
                           f"{self.cfg['emb_dim']}, {self.cfg['n_layers']} layers, "
                           f"{self.cfg['n_heads']} heads), not --model {model_name} (emb_dim "
                           f"{sizes['emb_dim']}, {sizes['n_layers']} layers, "
                           f"{sizes['n_heads']} heads)")
        build = self.build

        def build_checked():
            try:
                return build()
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise CLIError(f"cannot read weights directory {path}: {exc}") from None
        self.build = build_checked

    def _state_dict_file(self, path, model_name):
        self.kind, self.name = "weights", model_name
        try:
            state = gptc.load(path)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read weights file {path}: {exc}") from None
        if any(k.startswith(("transformer.", "wte.")) for k in state):
            raise CLIError(f"weights file {path} is in Hugging Face's layout: pass the "
                           "directory that holds it and its config.json")
        # --model's config with what the file itself fixes: its context length (a
        # model trained as in chapter 5 uses 256) and whether it has qkv biases.
        self.cfg = dict(gptc.gpt2_config(model_name))
        pos = state.get("pos_emb.weight")
        if pos is not None and pos.ndim == 2 and pos.shape[0] > 0:
            self.cfg["context_length"] = int(pos.shape[0])
        self.cfg["qkv_bias"] = "trf_blocks.0.att.W_query.bias" in state
        self.build = lambda: self._load_state(state)

    def _load_state(self, state):
        """The model of self.cfg filled from ``state``; load_state_dict's own checks
        (shapes, tied values) apply, and every key must be used and filled."""
        model = skip_init(gptc.GPTModel, self.cfg)
        try:
            result = model.load_state_dict(state, strict=False)
            problems = [f"{k!r} is missing from the file" for k in result.missing_keys[:1]] + \
                [f"{k!r} is not in {self.name}" for k in result.unexpected_keys[:1]]
            if problems:
                more = len(result.missing_keys) + len(result.unexpected_keys) - len(problems)
                raise ValueError("; ".join(problems) + (f" (and {more} more)" if more else ""))
        except (KeyError, ValueError, TypeError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise CLIError(f"weights file {self.path} does not fit --model {self.name}: "
                           f"{message}") from None
        return model


def _tokenizer(bpe_dir):
    try:
        return gptc.get_tokenizer(bpe_dir)
    except gptc.TokenizerError as exc:
        raise CLIError(str(exc)) from None


def _encode(tokenizer, prompt, cfg):
    encoded = tokenizer.encode(prompt, allowed_special={"<|endoftext|>"})
    if not encoded:
        raise CLIError("the prompt is empty: give at least one token with --prompt")
    if len(encoded) > cfg["context_length"]:
        raise CLIError(f"the prompt is {len(encoded)} tokens long, more than the model's "
                       f"context of {cfg['context_length']} tokens")
    outside = [t for t in encoded if t >= cfg["vocab_size"]]
    if outside:
        raise CLIError(f"the prompt holds token {outside[0]}, outside the model's vocabulary "
                       f"of {cfg['vocab_size']} tokens (GPT-2's tokenizer has 50257)")
    return encoded


def _generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None,
              on_token=None):
    """gptc.generate one step at a time (gptc.generate_stream), calling
    ``on_token(id)`` for each new token of the first row; with stderr a terminal
    and stdout not (the text going to a file), a progress counter on stderr
    when generation takes more than a second."""
    show = sys.stderr.isatty() and not sys.stdout.isatty()
    start = time.perf_counter()
    shown = False
    columns = []
    for step, column in enumerate(gptc.generate_stream(model, idx, max_new_tokens, context_size,
                                                       temperature, top_k), 1):
        columns.append(column[:, None])
        if on_token is not None:
            on_token(int(column[0]))
        if show and time.perf_counter() - start > 1.0:
            print(f"\rgenerating: {step}/{max_new_tokens} tokens", end="", file=sys.stderr,
                  flush=True)
            shown = True
    if shown:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    return np.concatenate([idx] + columns, axis=1)


if __name__ == "__main__":
    sys.exit(main())
