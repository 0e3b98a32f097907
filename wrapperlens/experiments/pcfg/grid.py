"""The reproduction's grid as sweep jobs, the functions those jobs run, and their results.

`plan(preset)` turns the preset's `grid` section (`wrapperlens.experiments.pcfg.grid_config`)
into `wrapperlens.sweeps.Job`s; `collect(out, planned, outcomes)` reads every finished run and
analysis back into the `results.json` layout (docs/reproduction.md#what-is-written). The job
functions run in worker processes and take JSON arguments only:

- `PCFGRun.train_job` (`wrapperlens.experiment.ExperimentRun.train_job`): resolve one stage and
  train it into `OUT/runs/<run id>` (reused when finished, resumed when killed);
- `prune_job`, `probe_job`, `attention_job`, `circuit_job`: one analysis of a finished run into
  `OUT/analyses/<kind>-<run id>/` (`wrapperlens.experiments.pcfg.analysis`), on the CPU (they
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
from pathlib import Path
from typing import Any

from wrapperlens.config import ConfigError
from wrapperlens.experiments.pcfg import appendix, presets
from wrapperlens.experiments.pcfg.claims import evaluate_claims
from wrapperlens.experiments.pcfg.grid_config import COUNT_A_NATURAL, SEED_ROLES, Cell, GridConfig
from wrapperlens.experiments.pcfg.report_plots import FIGURES
from wrapperlens.experiments.pcfg.stages import PCFGRun
from wrapperlens.planning import GridJob, Planner, Setting

__all__ = ["preset_grid", "plan", "prune_job", "probe_job", "attention_job", "circuit_job",
           "SEED_ROLES",
           "COUNT_A_NATURAL", "SETTING"]

_HERE = "wrapperlens.experiments.pcfg.grid"

def preset_grid(preset: str, overrides: Mapping[str, Any] | None = None) -> GridConfig:
    """The preset's grid with `grid.*` overrides applied."""
    p = presets.get(preset)
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
    p = presets.get(preset)
    jobs = Planner(PCFGRun, preset)
    for seed in grid.seed_range:
        pt_seed = {"train.seed": seed, "model.init_seed": seed}
        pretrained = {}
        for prior in grid.priors:
            pt = pretrained[prior] = jobs.train(f"pretrain/prior={prior}/seed={seed}", "pretrain",
                            overrides={**pt_over, "task.prior": prior, **pt_seed},
                            params=dict(prior=prior, seed=seed))
            for cell in grid.parsed_cells():
                over = {**ft_over, "finetune.family": cell.family, "finetune.c_tr": cell.c_tr,
                        "train.seed": seed}
                params = dict(prior=prior, family=cell.family, c_tr=cell.c_tr, eta=cell.eta,
                              lr=p.etas.get(cell.eta), seed=seed)
                ft = jobs.train(f"finetune/{cell.name}/prior={prior}/seed={seed}", "finetune",
                                parent=pt, eta=cell.eta, overrides=over, params=params)
                _analyses(jobs, grid, cell, prior, seed, ft, params)
                if cell == Cell("C", 1.0, grid.reft_after):
                    jobs.train(f"reft/{cell.name}/prior={prior}/seed={seed}", "reft", parent=ft,
                               eta=grid.reft_eta, overrides={"train.seed": seed},
                               params={**params, "eta": grid.reft_eta,
                                       "lr": p.etas.get(grid.reft_eta), "after_eta": cell.eta})
        if grid.scratch:
            _scratch(jobs, preset, grid, seed, pt_over, pt_seed)
        appendix.plan_seed(jobs, grid, p.etas, seed, pretrained, pt_over, ft_over)
    return jobs.ordered()


def _analyses(jobs: Planner, grid: GridConfig, cell: Cell, prior: str, seed: int, ft: str,
              params: dict) -> None:
    """Probes of Counter fine-tunings at C_Tr 0 and 1 (where Fig. 8 probes); pruning and the
    attention view of the correlated ones (Fig. 7)."""
    if cell.family != "C" or cell.c_tr not in (0.0, 1.0):
        return
    key = ft.removeprefix("finetune/")
    if cell.eta in grid.probe_etas:
        jobs.analysis(f"probe/{key}", "probe", ft, f"{_HERE}:probe_job", probe_args(grid),
                      params)
    if cell.c_tr != 1.0:
        return
    if prior == grid.priors[0] and cell.eta == grid.prune_eta:
        jobs.analysis(f"prune/{key}", "prune", ft, f"{_HERE}:prune_job",
                      {"ks": list(grid.prune_ks), "random_draws": grid.prune_random_draws,
                       "random_seed": seed}, params)
    one_pair = seed == grid.first_seed and prior == grid.priors[0] and cell.eta == "M"
    if grid.attention and one_pair:
        jobs.analysis(f"attention/{key}", "attention", ft, f"{_HERE}:attention_job",
                      params=params)
    if grid.circuit and one_pair:
        jobs.analysis(f"circuit/{key}", "circuit", ft, f"{_HERE}:circuit_job", params=params)


def probe_args(grid: GridConfig) -> dict[str, int]:
    """The arguments of every `probe_job` of the grid."""
    return {"samples": grid.probe_samples, "random_inits": grid.probe_random_inits}


def _scratch(jobs: Planner, preset: str, grid: GridConfig, seed: int, pt_over: dict,
             pt_seed: dict) -> None:
    from wrapperlens.experiments.pcfg.scratch_baseline import (
        scratch_finetune_overrides,
        scratch_pretrain_overrides,
    )

    swapped = scratch_pretrain_overrides(preset=preset, base_prior="L")  # every field, b-heavy prior
    pt_cfg = {**swapped, **pt_over, **pt_seed, "task.prior": swapped["task.prior"]}
    pt = jobs.train(f"scratch/pretrain/seed={seed}", "pretrain", overrides=pt_cfg,
                    label="scratch_pretrain", params={"seed": seed})
    ft_cfg = {**scratch_finetune_overrides(preset=preset, eta=grid.reft_eta), "train.seed": seed}
    jobs.train(f"scratch/finetune/seed={seed}", "finetune", parent=pt, eta=grid.reft_eta,
               overrides=ft_cfg, label="scratch_finetune",
               params={"seed": seed, "eta": grid.reft_eta})


# ------------------------------------------------------------------------- job functions
def _analysis_dir(out: str, kind: str, run: dict) -> Path:
    return Path(out) / "analyses" / f"{kind}-{run['run_id']}"


def prune_job(out: str, run: dict, ks: list[int], random_draws: int,
              random_seed: int, device: str = "cpu") -> dict[str, Any]:
    """Top-K g·w pruning against K random units; returns {"ks", "units" (how many the model
    has), "top", "random"}."""
    from wrapperlens.experiments.pcfg.analysis import prune_run
    from wrapperlens.experiments.pcfg.analysis_options import PruneOptions

    options = PruneOptions(ks=tuple(ks), random_draws=random_draws, random_seed=random_seed)
    result = prune_run(Path(out) / run["dir"], _analysis_dir(out, "prune", run), options)
    return {"ks": result["ks"], "units": result["n_units"], "top": _by_metric(result["metrics"]),
            "random": _by_metric(result.get("random", {}).get("metrics", {}))}


def _by_metric(per_k: list[dict[str, float]] | dict[str, list[float]]) -> dict[str, list[float]]:
    """{metric: [value per K]} from a list of {metric: value} per K (or as it is)."""
    if isinstance(per_k, Mapping):
        return dict(per_k)
    return {name: [m[name] for m in per_k] for name in (per_k[0] if per_k else {})}


def probe_job(out: str, run: dict, samples: int, random_inits: int = 3,
              device: str = "cpu") -> dict[str, Any]:
    """count(a) probes by layer: fine-tuned, pretrained and `random_inits` random inits.

    Returns {"layers", "models": {"pretrained", "finetuned", "random_init"}: accuracy per layer
    ("random_init": the mean over the inits), "random_inits": [accuracy per layer] per init,
    "majority_rate", "target"}.
    """
    from wrapperlens.experiments.pcfg.analysis import probe_run
    from wrapperlens.experiments.pcfg.analysis_options import ProbeOptions

    result = probe_run(Path(out) / run["dir"], _analysis_dir(out, "probe", run),
                       ProbeOptions(samples=samples, random_inits=random_inits))
    acc = result["accuracy"]
    inits = [acc[name] for name in result["baselines"]]
    layers = range(len(result["point_names"]))
    return {"layers": result["point_names"],
            "models": {"pretrained": acc["pretrained"], "finetuned": acc["fine-tuned"],
                       "random_init": [sum(a[i] for a in inits) / len(inits) for i in layers]},
            "random_inits": inits, "majority_rate": result["majority_rate"],
            "target": result["label"]}


def attention_job(out: str, run: dict, device: str = "cpu") -> dict[str, Any]:
    """The pair's attention patterns on one prompt; returns {"html", "label"}."""
    from wrapperlens.experiments.pcfg.analysis import attention_run

    path = attention_run(Path(out) / run["dir"], _analysis_dir(out, "attention", run))
    return {"html": str(Path(path).relative_to(out)), "label": "pretrained vs fine-tuned"}


def circuit_job(out: str, run: dict, device: str = "cpu") -> dict[str, Any]:
    """The pair's EAP-IG circuits and their diff (`circuit.circuit_run`); returns the diff's
    rows and counts, the Spearman correlation with exact edge patching and the picture's path."""
    from wrapperlens.experiments.pcfg.circuit import circuit_run

    target = _analysis_dir(out, "circuit", run)
    result = circuit_run(Path(out) / run["dir"], target)
    keep = ("method", "metric", "top_n", "ratio", "samples", "rows", "counts",
            "spearman_vs_exact")
    return {**{k: result[k] for k in keep}, "edges": len(result["edges"]),
            "png": str((target / "circuit.png").relative_to(out))}


# ------------------------------------------------------------------------------- setting
def _count_a_curve(run: dict[str, Any]) -> None:
    """reFT (O_PT = a) and Scr.+FT (O_FT = a) runs log "counting a" under one more name."""
    source = {"reft": "acc/O_PT/natural", "scratch_finetune": "acc/O_FT/natural"}.get(run["stage"])
    for point in run["curve"] if source else ():
        if source in point:
            point[COUNT_A_NATURAL] = point[source]


def _claims(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Claims 1-12 and 17-20 (`claims`; 8-12 and 17-20 say where they are decided) and 13-16
    (`appendix`), by id."""
    return sorted(evaluate_claims(results) + appendix.evaluate_appendix(results),
                  key=lambda c: c["id"])


#: The PCFG grid for the reproduction loop (`wrapperlens.reproduction.reproduce`).
SETTING = Setting("pcfg", plan, _claims,
                  seeds=lambda preset, overrides: preset_grid(preset, overrides).seeds,
                  seed_roles=SEED_ROLES, figures=FIGURES, finish_run=_count_a_curve)
