"""The whole TinyStories pipeline at the `tiny` scale: prepare -> tokenizer -> pretrain (+ control)
-> delete -> reFT -> probes -> compare, and resuming a stage."""

import json
from pathlib import Path

import pytest
import torch

from tinystories.experiments import load_story_model, read_story_run, resolve_story_run
from tinystories.pipeline import preset_with_overrides, run_pipeline
from wrapperlens.config import ConfigError
from wrapperlens.stages import run_stage


def run_story_stage(run, out, **kw):
    """Train a resolved story stage through the engine."""
    return run_stage(run.spec(out), out, **kw)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    summary = run_pipeline(out, "tiny", protocols=("F+R",), etas=("M",), workers=1,
                           progress=False, log=lambda line: None)
    return out, summary


def test_every_stage_writes_its_run(pipeline):
    out, summary = pipeline
    assert set(summary["runs"]) == {"pretrain", "control", "delete F+R-M", "reft F+R-M",
                                    "reft control"}
    delete = read_story_run(out / "delete" / "F+R-M")
    assert delete["experiment"] == "tinystories"
    assert delete["data"]["protocol"] == "filter_randomise" and delete["eta"] == "M"
    assert delete["train"]["lr"] == 1e-3 and delete["train"]["schedule"] == "constant"
    assert Path(delete["parent"]).resolve() == (out / "pretrain").resolve()  # via its link
    assert read_story_run(out / "control")["data"]["protocol"] == "filter"
    assert read_story_run(out / "reft" / "control")["data"]["protocol"] == "reft"
    curves = summary["runs"]["reft F+R-M"]
    # 6 steps, eval every 3 and log-spaced: 0, 1, 2, 3, 5, 6; generations at 0, 3 and the end.
    assert [s for s, _ in curves["twist_loss"]] == [0, 1, 2, 3, 5, 6]
    assert [s for s, _ in curves["twist_score"]] == [0, 3, 6]
    rows = (out / "reft" / "F+R-M" / "generations" / "step_000003.jsonl").read_text().splitlines()
    assert len(rows) == 4 and "Twist" in json.loads(rows[0])["prompt"]
    assert 0 <= summary["classifier"]["held_out"]["accuracy"] <= 1


def test_each_stage_starts_from_its_parents_final_weights(pipeline):
    # The step-0 evaluation of a stage is its parent's final model on the same data.
    _, summary = pipeline
    runs = summary["runs"]
    pairs = [("pretrain", "delete F+R-M"), ("delete F+R-M", "reft F+R-M"),
             ("control", "reft control")]
    for parent, child in pairs:
        assert runs[child]["twist_loss"][0][1] == pytest.approx(runs[parent]["twist_loss"][-1][1],
                                                                 rel=1e-6)
    # Training moved the weights: the loss changed during deletion.
    assert runs["delete F+R-M"]["twist_loss"][-1][1] != runs["delete F+R-M"]["twist_loss"][0][1]


def test_probes_and_comparison_cover_every_model(pipeline):
    out, summary = pipeline
    probes = summary["probes"]
    assert probes["points"] == ["B0", "B1", "B2"]
    assert set(probes["twist_accuracy"]) == {
        "pretrained", "control", "deleted F+R-M", "revived F+R-M", "control reFT", "random init"}
    report = json.loads((out / "compare" / "report.json").read_text())
    assert report["reference"] == "pretrained"
    assert set(report["cka"]) == {"deleted F+R-M", "control"}
    assert report["weight_change"]["deleted F+R-M"]["total"]["relative"] > 0
    transfer = report["probe_transfer"]
    probed = json.loads((out / "probe" / "report.json").read_text())["accuracy"]
    assert transfer["pretrained"]["pretrained"] == probed["pretrained"]
    for name in ("probe/probe_accuracy.png", "compare/residual_similarity.png",
                 "compare/weight_change.png", "compare/probe_transfer.png", "summary.txt"):
        assert (out / name).stat().st_size > 0


def test_a_killed_stage_resumes_to_the_weights_of_an_uninterrupted_run(pipeline, tmp_path):
    out, _ = pipeline
    run = resolve_story_run("delete", "tiny", parent=out / "pretrain", protocol="F", eta="S")
    full, _ = run_story_stage(run, tmp_path / "full", progress=False)
    run_story_stage(run, tmp_path / "killed", progress=False, stop_after=4)  # checkpoint at 3
    resumed, _ = run_story_stage(run, tmp_path / "killed", resume=True, progress=False)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(load_story_model(tmp_path / "killed").W_E, full.W_E)
    metrics = [(tmp_path / d / "metrics.jsonl").read_text() for d in ("full", "killed")]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
              for line in m.splitlines()] for m in metrics]
    assert strip[0] == strip[1]


def test_a_stage_refuses_to_overwrite_a_finished_run_and_the_pipeline_reuses_it(pipeline):
    out, _ = pipeline
    run = resolve_story_run("delete", "tiny", parent=out / "pretrain", protocol="F+R", eta="M")
    with pytest.raises(ConfigError, match="already holds a run"):
        run_story_stage(run, out / "delete" / "F+R-M", progress=False)
    weights = out / "delete" / "F+R-M" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    summary = run_pipeline(out, "tiny", protocols=("F+R",), etas=("M",), workers=1,
                           progress=False, log=lambda line: None)
    assert weights.stat().st_mtime_ns == before  # finished stages are not trained again
    assert set(summary["runs"]) >= {"delete F+R-M", "reft F+R-M"}


def test_stage_configs_are_validated(pipeline):
    out, _ = pipeline
    with pytest.raises(ConfigError, match="delete protocol"):
        resolve_story_run("delete", "tiny", parent=out / "pretrain", protocol="reft")
    with pytest.raises(ConfigError, match="generation_steps"):
        resolve_story_run("reft", "tiny", parent=out / "pretrain",
                          overrides={"eval.generation_steps": "4"})
    with pytest.raises(ConfigError, match="needs --from"):
        resolve_story_run("reft", "tiny")
    with pytest.raises(ConfigError, match="unknown key train.nope"):
        resolve_story_run("reft", "tiny", parent=out / "pretrain", overrides={"train.nope": 1})


def test_pipeline_overrides_change_sections_and_etas():
    p = preset_with_overrides("tiny", {"pretrain.steps": "7", "eta.S": "3e-5"})
    assert p.pretrain.steps == 7 and p.etas == {"M": 1e-3, "S": 3e-5}
    with pytest.raises(ConfigError, match="eta.M or eta.S"):
        preset_with_overrides("tiny", {"delete.lr": 1e-3})
    with pytest.raises(ConfigError, match="unknown key eta.L"):
        preset_with_overrides("tiny", {"eta.L": 1e-2})
    with pytest.raises(ConfigError, match="unknown section"):
        preset_with_overrides("tiny", {"optimizer.lr": 1e-2})


def test_the_protocols_come_from_the_grid_unless_given_and_are_never_given_twice(monkeypatch,
                                                                                tmp_path):
    import wrapperlens.reproduction as reproduction

    seen = []

    def fake_reproduce(settings, preset, out, overrides, **kw):
        seen.append(overrides)
        raise RuntimeError("stop here")

    monkeypatch.setattr(reproduction, "reproduce", fake_reproduce)
    for kwargs, expected in (({"overrides": {"grid.protocols": ["F"]}}, ["F"]),
                             ({"protocols": ("F+MM",)}, ["F+MM"]), ({}, None)):
        with pytest.raises(RuntimeError, match="stop here"):
            run_pipeline(tmp_path, "tiny", progress=False, **kwargs)
        assert seen[-1].get("grid.protocols") == expected
    with pytest.raises(ConfigError, match=r"grid.protocols is given twice: \['F\+R'\]"):
        run_pipeline(tmp_path, "tiny", overrides={"grid.protocols": ["F"]}, protocols=("F+R",))
    assert len(seen) == 3 and not (tmp_path / "sweep.json").exists()
