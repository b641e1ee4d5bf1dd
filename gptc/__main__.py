"""``python -m gptc``: the end-to-end example of chapter 4.

With no arguments: build GPT-2 124M ("gpt2-small") after gptc.manual_seed(123),
print its configuration, parameter counts and memory, encode "Hello, I am"
and greedily generate 10 tokens with generate_text_simple. The weights are
random, so the continuation is gibberish, the same gibberish as the book's.
``--weights FILE`` loads a state dict saved with gptc.save instead.
"""
import argparse
import os
import sys
import time

import numpy as np

import gptc

DEFAULT_PROMPT = "Hello, I am"


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


def _prog():
    """ "gptc" when run as the installed script, else "python -m gptc"."""
    return "gptc" if os.path.basename(sys.argv[0]) == "gptc" else "python -m gptc"


def parse_args(argv=None):
    parser = _Parser(prog=_prog(), description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT,
                        help=f"text to continue (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=_int_in(0), default=10,
                        help="tokens to generate (default: 10)")
    parser.add_argument("--model", choices=list(gptc.GPT2_SIZES), default="gpt2-small",
                        help="GPT-2 size (default: gpt2-small, the book's GPT_CONFIG_124M)")
    parser.add_argument("--seed", type=_int_in(-2 ** 63, 2 ** 64), default=123,
                        help="gptc.manual_seed before building the model (default: 123)")
    parser.add_argument("--weights", metavar="FILE",
                        help="a safetensors state dict saved by gptc.save, for --model's "
                             "config (its context length and qkv biases are read from the file)")
    parser.add_argument("--int8", action="store_true",
                        help="generate with the Linear weights in int8 blocks "
                             "(model.to_dtype('int8')): faster, logits barely moved")
    parser.add_argument("--threads", type=_int_in(1),
                        help="threads for gptc's parallel loops (default: all CPUs)")
    parser.add_argument("--bpe-dir", metavar="DIR",
                        help="directory holding GPT-2's encoder.json and vocab.bpe "
                             "(default: $GPTC_BPE_DIR, then tiktoken's cache or download)")
    return parser.parse_args(argv)


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
    cfg = gptc.gpt2_config(args.model)
    tokenizer = _tokenizer(args.bpe_dir)
    state = _read_weights(args.weights) if args.weights else None
    if state is not None:
        cfg = _config_for_weights(cfg, state)
    encoded = _encode(tokenizer, args.prompt, cfg)

    start = time.perf_counter()
    gptc.manual_seed(args.seed)
    model = gptc.GPTModel(cfg)
    if state is not None:
        _load_weights(model, state, args.weights, args.model)
    model.eval()
    if args.int8:
        model.to_dtype("int8")
    build_seconds = time.perf_counter() - start

    source = f"weights from {args.weights}" if args.weights else f"random weights, seed {args.seed}"
    print(f"Model: {args.model} ({source})")
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

    start = time.perf_counter()
    out = _generate(model, idx, args.max_new_tokens, cfg["context_length"])
    gen_seconds = time.perf_counter() - start

    print(f"Output: {out[0].tolist()}")
    print(f"Output length: {out.shape[1]}")
    print(f"Decoded: {tokenizer.decode(out[0].tolist())}")
    rate = args.max_new_tokens / gen_seconds if gen_seconds > 0 else float("inf")
    print(f"Elapsed: {build_seconds:.2f} s to build the model, {gen_seconds:.2f} s to "
          f"generate {args.max_new_tokens} tokens ({rate:.2f} tokens/s)")


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
    return encoded


def _read_weights(path):
    try:
        return gptc.load(path)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read weights file {path}: {exc}") from None


def _config_for_weights(cfg, state):
    """--model's config with what the file itself fixes: its context length (a
    model trained as in chapter 5 uses 256) and whether it has qkv biases."""
    cfg = dict(cfg)
    pos = state.get("pos_emb.weight")
    if pos is not None and pos.ndim == 2 and pos.shape[0] > 0:
        cfg["context_length"] = int(pos.shape[0])
    cfg["qkv_bias"] = "trf_blocks.0.att.W_query.bias" in state
    return cfg


def _load_weights(model, state, path, model_name):
    """Load ``state`` into ``model``; a file that does not fit is one CLIError."""
    expected = model.state_dict()
    mismatched = [key for key, value in expected.items()
                  if key in state and tuple(state[key].shape) != value.shape]
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    problems = []
    if mismatched:
        key = mismatched[0]
        problems.append(f"{key!r} has shape {tuple(state[key].shape)} in the file, "
                        f"{model_name} needs {expected[key].shape}" + _more(mismatched))
    if missing:
        problems.append(f"{missing[0]!r} is missing from the file" + _more(missing))
    if unexpected:
        problems.append(f"{unexpected[0]!r} is not in {model_name}" + _more(unexpected))
    try:
        if problems:
            raise ValueError("; ".join(problems))
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise CLIError(f"weights file {path} does not fit --model {model_name}: {message}") \
            from None


def _more(keys):
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


def _generate(model, idx, max_new_tokens, context_size):
    """generate_text_simple one token at a time, with a progress counter on
    stderr when it is a terminal and generation takes more than a second."""
    show = sys.stderr.isatty()
    start = time.perf_counter()
    shown = False
    for step in range(1, max_new_tokens + 1):
        idx = gptc.generate_text_simple(model, idx, 1, context_size)
        if show and time.perf_counter() - start > 1.0:
            print(f"\rgenerating: {step}/{max_new_tokens} tokens", end="", file=sys.stderr,
                  flush=True)
            shown = True
    if shown:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    return idx


if __name__ == "__main__":
    sys.exit(main())
