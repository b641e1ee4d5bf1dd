"""`python -m gptc`: the chapter's end-to-end example from the command line.

Each run is a real subprocess that imports the same gptc as the test suite
(PYTHONPATH points at the directory holding the package under test: the
installed one in CI, the in-place build in a work tree), without GPTC_BPE_DIR:
the GPT-2 tokenizer files are the package's own.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import gptc
from gptc.tokenizer import PACKAGE_BPE_DIR
from conftest import small_config

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(gptc.__file__)))
# Subprocesses start in an empty directory: `python -m`/`-c` put the current
# directory first on sys.path, and a source checkout there (no compiled _C)
# would shadow the package under test.
NEUTRAL_CWD = tempfile.mkdtemp(prefix="gptc-cli-")

BOOK_IDS = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267, 49706, 43231,
            47062, 34657]
BOOK_TEXT = "Hello, I am Featureiman Byeswickattribute argue logger Normandy Compton analogous"

def run_cli(*args, code=None, timeout=600):
    """Run `python -m gptc ARGS` (or `python -c CODE ARGS`); return the CompletedProcess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    env.pop("GPTC_BPE_DIR", None)
    command = [sys.executable] + (["-c", code] if code else ["-m", "gptc"]) + list(args)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=NEUTRAL_CWD)


def assert_one_line_error(result, *parts):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def output_ids(stdout):
    line = next(line for line in stdout.splitlines() if line.startswith("Output: "))
    return [int(t) for t in line[len("Output: "):].strip("[]").split(",")]


@pytest.fixture(scope="module")
def default_run():
    return run_cli()


def test_default_run_prints_the_books_numbers(default_run):
    """With no arguments: GPT-2 124M's parameter counts and memory, the encoded prompt."""
    assert default_run.returncode == 0, default_run.stderr
    out = default_run.stdout
    for part in ("emb_dim: 768", "n_layers: 12", "context_length: 1024", "163,009,536",
                 "124,412,160", "621.83 MB", "Encoded: [15496, 11, 314, 716]",
                 "Encoded shape: (1, 4)", "tokens/s"):
        assert part in out, part


def test_default_run_generates_the_books_tokens(default_run):
    """The seed-123 model continues "Hello, I am" with exactly the book's 10 tokens."""
    assert default_run.returncode == 0, default_run.stderr
    assert output_ids(default_run.stdout) == BOOK_IDS
    assert "Output length: 14" in default_run.stdout
    assert f"Decoded: {BOOK_TEXT}\n" in default_run.stdout
    assert default_run.stderr == ""          # no progress output when stderr is not a terminal


def test_max_new_tokens_threads_and_bpe_dir():
    """--max-new-tokens 3 (on one thread, tokenizer from --bpe-dir) gives the first 3
    of the book's new tokens."""
    result = run_cli("--max-new-tokens", "3", "--threads", "1", "--bpe-dir", PACKAGE_BPE_DIR)
    assert result.returncode == 0, result.stderr
    assert output_ids(result.stdout) == BOOK_IDS[:7]
    assert "Output length: 7" in result.stdout


def test_int8_weights_keep_the_books_tokens():
    """--int8 generates with the Linear weights in int8 blocks (model.to_dtype('int8')):
    the seed-123 model's greedy continuation is still the book's."""
    result = run_cli("--int8", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert output_ids(result.stdout) == BOOK_IDS[:8]


def test_weights_file_replaces_the_seed(tmp_path):
    """--weights loads a gptc.save file: the seed-123 state dict, run with another
    --seed, still gives the book's tokens."""
    gptc.manual_seed(123)
    model = gptc.GPTModel(gptc.gpt2_config("gpt2-small"))
    path = tmp_path / "gpt2-small-seed123.safetensors"
    gptc.save(model.state_dict(), path)
    del model
    result = run_cli("--weights", str(path), "--seed", "7", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert output_ids(result.stdout) == BOOK_IDS[:8]
    assert str(path) in result.stdout


def test_weights_of_another_config_are_one_clear_error(tmp_path):
    """A small-config file given for gpt2-small: one line naming a mismatched tensor."""
    gptc.manual_seed(1)
    path = tmp_path / "small.safetensors"
    gptc.save(gptc.GPTModel(small_config()).state_dict(), path)
    result = run_cli("--weights", str(path), "--max-new-tokens", "1")
    assert_one_line_error(result, str(path), "gpt2-small", "tok_emb.weight", "(1000, 72)",
                          "(50257, 768)")


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_unreadable_weights_file(tmp_path, kind):
    """A missing or non-safetensors weights file: one line, before building the model."""
    path = tmp_path / "weights.safetensors"
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(1000))
    result = run_cli("--weights", str(path))
    assert_one_line_error(result, "cannot read weights file", str(path))


def test_unknown_model_is_rejected():
    """--model outside the four GPT-2 sizes: argparse's error, on one line, exit 2."""
    result = run_cli("--model", "gpt2-huge")
    assert result.returncode == 2
    assert_one_line_error(result, "invalid choice", "gpt2-huge", "gpt2-xl")


def test_bad_numbers_are_rejected():
    """A negative --max-new-tokens, zero --threads or a seed beyond 64 bits: one line, exit 2."""
    assert_one_line_error(run_cli("--max-new-tokens", "-1"), "--max-new-tokens")
    assert_one_line_error(run_cli("--threads", "0"), "--threads")
    assert_one_line_error(run_cli("--seed", str(2 ** 64)), "--seed")
    assert_one_line_error(run_cli("--seed", "abc"), "--seed", "'abc'")


def test_prompt_longer_than_the_context():
    """A prompt of more than 1024 tokens: one line giving both lengths."""
    result = run_cli("--prompt", ("hello " * 1100).strip())
    assert_one_line_error(result, "1100 tokens", "1024")


def test_empty_prompt():
    """An empty prompt has nothing to continue: one line."""
    assert_one_line_error(run_cli("--prompt", ""), "prompt is empty")


def test_missing_tokenizer_files(tmp_path):
    """No tokenizer files (the package's copies removed too) and no tiktoken route:
    one line saying what to do."""
    code = ("import runpy, gptc.tokenizer as t\n"
            "def offline():\n"
            "    raise ConnectionError('offline')\n"
            "t._encoding_from_tiktoken = offline\n"
            f"t.PACKAGE_BPE_DIR = {str(tmp_path / 'removed')!r}\n"
            "runpy.run_module('gptc', run_name='__main__', alter_sys=True)\n")
    missing = tmp_path / "no-bpe"
    result = run_cli("--bpe-dir", str(missing), code=code)
    assert_one_line_error(result, "encoder.json", "vocab.bpe", "GPTC_BPE_DIR", str(missing))


def test_help_lists_the_options():
    """--help documents every option."""
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--prompt", "--max-new-tokens", "--model", "--seed", "--weights",
                   "--int8", "--threads", "--bpe-dir"):
        assert option in result.stdout


class _FakeModel:
    """Logits that always favour token (last token + 1)."""

    def __call__(self, idx):
        logits = np.zeros((idx.shape[0], idx.shape[1], 10), dtype=np.float32)
        logits[:, -1, (idx[:, -1] + 1) % 10] = 1.0
        return logits


class _Terminal:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_counter_on_a_slow_terminal(monkeypatch):
    """On a terminal, slow generation shows a \\r counter that is cleared at the end;
    the tokens are those of one generate_text_simple call."""
    from gptc import __main__ as cli
    clock = iter(range(0, 1000, 2))               # every reading is 2 s after the last
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    terminal = _Terminal()
    monkeypatch.setattr(cli.sys, "stderr", terminal)
    idx = np.array([[3]])
    out = cli._generate(_FakeModel(), idx, 4, context_size=8)
    assert out.tolist() == gptc.generate_text_simple(_FakeModel(), idx, 4, 8).tolist()
    assert "\rgenerating: 4/4 tokens" in terminal.text
    assert terminal.text.endswith("\r\033[K")
