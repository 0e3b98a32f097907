"""The main job: does the finding hold? Run a preset's grid over seeds and judge each claim.

`wrapperlens reproduce --preset demo --out DIR` plans the preset's grid
(`wrapperlens.experiments.grid.plan`), runs it as a sweep (`wrapperlens.sweeps.run_sweep`: every
run under its run id, a finished run never recomputed, a failed one recorded while the rest go
on), then measures every claim of docs/claims.md it covers (`wrapperlens.experiments.claims`) and
writes

    DIR/results.json   every number behind the report (docs/reproduction.md §2)
    DIR/report.html    the claims table, the plots and the attention views, one offline file

`wrapperlens report DIR` (`rebuild_report`) writes both again from the finished runs, training
nothing. Interrupted, the same command continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from wrapperlens.checkpoints import read_json, write_json
from wrapperlens.config import ConfigError
from wrapperlens.experiments.claims import evaluate_claims
from wrapperlens.experiments.grid import SEED_ROLES, collect, plan
from wrapperlens.sweeps import Outcome, make_executor, run_sweep

__all__ = ["reproduce", "rebuild_report", "claims_table"]

RESULTS_FORMAT = 1


def _sweep_file(out: Path) -> Path:
    return out / "sweep.json"


def reproduce(
    preset: str,
    out: str | Path,
    *,
    seeds: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    executor: str = "local",
    workers: int | None = None,
    threads: int = 1,
    address: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the grid of `preset` into `out` and write its results and report.

    Args:
        preset: demo | cpu | paper | tiny.
        out: Output directory (created; an interrupted sweep there is continued).
        seeds: Seeds per setting (default: the preset's `grid.seeds`).
        overrides: `task.*`, `model.*` (pretraining), `finetune.*` and `grid.*` keys.
        executor: "local" (a process per job), "ray" or "inline" (this process).
        workers: Jobs at once (default: every core, or the Ray cluster's CPUs).
        threads: Torch threads per job (results depend on it: keep it fixed to compare).
        address: Ray cluster address (`--executor ray`); None starts a local Ray.
        device: Where training jobs run ("cpu", "cuda", "auto").
        progress: Show a progress bar over jobs.

    Returns:
        The results (also written to `out/results.json`).
    """
    out = Path(out)
    overrides = dict(overrides or {})
    if seeds is not None:
        overrides["grid.seeds"] = seeds
    planned = plan(preset, overrides)  # refuses bad keys before any run
    previous = read_json(_sweep_file(out)) if _sweep_file(out).exists() else {}
    asked = {"preset": preset, "overrides": overrides}
    if previous and {k: previous.get(k) for k in asked} != asked:
        raise ConfigError(
            f"{_sweep_file(out)} holds a sweep of preset {previous.get('preset')!r} with "
            f"overrides {previous.get('overrides')}; continue it with the same arguments or "
            "choose another --out"
        )
    record = {**asked, "executor": executor, "threads": threads,
              "wall_seconds": previous.get("wall_seconds", 0.0)}
    write_json(_sweep_file(out), record)
    start = time.perf_counter()
    jobs = [g.job for g in planned]
    bar = tqdm(total=len(jobs), desc=f"reproduce [{preset}]", unit="job", disable=not progress)

    def tick(outcome: Outcome) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{outcome.status}: {outcome.key}", refresh=False)
        if outcome.status == "failed":
            tqdm.write(f"FAILED {outcome.key}: {outcome.error.splitlines()[0]}")

    try:
        outcomes = run_sweep(jobs, out / "jobs", make_executor(
            executor, workers=workers, threads=threads, address=address),
            common={"out": str(out), "device": device}, on_outcome=tick)
    finally:
        bar.close()
        record["wall_seconds"] += time.perf_counter() - start
        write_json(_sweep_file(out), record)
    results = _write_results(out, planned, outcomes, record)
    print(claims_table(results))
    print(f"\nWritten to {out}: results.json, report.html, runs/ (one directory per run id).")
    return results


def _write_results(out: Path, planned, outcomes: Mapping[str, Outcome],
                   record: Mapping[str, Any]) -> dict[str, Any]:
    from wrapperlens.experiments.report import write_report

    seeds = 1 + max((g.params.get("seed", 0) for g in planned), default=0)
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT, "preset": record["preset"], "seeds": seeds,
        "executor": record.get("executor", "local"), "threads": record.get("threads"),
        "wall_seconds": record.get("wall_seconds", 0.0), "seed_roles": SEED_ROLES,
        **collect(out, planned, outcomes),
    }
    results["claims"] = _join_compiled_claims(out, evaluate_claims(results))
    write_json(out / "results.json", results)
    write_report(out, results)
    return results


#: Where a compiled models' grid (`wrapperlens compiled grid --out DIR/compiled`) joins claims
#: 8-12 to this table (docs/reproduction.md §5).
COMPILED_DIR = "compiled"


def _join_compiled_claims(out: Path, claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claims 8-12 from `out/compiled/results.json` when that grid has run, else as they are."""
    path = out / COMPILED_DIR / "results.json"
    if not path.exists():
        return claims
    grid = read_json(path)
    source = f"(from {COMPILED_DIR}/results.json, preset {grid['preset']})"
    compiled = {c["id"]: {**c, "note": f"{c['note']} {source}".strip()} for c in grid["claims"]}
    return [compiled.get(c["id"], c) for c in claims]


def rebuild_report(out: str | Path) -> dict[str, Any]:
    """results.json and report.html of `out` again, from its finished runs (no training).

    Raises:
        ConfigError: `out` holds no sweep (no `sweep.json`).
    """
    from wrapperlens.sweeps import recorded_outcomes

    out = Path(out)
    if not _sweep_file(out).exists():
        raise ConfigError(f"{out}: no {_sweep_file(out).name} here; is it a `wrapperlens "
                          "reproduce` output directory?")
    record = read_json(_sweep_file(out))
    planned = plan(record["preset"], record.get("overrides", {}))
    outcomes = recorded_outcomes([g.job for g in planned], out / "jobs")
    results = _write_results(out, planned, outcomes, record)
    print(claims_table(results))
    return results


def _percent(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def claims_table(results: Mapping[str, Any]) -> str:
    """The claims as a plain-text table: id, title, mean [min, max] (n), floor, status."""
    lines = [f"\nClaims ({results['preset']} preset, {results['seeds']} seed(s); rules in "
             "wrapperlens/experiments/claims.py):",
             f"{'':3s} {'claim':58s} {'mean [min, max] (n)':>26s} {'floor':>6s}  status"]
    for c in results["claims"]:
        if c["status"] == "not covered" and not c["quantity"]:
            continue
        measured = ("-" if c["mean"] is None else
                    f"{c['mean']:.3f} [{c['spread'][0]:.3f}, {c['spread'][1]:.3f}] "
                    f"({len(c['values'])})")
        lines.append(f"{c['id']:3d} {c['title'][:58]:58s} {measured:>26s} "
                     f"{_percent(c['floor']):>6s}  {c['status']} (> {c['threshold']:g})")
    missing = [r["key"] for r in results["runs"] if r["status"] != "finished"]
    if missing:
        lines.append(f"\n{len(missing)} run(s) not finished: " + ", ".join(missing[:5])
                     + (" ..." if len(missing) > 5 else ""))
    return "\n".join(lines)
