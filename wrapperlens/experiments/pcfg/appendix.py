"""Claims 13-16: the paper's appendix experiments (App. E.1, E.2, E.4, H.1) in the PCFG grid.

Each experiment adds a few runs per seed to the grid when it is named in `grid.appendix`
(`wrapperlens.experiments.pcfg.grid_config.GridConfig`), and decides one claim:

| experiment | runs per seed | claim |
|---|---|---|
| `jailbreak` (E.2) | a pretraining under the highest prior with two more Counter tokens J1, J2 seen only with `a`; its η_M fine-tuning to count b (C_Tr = 1, token C); count(a) probes of it | 13 |
| `randft` (E.4) | per prior: fine-tuning at `reft_after` on "count a" prompts labelled with count(b) (randFT), then its reFT at `reft_eta` | 14 |
| `mix` (E.1) | per prior: the η_M C_Tr = 1 fine-tuning with a fraction `grid.mix` of pretraining data in every batch; probes of the lowest prior's | 15 |
| `inhibitor` (H.1) | the highest prior's η_L fine-tuning at C_Tr = 0; its g·w pruning against random units | 16 |

Every rule is a set of margins (docs/reproduction.md#the-appendix-claims): a seed's value is its
smallest margin, and the claim is reproduced when every seed's value is above 0. The rules were
fixed from the paper's words before any run they judge.

Runs and analyses carry their own labels (`jailbreak_finetune`, `inhibitor_prune`, ...), so no
rule of claims 1-7 ever reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from wrapperlens.claims import Claim, Measured, claim_record, mean
from wrapperlens.experiments.pcfg.claims import (finished_analyses, finished_runs, o_pt_lost,
                                                 prune_window)
from wrapperlens.experiments.pcfg.grid_config import COUNT_A_NATURAL, SEED_ROLES, GridConfig
from wrapperlens.planning import Planner

__all__ = ["plan_seed", "APPENDIX_CLAIMS", "evaluate_appendix", "JAILBREAK_ALIASES",
           "DECODES", "REVIVED"]

Results = Mapping[str, Any]
_GRID = "wrapperlens.experiments.pcfg.grid"

#: Two more Counting tokens that pretraining pairs only with `a` (paper App. E.2: T_J1, T_J2).
JAILBREAK_ALIASES = ("J1=C:a", "J2=C:a")


# --------------------------------------------------------------------------------- plan
def plan_seed(jobs: Planner, grid: GridConfig, etas: Mapping[str, float], seed: int,
              pretrained: Mapping[str, str], pt_over: Mapping[str, Any],
              ft_over: Mapping[str, Any]) -> None:
    """Add seed `seed`'s jobs of every experiment in `grid.appendix` to `jobs`.

    Args:
        jobs: The grid's planner.
        grid: The grid (its `appendix`, `mix`, `reft_after`, `reft_eta`, prune and probe fields).
        etas: The preset's named learning rates (recorded in each run's params).
        seed: The seed: `train.seed` of every run, and `model.init_seed` of a pretraining.
        pretrained: Prior -> the key of that prior's pretraining job of this seed.
        pt_over, ft_over: The user's `task.*`/`model.*` and `finetune.*` overrides.
    """
    high, todo = grid.priors[-1], set(grid.appendix)
    common = {"train.seed": seed}
    base = dict(family="C", seed=seed)
    if "jailbreak" in todo:
        over = {**pt_over, "task.prior": high, "task.aliases": JAILBREAK_ALIASES,
                "model.init_seed": seed, **common}
        pt = jobs.train(f"jailbreak/pretrain/prior={high}/seed={seed}", "pretrain",
                        overrides=over, label="jailbreak_pretrain",
                        params=dict(prior=high, seed=seed))
        params = {**base, "prior": high, "c_tr": 1.0, "eta": "M", "lr": etas.get("M")}
        ft = jobs.train(f"jailbreak/finetune/prior={high}/seed={seed}", "finetune", parent=pt,
                        eta="M", overrides={**ft_over, "finetune.c_tr": 1.0, **common},
                        label="jailbreak_finetune", params=params)
        jobs.analysis(f"jailbreak/probe/prior={high}/seed={seed}", "jailbreak_probe", ft,
                      f"{_GRID}:probe_job", _probe_args(grid), params)
    for prior, pt in pretrained.items():
        if "randft" in todo and grid.reft_after:
            eta = grid.reft_after
            params = {**base, "prior": prior, "c_tr": 0.0, "eta": eta, "lr": etas.get(eta)}
            over = {**ft_over, "finetune.operand": "a", "finetune.label_operand": "b", **common}
            ft = jobs.train(f"randft/finetune/prior={prior}/seed={seed}", "finetune", parent=pt,
                            eta=eta, overrides=over, label="randft_finetune", params=params)
            jobs.train(f"randft/reft/prior={prior}/seed={seed}", "reft", parent=ft,
                       eta=grid.reft_eta, overrides=common, label="randft_reft",
                       params={**params, "eta": grid.reft_eta, "lr": etas.get(grid.reft_eta),
                               "after_eta": eta})
        if "mix" in todo:
            params = {**base, "prior": prior, "c_tr": 1.0, "eta": "M", "lr": etas.get("M"),
                      "mix": grid.mix}
            over = {**ft_over, "finetune.c_tr": 1.0, "finetune.pretrain_mix": grid.mix, **common}
            ft = jobs.train(f"mix/finetune/prior={prior}/seed={seed}", "finetune", parent=pt,
                            eta="M", overrides=over, label="mix_finetune", params=params)
            if prior == grid.priors[0]:
                jobs.analysis(f"mix/probe/prior={prior}/seed={seed}", "mix_probe", ft,
                              f"{_GRID}:probe_job", _probe_args(grid), params)
        if "inhibitor" in todo and prior == high:
            params = {**base, "prior": prior, "c_tr": 0.0, "eta": "L", "lr": etas.get("L")}
            ft = jobs.train(f"inhibitor/finetune/prior={prior}/seed={seed}", "finetune",
                            parent=pt, eta="L", overrides={**ft_over, "finetune.c_tr": 0.0,
                                                           **common},
                            label="inhibitor_finetune", params=params)
            jobs.analysis(f"inhibitor/prune/prior={prior}/seed={seed}", "inhibitor_prune", ft,
                          f"{_GRID}:prune_job",
                          {"ks": list(grid.prune_ks),
                           "random_draws": max(grid.prune_random_draws, 1), "random_seed": seed},
                          params)


def _probe_args(grid: GridConfig) -> dict[str, int]:
    return {"samples": grid.probe_samples, "random_inits": grid.probe_random_inits}


# ------------------------------------------------------------------------------ lookups
def _missing(what: str) -> Measured:
    return Measured([], note=f"the grid has no finished {what} (add it to grid.appendix)")


def _start_and_final(run: dict, metric: str) -> tuple[float, float]:
    curve = [p[metric] for p in run["curve"] if metric in p]
    return (curve[0], curve[-1]) if curve else (math.nan, math.nan)


# "decodes": the probe recovers at least half of what the pretrained model's lead over a random
# init is, at an intermediate block (B1 .. B_{n-1}); undefined where that lead is under 0.05.
DECODES = 0.5
_LEAD = 0.05


def _decoded_share(result: dict) -> float:
    """max over intermediate blocks of (fine-tuned − random init) / (pretrained − random
    init)."""
    m = result["models"]
    layers = range(1, len(m["pretrained"]) - 1) or range(len(m["pretrained"]))
    shares = [(m["finetuned"][i] - m["random_init"][i]) / (m["pretrained"][i] - m["random_init"][i])
              for i in layers if m["pretrained"][i] - m["random_init"][i] >= _LEAD]
    return max(shares) if shares else math.nan


# counting a is "back" at 80 % on natural strings (docs/reproduction.md#how-a-claim-is-decided)
REVIVED = 0.8


def _steps_to(curve: list[dict], metric: str, threshold: float = REVIVED) -> int | None:
    for point in curve:
        if point.get(metric, -1.0) >= threshold:
            return point["step"]
    return None


# ------------------------------------------------------------------------ measurements
def _claim13(results: Results) -> Measured:
    runs = finished_runs(results, "jailbreak_finetune")
    probes = finished_analyses(results, "jailbreak_probe")
    if not runs:
        return _missing("jailbreak fine-tuning")
    values, notes, floor = [], [], None
    for seed, run in sorted(runs.items()):
        f = run["final"]
        jail = [v for k, v in f.items() if k.startswith("acc/J") and k.endswith("/cte0")]
        if not jail:
            values.append(math.nan)
            continue
        acc_j, acc_nj = mean(jail), f["acc/O_PT/cte0"]
        decoded = _decoded_share(probes[seed]["result"]) if seed in probes else math.nan
        values.append(min(acc_j - REVIVED, acc_j - acc_nj - 0.3, decoded - DECODES))
        notes.append(f"seed {seed}: count a via J {acc_j:.3f}, via C {acc_nj:.3f}, "
                     f"count(a) decoded share {decoded:.2f}")
        floor = run["floors"].get("acc/O_PT/cte0")
    return Measured(values, floor, "; ".join(notes), SEED_ROLES["finetune"])


def _claim14(results: Results) -> Measured:
    priors = sorted({r["params"]["prior"] for r in results["runs"] if r["stage"] == "randft_reft"})
    rand = [(prior, seed, run) for prior in priors
            for seed, run in sorted(finished_runs(results, "randft_reft", prior=prior).items())]
    if not rand:
        return _missing("reFT of a randFT fine-tuning")
    scratch = finished_runs(results, "scratch_finetune")
    values, notes = [], []
    for prior, seed, run in rand:
        std = finished_runs(results, "reft", prior=prior, family="C", c_tr=1.0).get(seed)
        metric = "acc/O_PT/natural"
        start = _start_and_final(run, metric)[0]
        if std is None or seed not in scratch or not start < REVIVED:
            values.append(math.nan)  # no comparison, or nothing to revive
            notes.append(f"P^{prior} seed {seed}: randFT starts at {start:.2f}")
            continue
        r = _steps_to(run["curve"], metric)
        r_std = _steps_to(std["curve"], metric)
        s = _steps_to(scratch[seed]["curve"], COUNT_A_NATURAL)
        if r is None:
            values.append(-1.0)  # randFT's reFT never got there: slower than both
        else:
            # a run that never got there counts its budget: a lower bound on its steps
            r_std_steps = r_std if r_std is not None else std["curve"][-1]["step"]
            s_steps = s if s is not None else scratch[seed]["curve"][-1]["step"]
            r = max(r, 1)
            values.append(min(2 * max(r_std_steps, 1) / r - 1, s_steps / r / 2 - 1))
        notes.append(f"P^{prior} seed {seed}: steps to 80 % after randFT {r}, after FT {r_std}, "
                     f"Scr.+FT {s}")
    return Measured(values, None, "; ".join(notes) + " (None: not reached; the budget then "
                    "counts as a lower bound)", SEED_ROLES["reft"])


def _claim15(results: Results) -> Measured:
    low = finished_runs(results, "mix_finetune", prior="L")
    high = finished_runs(results, "mix_finetune", prior="H")
    probes = finished_analyses(results, "mix_probe", prior="L")
    seeds = sorted(set(low) & set(high))
    if not seeds:
        return _missing("mixed fine-tuning under both P^L and P^H")
    values, notes = [], []
    for s in seeds:
        lost = o_pt_lost(low[s]) - o_pt_lost(high[s])
        decoded = _decoded_share(probes[s]["result"]) if s in probes else math.nan
        values.append(min(lost - 0.05, decoded - DECODES))
        notes.append(f"seed {s}: Acc O_PT lost P^L minus P^H {lost:.3f}, "
                     f"count(a) decoded share {decoded:.2f}")
    mix = low[seeds[0]]["params"].get("mix")
    return Measured(values, low[seeds[0]]["floors"].get("acc/O_PT/cte0"),
                    f"{mix:g} of each batch from pretraining; " + "; ".join(notes),
                    SEED_ROLES["finetune"])


def _k_window(result: dict) -> list[int]:
    """The Ks of the sweep in claim 5's window: the paper's 5..15 of its model's units, scaled
    to this model (`prune_window`)."""
    window = prune_window(result["units"]) if "units" in result else range(5, 16)
    return [i for i, k in enumerate(result["ks"]) if k in window]


def _claim16(results: Results) -> Measured:
    runs = finished_runs(results, "inhibitor_finetune")
    prunes = finished_analyses(results, "inhibitor_prune")
    seeds = sorted(set(runs) & set(prunes))
    if not seeds:
        return _missing("pruning of an η_L C_Tr = 0 fine-tuning under the highest prior")
    metric, values, notes = "acc/O_PT/cte0", [], []
    for s in seeds:
        start, final = _start_and_final(runs[s], metric)
        r = prunes[s]["result"]
        ks = _k_window(r)
        if not ks or metric not in r.get("random", {}):
            values.append(math.nan)
            notes.append(f"seed {s}: no K of the sweep {r['ks']} in the scaled window "
                         "with a random-unit control")
            continue
        gain = max(r["top"][metric][i] - r["random"][metric][i] for i in ks)
        best = max(r["top"][metric][i] for i in ks)
        values.append(min(start - final - 0.5, gain - 0.1, start - best - 0.1))
        notes.append(f"seed {s}: Acc O_PT {start:.2f} → {final:.2f}, pruned at best {best:.2f} "
                     f"(+{gain:.2f} over random units)")
    return Measured(values, runs[seeds[0]]["floors"].get(metric), "; ".join(notes),
                    SEED_ROLES["finetune"])


APPENDIX_CLAIMS: tuple[Claim, ...] = (
    Claim(13, "The synthetic jailbreak",
          "tokens seen only with a in pretraining (T_J1, T_J2) still count a after fine-tuning "
          "with a high prior; probes decode count(a) mid-network even with T_NJ (Figs 24-25)",
          "smallest of: Acc count a via J1/J2 − 0.8; that minus via C − 0.3; the share of "
          "count(a) decoded at an intermediate block − 0.5 (highest prior, η_M, C_Tr = 1)",
          0.0, _claim13),
    Claim(14, "randFT is revived like ordinary fine-tuning",
          "reFT of randFT is \"similarly sample-efficient as the standard reFT\" and more "
          "efficient than Scr. and Scr.+FT (Figs 28-29)",
          "smallest of: 2 × steps to 80 % after FT / after randFT − 1; Scr.+FT steps / randFT's "
          "/ 2 − 1 (from randFT below 80 %)", 0.0, _claim14),
    Claim(15, "Pretraining data in fine-tuning does not change the picture",
          "with PT data mixed in, a low prior still drops more pretraining accuracy (Figs "
          "18-19) and probes still decode count(a) (Figs 22-23)",
          "smallest of: mean Acc O_PT lost, P^L minus P^H, − 0.05; P^L's decoded share of "
          "count(a) − 0.5 (η_M, C_Tr = 1, grid.mix of each batch from pretraining)",
          0.0, _claim15),
    Claim(16, "A large rate can learn an inhibitor",
          "η_L on a strongly relevant capability learns an \"inhibitor\"; pruning partly "
          "revives it when C_Tr = 0 (Figs 86, 88)",
          "smallest of: Acc O_PT lost − 0.5; top-K minus random-K pruned Acc O_PT − 0.1; start "
          "minus best pruned − 0.1 (highest prior, η_L, C_Tr = 0, K scaled from 5..15)",
          0.0, _claim16),
)


def evaluate_appendix(results: Results) -> list[dict[str, Any]]:
    """One record per appendix claim (13-16)."""
    return [claim_record(claim, claim.measure(results)) for claim in APPENDIX_CLAIMS]
