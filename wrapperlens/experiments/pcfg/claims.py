"""The claims table: each claim of docs/claims.md, a quantity measured per seed, and a rule.

Every rule was written before the runs it judges and is fixed here, threshold and K range
included (docs/reproduction.md#how-a-claim-is-decided); nothing is read off the curves. A claim's
quantity is measured once per seed (per seed and setting where a claim pools settings), and the
status follows from where those values lie against the threshold:

- **reproduced**: every value is above the threshold;
- **not reproduced**: none is;
- **inconclusive**: the values straddle it (the spread across seeds decides nothing);
- **not covered**: the grid has none of the runs the claim needs (the note says which).

    claims = evaluate_claims(results)          # results: the runs / analyses of results.json
    [(c["id"], c["status"]) for c in claims]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wrapperlens.claims import Claim, Measured, claim_record, mean as _mean
from wrapperlens.experiments.pcfg.grid_config import COUNT_A_NATURAL, SEED_ROLES

__all__ = ["CLAIMS", "evaluate_claims"]

Results = Mapping[str, Any]


# --------------------------------------------------------------------------------- lookups
def _by_seed(records: Sequence[dict], field: str, value: str, **params: Any) -> dict[int, dict]:
    """The finished records whose `field` is `value` and whose params match, by seed."""
    return {r["params"]["seed"]: r for r in records
            if r[field] == value and r["status"] == "finished"
            and all(r["params"].get(k) == v for k, v in params.items())}


def _runs(results: Results, stage: str, **params: Any) -> dict[int, dict]:
    return _by_seed(results["runs"], "stage", stage, **params)


def _analyses(results: Results, kind: str, **params: Any) -> dict[int, dict]:
    return _by_seed(results["analyses"], "kind", kind, **params)


def _missing(what: str) -> Measured:
    return Measured([], note=f"the grid has no finished {what}")


LOW, HIGH = "L", "H"
FT = dict(family="C", c_tr=1.0)  # the Counter, perfectly correlated fine-tuning data


# ---------------------------------------------------------------------------- measurements
def _claim1(results: Results) -> Measured:
    low, high = _runs(results, "pretrain", prior=LOW), _runs(results, "pretrain", prior=HIGH)
    seeds = sorted(set(low) & set(high))
    if not seeds:
        return _missing("pretraining under both P^L and P^H")
    values = [high[s]["final"]["acc/C_b"] - low[s]["final"]["acc/C_b"] for s in seeds]
    note = (f"count b: P^L {_mean([low[s]['final']['acc/C_b'] for s in seeds]):.3f}, "
            f"P^H {_mean([high[s]['final']['acc/C_b'] for s in seeds]):.3f}; count a: P^L "
            f"{_mean([low[s]['final']['acc/C_a'] for s in seeds]):.3f}, P^H "
            f"{_mean([high[s]['final']['acc/C_a'] for s in seeds]):.3f}")
    return Measured(values, low[seeds[0]]["floors"].get("acc/C_b"), note, SEED_ROLES["pretrain"])


def _claim2(results: Results) -> Measured:
    values, cte0, floor = [], [], None
    for eta in ("M", "S"):
        for run in _runs(results, "finetune", prior=LOW, eta=eta, **FT).values():
            f = run["final"]
            values.append(f["acc/O_FT/cte1"] - f["acc/O_FT/cte0"])
            cte0.append(f["acc/O_FT/cte0"])
            floor = run["floors"].get("acc/O_FT/cte0")
    if not values:
        return _missing("P^L fine-tuning at C_Tr = 1, η_M or η_S")
    note = f"Acc O_FT on C_Te = 0: mean {_mean(cte0):.3f} ({len(values)} runs, η_M and η_S)"
    return Measured(values, floor, note, SEED_ROLES["finetune"])


def _claim3(results: Results) -> Measured:
    runs = _runs(results, "finetune", prior=HIGH, family="C", c_tr=0.8, eta="M")
    if not runs:
        return _missing("P^H fine-tuning at C_Tr = 0.8, η_M")
    values = [r["final"]["acc/O_FT/cte0"] for r in runs.values()]
    floor = next(iter(runs.values()))["floors"].get("acc/O_FT/cte0")
    return Measured(values, floor, "", SEED_ROLES["finetune"])


def _o_pt_lost(run: dict) -> float:
    """Mean Acc O_PT (C_Te = 0) lost over fine-tuning: step 0 minus the mean of later steps."""
    curve = [p["acc/O_PT/cte0"] for p in run["curve"] if "acc/O_PT/cte0" in p]
    return curve[0] - _mean(curve[1:]) if len(curve) > 1 else math.nan


def _claim4(results: Results) -> Measured:
    low = _runs(results, "finetune", prior=LOW, eta="M", **FT)
    high = _runs(results, "finetune", prior=HIGH, eta="M", **FT)
    seeds = sorted(set(low) & set(high))
    if not seeds:
        return _missing("η_M fine-tuning at C_Tr = 1 under both P^L and P^H")
    lost_low = [_o_pt_lost(low[s]) for s in seeds]
    lost_high = [_o_pt_lost(high[s]) for s in seeds]
    note = f"mean Acc O_PT lost: P^L {_mean(lost_low):.3f}, P^H {_mean(lost_high):.3f}"
    return Measured([a - b for a, b in zip(lost_low, lost_high)], None, note,
                    SEED_ROLES["finetune"])


# "pruning 5–15 neurons"
# (docs/claims.md#claim-5-pruning-a-few-units-revives-the-pretraining-capability)
PRUNE_K = range(5, 16)
#: Prunable units of the paper's 6 × 192 model under the project's pruning rule (rows of every
#: block's linear maps; `wrapperlens.analysis.pruning_units.count_units`, checked by a test).
PAPER_UNITS = 27_648


def prune_window(units: int) -> range:
    """The paper's 5..15 of `PAPER_UNITS` units as the same fraction of a model with `units`,
    rounded, at least one unit: 1..1 for the `cpu` model's 2,304 units."""
    low = max(1, round(PRUNE_K.start * units / PAPER_UNITS))
    return range(low, max(low, round((PRUNE_K.stop - 1) * units / PAPER_UNITS)) + 1)


def _claim5(results: Results) -> Measured:
    found = _analyses(results, "prune", prior=LOW, **FT)
    if not found:
        return _missing("pruning of a P^L C_Tr = 1 fine-tuning")
    values, before = [], []
    for a in found.values():
        r, metric = a["result"], "acc/O_PT/cte0"
        ks = [i for i, k in enumerate(r["ks"]) if k in PRUNE_K]
        if not ks or metric not in r.get("random", {}):
            continue
        values.append(max(r["top"][metric][i] - r["random"][metric][i] for i in ks))
        before.append(r["top"][metric][r["ks"].index(0)] if 0 in r["ks"] else math.nan)
    etas = sorted({a["params"]["eta"] for a in found.values()})
    note = (f"η {', '.join(etas)}; Acc O_PT (C_Te = 0) before pruning: mean {_mean(before):.3f}"
            if values else "no K in 5..15 with a random-unit control")
    return Measured(values, None, note, SEED_ROLES["finetune"])


def _probe_ratio(result: dict) -> float:
    """(fine-tuned − random init) / (pretrained − random init) at the pretrained best layer."""
    m = result["models"]
    best = max(range(len(m["pretrained"])), key=lambda i: m["pretrained"][i])
    gap = m["pretrained"][best] - m["random_init"][best]
    return (m["finetuned"][best] - m["random_init"][best]) / gap if gap > 0 else math.nan


def _claim6(results: Results) -> Measured:
    found = _analyses(results, "probe", prior=LOW, eta="S", **FT)
    if not found:
        return _missing("probes of a P^L C_Tr = 1 η_S fine-tuning")
    values = [_probe_ratio(a["result"]) for a in found.values()]
    others = []
    for eta in ("M", "L"):
        ratios = [_probe_ratio(a["result"])
                  for a in _analyses(results, "probe", prior=LOW, eta=eta, **FT).values()]
        if ratios:
            others.append(f"η_{eta} {_mean(ratios):.2f}")
    floor = _mean([a["result"]["majority_rate"] for a in found.values()])
    note = ("same ratio after P^L fine-tuning at " + ", ".join(others) + " (the paper's exception)"
            if others else "")
    return Measured(values, floor, note, SEED_ROLES["finetune"])


# counting a is "back" at 80 % on natural strings (docs/reproduction.md#how-a-claim-is-decided)
REVIVED = 0.8


def _steps_to(curve: list[dict], threshold: float) -> int | None:
    for point in curve:
        if point.get(COUNT_A_NATURAL, -1.0) >= threshold:
            return point["step"]
    return None


def _claim7(results: Results) -> Measured:
    scratch = _runs(results, "scratch_finetune")
    if not scratch:
        return _missing("Scr.+FT baseline")
    values, notes = [], []
    for prior in (LOW, HIGH):
        reft = _runs(results, "reft", prior=prior, **FT)
        for seed in sorted(set(reft) & set(scratch)):
            r = _steps_to(reft[seed]["curve"], REVIVED)
            s = _steps_to(scratch[seed]["curve"], REVIVED)
            budget = scratch[seed]["curve"][-1]["step"]
            if r is None:
                values.append(0.0)  # reFT never got there: not faster
            else:
                values.append((s if s is not None else budget) / max(r, 1))  # a lower bound
            notes.append(f"P^{prior} seed {seed}: reFT {r}, Scr.+FT {s}")
    if not values:
        return _missing("reFT runs beside the Scr.+FT baseline")
    return Measured(values, None, "steps to 80 %: " + "; ".join(notes) +
                    " (None: not reached; then the budget counts as a lower bound)",
                    SEED_ROLES["reft"])


def _not_covered(why: str) -> Callable[[Results], Measured]:
    return lambda results: Measured([], note=why)


_TRACR = ("compiled (Tracr-style) models: decided by the compiled setting (`wrapperlens "
          "reproduce --settings pcfg,compiled`, or `wrapperlens compiled grid`)")
_STORIES = "TinyStories: run `wrapperlens tinystories pipeline` (not joined to this table yet)"

CLAIMS: tuple[Claim, ...] = (
    Claim(1, "The low prior gives a weakly relevant capability",
          "P^L pretraining counts b poorly (27.1 %), P^H at 99.9 % (Tab. 5)",
          "Acc count b after pretraining, P^H minus P^L", 0.3, _claim1),
    Claim(2, "A perfect correlation and a low prior give a shortcut",
          "P^L, C_Tr = 1, η_M / η_S: ~100 % Acc O_FT on C_Te = 1, ~0 % on C_Te = 0 (Fig. 5c)",
          "Acc O_FT on C_Te = 1 minus on C_Te = 0 (P^L, C_Tr = 1, η_M and η_S)", 0.5, _claim2),
    Claim(3, "Higher priors generalise",
          "P^M / P^H fine-tuning does well on C_Te = 0 even for C_Tr 0.5–0.8 (Fig. 5a, 5b)",
          "Acc O_FT on C_Te = 0 (P^H, C_Tr = 0.8, η_M)", 0.7, _claim3),
    Claim(4, "The pretraining task degrades fastest with a low prior",
          "Acc O_PT falls fastest for a low prior and high C_Tr (Fig. 6)",
          "mean Acc O_PT (C_Te = 0) lost over η_M fine-tuning at C_Tr = 1, P^L minus P^H",
          0.1, _claim4),
    Claim(5, "Pruning a few units revives the pretraining capability",
          "P^L models fine-tuned at a small η: pruning 5–15 neurons brings count a back (Fig. 7)",
          "max over K in 5..15 of Acc O_PT (C_Te = 0), top-K g·w units minus K random units",
          0.2, _claim5),
    Claim(6, "Probes still decode the pretraining quantity",
          "count(a) probes after fine-tuning profile like the pretrained model's; not so for "
          "η_M / η_L with a low prior (Fig. 8)",
          "(fine-tuned − random init) / (pretrained − random init) probe accuracy of count(a) at "
          "the pretrained model's best layer, P^L, η_S", 0.8, _claim6),
    Claim(7, "reFT revives the capability faster than Scr.+FT",
          "reFT brings count a back in ~0.1–3K iterations, Scr.+FT needs ~4.5K (Fig. 9)",
          "steps to 80 % count a (natural strings), Scr.+FT over reFT after η_L fine-tuning "
          "(P^L and P^H)", 2.0, _claim7),
    *(Claim(i, t, "", "", 0.0, _not_covered(_TRACR)) for i, t in (
        (8, "Counter attention stays on a"), (9, "One or a few weights hold the wrapper"),
        (10, "Tracr reFT needs a capability that survived"),
        (11, "Max-identifier sorting breaks unless the rate is very small"),
        (12, "A small rate without correlation cannot learn to count b"))),
    *(Claim(i, t, "", "", 0.0, _not_covered(_STORIES)) for i, t in (
        (17, "Deletion removes the Twist behaviour"), (18, "Twist probes barely move"),
        (19, "TinyStories reFT revives Twists quickly"), (20, "Other features are untouched"))),
)


def evaluate_claims(results: Results) -> list[dict[str, Any]]:
    """One record per claim (the "claims" of results.json)."""
    return [claim_record(claim, claim.measure(results)) for claim in CLAIMS]
