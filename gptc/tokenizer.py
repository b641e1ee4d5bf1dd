"""The GPT-2 byte-pair encoding, as tiktoken's "gpt2" encoding, usable offline.

The book tokenizes with ``tiktoken.get_encoding("gpt2")``, which downloads
GPT-2's two tokenizer files (encoder.json and vocab.bpe) on first use.
``gptc.get_tokenizer()`` returns the same ``tiktoken.Encoding`` built from
local copies of those files, so nothing needs the network. gptc ships them
(``gptc/gpt2_bpe/``, with OpenAI's licence beside them); it looks in

1. the directory passed as ``bpe_dir``;
2. the directory named by the environment variable ``GPTC_BPE_DIR``;
3. the copies inside the package;
4. failing all three (a package whose data files were removed), tiktoken's
   own route: its cache (``TIKTOKEN_CACHE_DIR``), then a download.

Local files are checked against the sha256 values tiktoken itself checks for
them, then read by tiktoken's own loader (``tiktoken.load``), so the encoding
is identical to the one tiktoken builds.
"""
import contextlib
import hashlib
import os
import threading

__all__ = ["get_tokenizer", "TokenizerError", "TokenizerFilesNotFound", "TokenizerHashMismatch",
           "BPE_FILES", "BPE_DIR_ENV", "PACKAGE_BPE_DIR"]

#: The environment variable naming a directory that holds the two files.
BPE_DIR_ENV = "GPTC_BPE_DIR"

#: The copies of the two files shipped inside the package (package data).
PACKAGE_BPE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt2_bpe")

#: The GPT-2 tokenizer files and their sha256: the values tiktoken checks
#: for its "gpt2" encoding (tiktoken_ext/openai_public.py).
BPE_FILES = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}

_ENDOFTEXT = "<|endoftext|>"
_N_VOCAB = 50257

# GPT-2's pre-tokenization pattern, in the form tiktoken's "gpt2" encoding
# uses; taken from tiktoken when it still defines it under this name.
_GPT2_PATTERN = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$"""
                 r"""|\s+(?!\S)|\s""")


class TokenizerError(RuntimeError):
    """The GPT-2 tokenizer could not be set up."""


class TokenizerFilesNotFound(TokenizerError):
    """Neither local tokenizer files nor tiktoken's cache or download worked."""


class TokenizerHashMismatch(TokenizerError):
    """A local tokenizer file is not the one GPT-2 released."""


_cache = {}
_env_lock = threading.Lock()


def get_tokenizer(bpe_dir=None):
    """The GPT-2 tokenizer: tiktoken's "gpt2" encoding (a ``tiktoken.Encoding``).

    Looks for ``encoder.json`` and ``vocab.bpe`` in ``bpe_dir``, then in the
    directory named by ``$GPTC_BPE_DIR``, then in the copies shipped with
    gptc (``PACKAGE_BPE_DIR``); failing all three, asks tiktoken
    (``tiktoken.get_encoding("gpt2")``: its cache, then a download).

    Raises TokenizerHashMismatch if a local file's sha256 is not GPT-2's,
    and TokenizerFilesNotFound, saying where to put the files, if nothing
    works. Both are TokenizerError, a RuntimeError.

        >>> tokenizer = gptc.get_tokenizer()
        >>> tokenizer.encode("Hello, I am")
        [15496, 11, 314, 716]
    """
    notes = []
    candidates = []
    if bpe_dir is not None:
        candidates.append((os.fspath(bpe_dir), "bpe_dir"))
    env_dir = os.environ.get(BPE_DIR_ENV)
    if env_dir:
        candidates.append((env_dir, f"${BPE_DIR_ENV}"))
    else:
        notes.append(f"${BPE_DIR_ENV} is not set")
    candidates.append((PACKAGE_BPE_DIR, "gptc's own copy"))
    for directory, origin in candidates:
        missing = _missing_files(directory)
        if not missing:
            return _encoding_from_dir(directory)
        notes.append(f"{origin} {directory!r} lacks {' and '.join(missing)}")

    try:
        return _encoding_from_tiktoken()
    except Exception as exc:  # offline, cache missing, requests missing, ...
        reason = str(exc).splitlines()[0] if str(exc) else ""
        if len(reason) > 100:
            reason = reason[:100] + "..."
        notes.append(f"tiktoken's cache and download failed ({type(exc).__name__}"
                     + (f": {reason}" if reason else "") + ")")
        raise TokenizerFilesNotFound(
            "GPT-2 tokenizer files not found: gptc's own copies are missing (reinstall gptc), "
            "or put encoder.json and vocab.bpe (GPT-2's original files, the ones tiktoken's "
            "\"gpt2\" encoding downloads) in one directory and set "
            f"{BPE_DIR_ENV}=/that/directory (or pass bpe_dir=..., or --bpe-dir to python -m gptc); "
            + "; ".join(notes)) from exc


def _missing_files(directory):
    return [name for name in BPE_FILES if not os.path.isfile(os.path.join(directory, name))]


def _encoding_from_tiktoken():
    """tiktoken's normal route (its cache, then a download)."""
    import tiktoken
    return tiktoken.get_encoding("gpt2")


def _sha256(path):
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise TokenizerError(f"cannot read GPT-2 tokenizer file {path}: {exc.strerror or exc}") \
            from exc
    return digest.hexdigest()


def _encoding_from_dir(directory):
    """Build the "gpt2" encoding from verified local files (cached per file version)."""
    paths = {name: os.path.realpath(os.path.join(directory, name)) for name in BPE_FILES}
    stats = [(path, os.stat(path)) for path in paths.values()]
    key = tuple((path, st.st_size, st.st_mtime_ns) for path, st in stats)
    if key in _cache:
        return _cache[key]
    for name, path in paths.items():
        actual = _sha256(path)
        if actual != BPE_FILES[name]:
            raise TokenizerHashMismatch(
                f"GPT-2 tokenizer file {path} has sha256 {actual}, expected {BPE_FILES[name]}: "
                f"it is not GPT-2's {name}; replace it with the original file")

    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    with _tiktoken_cache_disabled():
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=paths["vocab.bpe"], encoder_json_file=paths["encoder.json"],
            vocab_bpe_hash=BPE_FILES["vocab.bpe"], encoder_json_hash=BPE_FILES["encoder.json"])
    encoding = tiktoken.Encoding(name="gpt2", pat_str=_pattern(), mergeable_ranks=ranks,
                                 special_tokens={_ENDOFTEXT: _N_VOCAB - 1},
                                 explicit_n_vocab=_N_VOCAB)
    _cache[key] = encoding
    return encoding


def _pattern():
    try:
        from tiktoken_ext import openai_public
        return getattr(openai_public, "r50k_pat_str", _GPT2_PATTERN)
    except ImportError:
        return _GPT2_PATTERN


@contextlib.contextmanager
def _tiktoken_cache_disabled():
    """Make tiktoken read local files directly instead of copying them into
    its download cache (an empty TIKTOKEN_CACHE_DIR disables that cache)."""
    with _env_lock:
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = ""
        try:
            yield
        finally:
            if saved is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved
