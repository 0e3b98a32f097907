"""A new experiment copies nothing: the toy experiment of tests/toy (its stages, preset and a
two-claim grid in under 80 lines) fills the core and runs through the one reproduction loop."""

from pathlib import Path

import pytest

from wrapperlens.config import ConfigError
from wrapperlens.experiment import experiment_class, read_run, register_experiment
from wrapperlens.reproduction import reproduce
from wrapperlens.results import read_results

from tests.toy.experiment import SETTING, Toy

TOY_FILE = Path(__file__).resolve().parents[1] / "toy" / "experiment.py"


def test_the_toy_experiment_is_small():
    assert len(TOY_FILE.read_text().splitlines()) <= 80


def test_the_registry_refuses_a_second_experiment_of_the_same_name():
    assert experiment_class("toy") is Toy
    register_experiment(Toy)  # the same class again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_experiment(type("Toy", (Toy,), {}))


@pytest.mark.slow
def test_reproduce_runs_the_toy_experiment_with_the_local_executor(tmp_path):
    results = reproduce([SETTING], "tiny", tmp_path, executor="local", workers=2,
                        progress=False)
    assert read_results(tmp_path) == results
    assert (tmp_path / "report.html").read_text().count("Pretraining learns to copy") >= 1
    runs = {r["key"]: r for r in results["runs"]}
    assert len(runs) == 4 and {r["status"] for r in runs.values()} == {"finished"}
    finetuned = read_run(tmp_path / runs["finetune/seed=0"]["dir"])
    assert isinstance(finetuned, Toy) and finetuned.eta == "M"
    assert finetuned.sections["task"].position == 1  # the fine-tuning task of the preset
    assert [c["id"] for c in results["claims"]] == [1, 2]
    for claim in results["claims"]:
        assert len(claim["values"]) == 2 and claim["floor"] == pytest.approx(1 / 6)
        assert claim["status"] in ("reproduced", "not reproduced", "inconclusive")
    # Sections a stage inherits from its parent are fixed there.
    with pytest.raises(ConfigError, match="model are fixed by the parent run"):
        Toy.resolve("finetune", "tiny", parent=tmp_path / runs["pretrain/seed=0"]["dir"],
                    overrides={"model.d_model": 8})
