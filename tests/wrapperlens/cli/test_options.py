"""The command-line package itself: light to import, one error boundary, shared options."""

import argparse
import subprocess
import sys

import pytest

from wrapperlens.cli import build_parser, main
from wrapperlens.cli import stages as stage_commands
from wrapperlens.cli.options import check_sections, format_ints, int_list, resolve_preset
from wrapperlens.config import ConfigError

HEAVY = ("torch", "transformer_lens", "datasets", "tasks", "tinystories.experiments")


def test_parsing_every_command_imports_nothing_heavy():
    """Importing the package, building the parser, `--help` and parsing a command line (before
    the command runs) import the standard library and wrapperlens.config only."""
    code = (
        "import sys, contextlib, io\n"
        "import wrapperlens.cli, wrapperlens.cli.tinystories\n"
        "from wrapperlens.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.parse_known_args(['prune', '--from', 'r', '--ks', '0-3', '--train.lr=1'])\n"
        "parser.parse_known_args(['tinystories', 'compare', '--from', 'a=x', 'y', '--out', 'o'])\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    parser.parse_args(['--help'])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_wrapperlens_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "wrapperlens", "patch", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--from RUN" in out.stdout
    out = subprocess.run([sys.executable, "-m", "wrapperlens", "eval", "--from", "nowhere",
                          "--train.lr=1"], capture_output=True, text=True)
    assert out.returncode == 2
    expected = "wrapperlens: error: eval takes no config overrides (got --train.lr)"
    assert out.stderr.strip() == expected


def test_int_list_and_format_ints_invert_each_other():
    assert int_list("0-3,8") == (0, 1, 2, 3, 8)
    assert int_list("5") == (5,)
    for values in [(0, 1, 2, 3, 8), (5,), tuple(range(16)), (1, 3, 5), (2, 3, 7, 8, 9)]:
        assert int_list(format_ints(values)) == values
    assert format_ints(range(16)) == "0-15"
    with pytest.raises(argparse.ArgumentTypeError, match="expected integers"):
        int_list("a-b")
    with pytest.raises(argparse.ArgumentTypeError, match="no integers"):
        int_list(",")


def test_sections_a_command_does_not_take_are_refused_by_name():
    check_sections("x", {}, ())  # nothing to refuse
    check_sections("x", {"probe.steps": "3"}, ("probe", "probe_data"))
    with pytest.raises(ConfigError, match="x takes no config overrides \\(got --train.lr\\)"):
        check_sections("x", {"train.lr": "1"}, ())
    with pytest.raises(ConfigError, match=r"sections \['eval', 'train'\] do not apply here; x "
                       "takes probe"):
        check_sections("x", {"train.lr": "1", "eval.n": "2", "probe.lr": "3"}, ("probe",))


def test_the_preset_defaults_to_the_from_runs_then_cpu(tmp_path):
    from wrapperlens.runs import RunDir

    RunDir(tmp_path / "run").write_config({"stage": "pretrain", "preset": "tiny"})
    RunDir(tmp_path / "bare").write_config({"stage": "import"})
    ns = argparse.Namespace
    assert resolve_preset(ns(preset=None, run=str(tmp_path / "run"))) == "tiny"
    assert resolve_preset(ns(preset="paper", run=str(tmp_path / "run"))) == "paper"
    assert resolve_preset(ns(preset=None, runs=[str(tmp_path / "run"), "x"])) == "tiny"
    assert resolve_preset(ns(preset=None, run=str(tmp_path / "bare"))) == "cpu"  # names none
    assert resolve_preset(ns(preset=None, run=str(tmp_path / "missing"))) == "cpu"
    assert resolve_preset(ns(preset=None)) == "cpu"  # a command that reads no run


def test_one_error_boundary_user_errors_exit_2_and_bugs_propagate(monkeypatch, capsys):
    def raising(error):
        def handler(args, overrides):
            raise error
        return handler

    for error in (FileNotFoundError("no such run: r"), ConfigError("bad key x.y"),
                  ValueError("bad value"), ConnectionError("no hub")):
        monkeypatch.setattr(stage_commands, "_eval", raising(error))
        assert main(["eval", "--from", "r"]) == 2
        assert capsys.readouterr().err == f"wrapperlens: error: {error}\n"
    monkeypatch.setattr(stage_commands, "_eval", raising(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # not a user error: the traceback shows
        main(["eval", "--from", "r"])


def test_every_command_reading_a_run_names_it_from():
    """No command takes the input run under another name (`--run`, `--models`, `--reft`)."""
    parser = build_parser()
    seen = 0

    def walk(p, path):
        nonlocal seen
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif not action.option_strings:
                continue
            else:
                assert not {"--run", "--models", "--reft", "--parent"} & set(action.option_strings)
                if "--from" in action.option_strings:
                    seen += 1
                    assert action.dest in ("run", "runs"), path

    walk(parser, [])
    assert seen >= 15  # finetune, reft, eval, 7 analysis, 7 tinystories


def test_only_rank_0_prints_a_finished_stage(monkeypatch, tmp_path, capsys):
    argv = ["pretrain", "--preset", "tiny", "--train.steps=1", "--train.eval_samples=10",
            "--train.batch_size=4", "--no-progress"]
    monkeypatch.setattr(stage_commands, "is_main_process", lambda: False)
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(stage_commands, "is_main_process", lambda: True)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "pretrain done" in capsys.readouterr().out


def test_a_bad_value_from_a_config_file_is_refused_naming_the_file_and_key(tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text('{"train": {"steps": "many"}}')
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path / "run"),
                 "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "train.steps" in error and f"--config {config}" in error
    assert not (tmp_path / "run").exists()
    # The same key set by a flag names no file.
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path / "run"),
                 "--train.steps=many"]) == 2
    assert "--config" not in capsys.readouterr().err
