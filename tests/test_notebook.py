"""The inspection notebook runs top to bottom on a dataset the test suite makes."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import build_small_dataset

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "inspect_shards.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_executes_on_a_small_dataset(tmp_path, monkeypatch):
    build_small_dataset(tmp_path / "ds")
    monkeypatch.setenv("SYNTH_DATASET", str(tmp_path / "ds"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert str(tmp_path / "ds") in text
    assert "add_constraint" in text  # the lineage cell found the evolved chain
    assert "heuristic" in text  # the funnel shows reject stages
