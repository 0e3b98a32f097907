"""Fuzzed readers of a reproduction directory: `results.json` (`wrapperlens.results.read_results`)
and `sweep.json` (`wrapperlens.reproduction.read_sweep`), as tests/fuzzing.py describes.

Both files come from a real sweep (the toy experiment of tests/toy, inline), so the readers are
checked against what the writer writes. A job's own `result` is free-form JSON (any value is a
valid one), and so are the rows of a derived table and the overrides a user asked for: those
paths are not corrupted.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import Tally, classify, dumps, fuzz_settings, json_corruptions
from tests.fuzzing import text_corruptions
from tests.toy.experiment import SETTING
from wrapperlens.reproduction import read_sweep, reproduce
from wrapperlens.results import read_results

TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    TALLY.write(__name__)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz_results") / "toy"
    reproduce([SETTING], "tiny", out, executor="inline", progress=False)
    return out


def _inputs(path: Path, skip):
    data = path.read_bytes()
    return st.one_of(text_corruptions(data), json_corruptions(json.loads(data), skip=skip).map(
        lambda d: (d[0], dumps(d[1]))))



def _free_form_result(path: tuple) -> bool:
    return (len(path) >= 3 and path[0] == "analyses" and path[2] == "result") or \
        (len(path) >= 2 and path[0] == "tables")


@given(data=st.data())
@fuzz_settings(1100)
def test_results_json_is_read_or_refused_by_name(sweep_dir, data):
    expected = read_results(sweep_dir)
    what, blob = data.draw(_inputs(sweep_dir / "results.json", _free_form_result))
    target = Path(tempfile.mkdtemp(prefix="fz_")) / "results.json"
    target.write_bytes(blob)
    outcome, detail = classify(lambda: read_results(target), expected, ["results.json"])
    TALLY.check("results.json (read_results)", outcome, detail, what)
    shutil.rmtree(target.parent)


@given(data=st.data())
@fuzz_settings(1100)
def test_sweep_json_is_read_or_refused_by_name(sweep_dir, data):
    expected = read_sweep(sweep_dir / "sweep.json")
    # What a user asked for may be anything: the sweep refuses or applies it when it plans.
    what, blob = data.draw(_inputs(sweep_dir / "sweep.json", lambda p: p[0] == "overrides"))
    target = Path(tempfile.mkdtemp(prefix="fz_")) / "sweep.json"
    target.write_bytes(blob)
    outcome, detail = classify(lambda: read_sweep(target), expected, ["sweep.json"])
    TALLY.check("sweep.json (read_sweep)", outcome, detail, what)
    shutil.rmtree(target.parent)


def test_the_writer_writes_what_the_reader_reads(sweep_dir):
    results = read_results(sweep_dir)
    assert results["settings"] == ["toy"] and len(results["runs"]) == 4
    assert read_sweep(sweep_dir / "sweep.json")["settings"] == ["toy"]
