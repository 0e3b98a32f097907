"""notebooks/03_tinystories_checkpoints.ipynb runs top to bottom at the tiny scale."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_tinystories_checkpoints.ipynb"


def test_tinystories_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                "clear the outputs before committing (jupyter nbconvert --clear-output --inplace)")


@pytest.mark.slow
def test_tinystories_notebook_runs_at_tiny_scale(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("WRAPPERLENS_NOTEBOOK_PRESET", "tiny")
    monkeypatch.setenv("WRAPPERLENS_NOTEBOOK_MAX_STEPS", "4")
    monkeypatch.setenv("WRAPPERLENS_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "tiny" and summary["max_steps"] == 4
    assert set(summary["twist_probe"]) == {"pretrained", "deleted F+R (eta_M)", "random init"}
    assert len(summary["cka"]["deleted F+R (eta_M)"]) == 3  # B0..B2 of the 2-layer tiny model
    assert summary["moved_per_point"][0] > 0  # deletion changed the embeddings too
    for name in ("compare/residual_similarity.png", "compare/probe_transfer.png",
                 "probe_accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    config = json.loads((out / "delete-F+R-M" / "config.json").read_text())
    assert config["train"]["steps"] == 4 and config["data"]["protocol"] == "filter_randomise"
