"""Every notebook in notebooks/ runs top to bottom (smoke mode: tiny backbone, synthetic data),
is stored without outputs, and matches its plain-text jupytext pair (``notebooks/*.py``)."""

import importlib.util
import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.compare import compare_notebooks
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
PAIRED_FORMAT = "py:percent"
NEEDS_EXPORT_EXTRAS = {"04_use_in_an_app.ipynb": ("tf2onnx", "onnxruntime", "ai_edge_litert")}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs_and_in_sync_with_its_text_pair(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        f"{path.name} has outputs: clear them (jupyter nbconvert --clear-output --inplace {path.name})"
    )
    assert notebook.metadata.get("jupytext", {}).get("formats") == f"ipynb,{PAIRED_FORMAT}"
    pair = path.with_suffix(".py")
    assert pair.exists(), f"no text pair: jupytext --set-formats ipynb,{PAIRED_FORMAT} {path.name}"
    # Raises on the first cell that differs; `jupytext --sync notebooks/*.ipynb` brings them in step.
    compare_notebooks(jupytext.read(pair), notebook, fmt=PAIRED_FORMAT)


def test_the_sync_check_notices_an_edited_pair(tmp_path):
    notebook = nbformat.read(NOTEBOOKS[0], as_version=4)
    edited = jupytext.reads(
        jupytext.writes(notebook, fmt=PAIRED_FORMAT).replace("import os", "import sys"), fmt=PAIRED_FORMAT
    )
    with pytest.raises(Exception, match="import"):
        compare_notebooks(edited, notebook, fmt=PAIRED_FORMAT)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    for package in NEEDS_EXPORT_EXTRAS.get(path.name, ()):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f'needs pip install -e ".[export]" ({package} is missing)')
    monkeypatch.setenv("TRANSFERKIT_SMOKE", "1")
    monkeypatch.setenv("TRANSFERKIT_NOTEBOOK_DIR", str(tmp_path))
    notebook = nbformat.read(path, as_version=4)
    # The kernel is a separate process: the network guard of conftest does not reach it, so the
    # smoke path uses only random weights and synthetic data (nothing in it downloads).
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        env=dict(os.environ),
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells[-1].get("outputs"), "the last cell shows its result"
    fits = [cell for cell in code_cells if "transferkit.fit(" in cell.source]
    for cell in fits:  # one bar per phase and the results: no TF log lines, no Keras epoch lines
        streams = [o for o in cell.outputs if o.get("output_type") == "stream"]
        assert not [o.text for o in streams if o.name == "stderr"]
        assert not any("Epoch 1/" in o.text for o in streams)
