"""Config overrides: types are coerced, unknown keys and bad values are named."""

import pytest

from tasks.config import PCFGTaskConfig
from wrapperlens.config import ConfigError, apply_overrides, from_dict, load_config_file, to_dict
from wrapperlens.models import ModelConfig
from wrapperlens.training import TrainConfig


def sections():
    return {"task": PCFGTaskConfig(), "model": ModelConfig(), "train": TrainConfig()}


def test_overrides_coerce_strings_to_field_types():
    out = apply_overrides(sections(), {"train.lr": "3e-4", "train.steps": "200",
                                       "model.fused_attention": "false", "task.families": "C,I"})
    assert out["train"].lr == 3e-4 and out["train"].steps == 200
    assert out["model"].fused_attention is False
    assert out["task"].families == ("C", "I")
    assert sections()["train"].lr == 1e-3  # originals untouched


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train.lrr": "1"}, "unknown key train.lrr"),
        ({"trian.lr": "1"}, "unknown section 'trian'"),
        ({"train.steps": "many"}, "train.steps: expected an integer"),
        ({"train.lr": "-1"}, "train.lr must be > 0"),
        ({"model.d_model": "30", "model.n_heads": "4"}, "not divisible"),
        ({"train.schedule": "linear"}, "train.schedule"),
        ({"lr": "1"}, "expected SECTION.KEY"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(sections(), override)


def test_round_trip_through_json_and_unknown_keys_in_files(tmp_path):
    cfg = TrainConfig(lr=5e-4, loss="answer")
    assert from_dict(TrainConfig, to_dict(cfg), "train") == cfg
    with pytest.raises(ConfigError, match="unknown key train.bogus"):
        from_dict(TrainConfig, {**to_dict(cfg), "bogus": 1}, "train")
    path = tmp_path / "c.toml"
    path.write_text('[train]\nlr = 0.01\nsteps = 5\n[model]\nd_model = 32\n')
    assert load_config_file(path) == {"train.lr": 0.01, "train.steps": 5, "model.d_model": 32}
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config_file(bad)
