"""notebooks/ch05.ipynb, chapter 5 with gptc: it runs without an error against the
gptc under test, prints the book's numbers for the untrained model, trains, samples
repeatably under a fixed seed, and loads OpenAI's GPT-2 when the files are there.

The notebook is executed once, in a fresh Jupyter kernel (tests/notebooks.py), with
GPTC_GPT2_MODELS naming an empty directory, so that it takes the branch it takes
without OpenAI's files whatever this machine holds. Then, in the same kernel, the
section 5.5 cells run again with the tiny TensorFlow checkpoint of
tests/fixtures/tf_gpt2_tiny in place of GPT-2 124M: the branch with the files.
The committed notebook must show the same checked numbers as the run.
"""
import importlib.util
import re
import shutil

import numpy as np
import pytest

import gptc
import notebooks
from tf_fixture import FIXTURE_DIR, HPARAMS

NOTEBOOK = "ch05.ipynb"

# The book's section 5.1 numbers for the untrained 124M model (context 256), seed 123.
BOOK_GENERATED = "Every effort moves you rentingetic wasnم refres RexMeCHicular stren"
BOOK_ARGMAX_IDS = [16657, 339, 42826, 49906, 29669, 41751]
BOOK_TARGET_PROBAS = {"Text 1": [7.4541e-05, 3.1061e-05, 1.1563e-05],
                      "Text 2": [1.0337e-05, 5.6776e-05, 4.7559e-06]}
BOOK_LOSS, BOOK_PERPLEXITY = 10.7940, 48725.8203
BOOK_TRAIN_LOSS, BOOK_VAL_LOSS = 10.98758347829183, 10.98110580444336

# Section 5.3's nine-word example.
VOCAB = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
NEXT_TOKEN_LOGITS = np.array([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79],
                             dtype=np.float32)
TEMPERATURES = (1, 0.1, 5)

# The section 5.5 cells again, on the fixture: downloads refused, and a tokenizer for
# its 96-token vocabulary (one token per byte value modulo 96).
WITH_FIXTURE_SETUP = """
import gptc.pretrained

def _refuse_download(url, *args, **kwargs):
    raise AssertionError(f"the notebook tried to download {{url}}")

gptc.pretrained.download_file = _refuse_download
os.environ["GPTC_GPT2_MODELS"] = {models_dir!r}


class _ByteTokenizer:
    def encode(self, text, allowed_special=()):
        return [byte % 96 for byte in text.encode("utf-8")]

    def decode(self, ids):
        return "".join(chr(32 + i) for i in ids)


tokenizer = _ByteTokenizer()
"""
WITH_FIXTURE_CHECK = """
reference = gptc.pretrained.gpt2_model_from_tf_ckpt(model_dir)   # the other loading path
probe = np.arange(HPARAMS_CTX)[None, :] % HPARAMS_VOCAB
with gptc.no_grad():
    print("same logits as gpt2_model_from_tf_ckpt:",
          np.array_equal(np.asarray(gpt(probe)), np.asarray(reference(probe))))
""".replace("HPARAMS_CTX", str(HPARAMS["n_ctx"])).replace("HPARAMS_VOCAB",
                                                          str(HPARAMS["n_vocab"]))


def _gpt2_cells(nb):
    (load,) = notebooks.code_cells_containing(nb, "download_and_load_gpt2(")
    (generate,) = notebooks.code_cells_containing(nb, "if gpt is None")
    return load, generate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(the executed notebook, the section 5.5 cells run on the fixture)."""
    no_models = tmp_path_factory.mktemp("no_models")
    models = tmp_path_factory.mktemp("models")
    shutil.copytree(FIXTURE_DIR, models / "124M")
    load, generate = _gpt2_cells(notebooks.read(NOTEBOOK))
    nb, extra = notebooks.execute(
        NOTEBOOK, env={"GPTC_GPT2_MODELS": str(no_models)},
        then=[WITH_FIXTURE_SETUP.format(models_dir=str(models)), load.source, generate.source,
              WITH_FIXTURE_CHECK])
    return nb, extra


@pytest.fixture(scope="module")
def executed(run):
    return run[0]


@pytest.fixture(scope="module")
def stored():
    return notebooks.read(NOTEBOOK)


@pytest.fixture(params=["executed", "stored"])
def notebook(request):
    """The notebook run by this test, then as committed: both must show the checks."""
    return request.getfixturevalue(request.param)


def _out(nb):
    return "\n".join(notebooks.text_outputs(nb))


def _text_of_cell(nb, fragment):
    (cell,) = notebooks.code_cells_containing(nb, fragment)
    return notebooks.cell_text(cell)


def _floats(text):
    return [float(x) for x in re.findall(r"-?\d+\.\d*(?:e[-+]\d+)?", text)]


def test_no_cell_raised(executed):
    assert notebooks.errors(executed) == []
    assert all(notebooks.execution_counts(executed))


def test_stored_notebook_is_one_complete_run(stored):
    counts = notebooks.execution_counts(stored)
    assert counts == list(range(1, len(counts) + 1)), counts
    assert notebooks.errors(stored) == []


def test_notebook_needs_no_torch(stored):
    assert not notebooks.imports_torch(stored)


def test_untrained_model_prints_the_books_section_5_1_numbers(notebook):
    out = _out(notebook)
    assert f"Output text:\n {BOOK_GENERATED}\n" in out
    ids_block = out[out.index("Token IDs:"):out.index("Targets batch 1")]
    assert [int(x) for x in re.findall(r"\d+", ids_block)] == BOOK_ARGMAX_IDS
    assert "Targets batch 1:  effort moves you\n" in out
    assert "Outputs batch 1:  Armed heNetflix\n" in out
    for name, book in BOOK_TARGET_PROBAS.items():
        (line,) = re.findall(rf"^{name}: \[(.*)\]$", out, re.M)
        assert _floats(line) == pytest.approx(book, rel=2e-4), name
    assert f"average log probability: {-BOOK_LOSS:.4f}" in out
    assert f"Cross-entropy loss: {BOOK_LOSS:.4f}" in out
    (perplexity,) = re.findall(r"^Perplexity: (\S+)$", out, re.M)
    assert float(perplexity) == pytest.approx(BOOK_PERPLEXITY, rel=1e-5)


def test_verdict_is_split_and_batched_as_in_the_book(notebook):
    out = _out(notebook)
    assert "Characters: 20479\nTokens: 5145\n" in out
    assert "Train loader:\n" + "(2, 256) (2, 256)\n" * 9 in out
    assert "Validation loader:\n(2, 256) (2, 256)\n" in out
    assert "Training tokens: 4608\nValidation tokens: 512\n" in out


def test_untrained_losses_are_the_books(notebook):
    out = _out(notebook)
    (train,) = re.findall(r"^Training loss: (\S+)$", out, re.M)
    (val,) = re.findall(r"^Validation loss: (\S+)$", out, re.M)
    print(f"train {train} (book {BOOK_TRAIN_LOSS}), validation {val} (book {BOOK_VAL_LOSS})")
    assert float(train) == pytest.approx(BOOK_TRAIN_LOSS, abs=2e-5)
    assert float(val) == pytest.approx(BOOK_VAL_LOSS, abs=2e-5)


def _check_training_run(text, with_bar):
    evaluations = re.findall(r"^Ep (\d+) \(Step (\d+)\): Train loss (\S+), Val loss (\S+)$",
                             text, re.M)
    assert [(int(e), int(s)) for e, s, _, _ in evaluations] == [
        (1, 0), (1, 5), (2, 10), (2, 15), (3, 20), (3, 25)]
    train = [float(t) for _, _, t, _ in evaluations]
    val = [float(v) for _, _, _, v in evaluations]
    print("training losses", train, "validation losses", val)
    assert train[0] > 10 and val[0] > 10
    assert train[-1] < train[0] - 3 and min(val) < val[0] - 3      # it learned
    assert len(re.findall(r"^Every effort moves you", text, re.M)) == 3   # one per epoch
    assert re.search(r"^Training completed in \d+\.\d\d minutes\.$", text, re.M)
    if with_bar:
        assert re.search(r"^100%\|.*\| 13824/13824 \[", text, re.M), "no finished tqdm bar"
    else:
        assert "-- 13,824 of 13,824 tokens" in text


def test_short_pretraining_learns_and_shows_its_progress(executed):
    """3 epochs of 9 batches of 2 x 256 tokens: 13,824 tokens, with a tqdm bar when
    tqdm is installed (it is in the test extra), else a line per epoch."""
    text = _text_of_cell(executed, "train_model_simple(\n")
    _check_training_run(text, with_bar=importlib.util.find_spec("tqdm") is not None)


def test_stored_notebook_shows_the_run_with_its_bar(stored):
    _check_training_run(_text_of_cell(stored, "train_model_simple(\n"), with_bar=True)


def test_loss_curves_and_temperature_plot_are_images(notebook):
    (loss_plot,) = notebooks.code_cells_containing(notebook, "plot_losses(epochs_tensor")
    (temperature_plot,) = notebooks.code_cells_containing(notebook, 'label=f"Temperature')
    assert notebooks.shows_an_image(loss_plot)
    assert notebooks.shows_an_image(temperature_plot)


class _FixedLogits:
    def __init__(self, logits):
        self.logits = logits

    def __call__(self, idx):
        return np.broadcast_to(self.logits, idx.shape + self.logits.shape)


def _draws(num_samples, temperature=1.0, top_k=None):
    """gptc.generate's draws for the nine logits after manual_seed(123), in this process."""
    gptc.manual_seed(123)
    out = gptc.generate(_FixedLogits(NEXT_TOKEN_LOGITS), np.zeros((num_samples, 1), np.int64),
                        max_new_tokens=1, context_size=1, temperature=temperature, top_k=top_k)
    return out[:, -1]


def _probabilities(temperature=1.0, top_k=None):
    z = NEXT_TOKEN_LOGITS.astype(np.float64) / temperature
    if top_k is not None:
        z[NEXT_TOKEN_LOGITS < np.sort(NEXT_TOKEN_LOGITS)[-top_k]] = -np.inf
    p = np.exp(z - z.max())
    return p / p.sum()


def _assert_follows(counts, p):
    """Each count within 5 standard deviations (+1) of 1000 p, none where p is 0."""
    n = sum(counts)
    for word, count, prob in zip(VOCAB, counts, p):
        assert abs(count - n * prob) <= 5 * np.sqrt(n * prob * (1 - prob)) + 1, (word, count)
        assert prob > 0 or count == 0, word


def _sampled_counts(text):
    found = re.findall(r"^(\d+) x (\w+)$", text, re.M)
    assert [word for _, word in found] == VOCAB
    return [int(count) for count, _ in found]


def test_sampling_counts_repeat_under_the_seed_and_follow_the_softmax(notebook):
    """The 1,000 draws at temperature 1, 0.1 and 5 and with top-k 3 are what gptc.generate
    draws after manual_seed(123) in this process too, and each count is near 1000 p."""
    one = _text_of_cell(notebook, 'print("one sample:"')
    assert one == f"one sample: {VOCAB[int(_draws(1)[0])]}\n"
    at_one = _sampled_counts(_text_of_cell(notebook, "def print_sampled_tokens"))
    assert at_one == np.bincount(_draws(1000), minlength=9).tolist()
    _assert_follows(at_one, _probabilities())

    table = _text_of_cell(notebook, "counts = {}")
    rows = re.findall(r"^ *(\w+)" + r" +(\d+) +(\d+\.\d)" * 3 + "$", table, re.M)
    assert [row[0] for row in rows] == VOCAB
    for column, temperature in enumerate(TEMPERATURES):
        counts = [int(row[1 + 2 * column]) for row in rows]
        expected = [float(row[2 + 2 * column]) for row in rows]
        p = _probabilities(temperature)
        print(f"T={temperature}: {counts}")
        assert counts == np.bincount(_draws(1000, temperature), minlength=9).tolist()
        assert expected == pytest.approx(1000 * p, abs=0.051)
        _assert_follows(counts, p)
    assert [int(row[1]) for row in rows] == at_one

    top3 = _sampled_counts(_text_of_cell(notebook,
                                         "print_sampled_tokens(next_token_logits, top_k=3)"))
    print("top-3:", top3)
    assert top3 == np.bincount(_draws(1000, top_k=3), minlength=9).tolist()
    _assert_follows(top3, _probabilities(top_k=3))


def test_top_k_prints_the_books_masked_logits_and_probabilities(notebook):
    out = _text_of_cell(notebook, "top_pos = np.argsort")
    assert "Top logits: [6.75 6.28 4.51]\nTop positions: [3 7 0]\n" in out
    assert "[4.51 -inf -inf 6.75 -inf -inf -inf 6.28 -inf]\n" in out
    (probas,) = re.findall(r"^\[0\.0615 .*\]$", out, re.M)
    assert _floats(probas) == pytest.approx([0.0615, 0, 0, 0.5775, 0, 0, 0, 0.361, 0])


def test_generate_with_temperature_and_top_k_continues_the_prompt(notebook):
    text = _text_of_cell(notebook, "top_k=25, temperature=1.4")
    assert re.fullmatch(r"Output text:\n Every effort moves you\S*( \S+){5,}.*\n", text, re.S)


def test_weights_saved_and_loaded_give_the_same_logits(notebook):
    out = _out(notebook)
    assert re.search(r"^saved 33 tensors, \d+\.\d MiB$", out, re.M)
    assert "the loaded model gives the same logits: True\n" in out
    assert "gptc.optim.AdamW has state_dict: False\n" in out


def test_without_openai_files_the_cells_say_they_skipped(executed):
    load, generate = _gpt2_cells(executed)
    assert notebooks.cell_text(load).startswith("Skipped: OpenAI's GPT-2 124M is not in ")
    assert notebooks.cell_text(generate) == ("Skipped: no GPT-2 weights loaded "
                                             "(see the cell above).\n")


def test_stored_notebook_shows_one_branch_of_the_openai_cells(stored):
    load, generate = _gpt2_cells(stored)
    skipped = notebooks.cell_text(load).startswith("Skipped: OpenAI's GPT-2 124M is not in ")
    assert skipped == notebooks.cell_text(generate).startswith("Skipped: no GPT-2 weights")
    if not skipped:
        assert "Settings: {'n_vocab': 50257, 'n_ctx': 1024" in notebooks.cell_text(load)
        assert notebooks.cell_text(generate).startswith("Output text:\n Every effort moves you")


def test_with_openai_files_the_cells_load_them_and_generate(run):
    """The section 5.5 cells on the fixture in place of 124M: the checkpoint is read
    without a download, its settings printed, the weights land in a GPTModel (as the
    direct loader puts them) and 25 tokens follow the prompt."""
    _, (setup, load, generate, check) = run
    assert all(output.output_type != "error" for cell in (setup, load, generate, check)
               for output in cell.outputs)
    loaded = notebooks.cell_text(load)
    assert f"Settings: {HPARAMS}\n" in loaded
    assert "Token embedding weight tensor dimensions: (96, 16)\n" in loaded
    cfg = gptc.gpt2_config_from_hparams(HPARAMS)
    n_params = sum(p.numel() for p in gptc.GPTModel(cfg).parameters())
    assert f"GPTModel with OpenAI's weights: {n_params:,} parameters\n" in loaded
    prompt = "".join(chr(32 + byte % 96) for byte in b"Every effort moves you")
    text = notebooks.cell_text(generate)
    assert text.startswith(f"Output text:\n {prompt}")
    assert len(text) == len(f"Output text:\n {prompt}") + 25 + 1
    assert notebooks.cell_text(check) == "same logits as gpt2_model_from_tf_ckpt: True\n"
