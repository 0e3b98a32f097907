"""A synthetic results dict for rendering tests of the report: made-up numbers, not measurements.

`synthetic_results(out_dir)` returns a dict in the layout of `results.json` (format 2) with every
kind of record the report draws: pretraining, fine-tuning, reFT and Scr.+FT runs over 3 seeds
(one failed, one missing, one skipped), prune / probe / attention analyses (one failed) and seven
claims of every status. The accuracies are smooth functions of the settings plus seeded noise,
chosen only so that the plots have visible shape; they say nothing about the paper's claims.
With `attention=True` it also writes a real attention page (two tiny random-init models drawn by
`wrapperlens.analysis.attention_views`) under `out_dir`, which the attention analysis points to.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

PRIORS = ("L", "H")
C_TRS = (0.0, 0.5, 1.0)
ETAS = {"M": 1e-4, "S": 1e-5}
SEEDS = 3
FT_STEPS = (0, 20, 40, 60, 80, 100)
REFT_STEPS = (0, 10, 100, 1000)
FAILED_KEY = "finetune/C/prior=H/c_tr=0.5/eta=S/seed=2"
FAILED_ERROR = "RuntimeError: out of memory <synthetic> & more"
MISSING_KEY = "finetune/C/prior=L/c_tr=0/eta=M/seed=1"
ATTENTION_FILE = "analyses/attention/prior=L.html"
FLOORS = {f"acc/{o}/{s}": f for o in ("O_PT", "O_FT")
          for s, f in (("cte0", 0.2), ("cte1", 0.25), ("natural", 0.22))}


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _run(stage: str, key: str, params: dict, final: dict, curve: list, floors: dict) -> dict:
    return {"key": key, "stage": stage, "run_id": hashlib.sha256(key.encode()).hexdigest()[:16],
            "dir": f"runs/{key.replace('/', '_')}", "status": "finished", "error": None,
            "seconds": 12.5, "params": params, "final": final, "curve": curve, "floors": floors}


def _finetune(prior: str, c_tr: float, eta: str, seed: int, rng: random.Random) -> dict:
    keep = 0.9 if prior == "H" else 0.5 - 0.3 * c_tr  # how much count-a survives
    curve = []
    for step in FT_STEPS:
        t = step / FT_STEPS[-1]
        noise = rng.uniform(-0.03, 0.03)
        ft0 = _clip((0.95 if prior == "H" else 1 - c_tr) * t + noise)
        line = {"step": step,
                "acc/O_PT/cte0": _clip(1 - (1 - keep) * t + noise),
                "acc/O_PT/cte1": _clip(1 - (1 - keep) * t * 0.8 + noise),
                "acc/O_FT/cte0": ft0, "acc/O_FT/cte1": _clip(0.97 * t + noise),
                "acc/O_PT/natural": _clip(1 - (1 - keep) * t * 0.9 + noise),
                "acc/O_FT/natural": _clip((ft0 + 0.97 * t) / 2)}
        curve.append(line)
    final = {k: v for k, v in curve[-1].items() if k != "step"} | {"loss": 0.5}
    key = f"finetune/C/prior={prior}/c_tr={c_tr:g}/eta={eta}/seed={seed}"
    params = {"family": "C", "prior": prior, "c_tr": c_tr, "eta": eta, "lr": ETAS[eta],
              "seed": seed}
    return _run("finetune", key, params, final, curve, dict(FLOORS))


def _revival(stage: str, key: str, params: dict, rate: float, rng: random.Random) -> dict:
    count_a = "acc/count_a/natural"  # what the grid names counting a in reFT and Scr.+FT runs
    curve = [{"step": s, count_a: _clip(0.1 + 0.85 * s / (s + rate) + rng.uniform(-0.02, 0.02))}
             for s in REFT_STEPS]
    return _run(stage, key, params, {count_a: curve[-1][count_a]}, curve, {count_a: 0.2})


def _runs(rng: random.Random) -> list[dict]:
    runs = []
    for prior in PRIORS:
        for seed in range(SEEDS):
            final = {"acc/C_a": 0.99, "acc/C_b": 0.3 if prior == "L" else 0.99}
            runs.append(_run("pretrain", f"pretrain/C/prior={prior}/seed={seed}",
                             {"family": "C", "prior": prior, "seed": seed}, final, [],
                             {"acc/C_a": 0.2, "acc/C_b": 0.2}))
            for c_tr in C_TRS:
                for eta in ETAS:
                    runs.append(_finetune(prior, c_tr, eta, seed, rng))
            key = f"reft/C/prior={prior}/c_tr=1/eta=M/seed={seed}"
            params = {"family": "C", "prior": prior, "c_tr": 1.0, "eta": "M", "lr": 1e-5,
                      "seed": seed}
            runs.append(_revival("reft", key, params, 30.0 if prior == "H" else 300.0, rng))
    for seed in range(SEEDS):
        runs.append(_revival("scratch_finetune", f"scratch_finetune/C/c_tr=1/eta=M/seed={seed}",
                             {"family": "C", "c_tr": 1.0, "eta": "M", "seed": seed}, 3000.0, rng))
    for run in runs:
        if run["key"] == FAILED_KEY:
            run.update(status="failed", error=FAILED_ERROR, final={}, curve=[])
        if run["key"] == MISSING_KEY:
            run.update(status="missing", error="no run directory", final={}, curve=[])
    runs.append(_run("pretrain", "pretrain/I/prior=L/seed=0", {"family": "I", "prior": "L",
                     "seed": 0}, {}, [], {}) | {"status": "skipped",
                                                "error": "family I not in this preset"})
    return runs


def _analyses(rng: random.Random, attention: bool) -> list[dict]:
    analyses = []
    ks = list(range(16))
    layers = ["embed", "block 0", "block 1"]
    for seed in range(SEEDS):
        run = f"finetune/C/prior=L/c_tr=1/eta=S/seed={seed}"
        top = {"acc/O_PT/cte0": [_clip(0.3 + 0.04 * k + rng.uniform(-.02, .02)) for k in ks],
               "acc/O_FT/cte0": [_clip(0.9 - 0.05 * k) for k in ks]}
        rand = {"acc/O_PT/cte0": [0.3] * 16, "acc/O_FT/cte0": [0.9] * 16}
        analyses.append({"key": f"prune/C/prior=L/c_tr=1/eta=S/seed={seed}", "kind": "prune",
                         "run": run, "status": "finished", "error": None,
                         "result": {"ks": ks, "top": top, "random": rand}})
        models = {"pretrained": [0.3, 0.8, 0.95], "finetuned": [0.3, 0.75, 0.9],
                  "random_init": [0.25, 0.3, 0.3]}
        models = {m: [_clip(v + rng.uniform(-.03, .03)) for v in vs] for m, vs in models.items()}
        analyses.append({"key": f"probe/C/prior=L/c_tr=1/eta=S/seed={seed}", "kind": "probe",
                         "run": run, "status": "finished", "error": None,
                         "result": {"layers": layers, "models": models, "majority_rate": 0.22,
                                    "target": "count(a)"}})
    analyses.append({"key": "attention/C/prior=L/c_tr=1/eta=S/seed=0", "kind": "attention",
                     "run": "finetune/C/prior=L/c_tr=1/eta=S/seed=0",
                     "status": "finished" if attention else "skipped",
                     "error": None if attention else "attention not requested",
                     "result": {"html": ATTENTION_FILE, "label": "prior L, C_Tr 1, η_S"}})
    analyses.append({"key": "attention/C/prior=H/c_tr=1/eta=S/seed=0", "kind": "attention",
                     "run": "finetune/C/prior=H/c_tr=1/eta=S/seed=0", "status": "failed",
                     "error": "ValueError: synthetic attention failure", "result": {}})
    return analyses


def _claims() -> list[dict]:
    statuses = ["reproduced", "reproduced", "not reproduced", "inconclusive", "reproduced",
                "not covered", "inconclusive"]
    claims = []
    for i, status in enumerate(statuses, start=1):
        values = [] if status == "not covered" else [0.5 + 0.1 * i / 7 + 0.01 * s
                                                      for s in range(SEEDS)]
        claims.append({
            "id": i, "title": f"Synthetic claim {i} <{status}>",
            "paper": f"The paper's statement {i} (Fig. {i + 4})",
            "rule": f"mean ≥ 0.55 & every seed above floor (rule {i})",
            "quantity": f"quantity {i}", "values": values,
            "mean": sum(values) / len(values) if values else None,
            "spread": [min(values), max(values)] if values else None,
            "floor": 0.2 if values else None, "status": status,
            "seeds_vary": "train.seed (data order)", "note": f"note {i}"})
    return claims


def write_attention_page(path: Path) -> None:
    """Two tiny random-init models' attention, drawn by the project's attention views."""
    import torch

    from wrapperlens.analysis.attention_views import write_attention_html
    from wrapperlens.models import ModelConfig, build_model

    models = {}
    for name, seed in (("pretrained", 1), ("fine-tuned", 2)):
        model = build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, init_seed=seed),
                            n_ctx=6, d_vocab=10)
        with torch.no_grad():
            model.blocks[0].attn.W_Q.mul_(30.0)  # sharp patterns: visible colour on screen
        models[name] = model
    path.parent.mkdir(parents=True, exist_ok=True)
    write_attention_html(path, models, torch.arange(6), [f"t{i}" for i in range(6)])


def synthetic_results(out_dir: Path, attention: bool = True) -> dict[str, Any]:
    """The synthetic results dict (see the module docstring); writes the attention page."""
    rng = random.Random(0)
    if attention:
        write_attention_page(Path(out_dir) / ATTENTION_FILE)
    return {
        "format": 2, "settings": ["pcfg"], "preset": "tiny", "seeds": {"pcfg": SEEDS},
        "executor": "local", "wall_seconds": 3725.0,
        "seed_roles": {"pcfg": {
            "pretrain": "train.seed (data order) and model.init_seed (initial weights)",
            "finetune": "train.seed (data order)", "reft": "train.seed (data order)"}},
        "runs": [{"setting": "pcfg", **r} for r in _runs(rng)],
        "analyses": [{"setting": "pcfg", **a} for a in _analyses(rng, attention)],
        "tables": {}, "claims": _claims(),
    }
