"""The notebooks run top to bottom at the tiny scale, and are stored without outputs."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PCFG = NOTEBOOKS / "01_pcfg_wrapper.ipynb"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear the outputs before committing "
                "(jupyter nbconvert --clear-output --inplace)"
            )


@pytest.mark.slow
def test_pcfg_notebook_runs_at_tiny_scale(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("WRAPPERLENS_NOTEBOOK_PRESET", "tiny")
    monkeypatch.setenv("WRAPPERLENS_NOTEBOOK_MAX_STEPS", "4")
    monkeypatch.setenv("WRAPPERLENS_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(PCFG, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "tiny" and summary["max_steps"] == 4
    assert set(summary["iterations_to_threshold"]) == {"reFT", "Scr.+FT"}
    for name in (
        "prune/prune.png",
        "probe/probe.png",
        "reft/reft_vs_scratch.png",
        "patch/patch.png",
        "attribute/attribute_z.png",
        "attention/attention.html",
        "wrapper_map/wrapper_map.png",
    ):
        assert (out / "analysis" / name).stat().st_size > 0, name
    # Every code cell ran.
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
