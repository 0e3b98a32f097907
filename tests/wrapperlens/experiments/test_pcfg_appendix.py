"""Claims 13-16 (wrapperlens.experiments.pcfg.appendix): the appendix experiments' jobs, and each
rule against hand-made results: the paper's picture passes, and a model that did not do what
the paper says (or never had the capability) fails.

The hand-made numbers follow the paper's figures where it gives them (App. E.2 Fig. 24: the
jailbreak tokens count a "perfectly"; E.4 Figs 28-29; H.1 Figs 86, 88), else a plain reading.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from wrapperlens.experiments.pcfg import appendix
from wrapperlens.experiments.pcfg.claims import evaluate_claims
from wrapperlens.experiments.pcfg.grid import plan

FLOOR = 0.3


# ------------------------------------------------------------------------------ builders
def _run(stage: str, seed: int, curve: list[dict[str, float]], **params: Any) -> dict:
    points = [{"step": step, **point} for step, point in zip((0, 10, 30, 100, 300), curve)]
    return {"stage": stage, "status": "finished", "params": {"seed": seed, **params},
            "final": dict(points[-1]), "curve": points, "floors": {"acc/O_PT/cte0": FLOOR}}


def _analysis(kind: str, seed: int, result: dict, **params: Any) -> dict:
    return {"kind": kind, "status": "finished", "params": {"seed": seed, **params},
            "result": result}


def _probe(pretrained, finetuned, random_init) -> dict:
    return {"layers": [f"B{i}" for i in range(len(pretrained))],
            "models": {"pretrained": pretrained, "finetuned": finetuned,
                       "random_init": random_init}, "majority_rate": FLOOR}


def _count_a(*values: float, name: str = "acc/O_PT/natural") -> list[dict[str, float]]:
    return [{name: v} for v in values]


def jailbreak(seed: int, via_j: float, via_c: float, probe: dict) -> list[dict]:
    final = {"acc/O_PT/cte0": via_c, "acc/J1_a/cte0": via_j, "acc/J2_a/cte0": via_j}
    start = {"acc/O_PT/cte0": 0.99, "acc/J1_a/cte0": 0.99, "acc/J2_a/cte0": 0.99}
    return [_run("jailbreak_finetune", seed, [start, final], prior="H"),
            _analysis("jailbreak_probe", seed, probe, prior="H")]


def randft(seed: int, prior: str, rand: list[float], std: list[float],
           scratch: list[float]) -> list[dict]:
    return [_run("randft_reft", seed, _count_a(*rand), prior=prior),
            _run("reft", seed, _count_a(*std), prior=prior, family="C", c_tr=1.0),
            _run("scratch_finetune", seed, _count_a(*scratch, name="acc/count_a/natural"))]


def mix(seed: int, low: list[float], high: list[float], probe: dict) -> list[dict]:
    curve = lambda v: [{"acc/O_PT/cte0": a} for a in v]  # noqa: E731
    return [_run("mix_finetune", seed, curve(low), prior="L", mix=0.1),
            _run("mix_finetune", seed, curve(high), prior="H", mix=0.1),
            _analysis("mix_probe", seed, probe, prior="L")]


def inhibitor(seed: int, curve: list[float], top: list[float], rand: list[float],
              units: int = 2304) -> list[dict]:
    ks = list(range(len(top)))
    prune = {"ks": ks, "units": units, "top": {"acc/O_PT/cte0": top},
             "random": {"acc/O_PT/cte0": rand}}
    return [_run("inhibitor_finetune", seed, [{"acc/O_PT/cte0": a} for a in curve], prior="H"),
            _analysis("inhibitor_prune", seed, prune, prior="H")]


DECODED = _probe([0.3, 0.9, 0.95], [0.3, 0.85, 0.4], [0.3, 0.35, 0.35])   # B1: 0.91 of the lead
ERASED = _probe([0.3, 0.9, 0.95], [0.3, 0.4, 0.35], [0.3, 0.35, 0.35])    # B1: 0.09 of the lead
NEVER = _probe([0.3, 0.34, 0.36], [0.3, 0.34, 0.36], [0.3, 0.35, 0.35])   # nothing to decode

# K = 0..4; at 2,304 units the paper's 5..15 of its model's units scales to 1..3 or so
INHIBITED = [0.99, 0.2, 0.05, 0.05, 0.05]
PRUNE_TOP = [0.05, 0.3, 0.45, 0.5, 0.5]
PRUNE_RANDOM = [0.05, 0.05, 0.06, 0.05, 0.05]


def paper_like(seeds=(0, 1, 2)) -> dict[str, Any]:
    records: list[dict] = []
    for s in seeds:
        records += jailbreak(s, via_j=0.97, via_c=0.1, probe=DECODED)
        for prior in ("L", "H"):
            records += randft(s, prior, rand=[0.05, 0.5, 0.9, 0.95, 0.99],
                              std=[0.1, 0.6, 0.85, 0.95, 0.99], scratch=[0.0, 0.0, 0.1, 0.3, 0.6])
        records += mix(s, low=[0.99, 0.6, 0.5, 0.4, 0.4], high=[0.99, 0.95, 0.9, 0.9, 0.9],
                       probe=DECODED)
        records += inhibitor(s, INHIBITED, PRUNE_TOP, PRUNE_RANDOM)
    return {"runs": [r for r in records if "stage" in r],
            "analyses": [r for r in records if "kind" in r]}


def claim(results: dict, id_: int) -> dict:
    return next(c for c in appendix.evaluate_appendix(results) if c["id"] == id_)


# ----------------------------------------------------------------------------- the grid
def test_the_cpu_grid_runs_every_appendix_experiment_with_its_own_labels():
    jobs = plan("cpu")
    stages = Counter(j.stage for j in jobs if j.kind == "run")
    kinds = Counter(j.kind for j in jobs if j.kind != "run")
    assert stages["jailbreak_pretrain"] == stages["jailbreak_finetune"] == 3   # highest prior
    assert stages["randft_finetune"] == stages["randft_reft"] == 6            # both priors
    assert stages["mix_finetune"] == 6 and stages["inhibitor_finetune"] == 3
    assert kinds["jailbreak_probe"] == kinds["mix_probe"] == kinds["inhibitor_prune"] == 3
    jail = next(j for j in jobs if j.stage == "jailbreak_pretrain")
    assert jail.job.args["overrides"]["task.aliases"] == appendix.JAILBREAK_ALIASES
    rand = next(j for j in jobs if j.stage == "randft_finetune")
    over = rand.job.args["overrides"]
    assert (over["finetune.operand"], over["finetune.label_operand"]) == ("a", "b")


def test_a_grid_without_appendix_plans_none_of_it_and_leaves_claims_13_16_not_covered():
    jobs = plan("tiny", {"grid.appendix": ()})
    assert not [j for j in jobs if j.stage.startswith(("jailbreak", "randft", "mix", "inhibitor"))
                or j.kind.startswith(("jailbreak", "mix", "inhibitor"))]
    assert {c["status"] for c in appendix.evaluate_appendix({"runs": [], "analyses": []})} == {
        "not covered"}


def test_appendix_runs_change_no_value_of_claims_1_to_12():
    """Labelled apart: no rule of claims 1-7 reads a jailbreak, randFT, mixed or inhibitor run."""
    every = paper_like()
    main = ("reft", "scratch_finetune")  # the grid's own runs, which claim 14 compares with
    base = {"runs": [r for r in every["runs"] if r["stage"] in main], "analyses": []}
    assert len(base["runs"]) < len(every["runs"]) and every["analyses"]
    assert evaluate_claims(base) == evaluate_claims(every)


# ---------------------------------------------------------------------------- the rules
def test_the_papers_picture_reproduces_claims_13_to_16():
    results = paper_like()
    assert {i: claim(results, i)["status"] for i in (13, 14, 15, 16)} == {
        13: "reproduced", 14: "reproduced", 15: "reproduced", 16: "reproduced"}
    assert len(claim(results, 14)["values"]) == 6  # both priors of every seed


@pytest.mark.parametrize("via_j, via_c, probe, why", [
    (0.97, 0.95, DECODED, "T_NJ still counts a: nothing to jailbreak"),
    (0.3, 0.1, DECODED, "the jailbreak tokens do not count a"),
    (0.97, 0.1, ERASED, "count(a) is not decoded mid-network"),
])
def test_claim13_fails_when_a_part_does_not_hold(via_j, via_c, probe, why):
    results = paper_like(seeds=())
    for s in (0, 1, 2):
        results["runs"] += [r for r in jailbreak(s, via_j, via_c, probe) if "stage" in r]
        results["analyses"] += [r for r in jailbreak(s, via_j, via_c, probe) if "kind" in r]
    assert claim(results, 13)["status"] == "not reproduced", why


def test_claim13_a_model_that_never_counted_a_decodes_nothing():
    records = jailbreak(0, via_j=0.3, via_c=0.3, probe=NEVER)
    results = {"runs": records[:1], "analyses": records[1:]}
    c = claim(results, 13)
    assert c["status"] == "not reproduced" and c["values"][0] < 0


@pytest.mark.parametrize("rand, why", [
    ([0.05, 0.1, 0.2, 0.4, 0.6], "randFT's reFT never gets back to 80 %"),
    ([0.05, 0.1, 0.2, 0.5, 0.85], "slower than Scr.+FT / 2 and than 2x standard reFT"),
])
def test_claim14_fails_when_randft_is_not_revived_fast(rand, why):
    records = []
    for s in (0, 1, 2):
        records += randft(s, "L", rand=rand, std=[0.1, 0.6, 0.85, 0.95, 0.99],
                          scratch=[0.0, 0.0, 0.1, 0.5, 0.85])
    assert claim({"runs": records, "analyses": []}, 14)["status"] == "not reproduced", why


def test_claim14_a_randft_that_never_lost_count_a_is_no_revival():
    records = randft(0, "L", rand=[0.95, 0.97, 0.99, 0.99, 0.99], std=[0.1, 0.6, 0.85, 0.9, 0.9],
                     scratch=[0.0, 0.0, 0.1, 0.3, 0.6])
    c = claim({"runs": records, "analyses": []}, 14)
    assert c["values"] == [] and c["status"] == "undefined"
    assert "1 undefined" in c["note"]


@pytest.mark.parametrize("low, high, probe, why", [
    ([0.99, 0.95, 0.9, 0.9, 0.9], [0.99, 0.6, 0.5, 0.4, 0.4], DECODED, "P^H drops more"),
    ([0.99, 0.6, 0.5, 0.4, 0.4], [0.99, 0.95, 0.9, 0.9, 0.9], ERASED, "count(a) erased"),
])
def test_claim15_fails_when_the_conclusions_change(low, high, probe, why):
    records = []
    for s in (0, 1, 2):
        records += mix(s, low, high, probe)
    results = {"runs": [r for r in records if "stage" in r],
               "analyses": [r for r in records if "kind" in r]}
    assert claim(results, 15)["status"] == "not reproduced", why


@pytest.mark.parametrize("curve, top, why", [
    ([0.99, 0.97, 0.96, 0.96, 0.96], PRUNE_TOP, "fine-tuning kept count a: no inhibitor"),
    (INHIBITED, [0.05, 0.06, 0.06, 0.07, 0.07], "pruning revives nothing"),
    (INHIBITED, [0.05, 0.97, 0.98, 0.99, 0.99], "pruning undoes it fully, not partly"),
])
def test_claim16_fails_when_a_part_does_not_hold(curve, top, why):
    records = inhibitor(0, curve, top, PRUNE_RANDOM)
    results = {"runs": records[:1], "analyses": records[1:]}
    assert claim(results, 16)["status"] == "not reproduced", why


def test_claim16_reads_only_the_scaled_k_window():
    """A gain at K = 4 alone lies outside the cpu model's scaled window: it does not count."""
    from wrapperlens.experiments.pcfg.claims import prune_window

    window = prune_window(2304)
    assert 4 not in window
    top = [0.05 if k in window or k == 0 else 0.5 for k in range(5)]
    records = inhibitor(0, INHIBITED, top, PRUNE_RANDOM)
    c = claim({"runs": records[:1], "analyses": records[1:]}, 16)
    assert c["status"] == "not reproduced" and not math.isnan(c["values"][0])


def test_the_paper_models_unit_count_and_the_scaled_window():
    """PAPER_UNITS is the pruning rule's count on the paper's 6 × 192 model (built, not typed),
    and the cpu model's count is what its sweeps record."""
    from wrapperlens.analysis.pruning import pruning_scores
    from wrapperlens.analysis.pruning_units import PruneConfig, count_units
    from wrapperlens.experiments.pcfg.claims import PAPER_UNITS, prune_window
    from wrapperlens.experiments.pcfg.presets import CPU, PAPER
    from wrapperlens.models import build_model

    paper = build_model(PAPER.model, d_vocab=40, n_ctx=16)
    cpu = build_model(CPU.model, d_vocab=40, n_ctx=16)
    assert count_units(paper, PruneConfig()) == PAPER_UNITS
    # the same count as the scores a sweep takes (one per unit)
    scores = pruning_scores(cpu, lambda m: sum((p ** 2).sum() for p in m.parameters()))
    assert count_units(cpu, PruneConfig()) == scores.n_units == 2304
    assert prune_window(PAPER_UNITS) == range(5, 16)
    assert prune_window(2304) == range(1, 2)
    assert prune_window(10) == range(1, 2)  # never fewer than one unit
