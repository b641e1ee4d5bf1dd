"""notebooks/ch04.ipynb, the chapter walked through with gptc: it runs without an
error against the gptc under test and prints the book's numbers.

The notebook is executed in a fresh Jupyter kernel against the gptc of this test
run (tests/notebooks.py).
"""
import re

import pytest

import gptc
import notebooks
from conftest import BOOK_BATCH

NOTEBOOK = "ch04.ipynb"

BOOK_WITHOUT_SHORTCUT = [0.00020173587836325169, 0.00012011159560643137,
                         0.0007152039906941354, 0.0013988736318424344, 0.005049645435065031]
BOOK_WITH_SHORTCUT = [0.22169792652130127, 0.20694106817245483, 0.32896995544433594,
                      0.2665732204914093, 1.3258540630340576]
GENERATED_IDS = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267, 49706, 43231,
                 47062, 34657]


@pytest.fixture(scope="module")
def executed():
    """The notebook after a full run in a new kernel (the file is not modified)."""
    nb, _ = notebooks.execute(NOTEBOOK)
    return nb


def test_no_cell_raised(executed):
    assert notebooks.errors(executed) == []
    assert all(notebooks.execution_counts(executed))


def test_notebook_prints_the_books_numbers(executed):
    out = "\n".join(notebooks.text_outputs(executed))
    for expected in ["-1.2034", "0.3613", "0.4222", "-0.0711", "0.3483", "0.4661", "-0.2838",
                     "[[0.226  0.347  0.     0.2216 0.     0.    ]",
                     "163,009,536", "124,412,160", "621.83",
                     "encoded: [15496, 11, 314, 716]",
                     "Hello, I am Featureiman Byeswickattribute argue\n",
                     "Hello, I am Featureiman Byeswickattribute argue logger Normandy Compton "
                     "analogous"]:
        assert expected in out, f"{expected!r} not printed by the notebook"
    assert str([GENERATED_IDS[:10]]) in out
    assert str([GENERATED_IDS]) in out


def test_notebook_prints_the_books_gradient_means(executed):
    """Section 4.4: the ten mean absolute gradients, without then with shortcuts,
    equal the book's to 5 significant digits."""
    out = "\n".join(notebooks.text_outputs(executed))
    found = re.findall(r"^(layers\.\d\.0\.weight) has gradient mean of (\S+)$", out, re.M)
    assert [name for name, _ in found] == [f"layers.{i}.0.weight" for i in range(5)] * 2
    means = [float(value) for _, value in found]
    for got, book in zip(means, BOOK_WITHOUT_SHORTCUT + BOOK_WITH_SHORTCUT):
        assert got == pytest.approx(book, rel=5e-5), (got, book)


def _block_norms_in_torch(torch, ref, batch):
    """The mean token norm after drop_emb and after each block of the book's
    PyTorch model at seed 123, in eval mode, recorded by torch forward hooks."""
    torch.manual_seed(123)
    t_model = ref.GPTModel(dict(gptc.GPT_CONFIG_124M)).eval()
    norms = []

    def record(module, args, output):
        norms.append(float(torch.linalg.vector_norm(output, dim=-1).mean()))
    t_model.drop_emb.register_forward_hook(record)
    for block in t_model.trf_blocks:
        block.register_forward_hook(record)
    with torch.no_grad():
        t_model(torch.tensor(batch))
    return norms


def test_notebook_hook_prints_the_block_norms_torch_hooks_see(executed, torch, ref):
    """The forward-hook cell prints, for drop_emb and each of the 12 blocks, the
    mean token norm that the same hooks give on the book's PyTorch model."""
    out = "\n".join(notebooks.text_outputs(executed))
    found = re.findall(r"^(drop_emb|trf_blocks\.\d+) +\(2, 4, 768\) +mean token norm (\S+)$",
                       out, re.M)
    assert [name for name, _ in found] == ["drop_emb"] + [f"trf_blocks.{i}" for i in range(12)]
    assert "same logits as the one-call forward: True" in out
    expected = _block_norms_in_torch(torch, ref, BOOK_BATCH)
    for (name, got), norm in zip(found, expected):
        print(f"{name}: notebook {got}, torch {norm:.6f}")
        assert float(got) == pytest.approx(norm, abs=1e-4), name


def _attention_plot_cells(nb):
    return [cell for cell in notebooks.code_cells_containing(nb, "imshow")
            if "attention" in cell.source]


def test_notebook_shows_the_attention_maps(executed):
    """The attention-map cells print the (12, 1, 12, 4, 4) weights of "Every effort
    moves you" with rows summing to 1, and the heat-map cell displays an image."""
    out = "\n".join(notebooks.text_outputs(executed))
    assert "attention weights: (12, 1, 12, 4, 4) float32" in out
    assert "every row sums to 1: True" in out
    assert re.search(r"block 0, head 0:\n\[\[1\. +0\. +0\. +0\. +\]", out)
    (plot_cell,) = _attention_plot_cells(executed)
    assert notebooks.shows_an_image(plot_cell)


def test_notebook_needs_no_torch():
    assert not notebooks.imports_torch(notebooks.read(NOTEBOOK))


def test_stored_notebook_has_its_outputs():
    """The committed file carries the outputs of one complete run, so it reads on
    GitHub without running it (re-run and save after editing a cell)."""
    nb = notebooks.read(NOTEBOOK)
    counts = notebooks.execution_counts(nb)
    assert counts == list(range(1, len(counts) + 1)), counts
    assert notebooks.errors(nb) == []
    (plot_cell,) = _attention_plot_cells(nb)
    assert notebooks.shows_an_image(plot_cell)
