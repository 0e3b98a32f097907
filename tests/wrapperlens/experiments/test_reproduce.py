"""`wrapperlens reproduce` end to end on the `tiny` grids: results, claims, resuming a killed
sweep, a failing run, the Ray executor, and the report in a browser.

Every setting at once: the PCFG grid, the compiled grid (what `wrapperlens compiled grid` runs)
and the TinyStories pipeline (what `wrapperlens tinystories pipeline` runs) in one directory, one
sweep, one results.json and one report. One uninterrupted sweep (`finished`) is the reference
every other way of running the grids must equal, number for number (CPU training with one thread
per run is bit-deterministic).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wrapperlens.checkpoints import read_json
from wrapperlens.cli import main
from wrapperlens.config import ConfigError
from wrapperlens.experiment import ExperimentRun
from wrapperlens.experiments.compiled.grid import SETTING as COMPILED
from wrapperlens.experiments.pcfg import grid
from wrapperlens.experiments.pcfg.grid import SETTING as PCFG
from tinystories.grid import SETTING as TINYSTORIES
from wrapperlens.reproduction import rebuild_report, reproduce
from wrapperlens.runs import RunDir

pytestmark = pytest.mark.slow  # a real sweep (about a minute on 2 cores), then reruns of it

#: Timings, and where a run lives: a TinyStories run's configs name its data directory inside the
#: sweep directory, so its run id (and directory) differ between two sweep directories.
NOT_NUMBERS = {"seconds", "wall_seconds", "run_id", "dir"}


def numbers(results: dict) -> dict:
    """Everything in the results but timings and run ids: what two ways of running the grid
    must share."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in NOT_NUMBERS}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj
    return strip({k: results[k] for k in ("runs", "analyses", "claims")})


@pytest.fixture(scope="module")
def settings() -> list:
    return [PCFG, COMPILED, TINYSTORIES]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, settings) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reproduce") / "tiny"
    return out, reproduce(settings, "tiny", out, workers=2, progress=False)


def test_the_grid_runs_and_every_covered_claim_is_decided(finished, settings):
    out, results = finished
    assert {r["status"] for r in results["runs"]} == {"finished"}
    assert {a["status"] for a in results["analyses"]} == {"finished"}
    assert len({r["run_id"] for r in results["runs"]}) == len(results["runs"])
    metrics = {s.name: s.metrics for s in settings}
    for r in results["runs"]:
        assert RunDir(out / r["dir"]).run_id() == r["run_id"]  # the directory of its run id
        last = {k: v for k, v in r["curve"][-1].items() if k != grid.COUNT_A_NATURAL}
        assert last == read_json_lines_last(out / r["dir"], metrics[r["setting"]])
        assert all(0.0 <= f <= 1.0 for f in r["floors"].values())
    ft = next(r for r in results["runs"] if r["stage"] == "finetune" and r["setting"] == "pcfg")
    assert {"acc/O_PT/cte0", "acc/O_PT/cte1", "acc/O_PT/natural"} <= set(ft["floors"])
    claims = {c["id"]: c for c in results["claims"]}
    assert claims[3]["status"] == "not covered"  # tiny has no C_Tr = 0.8 cell
    # claims 8-12 from the compiled setting of the same directory, Table 3 beside them
    assert "not covered" not in {claims[i]["status"] for i in range(8, 13)}
    assert {claims[i]["setting"] for i in range(8, 13)} == {"compiled"}
    assert results["tables"]["table3"]
    assert {r["setting"] for r in results["runs"]} == {"pcfg", "compiled", "tinystories"}
    # claims 17-20 from the TinyStories pipeline of the same directory, on the story source
    assert {claims[i]["setting"] for i in range(17, 21)} == {"tinystories"}
    for i in (17, 19):
        assert claims[i]["values"] and "synthetic story source" in claims[i]["note"]
    # claims 13-16 from the appendix experiments of the PCFG grid
    assert {claims[i]["setting"] for i in range(13, 17)} == {"pcfg"}
    assert all(claims[i]["values"] for i in (13, 14, 15, 16))
    for i in (1, 2, 4, 5, 7):
        assert claims[i]["status"] in ("reproduced", "not reproduced", "inconclusive")
        assert claims[i]["values"] and claims[i]["spread"][0] <= claims[i]["mean"] <= claims[i]["spread"][1]
    # claim 2 recomputed by hand from the two runs it reads
    runs = [r for r in results["runs"] if r["setting"] == "pcfg" and r["stage"] == "finetune"
            and r["params"]["prior"] == "L" and r["params"]["eta"] in ("M", "S")
            and r["params"]["c_tr"] == 1.0]
    gaps = sorted(r["final"]["acc/O_FT/cte1"] - r["final"]["acc/O_FT/cte0"] - 0.5 for r in runs)
    assert sorted(claims[2]["values"]) == gaps
    assert read_json(out / "results.json") == results


def read_json_lines_last(run_dir: Path, prefixes: tuple[str, ...]) -> dict:
    return [r for r in RunDir(run_dir).metrics() if any(k.startswith(prefixes) for k in r)][-1]


def test_report_rebuilds_from_the_runs_alone(finished, tmp_path):
    out, results = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "results.json").unlink()
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    assert numbers(read_json(copy / "results.json")) == numbers(results)
    assert (copy / "report.html").stat().st_size > 0
    with pytest.raises(ConfigError, match="no sweep.json"):
        rebuild_report([PCFG], tmp_path)


def test_a_killed_sweep_resumes_without_recomputing_a_finished_run(finished, settings,
                                                                  tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "wrapperlens", "reproduce", "--preset", "tiny", "--out", str(out),
           "--settings", ",".join(s.name for s in settings), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(_finished_jobs(out)) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended early"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its worker processes, mid-sweep
    proc.wait()
    done = _finished_jobs(out)
    assert 4 <= len(done) < len(finished[1]["runs"]) + len(finished[1]["analyses"])
    assert not (out / "results.json").exists()
    saved = {p: p.read_bytes() for p in done}
    weights = {w: w.stat().st_mtime_ns for w in _weights(out, done)}
    assert weights  # some finished runs to watch

    results = reproduce(settings, "tiny", out, workers=2, progress=False)  # the CLI's: "auto"
    assert [p for p, b in saved.items() if p.read_bytes() != b] == []  # outcomes kept, not rerun
    assert [w for w, t in weights.items() if w.stat().st_mtime_ns != t] == []  # none retrained
    assert numbers(results) == numbers(finished[1])


def _finished_jobs(out: Path) -> list[Path]:
    found = []
    for path in sorted((out / "jobs").rglob("*.json")) if (out / "jobs").exists() else []:
        try:
            if read_json(path)["status"] == "finished":
                found.append(path)
        except (ValueError, OSError):
            pass  # being written
    return found


def _weights(out: Path, outcome_files: list[Path]) -> list[Path]:
    runs = [read_json(p)["value"] for p in outcome_files]
    return [RunDir(out / v["dir"]).weights_file for v in runs if isinstance(v, dict) and "dir" in v
            and v["dir"].startswith("runs/")]


def test_a_failing_run_is_recorded_and_the_others_finish(finished, settings, tmp_path,
                                                         monkeypatch):
    out = tmp_path / "failing"
    shutil.copytree(finished[0], out)
    reft = [r for r in finished[1]["runs"] if r["stage"] == "reft"]
    for r in reft:  # forget the reFT runs (PCFG and compiled), then make them fail
        (out / "jobs" / r["setting"] / f"{r['key']}.json").unlink()
        shutil.rmtree(out / r["dir"], ignore_errors=True)  # two keys may share a run id
    real = ExperimentRun.train_job.__func__

    def train_job(cls, **kwargs):
        if kwargs["stage"] == "reft":
            raise RuntimeError("made to fail")
        return real(cls, **kwargs)

    monkeypatch.setattr(ExperimentRun, "train_job", classmethod(train_job))
    results = reproduce(settings, "tiny", out, executor="inline", progress=False)
    status = {r["key"]: (r["status"], r["error"] or "") for r in results["runs"]}
    for r in reft:
        assert status[r["key"]][0] == "failed" and "RuntimeError: made to fail" in status[r["key"]][1]
    assert all(s == "finished" for k, (s, _) in status.items() if k not in {r["key"] for r in reft})
    claims = {c["id"]: c["status"] for c in results["claims"]}
    assert claims[7] == "not covered" and claims[10] == "not covered"
    assert "made to fail" in (out / "report.html").read_text()
    cli = main(["reproduce", "--preset", "tiny", "--out", str(out), "--executor", "inline",
                "--settings", ",".join(s.name for s in settings), "--no-progress"])
    assert cli == 1  # a failed run makes the command fail


def test_the_ray_executor_gives_the_local_results(finished, settings, tmp_path):
    if os.environ.get("CI"):
        import ray  # CI installs the extra: this test must run there
    else:
        ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = reproduce(settings, "tiny", tmp_path / "ray", executor="ray", workers=2,
                            progress=False)
    finally:
        ray.shutdown()
    assert results["executor"] == "ray"
    assert numbers(results) == numbers(finished[1])


def test_a_different_sweep_in_the_same_directory_is_refused(finished, settings, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(finished[0], out)
    with pytest.raises(ConfigError, match="holds a sweep of .* at preset 'tiny'"):
        reproduce(settings, "tiny", out, seeds=2, progress=False)
    with pytest.raises(ConfigError, match="train.lr cannot be set"):
        reproduce(settings, "tiny", tmp_path / "x", overrides={"train.lr": 1.0}, progress=False)


def test_a_typo_in_a_config_file_stops_the_sweep_before_any_run(tmp_path):
    """Every job's configs are resolved before the first job starts (a typo once reached every
    run, each failed, and the command exited 0)."""
    config = tmp_path / "typo.json"
    config.write_text(json.dumps({"task": {"seeed": 1}}))
    out = tmp_path / "typo"
    assert main(["reproduce", "--preset", "tiny", "--out", str(out), "--config",
                 str(config)]) == 2
    assert not (out / "runs").exists() and not (out / "jobs").exists()



def test_the_report_shows_the_circuit_diff_of_the_grid_s_pair(finished):
    """One circuit analysis (seed 0, low prior, C_Tr 1, η_M): its rows partition into the four
    statuses, every edge of either top-n circuit is listed once, and the report inlines its
    picture (the PNG file's own bytes) and names each edge."""
    import base64

    from wrapperlens.analysis.circuit_diff import EDGE_STATUSES

    out, results = finished
    circuits = [a for a in results["analyses"] if a["kind"] == "circuit"]
    assert len(circuits) == 1
    diff = circuits[0]
    assert {k: diff["params"][k] for k in ("c_tr", "eta", "seed")} == {
        "c_tr": 1.0, "eta": "M", "seed": 0}
    result = diff["result"]
    edges = [row["edge"] for row in result["rows"]]
    assert len(edges) == len(set(edges)) and result["top_n"] <= len(edges) <= 2 * result["top_n"]
    assert sum(result["counts"].values()) == len(edges)
    assert {row["status"] for row in result["rows"]} <= set(EDGE_STATUSES)
    assert all(-1.0 <= rho <= 1.0 for rho in result["spearman_vs_exact"].values())
    page = (out / "report.html").read_text()
    assert "<h2>Circuit diffs</h2>" in page and diff["key"] in page
    png = base64.b64encode((out / result["png"]).read_bytes()).decode("ascii")
    assert f"data:image/png;base64,{png}" in page
    assert all(f"<code>{edge.replace('>', '&gt;').replace('<', '&lt;')}</code>" in page
               for edge in edges)

CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="needs chromium")
def test_the_report_of_a_real_grid_draws_its_plots_and_claims(finished, tmp_path):
    from PIL import Image

    page = finished[0] / "report.html"
    shot = tmp_path / "shot.png"
    base = [CHROMIUM or "chromium", "--headless", "--disable-gpu", "--no-sandbox",
            "--virtual-time-budget=5000", "--window-size=1200,6000"]
    subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], check=True, timeout=120,
                   capture_output=True)
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # plots drawn, not a blank page
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    for claim in finished[1]["claims"]:
        assert claim["title"] in dom
    assert dom.count("data:image/png;base64,") >= 4
