"""The compiled models' grid (paper App. G, Tables 3-4) as sweep jobs, and its results.

`plan(preset)` lists the jobs (`wrapperlens.sweeps.Job`) of the preset's `grid` section
(`wrapperlens.experiments.compiled_presets.CompiledGridConfig`: programs, seeds, ηs, C_Trs):

- per program and seed s: a compile run (noise seed s) and its fine-tunings at every η × C_Tr of
  Table 3 (train.seed s);
- Counter only: reFT at η_VS of the η_M and η_L fine-tunings with C_Tr 0 and 1 (claim 10);
  Scr.+FT (compiled for b, fine-tuned to count a at η_VS); single-weight g·w pruning against as
  many random weights, after η_M and η_S fine-tuning with C_Tr 1 and 0 (claim 9); the counting
  head's attention to `a` and to `b` keys in every Counter run (claim 8);
- Max-identifier only: how well the sorting step still delivers `n_larger` (read from its
  labelled residual dimensions) in every run (claim 11).

`reproduce_compiled(preset, out)` runs them (`wrapperlens.sweeps.run_sweep`) and writes
`OUT/results.json`: every run's final metrics and chance floors, every analysis, Table 3 (mean,
min and max over seeds) and the claims (`wrapperlens.experiments.compiled_claims`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wrapperlens.experiments.compiled_presets import CompiledGridConfig
from wrapperlens.checkpoints import write_json
from wrapperlens.sweeps import Job, make_executor, recorded_outcomes, run_sweep

__all__ = ["plan", "preset_grid", "reproduce_compiled", "table3", "train_job", "prune_job",
           "prune_run", "readout_job"]

_HERE = "wrapperlens.experiments.compiled_grid"
_REFT_FROM = ("M", "L")  # claim 10: revival after η_M, none after η_L
_PRUNE_ETAS = ("M", "S")


def _key(**parts: Any) -> str:
    return "/".join(f"{k}={v}" for k, v in parts.items())


def preset_grid(preset: str, seeds: int | None = None,
                programs: tuple[str, ...] | None = None) -> CompiledGridConfig:
    """The preset's grid section, with `seeds` and `programs` replaced when given."""
    from wrapperlens.presets import get_preset

    grid = get_preset(preset, "compiled").grid
    changes = {k: v for k, v in (("seeds", seeds), ("programs", programs)) if v is not None}
    return dataclasses.replace(grid, **changes) if changes else grid


def plan(preset: str, seeds: int | None = None,
         programs: tuple[str, ...] | None = None) -> list[Job]:
    """Every job of the preset's grid (see the module docstring); keys name program, stage, η,
    C_Tr and seed."""
    grid = preset_grid(preset, seeds, programs)
    jobs: list[Job] = []

    def train(key: str, stage: str, parent: str | None, eta: str | None, over: dict) -> str:
        args = {"stage": stage, "preset": preset, "eta": eta, "overrides": over,
                "parent": {"$value": parent} if parent else None}
        jobs.append(Job(key, f"{_HERE}:train_job", args, (parent,) if parent else ()))
        return key

    def analysis(kind: str, run: str, **args: Any) -> None:
        jobs.append(Job(f"{kind}/{run}", f"{_HERE}:{kind}_job", {"run": {"$value": run}, **args},
                        (run,)))

    for program in grid.programs:
        for seed in range(grid.seeds):
            # The presets' task.length is the Counter's; Max-identifier keeps the paper's 10.
            length = {} if program == "counter" else {"task.length": 0}
            base = {"task.program": program, **length, "compile.seed": seed}
            compiled = train(_key(program=program, stage="compile", seed=seed), "compile", None,
                             None, base)
            analysis("readout", compiled)
            for eta in grid.etas:
                for c_tr in grid.c_trs:
                    ft = train(_key(program=program, stage="finetune", eta=eta, c_tr=c_tr,
                                    seed=seed), "finetune", compiled, eta,
                               {"finetune.c_tr": c_tr, "train.seed": seed})
                    analysis("readout", ft)
                    if program != "counter":
                        continue
                    if eta in _PRUNE_ETAS and c_tr in (0.0, 1.0):
                        analysis("prune", ft, ks=list(grid.prune_ks), random_seed=seed,
                                 random_draws=grid.prune_random_draws)
                    if eta in _REFT_FROM and c_tr in (0.0, 1.0) and "VS" in grid.etas:
                        reft = train(_key(program=program, stage="reft", after=eta, c_tr=c_tr,
                                          seed=seed), "reft", ft, "VS", {"train.seed": seed})
                        analysis("readout", reft)
            if program == "counter":
                scratch = train(_key(program=program, stage="scratch_compile", seed=seed),
                                "compile", None, None, {**base, "compile.operand": "b"})
                train(_key(program=program, stage="scratch_finetune", seed=seed), "finetune",
                      scratch, "VS", {"finetune.target": "pt", "finetune.c_tr": 0.0,
                                      "train.seed": seed})
    return sorted(jobs, key=lambda j: bool(j.after))


# ------------------------------------------------------------------------- job functions
def train_job(out: str, stage: str, preset: str, eta: str | None, overrides: dict,
              parent: dict | None, device: str = "cpu") -> dict[str, Any]:
    """Run one stage into `out/runs/<run id>`; returns its directory, final metrics, floors."""
    from wrapperlens.experiments.compiled_runs import resolve_compiled, run_compiled_stage
    from wrapperlens.runs import run_id

    parent_dir = str(Path(out) / parent["dir"]) if parent else None
    run = resolve_compiled(stage, preset, parent=parent_dir, eta=eta, overrides=overrides)
    rel = f"runs/{run_id(run.to_json())}"
    records, seconds = run_compiled_stage(run, Path(out) / rel, progress=False, device=device)
    final = {k: v for k, v in records[-1].items() if k.startswith("acc/")}
    return {"dir": rel, "final": final, "floors": run.chance_floors(), "seconds": seconds,
            "lr": run.train_config.lr if run.train_config else None,
            "curve": [{k: v for k, v in r.items() if k == "step" or k.startswith("acc/")}
                      for r in records]}


def _open(out: str, run: dict):
    from wrapperlens.experiments.compiled_runs import load_compiled_run

    return load_compiled_run(Path(out) / run["dir"])


def readout_job(out: str, run: dict, device: str = "cpu") -> dict[str, Any]:
    """What the run's compiled circuit still delivers (claims 8 and 11), on C_Te = 0 inputs.

    Counter: the counting head's (block 0, head 0) attention from the last position to keys
    holding `a` and to keys holding `b` (summed over those keys, mean over inputs).
    Max-identifier: the fraction of positions whose `n_larger` (the sorting step's output, read
    as the argmax of its labelled residual dimensions after the last block) is the true number
    of larger letters. Runs on the CPU, whatever the sweep's `device`.
    """
    from wrapperlens.components import hook_name

    compiled_run, model = _open(out, run)
    letters = compiled_run.eval_letters(0)
    tokens = compiled_run.token_ids(letters)
    task = compiled_run.task
    if task.config.program == "counter":
        name = hook_name("pattern", 0)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=name)
        pattern = cache[name][:, 0, -1, 1:].double().numpy()  # [batch, key letters]
        out_ = {}
        for letter in (task.config.o_pt, task.config.o_ft):
            mask = letters == task.vocab.index(letter)
            out_[f"attention_to_{letter}"] = float((pattern * mask).sum(1).mean())
        return out_
    name = hook_name("resid_post", model.cfg.n_layers - 1)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name)
    labels = compiled_run.description.residual_labels
    dims = [i for i, label in enumerate(labels)
            if label.startswith("n_larger:") and label.split(":")[1].isdigit()]
    values = np.array([int(labels[i].split(":")[1]) for i in dims])
    read = values[cache[name][:, 1:, dims].argmax(-1).numpy()]
    truth = (letters[:, None, :] < letters[:, :, None]).sum(-1)  # keys smaller index = larger
    return {"sorting_accuracy": float((read == truth).mean())}


def prune_job(out: str, run: dict, ks: list[int], random_seed: int,
              random_draws: int = 5, device: str = "cpu") -> dict[str, Any]:
    """`prune_run` of the grid's run `out/run["dir"]` (on the CPU, whatever the sweep's
    `device`: the compiled models are small)."""
    return prune_run(Path(out) / run["dir"], ks, random_seed, random_draws)


def prune_run(run_dir: str | Path, ks: list[int], random_seed: int = 0,
              random_draws: int = 5) -> dict[str, Any]:
    """Single-weight g·w pruning for the O_PT loss on C_Te = 0 inputs (paper App. G, Fig. 55),
    against pruning as many random weights; every block linear map is eligible.

    The gradient is taken on the first 512 inputs of the run's C_Te = 0 evaluation set; every K
    is evaluated on all of the run's evaluation sets (`CompiledRun.evaluate`).

    Returns:
        {"ks": the sorted Ks, "top": metrics after zeroing the top-K weights, per K, "random":
        the mean metrics after zeroing K random weights (`random_draws` nested draws from
        `random_seed`), per K, "weights": the labels of the top-max(K) weights, best first}.
    """
    from wrapperlens.analysis.pruning import PruneConfig, answer_loss, prune_sweep
    from wrapperlens.analysis.pruning_control import random_prune_sweep
    from wrapperlens.experiments.compiled_runs import load_compiled_run

    compiled_run, model = load_compiled_run(run_dir)
    letters = compiled_run.eval_letters(0)[:512]
    tokens = compiled_run.token_ids(letters)
    loss_fn = answer_loss(tokens, tokens.shape[1] - 1,
                          compiled_run.classes(letters, compiled_run.task.config.o_pt))
    config = PruneConfig(granularity="weight")
    evaluate = compiled_run.evaluate
    top = prune_sweep(model, loss_fn, ks, evaluate, config)
    rand = random_prune_sweep(model, ks, evaluate, config, draws=random_draws, seed=random_seed)
    return {"ks": top.ks, "top": top.metrics, "random": rand.metrics,
            "weights": [u.label for u in top.units]}


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
        if p["stage"] == "finetune":
            groups.setdefault((p["program"], p["eta"], float(p["c_tr"])), []).append(run)
            floor = {**run, "value": {"final": run["value"]["floors"]}}
            groups.setdefault((p["program"], "floor", -1.0), []).append(floor)
        elif p["stage"] == "compile":  # the starting point: compiled, plus the noise
            groups.setdefault((p["program"], "-", -1.0), []).append(run)
    rows = []
    order = {"floor": -1, "-": 0, "L": 1, "M": 2, "S": 3, "VS": 4}
    for (program, eta, c_tr), runs in sorted(groups.items(),
                                             key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        seeds = len({r["params"]["seed"] for r in runs})
        row = {"program": program, "eta": eta, "c_tr": None if c_tr < 0 else c_tr,
               "seeds": seeds}
        for name in runs[0]["value"]["final"]:
            values = [r["value"]["final"][name] for r in runs]
            row[name] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values)}
        rows.append(row)
    return rows


def _params(key: str) -> dict[str, Any]:
    """A job key's `name=value` parts (`_key`'s inverse)."""
    return dict(part.split("=", 1) for part in key.split("/"))


def reproduce_compiled(preset: str, out: str | Path, *, seeds: int | None = None,
                       programs: tuple[str, ...] | None = None, executor: str = "local",
                       workers: int | None = None, threads: int = 1, address: str | None = None,
                       device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Run the grid of `preset` into `out` (resuming a killed sweep) and write results.json."""
    from wrapperlens.experiments.compiled_claims import evaluate_compiled_claims
    from wrapperlens.presets import get_preset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = preset_grid(preset, seeds, programs)
    jobs = plan(preset, grid.seeds, grid.programs)
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"compiled grid [{preset}]", disable=not progress)
    run_sweep(jobs, out / "jobs", make_executor(executor, workers=workers, threads=threads,
                                                address=address),
              common={"out": str(out), "device": device}, on_outcome=lambda _: bar.update())
    bar.close()
    outcomes = recorded_outcomes(jobs, out / "jobs")
    runs, analyses = [], []
    for job in jobs:
        outcome = outcomes.get(job.key)
        record = {"key": job.key, "status": outcome.status if outcome else "missing",
                  "value": outcome.value if outcome else None,
                  "error": outcome.error if outcome else None}
        if job.target.endswith(":train_job"):
            runs.append({**record, "params": _params(job.key)})
        else:
            kind, run_key = job.key.split("/", 1)
            analyses.append({**record, "kind": kind, "run": run_key, "params": _params(run_key)})
    results = {"preset": preset, "seeds": grid.seeds, "programs": list(grid.programs),
               "etas": dict(get_preset(preset, "compiled").etas),
               "wall_seconds": time.perf_counter() - start, "runs": runs, "analyses": analyses}
    results["table3"] = table3(results)
    results["claims"] = evaluate_compiled_claims(results)
    write_json(out / "results.json", results)
    return results
