"""The compiled models' grid (paper App. G, Tables 3-4) as sweep jobs, and its results.

`plan(preset)` lists the jobs (`wrapperlens.sweeps.Job`) of the preset's `grid` section
(`wrapperlens.experiments.compiled.presets.CompiledGridConfig`: programs, seeds, ηs, C_Trs):

- per program and seed s: a compile run (noise seed s) and its fine-tunings at every η × C_Tr of
  Table 3 (train.seed s);
- Counter only: reFT at η_VS of the η_M and η_L fine-tunings with C_Tr 0 and 1 (claim 10);
  Scr.+FT (compiled for b, fine-tuned to count a at η_VS); single-weight g·w pruning against as
  many random weights, after η_M and η_S fine-tuning with C_Tr 1 and 0 (claim 9; the gradient
  taken on inputs held out from the evaluation sets it is scored on); the counting head's
  attention to `a` and to `b` keys in every Counter run (claim 8, read with each run's
  accuracies);
- Max-identifier only: how well the sorting step still delivers `n_larger` (read from its
  labelled residual dimensions) in every run (claim 11).

`SETTING` gives the grid to the one reproduction loop (`wrapperlens.reproduction.reproduce`:
`wrapperlens compiled grid` and `wrapperlens reproduce --settings compiled`), whose results.json
holds every run's final metrics and chance floors, every analysis, Table 3 (`table3`: mean, min
and max over seeds) and claims 8-12 (`wrapperlens.experiments.compiled.claims`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from wrapperlens.config import ConfigError
from wrapperlens.experiments.compiled.analysis import GRADIENT_SAMPLES
from wrapperlens.experiments.compiled.claims import SEED_ROLES, evaluate_compiled_claims
from wrapperlens.experiments.compiled.presets import CompiledGridConfig
from wrapperlens.experiments.compiled.stages import CompiledRun
from wrapperlens.presets import get_preset
from wrapperlens.planning import GridJob, Planner, Setting

__all__ = ["plan", "preset_grid", "table3", "SETTING"]

_ANALYSIS = "wrapperlens.experiments.compiled.analysis"
_REFT_FROM = ("M", "L")  # claim 10: revival after η_M, none after η_L
_PRUNE_ETAS = ("M", "S")


def _key(**parts: Any) -> str:
    return "/".join(f"{k}={v}" for k, v in parts.items())


def preset_grid(preset: str, overrides: Mapping[str, Any] | None = None) -> CompiledGridConfig:
    """The preset's grid section with `grid.*` overrides applied (any key, e.g. `grid.seeds`,
    `grid.programs`, `grid.etas`)."""
    grid = {k: v for k, v in (overrides or {}).items() if k.startswith("grid.")}
    p = get_preset(preset, CompiledRun.name)
    return p.with_overrides(grid).grid if grid else p.grid


def plan(preset: str, overrides: Mapping[str, Any] | None = None) -> list[GridJob]:
    """Every job of the preset's grid (see the module docstring); keys name program, stage, η,
    C_Tr and seed, and the same values are the jobs' typed params.

    Raises:
        ConfigError: an override other than `grid.*` (every other setting is the preset's).
    """
    overrides = dict(overrides or {})
    bad = [k for k in overrides if not k.startswith("grid.")]
    if bad:
        raise ConfigError(f"{bad[0]} cannot be set for the compiled grid (only grid.*); "
                          "per-stage settings belong in the preset")
    grid = preset_grid(preset, overrides)
    jobs = Planner(CompiledRun, preset)

    def readout(run: str, **params: Any) -> None:
        jobs.analysis(f"readout/{run}", "readout", run, f"{_ANALYSIS}:readout_job",
                      params=params)

    for program in grid.programs:
        for seed in grid.seed_range:
            # The presets' task.length is the Counter's; Max-identifier keeps the paper's 10.
            length = {} if program == "counter" else {"task.length": 0}
            base = {"task.program": program, **length, "compile.seed": seed}
            params = dict(program=program, seed=seed)
            compiled = jobs.train(_key(program=program, stage="compile", seed=seed), "compile",
                                  overrides=base, params=params)
            readout(compiled, stage="compile", **params)
            for eta in grid.etas:
                for c_tr in grid.c_trs:
                    cell = dict(eta=eta, c_tr=float(c_tr), **params)
                    ft = jobs.train(_key(program=program, stage="finetune", eta=eta, c_tr=c_tr,
                                         seed=seed), "finetune", parent=compiled, eta=eta,
                                    overrides={"finetune.c_tr": c_tr, "train.seed": seed},
                                    params=cell)
                    readout(ft, stage="finetune", **cell)
                    if program != "counter":
                        continue
                    if eta in _PRUNE_ETAS and c_tr in (0.0, 1.0):
                        jobs.analysis(f"prune/{ft}", "prune", ft, f"{_ANALYSIS}:prune_job",
                                      {"ks": list(grid.prune_ks), "random_seed": seed,
                                       "random_draws": grid.prune_random_draws,
                                       "gradient_samples": GRADIENT_SAMPLES},
                                      {"stage": "finetune", **cell})
                    if eta in _REFT_FROM and c_tr in (0.0, 1.0) and "VS" in grid.etas:
                        after = dict(eta="VS", after=eta, c_tr=float(c_tr), **params)
                        reft = jobs.train(_key(program=program, stage="reft", after=eta,
                                               c_tr=c_tr, seed=seed), "reft", parent=ft,
                                          eta="VS", overrides={"train.seed": seed},
                                          params=after)
                        readout(reft, stage="reft", **after)
            if program == "counter":
                scratch = jobs.train(_key(program=program, stage="scratch_compile", seed=seed),
                                     "compile", overrides={**base, "compile.operand": "b"},
                                     label="scratch_compile", params=params)
                jobs.train(_key(program=program, stage="scratch_finetune", seed=seed),
                           "finetune", parent=scratch, eta="VS",
                           overrides={"finetune.target": "pt", "finetune.c_tr": 0.0,
                                      "train.seed": seed},
                           label="scratch_finetune", params={"eta": "VS", **params})
    return jobs.ordered()


# ---------------------------------------------------------------------------- the sweep
def table3(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 3's rows: per program × η × C_Tr, each accuracy's mean, min and max over seeds.

    Each program starts with two rows of C_Tr None: η "floor", the chance floor of each
    evaluation set (the rate of its most common answer, over the fine-tuning runs), and η "-",
    the noisy compiled model before any fine-tuning.
    """
    groups: dict[tuple, list[dict]] = {}
    for run in results["runs"]:
        p = run["params"]
        if run["status"] != "finished":
            continue
        if run["stage"] == "finetune":
            groups.setdefault((p["program"], p["eta"], p["c_tr"]), []).append(run)
            groups.setdefault((p["program"], "floor", -1.0), []).append(
                {**run, "final": run["floors"]})
        elif run["stage"] == "compile":  # the starting point: compiled, plus the noise
            groups.setdefault((p["program"], "-", -1.0), []).append(run)
    rows = []
    order = {"floor": -1, "-": 0, "L": 1, "M": 2, "S": 3, "VS": 4}
    for (program, eta, c_tr), runs in sorted(groups.items(),
                                             key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        seeds = len({r["params"]["seed"] for r in runs})
        row = {"program": program, "eta": eta, "c_tr": None if c_tr < 0 else c_tr,
               "seeds": seeds}
        for name in runs[0]["final"]:
            values = [r["final"][name] for r in runs]
            row[name] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values)}
        rows.append(row)
    return rows


#: Table 3's grid for the reproduction loop (`wrapperlens.reproduction.reproduce`).
SETTING = Setting("compiled", plan, evaluate_compiled_claims,
                  seeds=lambda preset, overrides: preset_grid(preset, overrides).seeds,
                  seed_roles=SEED_ROLES, tables=lambda view: {"table3": table3(view)})
