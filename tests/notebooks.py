"""The notebooks of notebooks/, run the way their tests run them, and what they printed.

A notebook is executed in a fresh Jupyter kernel (nbclient), in the notebooks
directory, with PYTHONPATH pointing at the directory that holds the imported gptc
package, so the kernel uses the same gptc as the test run. Importing this module
skips the importing test module when something the notebooks need is missing.

Run as a script, it stores a notebook with the outputs of a complete run, as
committed:

    PYTHONPATH=$PWD python tests/notebooks.py ch05.ipynb
"""
import os
import re
import sys

import pytest

for _module, _why in [("nbformat", "reading the notebooks"), ("nbclient", "executing them"),
                      ("ipykernel", "their kernel"), ("matplotlib", "their plots")]:
    pytest.importorskip(_module, reason=f"{_why} needs {_module} (pip install '.[test]')")

import nbclient  # noqa: E402
import nbformat  # noqa: E402

import gptc  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO_ROOT, "notebooks")

# what a carriage return followed by more text on its line overwrites
_OVERWRITTEN = re.compile(r".*\r(?=[^\n])")


def execute(name, env=None, then=()):
    """The notebook ``name`` after a full run in a new kernel (the file is not
    modified), with ``env`` added to the kernel's environment. ``then``: sources of
    code cells run in the same kernel after the notebook's; returns
    ``(notebook, those cells)``, each cell with its outputs."""
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(gptc.__file__)))
    kernel_env = dict(os.environ, **(env or {}))
    kernel_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     record_timing=False,
                                     resources={"metadata": {"path": NOTEBOOK_DIR}})
    extra = [nbformat.v4.new_code_cell(source) for source in then]
    n_cells = len(nb.cells)
    nb.cells.extend(extra)             # nbclient stores each executed cell back into nb
    client.reset_execution_trackers()
    try:
        with client.setup_kernel(env=kernel_env):
            info = client.wait_for_reply(client.kc.kernel_info())
            nb.metadata["language_info"] = info["content"]["language_info"]
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
    finally:
        extra = nb.cells[n_cells:]
        del nb.cells[n_cells:]
    return nb, extra


def _coalesced(outputs):
    """The outputs as Jupyter shows them: consecutive writes to one stream are one
    text, and on each line only what follows its last carriage return remains
    (a progress bar's final state)."""
    merged = []
    for output in outputs:
        if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == output.name):
            merged[-1] = nbformat.from_dict(dict(merged[-1], text=merged[-1].text + output.text))
        else:
            merged.append(output)
    return [nbformat.from_dict(dict(output, text=_OVERWRITTEN.sub("", output.text)))
            if output.output_type == "stream" else output for output in merged]


def store(name):
    """Execute the notebook ``name`` and write it back with its outputs."""
    nb, _ = execute(name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _coalesced(cell.outputs)
    nbformat.validate(nb)
    nbformat.write(nb, os.path.join(NOTEBOOK_DIR, name))


def read(name):
    """The notebook ``name`` as committed."""
    return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


def cell_text(cell):
    """Everything a code cell printed or displayed as text."""
    parts = []
    for output in _coalesced(cell.get("outputs", [])):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def text_outputs(nb):
    """The text of every code cell, cell by cell."""
    return [cell_text(cell) for cell in nb.cells if cell.cell_type == "code"]


def code_cells_containing(nb, fragment):
    return [cell for cell in nb.cells if cell.cell_type == "code" and fragment in cell.source]


def shows_an_image(cell):
    return any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def errors(nb):
    return [output for cell in nb.cells if cell.cell_type == "code"
            for output in cell.outputs if output.output_type == "error"]


def execution_counts(nb):
    return [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]


def imports_torch(nb):
    sources = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    return re.search(r"^\s*(import|from)\s+torch\b", sources, re.M) is not None


if __name__ == "__main__":
    for notebook_name in sys.argv[1:]:
        store(notebook_name)
