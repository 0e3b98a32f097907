"""The reproduction's grid as sweep jobs, the functions those jobs run, and their results.

`plan(preset)` turns the preset's `grid` section (`wrapperlens.experiments.grid_config`)
into `wrapperlens.sweeps.Job`s; `collect(out, planned, outcomes)` reads every finished run and
analysis back into the `results.json` layout (docs/reproduction.md §2). The job functions run in
worker processes and take JSON arguments only:

- `train_job`: resolve one stage (`wrapperlens.experiments.pcfg.resolve_configs`) and train it
  into `OUT/runs/<run id>` (`wrapperlens.stages.train_or_reuse`: reused when finished, resumed
  when killed);
- `prune_job`, `probe_job`, `attention_job`: one analysis of a finished run into
  `OUT/analyses/<kind>-<run id>/` (`wrapperlens.experiments.pcfg_analysis`), on the CPU (they
  take the sweep's `device` and leave it: the models are small).

Layout of OUT:

    OUT/sweep.json            what was asked (preset, seeds, overrides) and the wall time
    OUT/jobs/<key>.json       each job's outcome (status, value, error, seconds)
    OUT/runs/<run id>/        every trained run (the run engine's layout)
    OUT/analyses/...          every analysis
    OUT/results.json, OUT/report.html
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrapperlens.config import ConfigError
from wrapperlens.experiments.grid_config import Cell, GridConfig
from wrapperlens.presets import get_preset
from wrapperlens.sweeps import Job, Outcome

__all__ = ["GridJob", "preset_grid", "plan", "collect", "train_job", "prune_job",
           "probe_job", "attention_job", "SEED_ROLES", "COUNT_A_NATURAL"]

_HERE = "wrapperlens.experiments.grid"

#: Which seed varies what, in every spread of the report.
SEED_ROLES = {
    "pretrain": "seed s: train.seed = s (data order) and model.init_seed = s (initial weights)",
    "finetune": "train.seed = s (data order), from the pretraining of seed s",
    "reft": "train.seed = s (data order), from the fine-tuning of seed s",
    "scratch": "seed s: as pretraining, then as fine-tuning",
}

#: Counting a on natural strings, in reFT runs (O_PT = a) and Scr.+FT runs (O_FT = a) alike.
COUNT_A_NATURAL = "acc/count_a/natural"


@dataclass(frozen=True)
class GridJob:
    """A job of the grid with what the report groups it by.

    Attributes:
        job: The sweep job.
        kind: "run", "prune", "probe" or "attention".
        stage: The run's stage ("pretrain", "finetune", "reft", "scratch_pretrain",
            "scratch_finetune"), or for an analysis the key of the run it analyses.
        params: prior, family, c_tr, eta, lr, seed (those that apply).
    """

    job: Job
    kind: str
    stage: str
    params: Mapping[str, Any] = field(default_factory=dict)


def preset_grid(preset: str, overrides: Mapping[str, Any] | None = None) -> GridConfig:
    """The preset's grid with `grid.*` overrides applied."""
    p = get_preset(preset)
    if "grid" not in p.sections:
        raise ConfigError(f"preset {preset!r} has no grid; presets with one: demo, cpu, paper, tiny")
    grid = {k: v for k, v in (overrides or {}).items() if k.startswith("grid.")}
    return p.with_overrides(grid).grid if grid else p.grid


def _split_overrides(overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    bad = [k for k in overrides if k.split(".")[0] not in ("task", "model", "finetune", "grid")]
    if bad:
        raise ConfigError(f"reproduce: {bad[0]} cannot be set here (only task.*, model.*, "
                          "finetune.*, grid.*); per-stage training settings belong in the preset")
    pt = {k: v for k, v in overrides.items() if k.split(".")[0] in ("task", "model")}
    ft = {k: v for k, v in overrides.items() if k.startswith("finetune.")}
    return pt, ft


def plan(preset: str, overrides: Mapping[str, Any] | None = None) -> list[GridJob]:
    """Every job of the preset's grid, the long ones that wait for nothing first.

    Each job also takes `out` (the sweep's directory) and, for training, `device`: the sweep
    gives both to every job (`run_sweep(..., common=...)`); they are not part of what a job is.
    """
    overrides = dict(overrides or {})
    grid = preset_grid(preset, overrides)
    pt_over, ft_over = _split_overrides(overrides)
    p = get_preset(preset)
    jobs: list[GridJob] = []

    def add(key: str, kind: str, stage: str, target: str, args: dict, after: tuple = (),
            **params: Any) -> str:
        jobs.append(GridJob(Job(key, f"{_HERE}:{target}", args, after),
                            kind, stage, params))
        return key

    def train(key: str, stage: str, parent: str | None, eta_name: str | None, over: dict,
              **params):
        args = {"stage": stage.removeprefix("scratch_"), "preset": preset, "eta": eta_name,
                "overrides": over,
                "parent": {"$value": parent} if parent else None}
        return add(key, "run", stage, "train_job", args, (parent,) if parent else (), **params)

    for seed in range(grid.seeds):
        pt_seed = {"train.seed": seed, "model.init_seed": seed}
        for prior in grid.priors:
            pt = train(f"pretrain/prior={prior}/seed={seed}", "pretrain", None, None,
                       {**pt_over, "task.prior": prior, **pt_seed}, prior=prior, seed=seed)
            for cell in grid.parsed_cells():
                over = {**ft_over, "finetune.family": cell.family, "finetune.c_tr": cell.c_tr,
                        "train.seed": seed}
                params = dict(prior=prior, family=cell.family, c_tr=cell.c_tr, eta=cell.eta,
                              lr=p.etas.get(cell.eta), seed=seed)
                ft = train(f"finetune/{cell.name}/prior={prior}/seed={seed}", "finetune", pt,
                           cell.eta, over, **params)
                _analyses(add, grid, cell, prior, seed, ft, params)
                if cell == Cell("C", 1.0, grid.reft_after):
                    train(f"reft/{cell.name}/prior={prior}/seed={seed}", "reft", ft,
                          grid.reft_eta, {"train.seed": seed},
                          **{**params, "eta": grid.reft_eta, "lr": p.etas.get(grid.reft_eta),
                             "after_eta": cell.eta})
        if grid.scratch:
            _scratch(train, preset, grid, seed, pt_over, pt_seed)
    # The long jobs that wait for nothing first, so no core idles at the end of the sweep.
    return sorted(jobs, key=lambda g: bool(g.job.after))


def _analyses(add, grid: GridConfig, cell: Cell, prior: str, seed: int, ft: str,
              params: dict) -> None:
    if cell.family != "C" or cell.c_tr != 1.0:
        return
    run = {"$value": ft}
    key = ft.removeprefix("finetune/")
    if prior == grid.priors[0] and cell.eta == grid.prune_eta:
        add(f"prune/{key}", "prune", ft, "prune_job",
            {"run": run, "ks": list(grid.prune_ks), "random_draws": grid.prune_random_draws,
             "random_seed": seed}, (ft,), **params)
    if cell.eta in grid.probe_etas:
        add(f"probe/{key}", "probe", ft, "probe_job",
            {"run": run, "samples": grid.probe_samples}, (ft,), **params)
    if grid.attention and seed == 0 and prior == grid.priors[0] and cell.eta == "M":
        add(f"attention/{key}", "attention", ft, "attention_job", {"run": run}, (ft,), **params)


def _scratch(train, preset: str, grid: GridConfig, seed: int, pt_over: dict,
             pt_seed: dict) -> None:
    from wrapperlens.experiments.scratch_baseline import (
        scratch_finetune_overrides,
        scratch_pretrain_overrides,
    )

    swapped = scratch_pretrain_overrides(preset=preset, base_prior="L")  # every field, b-heavy prior
    pt_cfg = {**swapped, **pt_over, **pt_seed, "task.prior": swapped["task.prior"]}
    pt = train(f"scratch/pretrain/seed={seed}", "scratch_pretrain", None, None, pt_cfg, seed=seed)
    ft_cfg = {**scratch_finetune_overrides(preset=preset, eta=grid.reft_eta), "train.seed": seed}
    train(f"scratch/finetune/seed={seed}", "scratch_finetune", pt, grid.reft_eta, ft_cfg,
          seed=seed, eta=grid.reft_eta)


# ------------------------------------------------------------------------- job functions
def train_job(out: str, stage: str, preset: str, eta: str | None, overrides: dict,
              parent: dict | None, device: str = "cpu") -> dict[str, Any]:
    """Train one stage into `out/runs/<run id>`; returns {"dir", "run_id", "seconds"}."""
    from wrapperlens.experiments.pcfg import resolve_configs
    from wrapperlens.stages import resolve_device, train_or_reuse

    parent_dir = str(Path(out) / parent["dir"]) if parent else None
    spec = resolve_configs(stage, preset, parent=parent_dir, eta=eta, overrides=overrides).spec()
    rel = f"runs/{spec.run_id}"
    _, seconds = train_or_reuse(spec, Path(out) / rel, progress=False,
                                device=resolve_device(device))
    return {"dir": rel, "run_id": spec.run_id, "seconds": seconds}


def _analysis_dir(out: str, kind: str, run: dict) -> Path:
    return Path(out) / "analyses" / f"{kind}-{run['run_id']}"


def prune_job(out: str, run: dict, ks: list[int], random_draws: int,
              random_seed: int, device: str = "cpu") -> dict[str, Any]:
    """Top-K g·w pruning against K random units; returns {"ks", "top", "random"}."""
    from wrapperlens.experiments.pcfg_analysis import prune_run
    from wrapperlens.experiments.pcfg_analysis_options import PruneOptions

    options = PruneOptions(ks=tuple(ks), random_draws=random_draws, random_seed=random_seed)
    result = prune_run(Path(out) / run["dir"], _analysis_dir(out, "prune", run), options)
    return {"ks": result["ks"], "top": _by_metric(result["metrics"]),
            "random": _by_metric(result.get("random", {}).get("metrics", {}))}


def _by_metric(per_k: list[dict[str, float]] | dict[str, list[float]]) -> dict[str, list[float]]:
    """{metric: [value per K]} from a list of {metric: value} per K (or as it is)."""
    if isinstance(per_k, Mapping):
        return dict(per_k)
    return {name: [m[name] for m in per_k] for name in (per_k[0] if per_k else {})}


def probe_job(out: str, run: dict, samples: int, device: str = "cpu") -> dict[str, Any]:
    """count(a) probes by layer: fine-tuned, pretrained, random init."""
    from wrapperlens.experiments.pcfg_analysis import probe_run
    from wrapperlens.experiments.pcfg_analysis_options import ProbeOptions

    result = probe_run(Path(out) / run["dir"], _analysis_dir(out, "probe", run),
                       ProbeOptions(samples=samples))
    names = {"pretrained": "pretrained", "fine-tuned": "finetuned", "random init": "random_init"}
    mean = lambda v: sum(v) / len(v) if isinstance(v, list) else v  # noqa: E731 (one feature)
    return {"layers": result["point_names"],
            "models": {names[m]: [mean(a) for a in accs] for m, accs in result["accuracy"].items()},
            "majority_rate": mean(result["majority_rate"]), "target": result["label"]}


def attention_job(out: str, run: dict, device: str = "cpu") -> dict[str, Any]:
    """The pair's attention patterns on one prompt; returns {"html", "label"}."""
    from wrapperlens.experiments.pcfg_analysis import attention_run

    path = attention_run(Path(out) / run["dir"], _analysis_dir(out, "attention", run))
    return {"html": str(Path(path).relative_to(out)), "label": "pretrained vs fine-tuned"}


# ------------------------------------------------------------------------------- results
def _eval_records(records: list[dict]) -> list[dict]:
    return [r for r in records if any(k.startswith("acc/") for k in r)]


def _run_record(out: Path, g: GridJob, outcome: Outcome | None) -> dict[str, Any]:
    from wrapperlens.experiments.pcfg import saved_run
    from wrapperlens.runs import RunDir

    record: dict[str, Any] = {"key": g.job.key, "stage": g.stage, "params": dict(g.params),
                              "status": "missing", "error": "not run yet", "run_id": None,
                              "dir": None, "seconds": 0.0, "final": {}, "curve": [],
                              "floors": {}}
    if outcome is None:
        return record
    record.update(status=outcome.status, error=outcome.error, seconds=outcome.seconds)
    if outcome.status != "finished":
        return record
    run_dir = RunDir(out / outcome.value["dir"])
    curve = _eval_records(run_dir.metrics())
    if g.stage in ("reft", "scratch_finetune"):  # one name for "counting a" in both
        source = "acc/O_PT/natural" if g.stage == "reft" else "acc/O_FT/natural"
        for point in curve:
            if source in point:
                point[COUNT_A_NATURAL] = point[source]
    record.update(run_id=outcome.value["run_id"], dir=outcome.value["dir"],
                  seconds=outcome.value.get("seconds", outcome.seconds),
                  final={k: v for k, v in curve[-1].items() if k.startswith("acc/")} if curve else {},
                  curve=curve, floors=saved_run(run_dir.path).chance_floors())
    return record


def collect(out: str | Path, planned: list[GridJob],
            outcomes: Mapping[str, Outcome]) -> dict[str, list[dict]]:
    """The "runs" and "analyses" of `results.json` from the jobs' outcomes."""
    out = Path(out)
    runs, analyses = [], []
    for g in planned:
        outcome = outcomes.get(g.job.key)
        if g.kind == "run":
            runs.append(_run_record(out, g, outcome))
            continue
        analyses.append({
            "key": g.job.key, "kind": g.kind, "run": g.stage, "params": dict(g.params),
            "status": outcome.status if outcome else "missing",
            "error": outcome.error if outcome else "not run yet",
            "result": outcome.value if outcome and outcome.status == "finished" else None,
        })
    return {"runs": runs, "analyses": analyses}
