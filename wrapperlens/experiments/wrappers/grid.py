"""The known-wrapper benchmark as sweep jobs, for the one reproduction loop.

    wrapperlens reproduce --settings wrappers --preset cpu --out runs/wrappers

`plan(preset)` turns the preset's `benchmark` section
(`wrapperlens.experiments.wrappers.grid_config`) into jobs; per seed s:

| job | what |
|---|---|
| `pretrain/seed=s` | the PCFG pretraining (prior L), seed s |
| `localised/KIND=K/seed=s` | from it, count b at C_Tr = 1 with only K seeded units of KIND trainable (`stages`) |
| `localise/KIND=K/seed=s` | every method's ranking of that pair against its K known units (`analysis`) |
| `control/pretrain/seed=s` | the negative control: pretrained with the a/b prior swapped (never counts a) |
| `control/finetune/seed=s` | fully fine-tuned to count b at C_Tr = 1 |
| `localise/control/seed=s` | every method's top-K removals for every K of the grid; none should revive |

The setting decides no claim of the paper: its result is the leaderboard
(`wrapperlens.experiments.wrappers.leaderboard`), in results.json's `tables` and the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wrapperlens.config import ConfigError
from wrapperlens.experiments.wrappers import presets
from wrapperlens.experiments.wrappers.grid_config import BenchmarkConfig
from wrapperlens.experiments.wrappers.leaderboard import leaderboard_tables
from wrapperlens.experiments.wrappers.stages import WrapperRun
from wrapperlens.planning import GridJob, Planner, Setting

__all__ = ["preset_benchmark", "plan", "localise_job", "SEED_ROLES", "SETTING"]

_HERE = "wrapperlens.experiments.wrappers.grid"

#: Which seed varies what.
SEED_ROLES = {
    "pretrain": "seed s: train.seed = s and model.init_seed = s",
    "localised": "units.seed = s (which units) and train.seed = s, from the pretraining of seed s",
    "control": "as pretraining (a/b prior swapped), then train.seed = s",
}


def preset_benchmark(preset: str, overrides: Mapping[str, Any] | None = None) -> BenchmarkConfig:
    """The preset's benchmark section with `benchmark.*` overrides applied."""
    p = presets.get(preset)
    mine = {k: v for k, v in (overrides or {}).items() if k.startswith("benchmark.")}
    return p.with_overrides(mine).benchmark if mine else p.benchmark


def _seed_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The reproduction's seed keys (`grid.seeds`, `grid.first_seed`) as benchmark keys."""
    out = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section == "grid" and name in ("seeds", "first_seed"):
            out[f"benchmark.{name}"] = value
        elif section not in ("benchmark", "task", "model"):
            raise ConfigError(f"reproduce: {key} cannot be set for the wrappers setting (only "
                              "task.*, model.*, benchmark.*, grid.seeds, grid.first_seed)")
        else:
            out[key] = value
    return out


def plan(preset: str, overrides: Mapping[str, Any] | None = None) -> list[GridJob]:
    """Every job of the benchmark (module docstring), the ones that wait for nothing first."""
    from wrapperlens.experiments.pcfg.scratch_baseline import scratch_pretrain_overrides

    overrides = _seed_overrides(overrides or {})
    bench = preset_benchmark(preset, overrides)
    shared = {k: v for k, v in overrides.items() if k.split(".")[0] in ("task", "model")}
    args = {"methods": list(bench.methods), "samples": bench.samples,
            "random_draws": bench.random_draws, "eap_ig_steps": bench.eap_ig_steps,
            "revival_margin": bench.revival_margin}
    jobs = Planner(WrapperRun, preset)
    for seed in bench.seed_range:
        pt_seed = {"train.seed": seed, "model.init_seed": seed}
        pt = jobs.train(f"pretrain/seed={seed}", "pretrain",
                        overrides={"task.prior": "L", **shared, **pt_seed}, params={"seed": seed})
        for kind, count in bench.parsed_wrappers():
            family = f"{kind}:{count}"
            params = {"seed": seed, "family": family, "kind": kind, "k": count}
            ft = jobs.train(f"localised/{kind}={count}/seed={seed}", "localised", parent=pt,
                            eta=bench.localised_eta, params=params,
                            overrides={"units.kind": kind, "units.count": count,
                                       "units.seed": seed, "train.seed": seed})
            jobs.analysis(f"localise/{kind}={count}/seed={seed}", "localise", ft,
                          f"{_HERE}:localise_job",
                          {**args, "specs": [[kind, count]], "seed": seed}, params)
        if bench.control:
            swapped = scratch_pretrain_overrides(preset=preset, base_prior="L")
            cpt = jobs.train(f"control/pretrain/seed={seed}", "pretrain",
                             overrides={**swapped, **shared, **pt_seed,
                                        "task.prior": swapped["task.prior"]},
                             label="control_pretrain", params={"seed": seed})
            params = {"seed": seed, "family": "control"}
            cft = jobs.train(f"control/finetune/seed={seed}", "finetune", parent=cpt,
                             eta=bench.control_eta, overrides={"train.seed": seed},
                             label="control_finetune", params=params)
            jobs.analysis(f"localise/control/seed={seed}", "localise", cft,
                          f"{_HERE}:localise_job",
                          {**args, "specs": [list(w) for w in bench.parsed_wrappers()],
                           "seed": seed}, params)
    return jobs.ordered()


def localise_job(out: str, run: dict, specs: list[list], methods: list[str], samples: int,
                 random_draws: int, eap_ig_steps: int, revival_margin: float, seed: int,
                 device: str = "cpu") -> dict[str, Any]:
    """`analysis.localise_run` of one pair into `OUT/analyses/localise-<run id>/` (on the CPU:
    the models are small)."""
    from wrapperlens.experiments.wrappers.analysis import localise_run

    target = Path(out) / "analyses" / f"localise-{run['run_id']}"
    return localise_run(Path(out) / run["dir"], target, [tuple(s) for s in specs],
                        methods=methods, samples=samples, random_draws=random_draws,
                        eap_ig_steps=eap_ig_steps, revival_margin=revival_margin, seed=seed)


#: The benchmark for the reproduction loop (`wrapperlens.reproduction.reproduce`).
SETTING = Setting("wrappers", plan, lambda view: [],
                  seeds=lambda preset, overrides: preset_benchmark(
                      preset, _seed_overrides(overrides)).seeds,
                  seed_roles=SEED_ROLES, tables=leaderboard_tables)
