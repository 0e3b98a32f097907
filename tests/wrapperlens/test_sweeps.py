"""The sweep engine: dependencies, recorded outcomes, failures, reuse, executors."""

from __future__ import annotations

import pytest

from wrapperlens.checkpoints import read_json
from wrapperlens.config import ConfigError
from wrapperlens.sweeps import (InlineExecutor, Job, LocalExecutor, make_executor,
                                recorded_outcomes, run_sweep)

CALLS: list[str] = []


def record_call(name: str, parent: float | None = None) -> float:
    """A job function: remembers that it ran, returns a value its children read."""
    CALLS.append(name)
    return (parent or 0.0) + 1.0


def fail(message: str) -> None:
    """A job function that raises."""
    raise ValueError(message)


def _chain() -> list[Job]:
    here = "tests.wrapperlens.test_sweeps:record_call"
    return [
        Job("a", here, {"name": "a"}),
        Job("a/b", here, {"name": "b", "parent": {"$value": "a"}}, after=("a",)),
        Job("bad", "tests.wrapperlens.test_sweeps:fail", {"message": "made to fail"}),
        Job("bad/child", here, {"name": "child", "parent": {"$value": "bad"}}, after=("bad",)),
        Job("c", here, {"name": "c"}),
    ]


def test_values_flow_to_children_and_a_failure_is_recorded_while_the_rest_go_on(tmp_path):
    CALLS.clear()
    outcomes = run_sweep(_chain(), tmp_path, InlineExecutor())
    assert outcomes["a/b"].value == 2.0  # its parent's value, plus one
    assert outcomes["bad"].status == "failed" and "ValueError: made to fail" in outcomes["bad"].error
    assert outcomes["bad/child"].status == "skipped" and "bad failed" in outcomes["bad/child"].error
    assert outcomes["c"].status == "finished"
    assert sorted(CALLS) == ["a", "b", "c"]
    saved = read_json(tmp_path / "bad.json")
    assert saved["status"] == "failed" and saved["args"] == {"message": "made to fail"}


def test_a_second_sweep_reruns_only_what_did_not_finish(tmp_path):
    CALLS.clear()
    run_sweep(_chain(), tmp_path, InlineExecutor())
    CALLS.clear()
    outcomes = run_sweep(_chain(), tmp_path, InlineExecutor())
    assert CALLS == []  # a, b, c were finished; bad fails again, its child is skipped again
    assert outcomes["bad"].status == "failed"
    assert {k: o.status for k, o in recorded_outcomes(_chain(), tmp_path).items()} == {
        "a": "finished", "a/b": "finished", "bad": "failed", "bad/child": "skipped",
        "c": "finished"}


def test_changed_arguments_make_a_job_run_again(tmp_path):
    here = "tests.wrapperlens.test_sweeps:record_call"
    CALLS.clear()
    run_sweep([Job("a", here, {"name": "a"})], tmp_path, InlineExecutor())
    run_sweep([Job("a", here, {"name": "a2"})], tmp_path, InlineExecutor())
    assert CALLS == ["a", "a2"]


def test_the_local_pool_gives_the_inline_results(tmp_path):
    jobs = _chain()
    inline = run_sweep(jobs, tmp_path / "inline", InlineExecutor())
    pool = run_sweep(jobs, tmp_path / "pool", LocalExecutor(workers=2))
    assert {k: (o.status, o.value) for k, o in pool.items()} == {
        k: (o.status, o.value) for k, o in inline.items()}


def test_bad_graphs_and_executors_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown jobs"):
        run_sweep([Job("a", "math:sqrt", {"x": 1.0}, after=("nope",))], tmp_path, InlineExecutor())
    with pytest.raises(ValueError, match="share the key"):
        run_sweep([Job("a", "math:sqrt"), Job("a", "math:sqrt")], tmp_path, InlineExecutor())
    with pytest.raises(ValueError, match="job key"):
        Job("a b", "math:sqrt")
    with pytest.raises(ConfigError, match="--executor 'slurm'"):
        make_executor("slurm")
