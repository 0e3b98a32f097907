"""The notebooks run top to bottom at the tiny scale, and are stored without outputs."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PCFG = NOTEBOOKS / "01_pcfg_wrapper.ipynb"
COMPILED = NOTEBOOKS / "02_compiled_counter.ipynb"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear the outputs before committing "
                "(jupyter nbconvert --clear-output --inplace)"
            )


def execute_tiny(path: Path, tmp_path: Path, monkeypatch, **env: str) -> tuple[Path, object]:
    """Run notebook `path` at the tiny preset with its outputs in tmp_path/out; returns both.
    Raises CellExecutionError naming the failing cell (the notebook's own asserts included)."""
    out = tmp_path / "out"
    for name, value in {"PRESET": "tiny", "OUT": str(out), **env}.items():
        monkeypatch.setenv(f"WRAPPERLENS_NOTEBOOK_{name}", value)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return out, nb


@pytest.mark.slow
def test_pcfg_notebook_runs_at_tiny_scale(tmp_path, monkeypatch):
    out, nb = execute_tiny(PCFG, tmp_path, monkeypatch, MAX_STEPS="4")
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


@pytest.mark.slow
def test_compiled_counter_notebook_runs_at_tiny_scale(tmp_path, monkeypatch):
    from wrapperlens.experiments.compiled.grid import preset_grid
    from wrapperlens.experiments.compiled.stages import EVAL_SETS

    out, nb = execute_tiny(COMPILED, tmp_path, monkeypatch)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "tiny"
    # The noise-free compiled Counter counts a exactly, whatever the noise does to the other row.
    exact = summary["compile"]["noise_std=0"]
    assert exact["acc/O_PT/cte0"] == exact["acc/O_PT/cte1"] == 1.0
    assert set(summary["finetune"]) == {"c_tr=1", "c_tr=0"}
    for run in summary["finetune"].values():
        assert set(EVAL_SETS) <= set(run["final"]) and run["final"]["step"] > 0
    # Both fine-tunings start from the same compiled run, evaluated on the same sets.
    assert summary["finetune"]["c_tr=1"]["step0"] == summary["finetune"]["c_tr=0"]["step0"]
    assert set(summary["attention"]) == {"compiled + noise", "fine-tuned, C_Tr = 1",
                                         "fine-tuned, C_Tr = 0"}
    prune = summary["prune"]
    assert prune["ks"] == list(preset_grid("tiny").prune_ks)
    # K = 0 prunes nothing: both sweeps then measure the fine-tuned model of the C_Tr = 1 run.
    unpruned = {k: summary["finetune"]["c_tr=1"]["final"][k] for k in EVAL_SETS}
    assert prune["top"][0] == prune["random"][0] == pytest.approx(unpruned)
    assert len(prune["weights"]) == max(prune["ks"])
    assert (out / "prune.png").stat().st_size > 0
