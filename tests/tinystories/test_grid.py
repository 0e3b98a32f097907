"""The TinyStories setting's plan (tinystories.grid)."""

from __future__ import annotations

import pytest


def test_first_seed_shifts_every_run_of_the_plan_to_held_out_seeds():
    from tinystories.grid import plan

    planned = plan("tiny", {"grid.seeds": 2, "grid.first_seed": 3})
    runs = [g for g in planned if g.kind == "run"]
    assert {g.params["seed"] for g in runs} == {3, 4}
    pretrain = next(g for g in runs if g.job.key == "pretrain/seed=3")
    assert pretrain.job.args["overrides"]["model.init_seed"] == 3
    with pytest.raises(Exception, match="first_seed"):
        plan("tiny", {"grid.first_seed": -1})
