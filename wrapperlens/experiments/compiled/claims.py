"""Claims 8-12 (docs/claims.md), measured on the compiled models' grid, each decided by a rule.

The rules follow `wrapperlens.experiments.pcfg.claims` (written before the runs they judge; one
value per seed, or per seed and setting; reproduced when every value is above the threshold, not
reproduced when none is, inconclusive when they straddle it, not covered without runs).

Every claim here says several things at once (the compiled model counts, fine-tuning keeps or
breaks it, ...). Each thing is a **margin**, positive when it holds; a seed's value is the
smallest of its margins, so the threshold is 0 and a seed counts only when every part of the
claim holds on it. The note names the part that was worst on each seed. Which cells, sets and
margins, and the paper's words behind each, are in docs/reproduction.md#the-compiled-models-grid:

| claim | margins (each > 0; value = the smallest, per seed) |
|---|---|
| 8 | compiled Counter: attention a − b, and Acc O_PT (C_Te 0) − its floor; η_S (every C_Tr) and η_M at C_Tr 1: attention a − b, and Acc O_PT + Acc O_FT on C_Te 1 − their floors; η_M at C_Tr 0: attention to b − the most of the compiled model and of η_M at C_Tr 1 − 0.05, and Acc O_FT (C_Te 0) − its floor |
| 9 | Counter, C_Tr 1, η_M and η_S (per seed and η): best gain in Acc O_PT (C_Te 0) over K = 1..4 pruned weights, top-K g·w minus K random, − 0.6; the gradient from inputs held out of every scored set |
| 10 | Counter, C_Tr 0 and 1 (per seed and C_Tr): the compiled model's Acc O_PT (C_Te 0) − its floor; reFT at η_VS after η_M gains − 0.3; 0.3 − reFT's gain after η_L (gain: Acc O_PT, C_Te 0, reFT end minus its start) |
| 11 | Max-identifier, C_Tr 0: the compiled sorting accuracy − the best of η_L, η_M, η_S − 0.3; η_VS's sorting − the compiled one + 0.1; η_VS's Acc O_FT (C_Te 0) − its floor − 0.3 |
| 12 | Counter, η_S: 0.5 − Acc O_FT (C_Te 1 and 0, the larger) at C_Tr 0; Acc O_FT on C_Te 1 minus on C_Te 0 − 0.5 at every C_Tr ≥ 0.5 |

    claims = evaluate_compiled_claims(results)   # the runs / analyses of the compiled grid
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from wrapperlens.claims import Claim, Measured, claim_record

__all__ = ["COMPILED_CLAIMS", "SEED_ROLES", "evaluate_compiled_claims", "VISIBLE_ATTENTION",
           "PRUNE_GAIN", "REVIVAL_GAIN", "SORTING_LOSS", "SORTING_KEPT", "LEARNED",
           "NOT_LEARNED", "SHORTCUT_GAP"]

Results = Mapping[str, Any]
Margins = dict[str, float]
_SEEDS = "seed s: the compile noise (compile.seed = s) and every stage's data (train.seed = s)"

#: Claim 8: attention to `b` (a fraction of the last position's) that "includes b" (Fig. 10, 48).
VISIBLE_ATTENTION = 0.05
#: Claim 9: the paper's "boost in accuracy of over 60%" (App. G, Fig. 55).
PRUNE_GAIN = 0.6
#: Claim 10: Acc O_PT (C_Te 0) that reFT must win back to "revive", and may not after η_L.
REVIVAL_GAIN = 0.3
#: Claim 11: sorting accuracy the η_L / η_M / η_S fine-tunings lose to "break" it.
SORTING_LOSS = 0.3
#: Claim 11: sorting accuracy η_VS may lose and still "preserve" it.
SORTING_KEPT = 0.1
#: Claim 11: Acc O_FT above its floor that "fine-tunes well" (Tab. 3: 91.1 % on C_Te 0).
LEARNED = 0.3
#: Claim 12: Acc O_FT below which the Counter "cannot learn to count b" (Tab. 3: 1.2-27.2 %).
NOT_LEARNED = 0.5
#: Claim 12: Acc O_FT on C_Te 1 minus on C_Te 0 of the shortcut (Tab. 3: 91-98 against 0-2 %).
SHORTCUT_GAP = 0.5


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


def _cells(records, *keys: str, **match: Any) -> dict[tuple, dict]:
    """The finished records matching `match`, by their params `keys` (e.g. seed, eta, c_tr)."""
    return {tuple(r["params"].get(k) for k in keys): r for r in _finished(records, **match)}


def _readouts(results: Results, program: str, stage: str) -> dict[tuple, dict]:
    """Readout values by (seed, eta, c_tr) (None where the stage has none)."""
    rows = [a for a in results["analyses"] if a["kind"] == "readout"]
    return {k: r["result"] for k, r in
            _cells(rows, "seed", "eta", "c_tr", program=program, stage=stage).items()}


def _above_floor(run: Mapping[str, Any], *names: str) -> float:
    """The run's accuracies `names` summed, minus their chance floors summed."""
    return sum(run["final"][n] - run["floors"][n] for n in names)


def _per_seed(margins: dict[Any, Margins | str], what: str) -> Measured:
    """Values (the smallest margin of each complete seed) and a note naming each seed's worst
    margin, or the cells a seed lacks; not covered when no seed is complete."""
    complete = {s: m for s, m in margins.items() if isinstance(m, dict)}
    lacking = [f"{s}: no {m}" for s, m in margins.items() if isinstance(m, str)]
    if not complete:
        return Measured([], note="; ".join(lacking) or f"no {what}")
    worst = [f"{s}: {min(m, key=m.get)} {min(m.values()):+.3f}" for s, m in complete.items()]
    note = "worst margin per value: " + "; ".join(worst)
    if lacking:
        note += " (left out, lacking cells: " + "; ".join(lacking) + ")"
    return Measured([min(m.values()) for m in complete.values()], seeds_vary=_SEEDS, note=note)


# ------------------------------------------------------------------------------------- 8
def _claim8(results: Results) -> Measured:
    att = {**_readouts(results, "counter", "compile"), **_readouts(results, "counter",
                                                                   "finetune")}
    runs = {**_cells(results["runs"], "seed", "eta", "c_tr", program="counter", stage="compile"),
            **_cells(results["runs"], "seed", "eta", "c_tr", program="counter",
                     stage="finetune")}
    seeds = sorted({k[0] for k in att} | {k[0] for k in runs})
    margins: dict[Any, Margins | str] = {}
    for s in seeds:
        stays = sorted(k for k in att if k[0] == s and k[1] is not None
                       and (k[1] == "S" or (k[1] == "M" and k[2] == 1.0)))
        needed = [(s, None, None), (s, "M", 0.0), *stays]
        missing = [k for k in needed if k not in att or k not in runs]
        if missing or not stays:
            margins[f"seed {s}"] = ("η_S / η_M C_Tr 1 cell" if not stays else
                                    ", ".join(f"{k[1] or 'compile'} C_Tr {k[2]}" for k in missing))
            continue
        m: Margins = {}
        compiled = att[(s, None, None)]
        m["compiled: attention a - b"] = compiled["attention_to_a"] - compiled["attention_to_b"]
        m["compiled: Acc O_PT (C_Te 0) - floor"] = _above_floor(runs[(s, None, None)],
                                                                "acc/O_PT/cte0")
        for k in stays:
            cell = f"η_{k[1]} C_Tr {k[2]:g}"
            m[f"{cell}: attention a - b"] = att[k]["attention_to_a"] - att[k]["attention_to_b"]
            m[f"{cell}: Acc O_PT + O_FT (C_Te 1) - floors"] = _above_floor(
                runs[k], "acc/O_PT/cte1", "acc/O_FT/cte1")
        before = max(compiled["attention_to_b"], att.get((s, "M", 1.0), compiled)["attention_to_b"])
        moved = att[(s, "M", 0.0)]
        m["η_M C_Tr 0: attention to b gained - 0.05"] = (moved["attention_to_b"] - before
                                                         - VISIBLE_ATTENTION)
        m["η_M C_Tr 0: Acc O_FT (C_Te 0) - floor"] = _above_floor(runs[(s, "M", 0.0)],
                                                                  "acc/O_FT/cte0")
        margins[f"seed {s}"] = m
    return _per_seed(margins, "Counter readouts")


# ------------------------------------------------------------------------------------- 9
def _claim9(results: Results) -> Measured:
    prunes = [a for a in results["analyses"] if a["kind"] == "prune"]
    values, best_k, stale = [], [], 0
    for a in _finished(prunes, c_tr=1.0):
        if a["params"]["eta"] not in ("M", "S"):
            continue
        v = a["result"]
        if not v.get("gradient", {}).get("rows"):
            stale += 1  # scored on the rows of its own gradient: not read
            continue
        ks, top, rand = v["ks"], v["top"], v["random"]
        base = top[ks.index(0)]["acc/O_PT/cte0"]
        gains = {k: (top[i]["acc/O_PT/cte0"] - base) - (rand[i]["acc/O_PT/cte0"] - base)
                 for i, k in enumerate(ks) if 1 <= k <= 4}
        if not gains:
            continue
        k = max(gains, key=gains.get)
        values.append(gains[k] - PRUNE_GAIN)
        best_k.append(k)
    refused = (f"; {stale} pruning(s) without a held-out gradient batch not read" if stale
               else "")
    if not values:
        return Measured([], note="no pruning of a correlated Counter fine-tuning with a "
                                 "held-out gradient batch and a K in 1..4" + refused)
    return Measured(values, seeds_vary=_SEEDS,
                    note=f"η_M and η_S, per seed; value = best gain - 0.6; best K per value: "
                         f"{best_k}{refused}")


# ------------------------------------------------------------------------------------ 10
def _gain(reft: Mapping[str, Any], start: Mapping[str, Any]) -> float:
    return reft["final"]["acc/O_PT/cte0"] - start["final"]["acc/O_PT/cte0"]


def _claim10(results: Results) -> Measured:
    runs = results["runs"]
    compiled = _cells(runs, "seed", program="counter", stage="compile")
    ft = _cells(runs, "seed", "eta", "c_tr", program="counter", stage="finetune")
    reft = _cells(runs, "seed", "after", "c_tr", program="counter", stage="reft")
    margins: dict[Any, Margins | str] = {}
    for s, c_tr in sorted({(k[0], k[2]) for k in reft}):
        cell = f"seed {s}, C_Tr {c_tr:g}"
        need = {"compile": (s,) in compiled, "reFT after η_M": (s, "M", c_tr) in reft,
                "reFT after η_L": (s, "L", c_tr) in reft,
                "η_M fine-tuning": (s, "M", c_tr) in ft, "η_L fine-tuning": (s, "L", c_tr) in ft}
        if not all(need.values()):
            margins[cell] = ", ".join(k for k, ok in need.items() if not ok)
            continue
        margins[cell] = {
            "compiled: Acc O_PT (C_Te 0) - floor": _above_floor(compiled[(s,)], "acc/O_PT/cte0"),
            "reFT after η_M: gain - 0.3": _gain(reft[(s, "M", c_tr)], ft[(s, "M", c_tr)])
            - REVIVAL_GAIN,
            "reFT after η_L: 0.3 - gain": REVIVAL_GAIN
            - _gain(reft[(s, "L", c_tr)], ft[(s, "L", c_tr)]),
        }
    return _per_seed(margins, "reFT after η_M and η_L fine-tuning")


# ------------------------------------------------------------------------------------ 11
def _claim11(results: Results) -> Measured:
    sorting = {**_readouts(results, "max_identifier", "compile"),
               **_readouts(results, "max_identifier", "finetune")}
    ft = _cells(results["runs"], "seed", "eta", "c_tr", program="max_identifier",
                stage="finetune")
    margins: dict[Any, Margins | str] = {}
    for s in sorted({k[0] for k in sorting}):
        need = [(s, None, None), *((s, e, 0.0) for e in ("L", "M", "S", "VS"))]
        missing = [k for k in need if k not in sorting] + \
            ([] if (s, "VS", 0.0) in ft else [(s, "VS run", 0.0)])
        if missing:
            margins[f"seed {s}"] = ", ".join(f"{k[1] or 'compile'} C_Tr {k[2]}" for k in missing)
            continue
        start = sorting[(s, None, None)]["sorting_accuracy"]
        broken = max(sorting[(s, e, 0.0)]["sorting_accuracy"] for e in ("L", "M", "S"))
        kept = sorting[(s, "VS", 0.0)]["sorting_accuracy"]
        margins[f"seed {s}"] = {
            "η_L/M/S: compiled sorting - best sorting - 0.3": start - broken - SORTING_LOSS,
            "η_VS: sorting - compiled sorting + 0.1": kept - start + SORTING_KEPT,
            "η_VS: Acc O_FT (C_Te 0) - floor - 0.3": _above_floor(ft[(s, "VS", 0.0)],
                                                                  "acc/O_FT/cte0") - LEARNED,
        }
    return _per_seed(margins, "Max-identifier readouts")


# ------------------------------------------------------------------------------------ 12
def _claim12(results: Results) -> Measured:
    ft = _cells(results["runs"], "seed", "c_tr", program="counter", stage="finetune", eta="S")
    margins: dict[Any, Margins | str] = {}
    for s in sorted({k[0] for k in ft}):
        shortcut = sorted(c for (seed, c) in ft if seed == s and c >= 0.5)
        if (s, 0.0) not in ft or not shortcut:
            margins[f"seed {s}"] = "η_S at C_Tr 0" if (s, 0.0) not in ft else \
                "η_S at C_Tr ≥ 0.5"
            continue
        plain = ft[(s, 0.0)]["final"]
        m = {"C_Tr 0: 0.5 - Acc O_FT": NOT_LEARNED - max(plain["acc/O_FT/cte1"],
                                                         plain["acc/O_FT/cte0"])}
        for c in shortcut:
            f = ft[(s, c)]["final"]
            m[f"C_Tr {c:g}: Acc O_FT C_Te 1 - C_Te 0 - 0.5"] = (f["acc/O_FT/cte1"]
                                                               - f["acc/O_FT/cte0"]
                                                               - SHORTCUT_GAP)
        margins[f"seed {s}"] = m
    return _per_seed(margins, "Counter fine-tuning at η_S")


def _claim(id_: int, title: str, paper: str, quantity: str,
           measure: Callable[[Results], Measured]) -> Claim:
    return Claim(id_, title, paper, quantity, 0.0, measure)


COMPILED_CLAIMS: tuple[Claim, ...] = (
    _claim(8, "Counter attention stays on a",
           "the compiled model attends to a; after η_S, or correlated, fine-tuning it still "
           "does; only η_M with C_Tr = 0 changes the attention to include b (Fig. 10, Figs "
           "40-42, 45, 48)",
           "the smallest margin of: compiled (attention a - b; Acc O_PT C_Te 0 - floor); η_S "
           "every C_Tr and η_M C_Tr 1 (attention a - b; Acc O_PT + O_FT on C_Te 1 - floors); "
           "η_M C_Tr 0 (attention to b gained - 0.05; Acc O_FT C_Te 0 - floor)", _claim8),
    _claim(9, "One or a few weights hold the wrapper",
           "pruning one weight of a Counter fine-tuned on correlated data gains > 60 points on "
           "counting a (Fig. 55)",
           "best gain in Acc O_PT (C_Te 0) over K = 1..4 weights, top-K g·w minus K random, "
           "minus 0.6 (C_Tr 1, η_M and η_S; gradient on inputs no scored set holds)", _claim9),
    _claim(10, "Tracr reFT needs a capability that survived",
           "reFT at η_VS revives counting a after η_M fine-tuning, not after η_L (Figs 39, 43, "
           "49)",
           "the smallest margin of: compiled Acc O_PT (C_Te 0) - floor; reFT gain after η_M - "
           "0.3; 0.3 - reFT gain after η_L (gain in Acc O_PT, C_Te 0; C_Tr 0 and 1)", _claim10),
    _claim(11, "Max-identifier sorting breaks unless the rate is very small",
           "η_L / η_M / η_S break the Block-0 sorting; η_VS only rewires the read step and "
           "fine-tunes well (Figs 44, 50-54; Tab. 3)",
           "the smallest margin of (C_Tr 0): compiled sorting - best of η_L, η_M, η_S - 0.3; "
           "η_VS sorting - compiled + 0.1; η_VS Acc O_FT (C_Te 0) - floor - 0.3", _claim11),
    _claim(12, "A small rate learns the shortcut, not count b",
           "Counter at η_S: without correlation ~1-27 % Acc O_FT; with C_Tr ≥ 0.5 ~91-98 % on "
           "C_Te 1 and ~0-2 % on C_Te 0 (Tab. 3)",
           "the smallest margin of: 0.5 - Acc O_FT (C_Tr 0, the larger of C_Te 1 and 0); Acc "
           "O_FT on C_Te 1 minus on C_Te 0 - 0.5 (each C_Tr ≥ 0.5); η_S", _claim12),
)


def evaluate_compiled_claims(results: Results) -> list[dict[str, Any]]:
    """One record per claim 8-12, in the layout of `wrapperlens.experiments.pcfg.claims`."""
    return [claim_record(claim, claim.measure(results)) for claim in COMPILED_CLAIMS]
