"""The known-wrapper benchmark: localised fine-tuning changes only its units, the grid runs
through the reproduction loop at `tiny`, and the leaderboard's rule passes and fails where it
must."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import weights
from wrapperlens.analysis.weight_change import component_parameters
from wrapperlens.cli import main
from wrapperlens.config import ConfigError
from wrapperlens.experiments.pcfg.pairs import open_pair
from wrapperlens.experiments.wrappers.grid import SETTING, plan
from wrapperlens.experiments.wrappers.grid_config import METHODS, BenchmarkConfig
from wrapperlens.experiments.wrappers.leaderboard import (joined_markdown, leaderboard_markdown,
                                                        leaderboard_tables)
from wrapperlens.experiments.wrappers.stages import WrapperRun
from wrapperlens.experiments.wrappers.units import UnitSetConfig, draw_units
from wrapperlens.planning import check_configs
from wrapperlens.reproduction import reproduce

SMALL = {"train.batch_size": 16, "train.eval_samples": 40, "train.steps": 20,
         "train.eval_every": 20, "train.checkpoint_every": 20}


# ----------------------------------------------------------------------------- the units
def test_unit_draws_are_seeded_distinct_and_bounded():
    a = draw_units(UnitSetConfig("neuron", 5, seed=1), n_layers=2, width=8)
    assert a == draw_units(UnitSetConfig("neuron", 5, seed=1), 2, 8)
    assert a != draw_units(UnitSetConfig("neuron", 5, seed=2), 2, 8)
    assert len(set(a)) == 5 and all(k == "neuron" and 0 <= l < 2 and 0 <= i < 8 for k, l, i in a)
    with pytest.raises(ConfigError, match="only 4 heads"):
        draw_units(UnitSetConfig("head", 5), n_layers=2, width=2)
    for bad, match in ((dict(kind="layer"), "units.kind"), (dict(count=0), "units.count")):
        with pytest.raises(ValueError, match=match):
            UnitSetConfig(**bad)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("wrappers")
    run = WrapperRun.resolve("pretrain", "tiny", overrides={**SMALL, "task.prior": "L"})
    run.run_or_reuse(root / "pt", progress=False)
    return root


@pytest.mark.parametrize("kind,count", [("neuron", 3), ("head", 1)])
def test_localised_fine_tuning_changes_only_its_units(pretrained, kind, count):
    run = WrapperRun.resolve("localised", "tiny", parent=pretrained / "pt",
                             overrides={**SMALL, "units.kind": kind, "units.count": count})
    run.run_or_reuse(pretrained / kind, progress=False)
    before, after = weights(pretrained / "pt"), weights(pretrained / kind)
    ft, pt = open_pair(pretrained / kind)  # a wrappers run opens as the PCFG run it is
    assert ft.run.wrapper_units() == run.wrapper_units() and len(run.wrapper_units()) == count
    inside = torch.zeros(0)
    params = dict(pt.model.named_parameters())
    owned = {}
    for _, layer, index in run.wrapper_units():
        for name, sel in component_parameters(params, pt.model.cfg.n_heads, kind, layer, index):
            owned.setdefault(name, torch.zeros_like(params[name], dtype=torch.bool))[sel] = True
    for name in params:  # the file also holds buffers (attention masks)
        value = before[name]
        mask = owned.get(name, torch.zeros_like(value, dtype=torch.bool))
        assert torch.equal(value[~mask], after[name][~mask]), name  # bit-identical outside
        inside = torch.cat([inside, (value[mask] - after[name][mask]).abs()])
    assert inside.numel() and inside.max() > 0  # and it did train inside


def test_localised_fine_tuning_refuses_weight_decay(pretrained):
    with pytest.raises(ConfigError, match="train.weight_decay=0"):
        WrapperRun.resolve("localised", "tiny", parent=pretrained / "pt",
                           overrides={"train.weight_decay": 0.1})


# -------------------------------------------------------------------------------- the grid
def test_plan_names_every_job_and_refuses_other_sections():
    jobs = plan("tiny", {"grid.seeds": 2})
    keys = [g.job.key for g in jobs]
    assert "localised/neuron=4/seed=1" in keys and "localise/control/seed=1" in keys
    assert sum(g.kind == "localise" for g in jobs) == 2 * 3  # 2 wrappers + 1 control per seed
    with pytest.raises(ConfigError, match="finetune.c_tr cannot be set"):
        plan("tiny", {"finetune.c_tr": 0.5})
    with pytest.raises(ValueError, match="KIND:COUNT"):
        BenchmarkConfig(wrappers=("neurons:4",))


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_every_preset_resolves_before_any_job_runs(preset):
    jobs = plan(preset)
    check_configs(jobs)  # every training job's configs, in memory
    assert sum(g.kind == "localise" for g in jobs) == 3 * 4  # 3 seeds x (3 wrappers + control)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = reproduce([SETTING], "tiny", out, executor="inline", progress=False)
    return out, results


def test_the_tiny_benchmark_writes_its_leaderboard(benchmark):
    out, results = benchmark
    board = results["tables"]["wrappers_leaderboard"]
    assert [r["method"] for r in board["rows"]] == [*METHODS, "oracle (the known units)"]
    assert board["pairs"] == 2 and board["controls"] == 2  # neuron:4, head:1; control x 2 k
    weight = next(r for r in board["rows"] if r["method"] == "weight")
    # Only the wrapper's units changed: the weight change finds them exactly, on every pair.
    assert weight["precision"]["min"] == 1.0 and weight["auroc"]["min"] == 1.0
    assert json.loads((out / "results.json").read_text())["tables"] == results["tables"]
    page = (out / "report.html").read_text()
    assert "Known-wrapper benchmark" in page and "oracle (the known units)" in page
    text = leaderboard_markdown(results)
    assert text.startswith("| method | precision@k |") and "| head:1 | 1 |" in text


def test_the_leaderboard_command_prints_it(benchmark, capsys):
    out, _ = benchmark
    assert main(["leaderboard", str(out)]) == 0
    assert "| weight |" in capsys.readouterr().out


# ----------------------------------------------------------------------- the rule, by hand
def _spec(revival: float, precision: float | None, margin: float = 0.1) -> dict:
    method = {"precision": precision, "auroc": precision, "removed_acc": 0.5 + revival,
              "revival": revival, "reports": revival > margin, "top": []}
    return {"units": 8, "k": 2, "chance_precision": None if precision is None else 0.25,
            "oracle_acc": None if precision is None else 0.9, "random_acc": 0.5,
            "methods": {"m": method}}


def _view(*entries, finetuned: float = 0.1) -> dict:
    acc = {"pretrained": 1.0, "finetuned": finetuned}
    analyses = [{"kind": "localise", "status": "finished", "params": {"family": family},
                 "result": {"revival_margin": 0.1, "acc": acc, "specs": {"x:2": spec}}}
                for family, spec in entries]
    return {"analyses": analyses}


def test_a_method_that_revives_finds_the_wrapper_and_one_that_does_not_fails():
    found = leaderboard_tables(_view(("neuron:2", _spec(0.3, 1.0))))["wrappers_leaderboard"]
    assert found["rows"][0]["found"] == {"rate": 1.0, "count": 1, "n": 1}
    missed = leaderboard_tables(_view(("neuron:2", _spec(0.05, 0.0))))["wrappers_leaderboard"]
    assert missed["rows"][0]["found"]["count"] == 0


def test_a_wrapper_that_hides_nothing_is_ranked_but_not_judged_by_revival():
    board = leaderboard_tables(_view(("neuron:2", _spec(0.3, 1.0)), finetuned=0.95))
    row = board["wrappers_leaderboard"]["rows"][0]
    assert row["precision"]["n"] == 1 and row["found"] is None and row["revival"] is None
    assert board["wrappers_leaderboard"]["hiding"] == 0


def test_revival_on_a_model_that_never_had_the_capability_is_a_false_positive():
    board = leaderboard_tables(_view(("neuron:2", _spec(0.3, 1.0)), ("control", _spec(0.2, None)),
                                     ("control", _spec(0.0, None))))["wrappers_leaderboard"]
    row = board["rows"][0]
    assert row["false_positives"] == {"rate": 0.5, "count": 1, "n": 2}
    assert row["precision"]["n"] == 1  # controls have no precision
    assert leaderboard_tables({"analyses": []})["wrappers_leaderboard"]["rows"] == []


def test_two_runs_are_joined_cell_by_cell_with_their_seeds():
    def results(seed: int, revival: float) -> dict:
        tables = leaderboard_tables(_view(("neuron:2", _spec(revival, 1.0))))
        return {"tables": tables, "preset": "cpu",
                "runs": [{"setting": "wrappers", "params": {"seed": seed}}]}

    text = joined_markdown(results(0, 0.3), results(3, 0.05))
    assert "| m | 1.00 [1.00, 1.00] / 1.00 [1.00, 1.00] |" in text
    assert "| 1/1 / 0/1 |" in text and "Each cell: seed 0 / seed 3" in text
    other = results(3, 0.05)
    other["tables"]["wrappers_leaderboard"]["rows"][0]["method"] = "n"
    with pytest.raises(ValueError, match="different methods"):
        joined_markdown(results(0, 0.3), other)
    with pytest.raises(ValueError, match="no finished localise"):
        joined_markdown({"tables": {}, "preset": "cpu"}, other)
    with pytest.raises(ValueError, match="presets differ"):
        joined_markdown({**results(0, 0.3), "preset": "tiny"}, results(3, 0.05))
