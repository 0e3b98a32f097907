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

__all__ = ["CLAIMS", "evaluate_claims", "prune_window", "finished_runs", "finished_analyses",
           "o_pt_lost"]

Results = Mapping[str, Any]


# --------------------------------------------------------------------------------- lookups
def _by_seed(records: Sequence[dict], field: str, value: str, **params: Any) -> dict[int, dict]:
    """The finished records whose `field` is `value` and whose params match, by seed."""
    return {r["params"]["seed"]: r for r in records
            if r[field] == value and r["status"] == "finished"
            and all(r["params"].get(k) == v for k, v in params.items())}


def finished_runs(results: Results, stage: str, **params: Any) -> dict[int, dict]:
    """The finished runs of `stage` (or label, e.g. "scratch_finetune") whose params match,
    by seed."""
    return _by_seed(results["runs"], "stage", stage, **params)


def finished_analyses(results: Results, kind: str, **params: Any) -> dict[int, dict]:
    """The finished analyses of `kind` whose params match, by seed."""
    return _by_seed(results["analyses"], "kind", kind, **params)


def _missing(what: str) -> Measured:
    return Measured([], note=f"the grid has no finished {what}")


LOW, HIGH = "L", "H"
FT = dict(family="C", c_tr=1.0)  # the Counter, perfectly correlated fine-tuning data


# ---------------------------------------------------------------------------- measurements
# Every rule below is a set of margins, each named after the paper's words
# (docs/reproduction.md#what-changed-in-claims-1-7-and-why): a seed's value is its smallest
# margin, and the threshold is 0, so a value is above 0 exactly when every part holds.

# "counts a almost perfectly" / P^H "≥ 99.9 %" on b: 0.9; the P^L-P^H gap on b: 0.3
ALMOST_PERFECT, GAP_B = 0.9, 0.3


def _claim1(results: Results) -> Measured:
    low = finished_runs(results, "pretrain", prior=LOW)
    high = finished_runs(results, "pretrain", prior=HIGH)
    seeds = sorted(set(low) & set(high))
    if not seeds:
        return _missing("pretraining under both P^L and P^H")
    values = []
    for s in seeds:
        lo, hi = low[s]["final"], high[s]["final"]
        values.append(min(hi["acc/C_b"] - lo["acc/C_b"] - GAP_B,      # P^L counts b poorly
                          lo["acc/C_a"] - ALMOST_PERFECT,             # ... but a almost perfectly
                          hi["acc/C_b"] - ALMOST_PERFECT))            # P^H counts b
    note = (f"count b: P^L {_mean([low[s]['final']['acc/C_b'] for s in seeds]):.3f}, "
            f"P^H {_mean([high[s]['final']['acc/C_b'] for s in seeds]):.3f}; count a: P^L "
            f"{_mean([low[s]['final']['acc/C_a'] for s in seeds]):.3f}, P^H "
            f"{_mean([high[s]['final']['acc/C_a'] for s in seeds]):.3f}")
    return Measured(values, low[seeds[0]]["floors"].get("acc/C_b"), note, SEED_ROLES["pretrain"])


def _claim2(results: Results) -> Measured:
    values, cte0, floor = [], [], None
    for eta in ("M", "S"):
        for run in finished_runs(results, "finetune", prior=LOW, eta=eta, **FT).values():
            f = run["final"]
            values.append(f["acc/O_FT/cte1"] - f["acc/O_FT/cte0"] - 0.5)
            cte0.append(f["acc/O_FT/cte0"])
            floor = run["floors"].get("acc/O_FT/cte0")
    if not values:
        return _missing("P^L fine-tuning at C_Tr = 1, η_M or η_S")
    note = f"Acc O_FT on C_Te = 0: mean {_mean(cte0):.3f} ({len(values)} runs, η_M and η_S)"
    return Measured(values, floor, note, SEED_ROLES["finetune"])


def _curve_mean(run: dict, metric: str) -> float:
    return _mean([p[metric] for p in run["curve"] if metric in p])


def _claim3(results: Results) -> Measured:
    cell = dict(family="C", c_tr=0.8, eta="M")
    high = finished_runs(results, "finetune", prior=HIGH, **cell)
    low = finished_runs(results, "finetune", prior=LOW, **cell)
    seeds = sorted(set(high) & set(low))
    if not seeds:
        return _missing("fine-tuning at C_Tr = 0.8, η_M under both P^L and P^H")
    metric, values = "acc/O_FT/cte0", []
    for s in seeds:
        values.append(min(high[s]["final"][metric] - 0.7,   # P^H does well on C_Te = 0
                          # ... where P^L at the same cell does not: over the whole fine-tuning
                          _curve_mean(high[s], metric) - _curve_mean(low[s], metric) - 0.1))
    final = {p: _mean([runs[s]["final"][metric] for s in seeds]) for p, runs in
             ((HIGH, high), (LOW, low))}
    note = f"Acc O_FT on C_Te = 0 at the end: P^H {final[HIGH]:.3f}, P^L {final[LOW]:.3f}"
    return Measured(values, high[seeds[0]]["floors"].get(metric), note, SEED_ROLES["finetune"])


def o_pt_lost(run: dict) -> float:
    """Mean Acc O_PT (C_Te = 0) lost over fine-tuning: step 0 minus the mean of later steps."""
    curve = [p["acc/O_PT/cte0"] for p in run["curve"] if "acc/O_PT/cte0" in p]
    return curve[0] - _mean(curve[1:]) if len(curve) > 1 else math.nan


# Fig. 6 draws C_Tr ∈ {0, 1} × {η_M, η_S}
FIG6_ETAS = ("M", "S")


def _claim4(results: Results) -> Measured:
    lost: dict[tuple[str, float, str], dict[int, float]] = {}
    for prior in (LOW, HIGH):
        for c_tr in (0.0, 1.0):
            for eta in FIG6_ETAS:
                runs = finished_runs(results, "finetune", prior=prior, family="C", c_tr=c_tr,
                                     eta=eta)
                lost[prior, c_tr, eta] = {s: o_pt_lost(r) for s, r in runs.items()}
    seeds = sorted(set.intersection(*(set(v) for v in lost.values())))
    if not seeds:
        return _missing("Counter fine-tuning at C_Tr 0 and 1 × η_M and η_S under P^L and P^H")
    values = [min(min(lost[LOW, 1.0, e][s] - lost[HIGH, 1.0, e][s] - 0.1,  # a high prior protects
                      lost[LOW, 1.0, e][s] - lost[LOW, 0.0, e][s] - 0.05)  # worse at high C_Tr
                  for e in FIG6_ETAS) for s in seeds]
    note = "; ".join(
        f"η_{e} mean Acc O_PT lost: P^L {_mean([lost[LOW, 1.0, e][s] for s in seeds]):.3f} "
        f"(C_Tr 0: {_mean([lost[LOW, 0.0, e][s] for s in seeds]):.3f}), P^H "
        f"{_mean([lost[HIGH, 1.0, e][s] for s in seeds]):.3f}" for e in FIG6_ETAS)
    return Measured(values, None, note, SEED_ROLES["finetune"])


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
    found = finished_analyses(results, "prune", prior=LOW, **FT)
    if not found:
        return _missing("pruning of a P^L C_Tr = 1 fine-tuning")
    values, notes = [], []
    o_pt, o_ft = "acc/O_PT/cte0", "acc/O_FT/cte1"
    for seed, a in sorted(found.items()):
        r = a["result"]
        window = prune_window(r["units"]) if "units" in r else PRUNE_K
        ks = [i for i, k in enumerate(r["ks"]) if k in window]
        if not ks or 0 not in r["ks"] or o_pt not in r.get("random", {}):
            values.append(math.nan)
            notes.append(f"seed {seed}: no K of {r['ks']} in {window.start}..{window.stop - 1} "
                         "with K = 0 and a random-unit control")
            continue
        best = max(ks, key=lambda i: r["top"][o_pt][i] - r["random"][o_pt][i])
        before = r["ks"].index(0)
        values.append(min(r["top"][o_pt][best] - r["random"][o_pt][best] - 0.2,  # count a back
                          # "fine-tuning accuracy drops correspondingly": the shortcut's C_Te 1
                          r["top"][o_ft][before] - r["top"][o_ft][best] - 0.05))
        notes.append(f"seed {seed}: K = {r['ks'][best]} of {window.start}..{window.stop - 1}: "
                     f"Acc O_PT {r['top'][o_pt][before]:.3f} → {r['top'][o_pt][best]:.3f} "
                     f"(random units {r['random'][o_pt][best]:.3f}), Acc O_FT (C_Te 1) "
                     f"{r['top'][o_ft][before]:.3f} → {r['top'][o_ft][best]:.3f}")
    etas = sorted({a["params"]["eta"] for a in found.values()})
    return Measured(values, None, f"η {', '.join(etas)}; " + "; ".join(notes),
                    SEED_ROLES["finetune"])


# a probe "still decodes" count(a) like the pretrained model at 0.8 of the pretrained model's
# lead over a random init; a lead under 0.05 leaves nothing to compare (undefined)
DECODES_LIKE_PT, MIN_LEAD = 0.8, 0.05


def _probe_ratio(result: dict) -> float:
    """(fine-tuned − random init) / (pretrained − random init) probe accuracy of count(a) at the
    intermediate block (B1 .. B(n−1): not the embedding, not the output) where the pretrained
    model leads the random inits most; NaN when it leads nowhere by `MIN_LEAD`."""
    m = result["models"]
    inner = range(1, len(m["pretrained"]) - 1)
    leads = {i: m["pretrained"][i] - m["random_init"][i] for i in inner}
    best = max(leads, key=leads.get, default=None)
    if best is None or leads[best] < MIN_LEAD:
        return math.nan
    return (m["finetuned"][best] - m["random_init"][best]) / leads[best]


def _claim6(results: Results) -> Measured:
    ratio = {(prior, c_tr, eta): {s: _probe_ratio(a["result"]) for s, a in finished_analyses(
        results, "probe", prior=prior, family="C", c_tr=c_tr, eta=eta).items()}
        for prior in (LOW, HIGH) for c_tr in (0.0, 1.0) for eta in ("L", "M", "S")}
    kept = [k for k in ratio if k[2] == "S" and ratio[k]]           # η_S: decodable, any prior
    seeds = sorted(set.intersection(*(set(ratio[k]) for k in kept))) if kept else []
    if not seeds:
        return _missing("probes of η_S Counter fine-tunings at C_Tr 0 or 1")
    values = []
    for s in seeds:
        parts = [ratio[k][s] - DECODES_LIKE_PT for k in kept]
        for c_tr in (0.0, 1.0):
            # the exception: "a drop appears only when learning rate η_M is used with a weakly
            # relevant capability (low sampling prior)" (Fig. 8, which draws η_M and η_S)
            if s in ratio[LOW, c_tr, "M"]:
                parts.append(ratio[LOW, c_tr, "S"].get(s, math.nan) - ratio[LOW, c_tr, "M"][s]
                             - 0.1)
            if s in ratio[HIGH, c_tr, "M"]:                    # ... not with a high prior
                parts.append(ratio[HIGH, c_tr, "M"][s] - DECODES_LIKE_PT)
        values.append(math.nan if any(math.isnan(p) for p in parts) else min(parts))
    note = "; ".join(f"P^{p} C_Tr {c:g} η_{e} {_mean(list(v.values())):.2f}"
                     for (p, c, e), v in ratio.items() if v)
    probes = finished_analyses(results, "probe", prior=LOW, eta="S", family="C").values()
    floor = _mean([a["result"]["majority_rate"] for a in probes])
    if any(len(a["result"]["models"]["pretrained"]) < 3 for a in probes):
        note += ("; the model has no block between its embedding and its output "
                 "(layers " + ", ".join(next(iter(probes))["result"]["layers"]) + "): no "
                 "intermediate layer to probe, undefined")
    return Measured(values, floor, "decoded share of count(a): " + note, SEED_ROLES["finetune"])


# counting a is "back" at 80 % on natural strings (docs/reproduction.md#how-a-claim-is-decided)
REVIVED = 0.8


def _steps_to(curve: list[dict], threshold: float) -> int | None:
    for point in curve:
        if point.get(COUNT_A_NATURAL, -1.0) >= threshold:
            return point["step"]
    return None


def _claim7(results: Results) -> Measured:
    scratch = finished_runs(results, "scratch_finetune")
    if not scratch:
        return _missing("Scr.+FT baseline")
    values, notes = [], []
    for prior in (LOW, HIGH):
        reft = finished_runs(results, "reft", prior=prior, **FT)
        for seed in sorted(set(reft) & set(scratch)):
            curve = reft[seed]["curve"]
            start = curve[0].get(COUNT_A_NATURAL, math.nan)
            if not start < REVIVED:
                values.append(math.nan)  # it never lost count a: nothing was revived
                notes.append(f"P^{prior} seed {seed}: reFT starts at {start:.2f}, not a revival")
                continue
            r = _steps_to(curve, REVIVED)
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
_STORIES = ("TinyStories: decided by the tinystories setting of `wrapperlens reproduce` (on by "
            "default; the claims table shows 17-20 from that setting's own rules)")

CLAIMS: tuple[Claim, ...] = (
    Claim(1, "The low prior gives a weakly relevant capability",
          "P^L pretraining counts a almost perfectly but b poorly (27.1 %), P^H counts b at "
          "99.9 % (Tab. 5)",
          "smallest of: Acc count b, P^H minus P^L, − 0.3; P^L's Acc count a − 0.9; P^H's Acc "
          "count b − 0.9 (after pretraining)", 0.0, _claim1),
    Claim(2, "A perfect correlation and a low prior give a shortcut",
          "P^L, C_Tr = 1, η_M / η_S: ~100 % Acc O_FT on C_Te = 1, ~0 % on C_Te = 0 (Fig. 5c)",
          "Acc O_FT on C_Te = 1 minus on C_Te = 0, − 0.5 (P^L, C_Tr = 1, η_M and η_S)", 0.0,
          _claim2),
    Claim(3, "Higher priors generalise",
          "P^M / P^H fine-tuning does well on C_Te = 0 even for C_Tr 0.5–0.8; with a low prior "
          "only with a high rate and an imperfect correlation (Fig. 5a, 5b)",
          "smallest of: P^H's final Acc O_FT on C_Te = 0 − 0.7; its mean over the fine-tuning, "
          "P^H minus P^L, − 0.1 (C_Tr = 0.8, η_M)", 0.0, _claim3),
    Claim(4, "The pretraining task degrades fastest with a low prior",
          "Acc O_PT \"quickly plummets\" with a low prior, \"especially if the spurious "
          "correlation is high\"; a high prior mitigates this (Fig. 6)",
          "smallest over η_M and η_S of: mean Acc O_PT (C_Te = 0) lost at C_Tr = 1, P^L minus "
          "P^H, − 0.1; P^L's loss at C_Tr = 1 minus at C_Tr = 0, − 0.05", 0.0, _claim4),
    Claim(5, "Pruning a few units revives the pretraining capability",
          "P^L models fine-tuned at a small η: pruning 5–15 neurons brings count a back and "
          "fine-tuning accuracy drops correspondingly (Fig. 7)",
          "at the best K of the paper's 5..15 of its 27,648 units scaled to this model, "
          "smallest of: Acc O_PT (C_Te = 0), top-K g·w units minus K random units, − 0.2; Acc "
          "O_FT (C_Te = 1) lost − 0.05", 0.0, _claim5),
    Claim(6, "Probes still decode the pretraining quantity",
          "count(a) probes after fine-tuning profile like the pretrained model's; \"a drop "
          "appears only when η_M is used with a weakly relevant capability\" (Fig. 8)",
          "smallest of: the decoded share of count(a), (fine-tuned − random inits) / "
          "(pretrained − random inits) at the intermediate block where pretraining leads most, "
          "− 0.8 for η_S (both priors) and P^H η_M; P^L's share at η_S minus at η_M − 0.1 "
          "(C_Tr 0 and 1)", 0.0, _claim6),
    Claim(7, "reFT revives the capability faster than Scr.+FT",
          "reFT brings count a back in ~0.1–3K iterations, Scr.+FT needs ~4.5K (Fig. 9)",
          "steps to 80 % count a (natural strings), Scr.+FT over reFT after η_L fine-tuning "
          "(P^L and P^H; a reFT that starts at 80 % revives nothing: undefined)", 2.0, _claim7),
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
