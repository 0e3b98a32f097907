"""Scr.+FT baseline: swapped prior, configs matched to a reFT run, the same evaluation strings as
reFT's Acc O_PT, and iterations-to-threshold read back from the runs' metrics files."""

import json

import numpy as np
import pytest

from tasks.config import parse_prior
from wrapperlens.config import ConfigError
from wrapperlens.experiments.pcfg.stages import load_run
from wrapperlens.experiments.pcfg.scratch_baseline import (
    REFT_METRIC,
    SCRATCH_METRIC,
    compare_reft_with_scratch,
    find_pretrain_run,
    run_scratch_baseline,
    scratch_finetune_overrides,
    scratch_pretrain_overrides,
    swapped_prior,
)



def test_swapped_prior():
    assert swapped_prior("L") == "a=0.001,b=0.999,c=0"
    assert parse_prior(swapped_prior("H"), ("a", "b", "c")) == {"a": 0.3, "b": 0.5, "c": 0.2}
    assert parse_prior(swapped_prior(swapped_prior("M")), ("a", "b", "c")) == parse_prior(
        "M", ("a", "b", "c")
    )
    assert swapped_prior("a=0.7,b=0.2,c=0.1", "a", "c") == "a=0.1,b=0.2,c=0.7"
    with pytest.raises(ValueError, match="'d'"):
        swapped_prior("L", "a", "d")


def test_preset_overrides_without_a_reft_run():
    pt = scratch_pretrain_overrides(None, "tiny")
    assert pt["task.prior"] == "a=0.001,b=0.999,c=0"
    assert pt["train.steps"] == 300 and pt["model.d_model"] == 32  # the tiny preset's
    ft = scratch_finetune_overrides(None, "tiny", eta="M")
    assert (ft["finetune.operand"], ft["finetune.pretrain_operand"], ft["finetune.c_tr"]) == (
        "a",
        "b",
        0.0,
    )
    assert ft["train.lr"] == 3e-4 and ft["train.log_spaced_eval"] is True  # tiny's η_M
    assert scratch_finetune_overrides(None, "tiny")["train.lr"] == 1e-4  # the preset's reft_eta S
    with pytest.raises(ConfigError, match="eta 'X'"):
        scratch_finetune_overrides(None, "tiny", eta="X")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_chain):
    root = tiny_chain(tmp_path_factory.mktemp("scratch"), 8, 4, 10)
    baseline = run_scratch_baseline(
        root / "scratch", "tiny", reft_run=root / "reft", progress=False
    )
    return root, baseline


def read(path):
    return json.loads(path.read_text())


def test_scratch_runs_match_the_reft_run(runs):
    root, baseline = runs
    assert find_pretrain_run(root / "reft") == root / "pt"
    pt, scratch_pt = read(root / "pt" / "config.json"), read(baseline.pretrain_dir / "config.json")
    assert scratch_pt["task"] == {**pt["task"], "prior": "a=0.001,b=0.999,c=0"}
    assert scratch_pt["model"] == pt["model"] and scratch_pt["train"] == pt["train"]
    reft, scratch_ft = (
        read(root / "reft" / "config.json"),
        read(baseline.finetune_dir / "config.json"),
    )
    assert scratch_ft["stage"] == "finetune" and scratch_ft["train"] == reft["train"]
    data = scratch_ft["finetune"]
    assert (data["operand"], data["pretrain_operand"], data["c_tr"]) == ("a", "b", 0.0)
    assert baseline.curve.steps == (0, 1, 2, 5, 10)  # reFT's log-spaced schedule


def test_both_curves_evaluate_counting_a_on_the_same_strings(runs):
    root, baseline = runs
    reft_run, _ = load_run(root / "reft")
    scratch_run, _ = load_run(baseline.finetune_dir)
    reft_set = reft_run.eval_sets()[REFT_METRIC]
    scratch_set = scratch_run.eval_sets()[SCRATCH_METRIC]
    np.testing.assert_array_equal(reft_set.tokens, scratch_set.tokens)
    count_a = reft_run.task.labels(reft_set.text, reft_run.eval_questions()[REFT_METRIC][0])
    np.testing.assert_array_equal(reft_set.labels, count_a)


def test_compare_reads_iterations_to_threshold_from_both_runs(runs, tmp_path):
    root, baseline = runs
    result = compare_reft_with_scratch(
        {"reFT": root / "reft"}, baseline.finetune_dir, 0.0, tmp_path
    )
    assert result["iterations_to_threshold"] == {"reFT": 0, "Scr.+FT": 0}  # everything is >= 0
    assert result["same_eval_strings"] == {"reFT": True}

    def scan(run_dir, metric, threshold):
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if metric in record and record[metric] >= threshold:
                return record["step"]
        return None

    threshold = max(baseline.curve.values)  # reached exactly at the first maximum
    result = compare_reft_with_scratch({"reFT": root / "reft"}, baseline.finetune_dir, threshold)
    assert result["iterations_to_threshold"] == {
        "reFT": scan(root / "reft", REFT_METRIC, threshold),
        "Scr.+FT": scan(baseline.finetune_dir, SCRATCH_METRIC, threshold),
    }
    assert (tmp_path / "reft_vs_scratch.json").exists() and (
        tmp_path / "reft_vs_scratch.png"
    ).exists()


def test_the_device_reaches_the_training_of_both_stages(tmp_path, monkeypatch):
    from wrapperlens.experiments.pcfg import scratch_baseline

    devices, real = [], scratch_baseline.train_or_reuse

    def recording(spec, out, **kwargs):
        devices.append(kwargs.get("device"))
        return real(spec, out, **kwargs)

    monkeypatch.setattr(scratch_baseline, "train_or_reuse", recording)
    few = {"train.steps": 2, "train.batch_size": 8, "train.eval_every": 2,
           "train.eval_samples": 20}
    baseline = run_scratch_baseline(tmp_path, "tiny", pretrain_overrides=few,
                                    finetune_overrides=few, progress=False, device="auto")
    assert devices == ["auto", "auto"]
    assert baseline.curve.steps[-1] == 2
