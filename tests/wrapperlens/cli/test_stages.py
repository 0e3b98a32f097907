"""The stage commands: help texts, errors that name the key, a stage round trip, the main job."""

import json

import pytest

from wrapperlens.cli import main
from wrapperlens.cli.stages import STAGE_COMMANDS


@pytest.mark.parametrize("command", STAGE_COMMANDS)
def test_every_subcommand_has_help_with_what_it_does(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text or "--from" in text
    if command in ("pretrain", "finetune", "reft"):
        assert "defaults per preset" in text and "cpu" in text and "[train] keys" in text
    if command in ("finetune", "reft"):
        assert "default: the --from run's preset" in " ".join(text.split())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train.lrr=3"], "unknown key train.lrr"),
        (["--train.steps=ten"], "train.steps: expected an integer"),
        (["--bogus"], "unrecognized argument '--bogus'"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--model.n_heads=3"], "not divisible"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(tmp_path, capsys, args, message):
    assert main(["pretrain", "--out", str(tmp_path / "run"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_stage_commands_config_file_and_eval(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nsteps = 6\neval_every = 3\ncheckpoint_every = 3\neval_samples = 20\n")
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path / "pt"), "--config", str(cfg),
                 "--train.steps=4", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "pt" / "config.json").read_text())
    assert saved["train"]["steps"] == 4 and saved["train"]["eval_every"] == 3  # flag beats file
    assert main(["finetune", "--preset", "tiny", "--from", str(tmp_path / "pt"), "--out",
                 str(tmp_path / "ft"), "--train.steps=2", "--train.eval_samples=20",
                 "--no-progress"]) == 0
    # refusing to overwrite, and refusing a model override on a fine-tuning run
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path / "pt"), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["finetune", "--preset", "tiny", "--from", str(tmp_path / "pt"), "--out",
                 str(tmp_path / "ft2"), "--model.d_model=64"]) == 2
    assert "fixed by the parent run" in capsys.readouterr().err
    assert main(["eval", "--from", str(tmp_path / "ft"), "--out", str(tmp_path / "e.json")]) == 0
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert set(metrics) >= {"acc/O_PT/cte0", "acc/O_FT/cte1"}
    assert main(["eval", "--from", str(tmp_path / "ft"), "--train.lr=1"]) == 2
    assert "eval takes no config overrides (got --train.lr)" in capsys.readouterr().err


def test_finetune_and_reft_default_to_the_parent_runs_preset(tmp_path):
    """Without --preset, a stage that starts from a run takes that run's preset (tiny here), not
    "cpu": its name, its training section and its named learning rates."""
    from wrapperlens.config import to_dict
    from wrapperlens.presets import get_preset

    tiny, cpu = get_preset("tiny", "pcfg"), get_preset("cpu", "pcfg")
    common = ["--train.eval_samples=20", "--train.batch_size=8", "--no-progress"]
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path / "pt"),
                 "--train.steps=2", *common]) == 0
    assert main(["finetune", "--from", str(tmp_path / "pt"), "--out", str(tmp_path / "ft"),
                 "--train.steps=1", *common]) == 0
    ft = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert ft["preset"] == "tiny"
    assert ft["train"]["lr"] == tiny.etas[tiny.default_eta["finetune"]] != cpu.etas["M"]
    overridden = {"steps", "eval_samples", "batch_size", "lr"}
    rest = {k: v for k, v in ft["train"].items() if k not in overridden}
    assert rest == {k: v for k, v in to_dict(tiny.finetune).items() if k not in overridden}
    assert main(["reft", "--from", str(tmp_path / "ft"), "--out", str(tmp_path / "reft"), *common,
                 "--train.steps=1"]) == 0
    reft = json.loads((tmp_path / "reft" / "config.json").read_text())
    assert reft["preset"] == "tiny" and reft["train"]["lr"] == tiny.etas[tiny.default_eta["reft"]]
    # an explicit --preset still wins over the parent's
    assert main(["finetune", "--preset", "cpu", "--from", str(tmp_path / "pt"), "--out",
                 str(tmp_path / "ft_cpu"), "--train.steps=1", *common]) == 0
    assert json.loads((tmp_path / "ft_cpu" / "config.json").read_text())["preset"] == "cpu"
