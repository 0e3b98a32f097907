"""Claims 17-20 (docs/claims.md#tinystories), measured on the TinyStories pipeline's results.

The rules follow `wrapperlens.claims` (one value per seed and deleted model; reproduced when
every value is above the threshold, not reproduced when none is, inconclusive when they
straddle it). They were fixed from the paper's text (App. F, Fig. 11, Tab. 1; Figs 31-38) before
any run they judge. A claim with several parts ("raises the loss AND drives the score towards 0
AND more so at the higher rate") takes, per value, the smallest of its parts' margins, each
margin measured against its own bar, so the value is above 0 exactly when every part holds:

| claim | value per seed × deleted model (its parts' margins; the smallest is the value) | > |
|---|---|---|
| 17 | Twist loss after η_M deletion minus before; half the Twist score before minus after η_M; Twist-loss rise at η_M minus at η_S | 0 |
| 18 | Twist probe accuracy, (deleted − Not in PT) / (Present in PT − Not in PT), at the layer where Present in PT leads Not in PT most | 0.8 |
| 19 | Twist loss after the control's reFT minus after the revived model's; share of the revived model's Twist-loss drop done by the early point minus 1/2; Twist score at the early point, revived minus control | 0 |
| 20 | minus the largest change (deleted − Present in PT) in probe accuracy of Foreshadowing, Moral Value and Bad Ending, over those the pretrained model decodes | -0.05 |

"The early point" is the first evaluation at or after `EARLY_FRACTION` of the reFT run: the
paper's 300 of its 4000 reFT iterations (Fig. 11b, Tab. 1). When the stories come from the
synthetic story source (`tinystories.story_source`, the default where no labelled TinyStories
are available), every claim's note says so.

    claims = evaluate_story_claims(view)   # the TinyStories part of results.json
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from wrapperlens.claims import Claim, Measured, claim_record, mean

__all__ = ["STORY_CLAIMS", "evaluate_story_claims", "EARLY_FRACTION", "MIN_PROBE_GAP",
           "DECODED", "OTHER_FEATURES"]

Results = Mapping[str, Any]

#: The paper's early reFT point: 300 of 4000 iterations (Fig. 11b; Tab. 1's "300" column).
EARLY_FRACTION = 300 / 4000
#: Below this lead of Present in PT over Not in PT at every layer there is nothing a probe
#: could preserve, and claim 18's ratio is undefined.
MIN_PROBE_GAP = 0.05
#: A feature counts as decoded by the pretrained model this far above its majority rate.
DECODED = 0.05
#: The features the deletion does not target (Figs 36-38).
OTHER_FEATURES = ("Foreshadowing", "MoralValue", "BadEnding")
_SEEDS = "seed s: every stage's train.seed = s, the pretrainings' model.init_seed = s"


def _finished(records: Sequence[Mapping[str, Any]], stage: str) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("stage", r.get("kind")) == stage
            and r["status"] == "finished"]


def _key_model(key: str) -> str:
    """"delete/F-M/seed=0" -> "F-M"."""
    return key.split("/")[1]


def _at(curve: Sequence[Mapping[str, Any]], metric: str, at_least: float = 0.0) -> float | None:
    """The metric at the first evaluation with step >= `at_least` that logged it."""
    for point in curve:
        if point["step"] >= at_least and point.get(metric) is not None:
            return point[metric]
    return None


def _last(curve: Sequence[Mapping[str, Any]], metric: str) -> float | None:
    values = [p[metric] for p in curve if p.get(metric) is not None]
    return values[-1] if values else None


def _source_note(results: Results) -> str:
    data = [a for a in results["analyses"] if a["kind"] == "data" and a["status"] == "finished"]
    source = data[0]["result"].get("source", "") if data else ""
    return ("stories from the synthetic story source (no labelled TinyStories here); "
            if source == "story_source" else f"stories from {source}; " if source else "")


def _deletions(results: Results) -> dict[tuple[int, str], Mapping[str, Any]]:
    """(seed, "F-M") -> the finished deletion run."""
    return {(r["params"]["seed"], _key_model(r["key"])): r
            for r in _finished(results["runs"], "delete")}


def _rise(run: Mapping[str, Any]) -> float:
    """Twist loss at the end of a deletion minus at its start (the pretrained model)."""
    return run["final"]["twist_loss"] - run["curve"][0]["twist_loss"]


def _claim17(results: Results) -> Measured:
    deleted = _deletions(results)
    values, scores = [], []
    for (seed, name), run in sorted(deleted.items()):
        proto, eta = name.rsplit("-", 1)
        slow = deleted.get((seed, f"{proto}-S"))
        if eta != "M" or slow is None:
            continue
        before, after = _at(run["curve"], "twist_score"), run["final"].get("twist_score")
        if before is None or after is None:
            continue
        values.append(min(_rise(run), before / 2 - after, _rise(run) - _rise(slow)))
        scores.append(f"{proto} seed {seed}: loss {_rise(run):+.3f} (η_S {_rise(slow):+.3f}), "
                      f"score {before:.2f} -> {after:.2f}")
    if not values:
        return Measured([], note="the grid has no η_M and η_S deletions of one protocol")
    return Measured(values, None, _source_note(results) + "; ".join(scores), _SEEDS)


def _probe_results(results: Results) -> list[Mapping[str, Any]]:
    return [a["result"] for a in _finished(results["analyses"], "probe")]


def _claim18(results: Results) -> Measured:
    values, notes, floors = [], [], []
    for probes in _probe_results(results):
        twist = probes["twist_accuracy"]
        pt, ctrl = twist["pretrained"], twist["control"]
        best = max(range(len(pt)), key=lambda i: pt[i] - ctrl[i])
        gap = pt[best] - ctrl[best]
        floors.append(probes["majority_rate"][probes["features"].index("Twist")])
        for model, acc in sorted(twist.items()):
            if model.startswith("deleted "):
                values.append((acc[best] - ctrl[best]) / gap if gap >= MIN_PROBE_GAP else math.nan)
        notes.append(f"{probes['points'][best]}: Present in PT {pt[best]:.3f}, Not in PT "
                     f"{ctrl[best]:.3f}")
    if not values:
        return Measured([], note="the grid has no finished probes")
    note = _source_note(results) + "; ".join(notes)
    if all(math.isnan(v) for v in values):
        note += (f"; Not in PT decodes Twist within {MIN_PROBE_GAP} of Present in PT at every "
                 "layer: no gap for fine-tuning to keep")
    return Measured(values, mean(floors), note, _SEEDS)


def _claim19(results: Results) -> Measured:
    refts = {(r["params"]["seed"], _key_model(r["key"])): r
             for r in _finished(results["runs"], "reft")}
    values, notes = [], []
    for (seed, name), run in sorted(refts.items()):
        control = refts.get((seed, "control"))
        if name == "control" or control is None:
            continue
        curve, early = run["curve"], EARLY_FRACTION * run["curve"][-1]["step"]
        start, end = curve[0]["twist_loss"], run["final"]["twist_loss"]
        at_early = _at(curve, "twist_loss", early)
        score, score_ctrl = _at(curve, "twist_score", early), _at(control["curve"],
                                                                  "twist_score", early)
        if at_early is None or score is None or score_ctrl is None:
            continue
        share = (start - at_early) / (start - end) if start > end else 0.0
        values.append(min(control["final"]["twist_loss"] - end, share - 0.5, score - score_ctrl))
        notes.append(f"{name} seed {seed}: loss {end:.3f} (control "
                     f"{control['final']['twist_loss']:.3f}), {share:.0%} of the drop early, "
                     f"early score {score:.2f} (control {score_ctrl:.2f})")
    if not values:
        return Measured([], note="the grid has no reFT of a deleted model beside the control's")
    return Measured(values, None, _source_note(results) + "; ".join(notes), _SEEDS)


def _claim20(results: Results) -> Measured:
    values, floors = [], []
    for probes in _probe_results(results):
        features, acc, majority = probes["features"], probes["accuracy"], probes["majority_rate"]
        pt = acc["pretrained"]
        decoded = []
        for f in OTHER_FEATURES:
            if f not in features:
                continue
            i = features.index(f)
            best = max(range(len(pt)), key=lambda layer: pt[layer][i])
            if pt[best][i] - majority[i] >= DECODED:
                decoded.append((i, best))
                floors.append(majority[i])
        for model, per_layer in sorted(acc.items()):
            if model.startswith("deleted "):
                values.append(-max((abs(per_layer[b][i] - pt[b][i]) for i, b in decoded),
                                   default=math.nan))
    if not values:
        return Measured([], note="the grid has no finished probes")
    note = _source_note(results) + f"features decoded by Present in PT (≥ {DECODED} above their "
    note += "majority rate) at their best layer"
    if all(math.isnan(v) for v in values):
        note += f"; none of {', '.join(OTHER_FEATURES)} is decoded: nothing to leave untouched"
    return Measured(values, mean(floors), note, _SEEDS)


STORY_CLAIMS: tuple[Claim, ...] = (
    Claim(17, "Deletion removes the Twist behaviour",
          "deletion fine-tuning raises Twist-story loss and drives the Twist generation score "
          "towards 0, more strongly at higher LR (Figs 31-32)",
          "smallest margin of: Twist loss rise at η_M; half the Twist score before minus after "
          "η_M; rise at η_M minus at η_S (per protocol)", 0.0, _claim17),
    Claim(18, "Twist probes barely move",
          "Twist probes on fine-tuned models stay near Present in PT and well above Not in PT "
          "(Fig. 11a, Fig. 35)",
          "Twist probe accuracy (deleted − Not in PT) / (Present in PT − Not in PT) where Present "
          "in PT leads most", 0.8, _claim18),
    Claim(19, "TinyStories reFT revives Twists quickly",
          "reFT: Twist loss drops within 30-300 iterations and ends below the control's; the "
          "Twist score recovers much faster than the control's (Fig. 11b, Tab. 1)",
          "smallest margin of: control's final Twist loss minus revived's; share of the drop by "
          "the early point minus 1/2; early Twist score, revived minus control", 0.0, _claim19),
    Claim(20, "Other features are untouched",
          "probes of Foreshadowing, Moral Value and Bad Ending are unaffected by deletion "
          "(Figs 36-38)",
          "minus the largest change in probe accuracy of the other features (deleted − Present "
          "in PT)", -0.05, _claim20),
)


def evaluate_story_claims(results: Results) -> list[dict[str, Any]]:
    """One record per claim 17-20, in the layout of `wrapperlens.claims.claim_record`."""
    return [claim_record(claim, claim.measure(results)) for claim in STORY_CLAIMS]
