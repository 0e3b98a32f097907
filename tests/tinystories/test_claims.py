"""Claims 17-20 (tinystories.claims) on hand-made results: each has a case it must pass and
cases it must fail, a model that never had the Twist capability among them."""

from __future__ import annotations

import math

import pytest

from tinystories.claims import EARLY_FRACTION, evaluate_story_claims

FEATURES = ["Twist", "Foreshadowing", "Dialogue", "BadEnding", "MoralValue", "Conflict"]


def _run(key: str, stage: str, curve: list[dict], seed: int = 0, status: str = "finished"):
    return {"key": key, "stage": stage, "params": {"seed": seed}, "status": status,
            "curve": curve, "final": {k: v for p in curve for k, v in p.items() if k != "step"},
            "floors": {}}


def _deletion(name: str, loss: tuple[float, float], score: tuple[float, float], seed: int = 0):
    return _run(f"delete/{name}/seed={seed}", "delete",
                [{"step": 0, "twist_loss": loss[0], "twist_score": score[0]},
                 {"step": 100, "twist_loss": (loss[0] + loss[1]) / 2},
                 {"step": 200, "twist_loss": loss[1], "twist_score": score[1]}], seed)


def _reft(name: str, losses: tuple[float, float, float], scores: tuple[float, float, float],
          seed: int = 0, steps: int = 300):
    """A reFT curve: start, the early point (EARLY_FRACTION of the run), end."""
    early = math.ceil(EARLY_FRACTION * steps)
    return _run(f"reft/{name}/seed={seed}", "reft",
                [{"step": 0, "twist_loss": losses[0], "twist_score": scores[0]},
                 {"step": early, "twist_loss": losses[1], "twist_score": scores[1]},
                 {"step": steps, "twist_loss": losses[2], "twist_score": scores[2]}], seed)


def _probe(twist: dict[str, list[float]], others: dict[str, list[float]] | None = None,
           seed: int = 0):
    """Probe accuracies per model and layer: Twist as given, other features as `others`
    (default 0.9 everywhere)."""
    others = others or {}
    accuracy = {m: [[t, *([others.get(m, [0.9] * len(acc))[i]] * 5)] for i, t in enumerate(acc)]
                for m, acc in twist.items()}
    return {"kind": "probe", "key": f"probe/seed={seed}", "params": {"seed": seed},
            "status": "finished",
            "result": {"points": [f"B{i}" for i in range(len(twist["pretrained"]))],
                       "features": FEATURES, "twist_accuracy": twist, "accuracy": accuracy,
                       "majority_rate": [0.6] * len(FEATURES)}}


def _data(source: str = "story_source"):
    return {"kind": "data", "key": "data", "params": {}, "status": "finished",
            "result": {"dir": "tinystories/data", "source": source}}


def _claims(runs=(), analyses=()) -> dict[int, dict]:
    records = evaluate_story_claims({"runs": list(runs), "analyses": [_data(), *analyses]})
    return {c["id"]: c for c in records}


# ------------------------------------------------------------------------------- claim 17
def test_claim17_passes_a_deletion_that_raises_twist_loss_more_at_the_higher_rate():
    c = _claims([_deletion("F-M", (2.0, 3.0), (0.8, 0.1)), _deletion("F-S", (2.0, 2.3),
                                                                     (0.8, 0.6))])[17]
    assert c["status"] == "reproduced"
    assert c["values"] == [pytest.approx(min(1.0, 0.4 - 0.1, 1.0 - 0.3))]
    assert "synthetic story source" in c["note"]


@pytest.mark.parametrize("why, m, s", [
    ("the loss falls", ((2.0, 1.8), (0.8, 0.1)), ((2.0, 1.9), (0.8, 0.6))),
    ("the score stays", ((2.0, 3.0), (0.8, 0.7)), ((2.0, 2.3), (0.8, 0.8))),
    ("η_S deletes as much", ((2.0, 3.0), (0.8, 0.1)), ((2.0, 3.2), (0.8, 0.1))),
    ("never wrote twists", ((2.0, 3.0), (0.0, 0.0)), ((2.0, 2.3), (0.0, 0.0))),
])
def test_claim17_fails_when_one_part_does_not_hold(why, m, s):
    c = _claims([_deletion("F-M", *m), _deletion("F-S", *s)])[17]
    assert c["status"] == "not reproduced", why


def test_claim17_without_both_rates_is_not_covered():
    assert _claims([_deletion("F-M", (2.0, 3.0), (0.8, 0.1))])[17]["status"] == "not covered"


# ------------------------------------------------------------------------------- claim 18
def test_claim18_passes_probes_that_stay_near_present_in_pt():
    c = _claims(analyses=[_probe({"pretrained": [0.6, 0.9, 0.95], "control": [0.6, 0.7, 0.7],
                                  "deleted F-M": [0.6, 0.88, 0.92]})])[18]
    assert c["status"] == "reproduced"
    assert c["values"] == [pytest.approx((0.92 - 0.7) / (0.95 - 0.7))]  # B2: the widest lead
    assert c["floor"] == pytest.approx(0.6)


def test_claim18_fails_probes_that_fall_to_not_in_pt():
    c = _claims(analyses=[_probe({"pretrained": [0.6, 0.9, 0.95], "control": [0.6, 0.7, 0.7],
                                  "deleted F-M": [0.6, 0.72, 0.71]})])[18]
    assert c["status"] == "not reproduced"


def test_claim18_is_undefined_when_the_pretrained_model_never_decoded_twists():
    c = _claims(analyses=[_probe({"pretrained": [0.6, 0.7, 0.71], "control": [0.6, 0.7, 0.7],
                                  "deleted F-M": [0.6, 0.7, 0.7]})])[18]
    assert c["status"] == "undefined" and "no gap" in c["note"]


# ------------------------------------------------------------------------------- claim 19
def test_claim19_passes_a_quick_revival_that_ends_below_the_control():
    c = _claims([_reft("F-M", (3.0, 2.2, 2.0), (0.1, 0.6, 0.8)),
                 _reft("control", (3.0, 2.9, 2.5), (0.1, 0.2, 0.5))])[19]
    assert c["status"] == "reproduced"
    assert c["values"] == [pytest.approx(min(0.5, 0.8 - 0.5, 0.4))]


@pytest.mark.parametrize("why, revived, control", [
    ("ends above the control", ((3.0, 2.2, 2.0), (0.1, 0.6, 0.8)),
     ((3.0, 2.9, 1.9), (0.1, 0.2, 0.5))),
    ("slow: most of the drop comes late", ((3.0, 2.9, 2.0), (0.1, 0.6, 0.8)),
     ((3.0, 2.9, 2.5), (0.1, 0.2, 0.5))),
    ("no faster than the control at generating twists", ((3.0, 2.2, 2.0), (0.1, 0.2, 0.8)),
     ((3.0, 2.9, 2.5), (0.1, 0.3, 0.5))),
    ("the deletion erased the capability: reFT learns like the control",
     ((3.0, 2.9, 2.5), (0.1, 0.2, 0.5)), ((3.0, 2.9, 2.5), (0.1, 0.2, 0.5))),
])
def test_claim19_fails_when_one_part_does_not_hold(why, revived, control):
    c = _claims([_reft("F-M", *revived), _reft("control", *control)])[19]
    assert c["status"] == "not reproduced", why


# ------------------------------------------------------------------------------- claim 20
def _twist():
    return {"pretrained": [0.6, 0.9], "control": [0.6, 0.7], "deleted F-M": [0.6, 0.9]}


def test_claim20_passes_when_the_other_features_keep_their_probe_accuracy():
    c = _claims(analyses=[_probe(_twist(), {"pretrained": [0.8, 0.9],
                                            "deleted F-M": [0.8, 0.88]})])[20]
    assert c["status"] == "reproduced" and c["values"] == [pytest.approx(-0.02)]


def test_claim20_fails_when_an_other_feature_drops():
    c = _claims(analyses=[_probe(_twist(), {"pretrained": [0.8, 0.9],
                                            "deleted F-M": [0.8, 0.7]})])[20]
    assert c["status"] == "not reproduced"


def test_claim20_is_undefined_for_features_the_pretrained_model_never_decoded():
    c = _claims(analyses=[_probe(_twist(), {"pretrained": [0.6, 0.61],
                                            "deleted F-M": [0.6, 0.61]})])[20]
    assert c["status"] == "undefined" and "none of" in c["note"]


def test_unfinished_runs_are_not_read():
    c = _claims([_deletion("F-M", (2.0, 3.0), (0.8, 0.1)),
                 {**_deletion("F-S", (2.0, 2.3), (0.8, 0.6)), "status": "failed"}])[17]
    assert c["status"] == "not covered"

