"""One preset type for every experiment: sections as attributes, overrides, etas, one registry."""

import json
import pickle
import subprocess
import sys

import pytest

from tasks.config import PCFGTaskConfig
from wrapperlens.config import ConfigError
from wrapperlens.models import ModelConfig
from wrapperlens.presets import Preset, get_preset, presets, register_preset
from wrapperlens.training import TrainConfig


def _toy(name: str = "toy", experiment: str = "toy-experiment", **etas: float) -> Preset:
    return Preset(name, experiment,
                  {"model": ModelConfig(), "pretrain": TrainConfig(lr=3e-3),
                   "finetune": TrainConfig(steps=10, lr=0.5)},
                  etas=etas or {"M": 1e-4, "S": 1e-5}, default_eta={"finetune": "M"})


def test_sections_read_as_attributes_and_an_unknown_one_is_named():
    p = get_preset("tiny", "pcfg")
    assert p.experiment == "pcfg" and p.task == p.sections["task"]
    assert isinstance(p.task, PCFGTaskConfig) and p.pretrain.steps == 300
    assert list(p.sections) == ["task", "model", "pretrain", "finetune", "reft", "grid",
                                "finetune_data"]
    with pytest.raises(AttributeError, match="no section 'delete'; sections: task, model"):
        p.delete


def test_a_stage_that_trains_at_an_eta_has_its_default_eta_as_lr():
    p = _toy()
    assert p.finetune.lr == 1e-4 and p.pretrain.lr == 3e-3  # 0.5 replaced; pretrain untouched
    assert p.eta("finetune") == ("M", 1e-4) and p.eta("finetune", "S") == ("S", 1e-5)
    with pytest.raises(ConfigError, match="eta 'L': expected one of M, S"):
        p.eta("finetune", "L")
    with pytest.raises(ConfigError, match="pretrain has no default eta"):
        p.eta("pretrain")
    for name in ("paper", "cpu", "demo", "tiny"):  # the paper's defaults: fine-tune at η_M, reFT at η_S
        pcfg = get_preset(name, "pcfg")
        assert (pcfg.finetune.lr, pcfg.reft.lr) == (pcfg.etas["M"], pcfg.etas["S"])


def test_overrides_return_a_changed_copy_and_refuse_what_an_eta_decides():
    p = _toy()
    q = p.with_overrides({"pretrain.steps": "7", "model.d_model": 32, "eta.M": "2e-4"})
    assert (q.pretrain.steps, q.model.d_model, q.etas["M"], q.finetune.lr) == (7, 32, 2e-4, 2e-4)
    assert (p.pretrain.steps, p.model.d_model, p.etas["M"]) == (1000, 64, 1e-4)  # unchanged
    with pytest.raises(ConfigError, match="finetune.lr is set by the finetune stage's eta; "
                                          "override eta.M or eta.S"):
        p.with_overrides({"finetune.lr": 1e-3})
    with pytest.raises(ConfigError, match="unknown key eta.L; known: eta.M, eta.S"):
        p.with_overrides({"eta.L": 1e-2})
    with pytest.raises(ConfigError, match="eta.M: expected a number"):
        p.with_overrides({"eta.M": "fast"})
    with pytest.raises(ConfigError, match="unknown section 'optimizer'"):
        p.with_overrides({"optimizer.lr": 1e-2})
    with pytest.raises(ConfigError, match="unknown key model.width"):
        p.with_overrides({"model.width": 3})


def test_presets_survive_pickling_for_worker_processes():
    p = get_preset("cpu", "pcfg").with_overrides({"pretrain.steps": 5})
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.pretrain.steps == 5 and q.etas == p.etas


def test_a_bad_preset_definition_is_refused():
    with pytest.raises(ValueError, match="default_eta\\['finetune'\\] = 'L'"):
        Preset("bad", "toy-experiment", {"finetune": TrainConfig()}, {"M": 1.0}, {"finetune": "L"})
    with pytest.raises(ValueError, match="names 'reft', not a training section"):
        Preset("bad", "toy-experiment", {"finetune": TrainConfig()}, {"M": 1.0}, {"reft": "M"})
    with pytest.raises(TypeError, match="section 'model' is not a config instance"):
        Preset("bad", "toy-experiment", {"model": ModelConfig})
    with pytest.raises(ValueError, match="section name 'etas' is a Preset attribute"):
        Preset("bad", "toy-experiment", {"etas": ModelConfig()})


def test_one_registry_with_errors_that_list_what_is_known():
    register_preset(_toy("a", "registry-test"), _toy("b", "registry-test"))
    register_preset(_toy("a", "registry-test"))  # the same preset again: a no-op
    assert list(presets("registry-test")) == ["a", "b"]
    assert get_preset("b", "registry-test") == _toy("b", "registry-test")
    with pytest.raises(ValueError, match="a different registry-test preset 'a'"):
        register_preset(_toy("a", "registry-test", M=1.0))
    with pytest.raises(ConfigError, match="unknown preset 'huge' for pcfg; known presets: "
                                          "paper, cpu, demo, tiny"):
        get_preset("huge", "pcfg")
    with pytest.raises(ConfigError, match="no presets registered for experiment 'nope'"):
        get_preset("cpu", "nope")


def test_tinystories_registers_its_presets_and_wrapperlens_does_not_import_it():
    code = """
import json, sys
import wrapperlens.presets as presets
from wrapperlens.config import ConfigError
before = "tinystories" in sys.modules
try:
    presets.get_preset("cpu", "tinystories")
    error = None
except ConfigError as e:
    error = str(e)
from tinystories.presets import EXPERIMENT
p = presets.get_preset("cpu", EXPERIMENT)
print(json.dumps({"before": before, "error": error, "names": list(presets.presets(EXPERIMENT)),
                  "experiment": p.experiment, "model": p.model.architecture,
                  "sections": list(p.sections)}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] is False
    assert "no presets registered for experiment 'tinystories'" in result["error"]
    assert result["names"] == ["paper", "cpu", "tiny", "demo"]
    assert (result["experiment"], result["model"]) == ("tinystories", "llama")
    assert result["sections"] == ["prepare", "tokenizer", "model", "batches", "pretrain", "delete",
                                  "reft", "eval", "probe", "probe_data", "classifier", "grid"]


def test_pcfg_etas_are_below_pretraining_and_the_default_reft_eta_below_the_finetune_one():
    """The learning-rate rule of resolve_configs
    (docs/choices.md#each-stages-learning-rate-is-below-its-parents) holds for the defaults."""
    expected = {"paper": (1e-3, {"L": 1e-4, "M": 1e-5, "S": 1e-6}),
                "cpu": (1e-3, {"L": 3e-4, "M": 1e-4, "S": 1e-5}),
                "tiny": (3e-3, {"L": 1e-3, "M": 3e-4, "S": 1e-4})}
    for name, (pretrain_lr, etas) in expected.items():
        assert (get_preset(name, "pcfg").pretrain.lr, get_preset(name, "pcfg").etas) == (pretrain_lr, etas)
    for name, p in presets("pcfg").items():
        assert all(eta < p.pretrain.lr for eta in p.etas.values()), name
        assert p.reft.lr < p.finetune.lr < p.pretrain.lr, name
