"""Claims 8-12 (docs/claims.md), measured on the compiled models' grid, each decided by a rule.

The rules follow `wrapperlens.experiments.pcfg.claims` (written before the runs they judge; one
value per seed, or per seed and setting; reproduced when every value is above the threshold, not
reproduced when none is, inconclusive when they straddle it, not covered without runs):

| claim | quantity (per seed) | threshold |
|---|---|---|
| 8 | Counter: the counting head's attention to `a` minus to `b`, worst of η_S (every C_Tr) and C_Tr ≥ 0.5 (every η); and attention to `b` minus to `a` at η_M, C_Tr 0 | 0 |
| 9 | Counter, C_Tr 1, η_M and η_S: best gain in Acc O_PT (C_Te 0) over K = 1..4 pruned weights, top-K g·w minus K random | 0.6 |
| 10 | Counter: Acc O_PT (C_Te 0) after reFT at η_VS, from η_M fine-tuning minus from η_L (C_Tr 0 and 1) | 0.3 |
| 11 | Max-identifier, C_Tr 0: sorting accuracy after η_VS fine-tuning minus the best of η_L, η_M, η_S | 0.3 |
| 12 | Counter, η_S: Acc O_FT on C_Te 1 minus on C_Te 0, each C_Tr ≥ 0.5 | 0.5 |

    claims = evaluate_compiled_claims(results)   # the runs / analyses of the compiled grid
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wrapperlens.claims import Claim, Measured, claim_record

__all__ = ["COMPILED_CLAIMS", "SEED_ROLES", "evaluate_compiled_claims"]

Results = Mapping[str, Any]
_SEEDS = "seed s: the compile noise (compile.seed = s) and every stage's data (train.seed = s)"


#: What seed s varies in each stage (results.json's seed_roles).
SEED_ROLES = {"compile": "compile.seed = s (the N(0, noise_std) noise on the compiled weights)",
              "finetune": "train.seed = s (data order), from the compile run of seed s",
              "reft": "train.seed = s (data order), from the fine-tuning of seed s"}


def _finished(records, **match: Any) -> list[dict]:
    """The finished records whose params (or, for a run's "stage", the record) match."""
    def value(r: Mapping[str, Any], k: str) -> Any:
        return r["params"][k] if k in r["params"] else r.get(k)
    return [r for r in records if r["status"] == "finished"
            and all(value(r, k) == v for k, v in match.items())]


def _claim8(results: Results) -> Measured:
    readouts = [a for a in results["analyses"] if a["kind"] == "readout"]
    counter = [a for a in _finished(readouts, program="counter", stage="finetune")]
    per_seed: dict[str, list[float]] = {}
    for a in counter:
        p, v = a["params"], a["result"]
        margin_a = v["attention_to_a"] - v["attention_to_b"]
        if p["eta"] == "S" or p["c_tr"] >= 0.5:
            per_seed.setdefault(p["seed"], []).append(margin_a)
        if p["eta"] == "M" and p["c_tr"] == 0.0:
            per_seed.setdefault(p["seed"], []).append(-margin_a)
    if not per_seed:
        return Measured([], note="no Counter fine-tuning readouts")
    return Measured([min(v) for v in per_seed.values()], seeds_vary=_SEEDS,
                    note="worst margin per seed over the cells the claim names")


def _claim9(results: Results) -> Measured:
    prunes = [a for a in results["analyses"] if a["kind"] == "prune"]
    values, best_k = [], []
    for a in _finished(prunes, c_tr=1.0):
        if a["params"]["eta"] not in ("M", "S"):
            continue
        v = a["result"]
        ks, top, rand = v["ks"], v["top"], v["random"]
        base = top[ks.index(0)]["acc/O_PT/cte0"]
        gains = {k: (top[i]["acc/O_PT/cte0"] - base) - (rand[i]["acc/O_PT/cte0"] - base)
                 for i, k in enumerate(ks) if 1 <= k <= 4}
        k = max(gains, key=gains.get)
        values.append(gains[k])
        best_k.append(k)
    if not values:
        return Measured([], note="no pruning of a correlated Counter fine-tuning")
    return Measured(values, seeds_vary=_SEEDS,
                    note=f"η_M and η_S, per seed; best K per value: {best_k}")


def _claim10(results: Results) -> Measured:
    values = []
    reft = _finished(results["runs"], program="counter", stage="reft")
    for c_tr in (0.0, 1.0):
        after_m = {r["params"]["seed"]: r for r in reft
                   if r["params"]["after"] == "M" and r["params"]["c_tr"] == c_tr}
        after_l = {r["params"]["seed"]: r for r in reft
                   if r["params"]["after"] == "L" and r["params"]["c_tr"] == c_tr}
        for seed in sorted(set(after_m) & set(after_l)):
            values.append(after_m[seed]["final"]["acc/O_PT/cte0"]
                          - after_l[seed]["final"]["acc/O_PT/cte0"])
    if not values:
        return Measured([], note="no reFT pairs after η_M and η_L fine-tuning")
    return Measured(values, seeds_vary=_SEEDS, note="C_Tr 0 and 1, per seed")


def _claim11(results: Results) -> Measured:
    readouts = [a for a in results["analyses"] if a["kind"] == "readout"]
    rows = _finished(readouts, program="max_identifier", stage="finetune", c_tr=0.0)
    per_seed: dict[str, dict[str, float]] = {}
    for a in rows:
        per_seed.setdefault(a["params"]["seed"], {})[a["params"]["eta"]] = \
            a["result"]["sorting_accuracy"]
    values = [s["VS"] - max(s[e] for e in ("L", "M", "S"))
              for s in per_seed.values() if {"VS", "L", "M", "S"} <= set(s)]
    if not values:
        return Measured([], note="no Max-identifier readouts at every η")
    return Measured(values, seeds_vary=_SEEDS)


def _claim12(results: Results) -> Measured:
    runs = _finished(results["runs"], program="counter", stage="finetune", eta="S")
    values, floors = [], []
    for r in runs:
        if r["params"]["c_tr"] >= 0.5:
            final = r["final"]
            values.append(final["acc/O_FT/cte1"] - final["acc/O_FT/cte0"])
            floors.append(r["floors"]["acc/O_FT/cte1"])
    if not values:
        return Measured([], note="no Counter fine-tuning at η_S")
    return Measured(values, floor=max(floors), seeds_vary=_SEEDS,
                    note="per seed and C_Tr in 0.5..1; floor: the majority answer's rate on "
                         "C_Te 1")


COMPILED_CLAIMS: tuple[Claim, ...] = (
    Claim(8, "Counter attention stays on a",
          "after η_S, or any correlated fine-tuning, the counting attention is on a; only η_M "
          "with C_Tr = 0 moves it to b (Fig. 10, Figs 40-42, 45, 48)",
          "attention to a minus to b (η_S; C_Tr ≥ 0.5), and b minus a (η_M, C_Tr 0); worst "
          "per seed",
          0.0, _claim8),
    Claim(9, "One or a few weights hold the wrapper",
          "pruning one weight of a Counter fine-tuned on correlated data gains > 60 points on "
          "counting a (Fig. 55)",
          "best gain in Acc O_PT (C_Te 0) over K = 1..4 weights, top-K g·w minus K random "
          "(C_Tr 1, η_M and η_S)", 0.6, _claim9),
    Claim(10, "Tracr reFT needs a capability that survived",
          "reFT at η_VS revives counting a after η_M fine-tuning, not after η_L (Figs 39, 43, 49)",
          "Acc O_PT (C_Te 0) after reFT at η_VS: from η_M minus from η_L fine-tuning", 0.3,
          _claim10),
    Claim(11, "Max-identifier sorting breaks unless the rate is very small",
          "η_L / η_M / η_S break the Block-0 sorting; η_VS keeps it (Figs 44, 50-54)",
          "sorting accuracy (n_larger read from its residual labels, C_Tr 0): η_VS minus the best "
          "of η_L, η_M, η_S", 0.3, _claim11),
    Claim(12, "A small rate learns the shortcut, not count b",
          "Counter at η_S: with C_Tr ≥ 0.5, ~91-98 % Acc O_FT on C_Te 1 and ~0-2 % on C_Te 0 "
          "(Tab. 3)",
          "Acc O_FT on C_Te 1 minus on C_Te 0 (η_S, each C_Tr ≥ 0.5)", 0.5, _claim12),
)


def evaluate_compiled_claims(results: Results) -> list[dict[str, Any]]:
    """One record per claim 8-12, in the layout of `wrapperlens.experiments.pcfg.claims`."""
    return [claim_record(claim, claim.measure(results)) for claim in COMPILED_CLAIMS]
