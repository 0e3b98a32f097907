"""Verdicts over held-out seeds (wrapperlens.held_out and `wrapperlens claims`)."""

from __future__ import annotations

import pytest

from wrapperlens.checkpoints import write_json
from wrapperlens.cli import main
from wrapperlens.held_out import combine, combined_status, markdown_table
from wrapperlens.results import RESULTS_FILE, RESULTS_FORMAT, read_results, sealed


def _results(seeds: list[int], statuses: dict[int, str], preset: str = "cpu") -> dict:
    """A results.json of one setting: a run per seed and one claim per entry of `statuses`."""
    runs = [{"setting": "toy", "key": f"pretrain/seed={s}", "stage": "pretrain",
             "params": {"seed": s}, "status": "finished", "error": None, "seconds": 1.0,
             "run_id": f"r{s}", "dir": f"runs/r{s}", "final": {"acc": 1.0},
             "curve": [{"step": 0, "acc": 1.0}], "floors": {}} for s in seeds]
    claims = [{"id": i, "setting": "toy", "title": f"claim {i}", "paper": "", "rule": "r",
               "quantity": "acc" if status != "not covered" else "", "threshold": 0.5,
               "values": [] if status == "not covered" else [0.9, 0.1][:1 + (status ==
                                                                            "inconclusive")],
               "mean": None if status == "not covered" else 0.5, "floor": 0.25,
               "spread": None if status == "not covered" else [0.1, 0.9], "status": status,
               "seeds_vary": "", "note": "no runs" if status == "not covered" else ""}
              for i, status in statuses.items()]
    return sealed({"format": RESULTS_FORMAT, "settings": ["toy"], "preset": preset,
                   "seeds": {"toy": len(seeds)}, "seed_roles": {"toy": {}}, "executor": "local",
                   "threads": 1, "wall_seconds": 600.0, "runs": runs, "analyses": [],
                   "tables": {}, "claims": claims})


@pytest.mark.parametrize("chosen, held_out, joined", [
    ("reproduced", "reproduced", "reproduced"),
    ("not reproduced", "not reproduced", "not reproduced"),
    ("reproduced", "not reproduced", "inconclusive"),
    ("reproduced", "inconclusive", "inconclusive"),
    ("inconclusive", "inconclusive", "inconclusive"),
    ("reproduced", "not covered", "not covered"),
    ("not covered", "reproduced", "not covered"),
    ("undefined", "undefined", "undefined"),
    ("undefined", "reproduced", "inconclusive"),
    ("not reproduced", "undefined", "inconclusive"),
])
def test_a_verdict_stands_only_where_both_halves_agree(chosen, held_out, joined):
    assert combined_status(chosen, held_out) == joined


def test_combine_joins_claim_by_claim_and_names_the_seeds():
    rows = combine(_results([0, 1, 2], {1: "reproduced", 2: "reproduced"}),
                   _results([3, 4, 5], {1: "reproduced", 2: "not reproduced"}))
    assert [(r["id"], r["status"], r["seeds"]) for r in rows] == [
        (1, "reproduced", ("0-2", "3-5")), (2, "inconclusive", ("0-2", "3-5"))]
    table = markdown_table(rows, (600.0, 660.0))
    assert "| 2 claim 2 | acc > 0.5 | 0-2: 0.500 [0.100, 0.900] (n = 1): reproduced | 3-5:" in table
    assert table.endswith("Wall time: 10.0 min, 11.0 min.")


@pytest.mark.parametrize("held_out, message", [
    (_results([2, 3, 4], {1: "reproduced"}), r"both results ran seeds \[2\]"),
    (_results([3, 4, 5], {1: "reproduced"}, preset="tiny"), "differ in 'preset'"),
])
def test_combine_refuses_results_that_are_not_a_held_out_pair(held_out, message):
    with pytest.raises(ValueError, match=message):
        combine(_results([0, 1, 2], {1: "reproduced"}), held_out)


def test_the_claims_command_prints_one_or_two_directories(tmp_path, capsys):
    for name, seeds, status in (("a", [0, 1, 2], "reproduced"), ("b", [3, 4, 5], "inconclusive")):
        write_json(tmp_path / name / RESULTS_FILE, _results(seeds, {1: status}))
        assert read_results(tmp_path / name)  # a valid results.json
    assert main(["claims", str(tmp_path / "a"), str(tmp_path / "b"), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| 1 claim 1 | acc > 0.5 |" in out and out.rstrip().endswith("10.0 min, 10.0 min.")
    assert "| inconclusive |" in out
    assert main(["claims", str(tmp_path / "a")]) == 0
    assert "reproduced (> 0.5)" in capsys.readouterr().out
    assert main(["claims", str(tmp_path / "a"), str(tmp_path / "a")]) == 2
    assert "both results ran seeds [0, 1, 2]" in capsys.readouterr().err
