"""gptc.get_tokenizer: tiktoken's "gpt2" encoding, built offline from local files.

The files ship inside the package (gptc/gpt2_bpe); bpe_dir and $GPTC_BPE_DIR
override them.
"""
import hashlib
import inspect
import os
import shutil

import pytest

import gptc
import gptc.tokenizer as tokmod

from conftest import VERDICT_PATH as VERDICT

SAMPLE = ("Hello, I'm a language model. It's 2024; prices rose 3.5% -- naïve café, "
          "日本語のテキスト, emoji \U0001F600, tabs\tand   spaces\n\nnew lines.  ")


@pytest.fixture(scope="module")
def bpe_dir():
    """The directory holding GPT-2's encoder.json and vocab.bpe: gptc's own copies."""
    return tokmod.PACKAGE_BPE_DIR


@pytest.fixture
def no_network(monkeypatch):
    """Make tiktoken's own route (cache, then download) fail at once."""
    def offline():
        raise ConnectionError("network disabled by the test")
    monkeypatch.setattr(tokmod, "_encoding_from_tiktoken", offline)


@pytest.fixture
def tokenizer(bpe_dir, no_network):
    return gptc.get_tokenizer(bpe_dir)


@pytest.mark.parametrize("text, ids", [
    ("Every effort moves you", [6109, 3626, 6100, 345]),
    ("Every day holds a", [6109, 1110, 6622, 257]),
    ("Hello, I am", [15496, 11, 314, 716]),
])
def test_book_token_ids(tokenizer, text, ids):
    """The local files give the ids the book prints for its example texts."""
    assert tokenizer.encode(text) == ids
    assert tokenizer.decode(ids) == text


def test_is_tiktokens_gpt2_encoding(tokenizer):
    """The result is a tiktoken.Encoding named "gpt2" with GPT-2's 50,257 tokens."""
    import tiktoken
    assert isinstance(tokenizer, tiktoken.Encoding)
    assert tokenizer.name == "gpt2"
    assert tokenizer.n_vocab == 50257
    assert tokenizer.eot_token == 50256


def test_decode_round_trips(tokenizer):
    """decode(encode(text)) gives the text back, for ASCII, accents, CJK, emoji, whitespace."""
    for text in (SAMPLE, "", " ", "a" * 1000, "\n\n\n"):
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_endoftext_needs_allowed_special(tokenizer):
    """<|endoftext|> is token 50256 when allowed, and refused (as tiktoken does) otherwise."""
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
    ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    assert ids.count(50256) == 1
    assert tokenizer.decode(ids) == text
    with pytest.raises(ValueError):
        tokenizer.encode(text)


def test_environment_variable_is_used(bpe_dir, no_network, monkeypatch):
    """With no argument, $GPTC_BPE_DIR is read (and no network route is needed)."""
    monkeypatch.setenv("GPTC_BPE_DIR", bpe_dir)
    assert gptc.get_tokenizer().encode("Hello, I am") == [15496, 11, 314, 716]


def test_argument_comes_before_environment(bpe_dir, no_network, monkeypatch, tmp_path):
    """bpe_dir is tried first: a bad $GPTC_BPE_DIR (wrong file) is then never read."""
    bad = tmp_path / "bad"
    _copy_with_changed_byte(bpe_dir, bad, "vocab.bpe")
    monkeypatch.setenv("GPTC_BPE_DIR", str(bad))
    assert gptc.get_tokenizer(bpe_dir).encode("Every day holds a") == [6109, 1110, 6622, 257]


def test_missing_argument_dir_falls_back_to_environment(bpe_dir, no_network, monkeypatch,
                                                          tmp_path):
    """A bpe_dir without the files is passed over for $GPTC_BPE_DIR."""
    monkeypatch.setenv("GPTC_BPE_DIR", bpe_dir)
    assert gptc.get_tokenizer(tmp_path / "nowhere").encode("Hello, I am") == \
        [15496, 11, 314, 716]


def _copy_with_changed_byte(src_dir, dst_dir, name):
    os.makedirs(dst_dir)
    for n in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(os.path.join(src_dir, n), os.path.join(dst_dir, n))
    path = os.path.join(dst_dir, name)
    with open(path, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0x01]))
    return path


@pytest.mark.parametrize("name", ["encoder.json", "vocab.bpe"])
def test_wrong_hash_is_a_clear_error(bpe_dir, no_network, tmp_path, name):
    """A file differing by one byte is refused, naming the file and both sha256 values."""
    path = _copy_with_changed_byte(bpe_dir, tmp_path / "bpe", name)
    with open(path, "rb") as f:
        actual = hashlib.sha256(f.read()).hexdigest()
    with pytest.raises(gptc.TokenizerError) as info:
        gptc.get_tokenizer(tmp_path / "bpe")
    assert isinstance(info.value, tokmod.TokenizerHashMismatch)
    message = str(info.value)
    assert os.path.realpath(path) in message
    assert actual in message and tokmod.BPE_FILES[name] in message


def test_package_copies_need_no_setting(no_network, monkeypatch):
    """Without bpe_dir or $GPTC_BPE_DIR, the files shipped in the package are read
    (offline): the book's ids."""
    monkeypatch.delenv("GPTC_BPE_DIR", raising=False)
    assert gptc.get_tokenizer().encode("Every effort moves you") == [6109, 3626, 6100, 345]


def test_package_copies_are_byte_identical_to_gpt2s_and_carry_the_licence():
    """The shipped files have GPT-2's sha256 and OpenAI's licence lies beside them."""
    for name, digest in tokmod.BPE_FILES.items():
        with open(os.path.join(tokmod.PACKAGE_BPE_DIR, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
    with open(os.path.join(tokmod.PACKAGE_BPE_DIR, "LICENSE-OpenAI-GPT-2.txt"),
              encoding="utf-8") as f:
        licence = f.read()
    assert "Modified MIT License" in licence and "OpenAI" in licence


@pytest.fixture
def package_copies_removed(monkeypatch, tmp_path):
    """An installation whose package data went missing."""
    monkeypatch.setattr(tokmod, "PACKAGE_BPE_DIR", str(tmp_path / "removed"))


def test_missing_files_say_what_to_do(no_network, package_copies_removed, monkeypatch,
                                      tmp_path):
    """No local files and no tiktoken route: one line naming both files, the
    variable to set, and where it looked."""
    monkeypatch.delenv("GPTC_BPE_DIR", raising=False)
    missing = tmp_path / "no-such-dir"
    with pytest.raises(tokmod.TokenizerFilesNotFound) as info:
        gptc.get_tokenizer(missing)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "\n" not in message
    for part in ("encoder.json", "vocab.bpe", "GPTC_BPE_DIR", str(missing),
                 tokmod.PACKAGE_BPE_DIR, "reinstall gptc", "network disabled by the test"):
        assert part in message


def test_no_directory_at_all_says_so(no_network, package_copies_removed, monkeypatch):
    """Without bpe_dir, $GPTC_BPE_DIR or the package's copies the error says the
    variable is not set."""
    monkeypatch.delenv("GPTC_BPE_DIR", raising=False)
    with pytest.raises(gptc.TokenizerError, match="GPTC_BPE_DIR is not set"):
        gptc.get_tokenizer()


def test_tiktoken_route_is_the_fallback(package_copies_removed, monkeypatch, tmp_path):
    """Without local files, tiktoken.get_encoding("gpt2")'s route is what is returned."""
    monkeypatch.delenv("GPTC_BPE_DIR", raising=False)
    sentinel = object()
    monkeypatch.setattr(tokmod, "_encoding_from_tiktoken", lambda: sentinel)
    assert gptc.get_tokenizer() is sentinel
    assert gptc.get_tokenizer(tmp_path) is sentinel


def test_expected_hashes_are_the_ones_tiktoken_checks(bpe_dir):
    """The sha256 values gptc checks appear in tiktoken's own gpt2 constructor,
    and the package's files have them."""
    from tiktoken_ext import openai_public
    source = inspect.getsource(openai_public.gpt2)
    for name, digest in tokmod.BPE_FILES.items():
        assert digest in source
        with open(os.path.join(bpe_dir, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest


def test_identical_to_tiktokens_own_loader(bpe_dir, no_network, monkeypatch):
    """tiktoken's own "gpt2" constructor (its URLs served from the local files,
    its hash checks on) and gptc's loader give identical ids on a long text."""
    import tiktoken
    import tiktoken.load
    from tiktoken_ext import openai_public

    served = []

    def read_file(blobpath):
        name = blobpath.rsplit("/", 1)[-1]
        served.append(name)
        with open(os.path.join(bpe_dir, name), "rb") as f:
            return f.read()

    monkeypatch.setattr(tiktoken.load, "read_file", read_file)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")      # no cache: every byte via read_file
    theirs = tiktoken.Encoding(**openai_public.gpt2())
    assert sorted(served) == ["encoder.json", "vocab.bpe"]
    ours = gptc.get_tokenizer(bpe_dir)

    with open(VERDICT, encoding="utf-8") as f:
        texts = [SAMPLE, f.read()]
    for text in texts:
        ids = ours.encode(text, allowed_special={"<|endoftext|>"})
        assert ids == theirs.encode(text, allowed_special={"<|endoftext|>"})
        assert len(ids) > 10
    assert ours.n_vocab == theirs.n_vocab
    assert ours._pat_str == theirs._pat_str
    assert ours._special_tokens == theirs._special_tokens
    assert all(ours.decode_single_token_bytes(i) == theirs.decode_single_token_bytes(i)
               for i in range(ours.n_vocab))


def test_local_files_leave_tiktokens_cache_alone(bpe_dir, no_network, monkeypatch, tmp_path):
    """Loading local files writes nothing into tiktoken's download cache and
    leaves TIKTOKEN_CACHE_DIR as it was."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tokmod, "_cache", {})
    gptc.get_tokenizer(bpe_dir)
    assert list(cache.iterdir()) == []
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(cache)


def test_encoding_is_built_once_per_directory(bpe_dir, no_network):
    """A second call returns the already built encoding."""
    assert gptc.get_tokenizer(bpe_dir) is gptc.get_tokenizer(bpe_dir)
