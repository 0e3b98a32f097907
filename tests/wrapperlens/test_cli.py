"""The command line: help texts, errors that name the key, a stage round trip, the main job."""

import json

import pytest

from wrapperlens.cli import main


@pytest.mark.parametrize("command", ["pretrain", "finetune", "reft", "eval", "reproduce"])
def test_every_subcommand_has_help_with_what_it_does(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text or "--from" in text
    if command in ("pretrain", "finetune", "reft"):
        assert "defaults per preset" in text and "cpu" in text and "[train] keys" in text


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


@pytest.mark.slow
def test_reproduce_main_job_on_the_tiny_preset(tmp_path, capsys):
    assert main(["reproduce", "--preset", "tiny", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "finetune eta_L" in out and "O_PT/cte0" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["runs"]) == {"pretrain", "finetune-eta_L", "finetune-eta_M", "finetune-eta_S"}
    # a second call reuses the finished runs instead of training again
    assert main(["reproduce", "--preset", "tiny", "--out", str(tmp_path), "--no-progress"]) == 0
    again = json.loads((tmp_path / "summary.json").read_text())
    assert all(r["seconds"] == 0.0 for r in again["runs"].values())
