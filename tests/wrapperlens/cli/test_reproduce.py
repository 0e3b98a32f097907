"""`wrapperlens reproduce` and `wrapperlens report`: what the command line passes on.

The sweep itself runs in tests/wrapperlens/experiments/test_reproduce.py.
"""

from __future__ import annotations

import pytest

from wrapperlens.cli import main
from wrapperlens import reproduction as reproduce_module


def test_help_names_the_presets_executors_and_seeds(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for words in ("demo | cpu | paper | tiny (default: demo)", "--seeds N", "--first-seed S",
                  "--executor",
                  "ray", "--address ADDR", "--threads N"):
        assert words in text


def test_the_flags_reach_reproduce(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(reproduce_module, "reproduce",
                        lambda settings, preset, out, **kw: seen.update(
                            settings=[s.name for s in settings], preset=preset, out=out, **kw)
                        or {"runs": [], "analyses": []})
    assert main(["reproduce", "--out", str(tmp_path), "--seeds", "4", "--executor", "inline",
                 "--workers", "3", "--grid.priors=L", "--no-progress", "--first-seed", "3"]) == 0
    assert (seen["preset"], seen["out"], seen["seeds"], seen["executor"], seen["workers"],
            seen["first_seed"]) == ("demo", tmp_path, 4, "inline", 3, 3)
    assert seen["overrides"] == {"grid.priors": "L"} and seen["progress"] is False
    assert seen["settings"] == ["pcfg", "compiled", "tinystories"]  # every claim by default


def test_bad_values_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--seeds", "0", "--out", str(tmp_path)])
    assert "expected an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "--first-seed", "-1", "--out", str(tmp_path)])
    assert "--first-seed: expected an integer >= 0, got -1" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no sweep.json here" in capsys.readouterr().err
    assert main(["reproduce", "--preset", "tiny", "--out", str(tmp_path),
                 "--train.lr=1"]) == 2
    assert "train.lr cannot be set here" in capsys.readouterr().err
