"""The one reproduction loop: plan → sweep → collect → claims → report, for every experiment.

`reproduce(settings, preset, out)` runs each setting's grid (PCFG, compiled models, TinyStories,
or any experiment that gives a `Setting`) in one output directory:

1. **plan**: each setting's `plan(preset, overrides)` lists its `GridJob`s
   (`wrapperlens.planning`); every training job's configs are then resolved in memory, parents
   first, so a bad key or value stops the command before the first job starts;
2. **sweep**: every job runs once through `wrapperlens.sweeps.run_sweep` (local processes, Ray,
   or inline): a finished run is never recomputed, a killed sweep resumes, a failed job is
   recorded and the rest go on;
3. **collect**: one `results.json` schema (`wrapperlens.results`, format `RESULTS_FORMAT`):
   every run and analysis tagged with its setting and typed params;
4. **claims**: each setting's rules judge its part of the results;
5. **report**: one `report.html` for every setting (`wrapperlens.report`).

Layout of OUT:

    OUT/sweep.json            what was asked (settings, preset, overrides) and the wall time
    OUT/jobs/<setting>/<key>.json   each job's outcome (status, value, error, seconds)
    OUT/runs/<run id>/        every run (the run engine's layout), shared by all settings
    OUT/analyses/...          every analysis
    OUT/results.json, OUT/report.html

`rebuild_report(out)` writes results.json and report.html again from the finished jobs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from wrapperlens.checkpoints import CheckpointError, read_json, write_json
from wrapperlens.config import ConfigError
from wrapperlens.planning import GridJob, Setting, check_configs
from wrapperlens.results import RESULTS_FILE, RESULTS_FORMAT, check_seal, sealed, setting_view
from wrapperlens.sweeps import Outcome, make_executor, recorded_outcomes, run_sweep

__all__ = ["reproduce", "rebuild_report", "read_sweep", "claims_table", "collect",
           "failed_jobs"]

SWEEP_FILE = "sweep.json"


def _plan(settings: Sequence[Setting], preset: str,
          overrides: Mapping[str, Any]) -> dict[str, list[GridJob]]:
    planned = {}
    for s in settings:
        try:
            planned[s.name] = s.plan(preset, overrides)
        except ConfigError as e:
            raise ConfigError(f"{s.name} grid: {e}") from e
        check_configs(planned[s.name])
    return planned


# ----------------------------------------------------------------------------------- sweep
def reproduce(settings: Sequence[Setting], preset: str, out: str | Path, *,
              seeds: int | None = None, first_seed: int | None = None,
              overrides: Mapping[str, Any] | None = None,
              executor: str = "local", workers: int | None = None, threads: int = 1,
              address: str | None = None, device: str = "cpu",
              progress: bool = True) -> dict[str, Any]:
    """Run the grids of `settings` at `preset` into `out` and write its results and report.

    Args:
        settings: The experiments' settings (e.g. `wrapperlens.experiments.pcfg.grid.SETTING`).
        preset: The preset of every setting ("demo", "cpu", "paper", "tiny").
        out: Output directory (created; an interrupted sweep there is continued).
        seeds: Seeds per cell (default: each preset's `grid.seeds`).
        first_seed: The first seed (default 0): seeds `first_seed .. first_seed + seeds - 1`,
            e.g. 3 for held-out seeds 3-5 that no rule was chosen on.
        overrides: `section.key` values given to every setting's plan (each refuses keys it
            does not know, naming them).
        executor: "local" (a process per job), "ray" or "inline" (this process).
        workers: Jobs at once (default: every core, or the Ray cluster's CPUs).
        threads: Torch threads per job (results depend on it: keep it fixed to compare).
        address: Ray cluster address (`executor="ray"`); None starts a local Ray.
        device: Where training jobs run ("cpu", "cuda", "auto").
        progress: Show a progress bar over jobs.

    Returns:
        The results (also written to `out/results.json`).

    Raises:
        ConfigError: a bad key or value in any job (before any job starts), or `out` holds a
            sweep asked with other arguments.
    """
    out = Path(out)
    overrides = dict(overrides or {})
    if seeds is not None:
        overrides["grid.seeds"] = seeds
    if first_seed is not None:
        overrides["grid.first_seed"] = first_seed
    planned = _plan(settings, preset, overrides)
    asked = {"settings": [s.name for s in settings], "preset": preset, "overrides": overrides}
    sweep_file = out / SWEEP_FILE
    previous = read_sweep(sweep_file) if sweep_file.exists() else {}
    if previous and {k: previous[k] for k in asked} != asked:
        raise ConfigError(
            f"{sweep_file} holds a sweep of {previous.get('settings')} at preset "
            f"{previous.get('preset')!r} with overrides {previous.get('overrides')}; continue it "
            "with the same arguments or choose another --out")
    record = {**asked, "executor": executor, "threads": threads,
              "wall_seconds": previous.get("wall_seconds", 0.0)}
    write_json(sweep_file, sealed(record))
    total = sum(len(p) for p in planned.values())
    bar = tqdm(total=total, desc=f"reproduce [{preset}]", unit="job", disable=not progress)

    def tick(outcome: Outcome) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{outcome.status}: {outcome.key}", refresh=False)
        if outcome.status == "failed":
            tqdm.write(f"FAILED {outcome.key}: {outcome.error.splitlines()[0]}")

    start = time.perf_counter()
    outcomes: dict[str, dict[str, Outcome]] = {}
    try:
        for s in settings:
            outcomes[s.name] = run_sweep(
                [g.job for g in planned[s.name]], _jobs_dir(out, s), make_executor(
                    executor, workers=workers, threads=threads, address=address),
                common={"out": str(out), "device": device}, on_outcome=tick)
    finally:
        bar.close()
        record["wall_seconds"] += time.perf_counter() - start
        write_json(sweep_file, sealed(record))
    results = _write_results(out, settings, planned, outcomes, record)
    print(claims_table(results))
    print(f"\nWritten to {out}: results.json, report.html, runs/ (one directory per run id).")
    return results


#: The keys of sweep.json and what each value must be.
SWEEP_KEYS = {
    "settings": lambda v: isinstance(v, list) and bool(v) and all(isinstance(n, str) for n in v),
    "preset": lambda v: isinstance(v, str),
    "overrides": lambda v: isinstance(v, dict),
    "executor": lambda v: v in ("local", "ray", "inline"),
    "threads": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "wall_seconds": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    and math.isfinite(v) and v >= 0,
}


def read_sweep(path: Path) -> dict[str, Any]:
    """A sweep.json, checked: every key of `SWEEP_KEYS`, of its type, and no other, and its
    content what was written (`wrapperlens.results.check_seal`).

    Raises:
        CheckpointError: naming the file and the key.
    """
    record = read_json(path)
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(record).__name__}")
    keys = set(record) - {"sha256"}
    missing, extra = sorted(set(SWEEP_KEYS) - keys), sorted(keys - set(SWEEP_KEYS))
    if missing or extra:
        raise CheckpointError(f"{path}: lacks {missing} / has unknown keys {extra}")
    for key, ok in SWEEP_KEYS.items():
        if not ok(record[key]):
            raise CheckpointError(f"{path}: key {key!r} has a bad value {record[key]!r}")
    try:
        check_seal(record, str(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    return {k: v for k, v in record.items() if k != "sha256"}


def _jobs_dir(out: Path, setting: Setting) -> Path:
    return out / "jobs" / setting.name


def rebuild_report(settings: Sequence[Setting], out: str | Path) -> dict[str, Any]:
    """results.json and report.html of `out` again, from its finished jobs (no training).

    Raises:
        ConfigError: `out` holds no sweep, or one of settings other than `settings`.
    """
    out = Path(out)
    sweep_file = out / SWEEP_FILE
    if not sweep_file.exists():
        raise ConfigError(f"{out}: no {SWEEP_FILE} here; is it a `wrapperlens reproduce` "
                          "output directory?")
    record = read_sweep(sweep_file)
    by_name = {s.name: s for s in settings}
    names = record["settings"]
    if any(n not in by_name for n in names):
        raise ConfigError(f"{sweep_file}: key 'settings' is {names!r}; known settings: "
                          f"{', '.join(by_name)}")
    chosen = [by_name[n] for n in names]
    planned = _plan(chosen, record["preset"], record.get("overrides", {}))
    outcomes = {s.name: recorded_outcomes([g.job for g in planned[s.name]], _jobs_dir(out, s))
                for s in chosen}
    results = _write_results(out, chosen, planned, outcomes, record)
    print(claims_table(results))
    return results


# --------------------------------------------------------------------------------- collect
def _final(curve: list[dict], metrics: tuple[str, ...]) -> dict[str, float]:
    return {k: v for k, v in curve[-1].items() if k.startswith(metrics)} if curve else {}


def _run_record(out: Path, setting: Setting, g: GridJob,
                outcome: Outcome | None) -> dict[str, Any]:
    from wrapperlens.experiment import read_run
    from wrapperlens.runs import RunDir

    record: dict[str, Any] = {"setting": setting.name, "key": g.job.key, "stage": g.stage,
                              "params": dict(g.params), "status": "missing",
                              "error": "not run yet", "run_id": None, "dir": None,
                              "seconds": 0.0, "final": {}, "curve": [], "floors": {}}
    if outcome is None:
        return record
    record.update(status=outcome.status, error=outcome.error, seconds=outcome.seconds)
    if outcome.status != "finished":
        return record
    run_dir = RunDir(out / outcome.value["dir"])
    curve = [r for r in run_dir.metrics() if any(k.startswith(setting.metrics) for k in r)]
    record.update(run_id=outcome.value["run_id"], dir=outcome.value["dir"],
                  seconds=outcome.value.get("seconds", outcome.seconds),
                  final=_final(curve, setting.metrics), curve=curve,
                  floors=read_run(run_dir.path, g.run_class).chance_floors())
    return record


def collect(out: str | Path, setting: Setting, planned: Sequence[GridJob],
            outcomes: Mapping[str, Outcome]) -> dict[str, list[dict]]:
    """The "runs" and "analyses" records of one setting (results.json's layout)."""
    out = Path(out)
    runs, analyses = [], []
    for g in planned:
        outcome = outcomes.get(g.job.key)
        if g.kind == "run":
            runs.append(_run_record(out, setting, g, outcome))
            continue
        analyses.append({
            "setting": setting.name, "key": g.job.key, "kind": g.kind, "run": g.stage,
            "params": dict(g.params), "status": outcome.status if outcome else "missing",
            "error": outcome.error if outcome else "not run yet",
            "seconds": outcome.seconds if outcome else 0.0,
            "result": outcome.value if outcome and outcome.status == "finished" else None,
        })
    return {"runs": runs, "analyses": analyses}


def _write_results(out: Path, settings: Sequence[Setting],
                   planned: Mapping[str, list[GridJob]],
                   outcomes: Mapping[str, Mapping[str, Outcome]],
                   record: Mapping[str, Any]) -> dict[str, Any]:
    from wrapperlens.report import write_report

    results: dict[str, Any] = {
        "format": RESULTS_FORMAT, "settings": [s.name for s in settings],
        "preset": record["preset"],
        "seeds": {s.name: s.seeds(record["preset"], record.get("overrides", {}))
                  for s in settings},
        "executor": record.get("executor", "local"), "threads": record.get("threads"),
        "wall_seconds": record.get("wall_seconds", 0.0),
        "seed_roles": {s.name: dict(s.seed_roles) for s in settings},
        "runs": [], "analyses": [], "tables": {}, "claims": [],
    }
    for s in settings:
        part = collect(out, s, planned[s.name], outcomes[s.name])
        for run in part["runs"] if s.finish_run else ():
            s.finish_run(run)
            run["final"] = _final(run["curve"], s.metrics)
        results["runs"] += part["runs"]
        results["analyses"] += part["analyses"]
    for s in settings:
        view = setting_view(results, s.name)
        if s.tables is not None:
            results["tables"].update(s.tables(view))
        for claim in s.claims(view):
            _add_claim(results["claims"], {**claim, "setting": s.name})
    results["claims"].sort(key=lambda c: c["id"])
    results = sealed(results)
    write_json(out / RESULTS_FILE, results)
    write_report(out, results, {s.name: s.figures for s in settings})
    return results


def _add_claim(claims: list[dict[str, Any]], claim: dict[str, Any]) -> None:
    """Add `claim`; of two settings listing one claim, the one that measured it is kept."""
    same = [i for i, c in enumerate(claims) if c["id"] == claim["id"]]
    if not same:
        claims.append(claim)
    elif claims[same[0]]["status"] == "not covered":
        claims[same[0]] = claim


def failed_jobs(results: Mapping[str, Any]) -> list[str]:
    """The keys of the runs and analyses whose job failed (the command then exits 1)."""
    return [r["key"] for r in (*results["runs"], *results["analyses"])
            if r["status"] == "failed"]


def _number(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _seed_range(results: Mapping[str, Any], setting: str) -> str:
    """" (seeds 3-5)": the seeds the setting's runs used, when they do not start at 0."""
    used = sorted({r["params"]["seed"] for r in results["runs"]
                   if r.get("setting") == setting and "seed" in r["params"]})
    if not used or used[0] == 0:
        return ""
    return f" (seed {used[0]})" if len(used) == 1 else f" (seeds {used[0]}-{used[-1]})"


def claims_table(results: Mapping[str, Any]) -> str:
    """The claims as a plain-text table: id, title, mean [min, max] (n), floor, status."""
    seeds = ", ".join(f"{k} {v}{_seed_range(results, k)}" for k, v in results["seeds"].items())
    lines = [f"\nClaims ({results['preset']} preset; seeds: {seeds}; rules in "
             "each setting's claims module, docs/reproduction.md):",
             f"{'':3s} {'claim':58s} {'mean [min, max] (n)':>26s} {'floor':>6s}  status"]
    for c in results["claims"]:
        if c["status"] == "not covered" and not c["quantity"]:
            continue
        measured = ("-" if c["mean"] is None else
                    f"{c['mean']:.3f} [{c['spread'][0]:.3f}, {c['spread'][1]:.3f}] "
                    f"({len(c['values'])})")
        lines.append(f"{c['id']:3d} {c['title'][:58]:58s} {measured:>26s} "
                     f"{_number(c['floor']):>6s}  {c['status']} (> {c['threshold']:g})")
    missing = [r["key"] for r in results["runs"] if r["status"] != "finished"]
    if missing:
        lines.append(f"\n{len(missing)} run(s) not finished: " + ", ".join(missing[:5])
                     + (" ..." if len(missing) > 5 else ""))
    return "\n".join(lines)
