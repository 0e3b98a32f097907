"""Score every localisation method on one pair whose wrapper is known (or absent).

`localise_run(run_dir, out, specs)` opens a fine-tuned run and its pretraining
(`wrapperlens.experiments.pcfg.pairs`), draws `samples` fresh "count a" prompts and splits them
in two halves:

- the **scoring half** is all any method sees (`wrapperlens.analysis.localisation.unit_scores`);
- the **evaluation half** is where removals are judged: Acc O_PT (count a) of the fine-tuned
  model with the k units a method ranks first zero-ablated (heads at ``z``, neurons at ``post``;
  `wrapperlens.analysis.ablation`), against the mean over `random_draws` sets of k random units
  of the same kind, and against removing the known wrapper itself (the oracle).

Per spec (kind, k) and method it records precision at k and AUROC against the known units (a
negative control has none: both are None) and the revival: Acc O_PT after removing the method's
top k minus after removing k random units. A method *reports a wrapper* where the revival
exceeds the benchmark's `revival_margin` (docs/wrappers.md#metrics); on a negative control,
whose capability was never there, that is a false positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.ablation import ablated
from wrapperlens.analysis.localisation import auroc, precision_at_k, top_units, unit_scores
from wrapperlens.checkpoints import write_json
from wrapperlens.experiments.pcfg.pairs import open_pair, question_inputs, require_finetune
from wrapperlens.experiments.wrappers.stages import WrapperRun

__all__ = ["localise_run"]


def _accuracy(model: HookedTransformer, tokens: Tensor, answers: Tensor,
              units: Sequence[tuple[str, int, int]] = ()) -> float:
    """Acc of the greedy answer at the last position with `units` zero-ablated."""
    heads = [(l, i) for kind, l, i in units if kind == "head"]
    neurons = [(l, i) for kind, l, i in units if kind == "neuron"]
    with torch.no_grad(), ablated(model, heads=heads, neurons=neurons):
        predicted = model(tokens.to(model.cfg.device))[:, -1].argmax(-1).cpu()
    return float((predicted == answers).double().mean())


def _units(kind: str, flat: Sequence[int], width: int) -> list[tuple[str, int, int]]:
    return [(kind, *divmod(int(u), width)) for u in flat]


def localise_run(
    run_dir: str | Path,
    out: str | Path,
    specs: Sequence[tuple[str, int]],
    *,
    methods: Sequence[str],
    samples: int = 400,
    random_draws: int = 5,
    eap_ig_steps: int = 5,
    revival_margin: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Every method's ranking of one pair, scored against its known wrapper (module docstring).

    Args:
        run_dir: A fine-tuned run (a localised run knows its wrapper; any other has none).
        out: Where ``localise.json`` is written.
        specs: (kind, k) removals to judge: a localised run's own (kind, count); for a negative
            control, every wrapper size of the benchmark.
        methods: The methods (`wrapperlens.analysis.localisation.LOCALISATION_METHODS`).
        samples: Prompts, split into the scoring and the evaluation half.
        random_draws: Random unit sets per removal.
        eap_ig_steps: EAP-IG's steps.
        revival_margin: A method reports a wrapper where its revival exceeds this.
        seed: Seeds the random unit sets and the order of tied scores.

    Returns:
        {"run", "pretrained", "wrapper": [[kind, layer, index], ...], "acc": {"pretrained",
        "finetuned"} on the evaluation half, "specs": {"KIND:K": {"units" (how many of that
        kind), "k", "chance_precision", "oracle_acc", "random_acc", "methods": {method:
        {"precision", "auroc", "removed_acc", "revival", "reports", "top"}}}}}.
    """
    ft, pt = open_pair(run_dir)
    require_finetune(ft, "localise")
    wrapper = ft.run.wrapper_units() if isinstance(ft.run, WrapperRun) else ()
    inputs = question_inputs(ft, ft.question(), samples, 0.0, "analysis/localise")
    half = samples // 2
    score_rows, eval_rows = slice(0, half), slice(half, None)
    tokens, answers = inputs.tokens[eval_rows], inputs.answers[eval_rows]
    scores = unit_scores(pt.model, ft.model, inputs.tokens[score_rows],
                         inputs.answers[score_rows], methods, eap_ig_steps=eap_ig_steps,
                         seed=seed)
    generator = torch.Generator().manual_seed(seed)
    result: dict[str, Any] = {
        "run": str(run_dir), "pretrained": str(pt.path), "wrapper": [list(u) for u in wrapper],
        "acc": {"pretrained": _accuracy(pt.model, tokens, answers),
                "finetuned": _accuracy(ft.model, tokens, answers)},
        "samples": {"scoring": half, "evaluation": samples - half},
        "revival_margin": revival_margin, "specs": {},
    }
    for kind, k in specs:
        width = ft.model.cfg.n_heads if kind == "head" else ft.model.cfg.d_mlp
        total = ft.model.cfg.n_layers * width
        members = torch.zeros(ft.model.cfg.n_layers, width, dtype=torch.bool)
        for _, layer, index in (u for u in wrapper if u[0] == kind):
            members[layer, index] = True
        known = bool(members.any())
        draws = [_units(kind, torch.randperm(total, generator=generator)[:k].tolist(), width)
                 for _ in range(random_draws)]
        random_acc = sum(_accuracy(ft.model, tokens, answers, d) for d in draws) / random_draws
        per_method = {}
        for method in methods:
            top = _units(kind, top_units(scores[method][kind], k, generator), width)
            removed = _accuracy(ft.model, tokens, answers, top)
            per_method[method] = {
                "precision": precision_at_k(scores[method][kind], members, k) if known else None,
                "auroc": auroc(scores[method][kind], members) if known else None,
                "removed_acc": removed, "revival": removed - random_acc,
                "reports": removed - random_acc > revival_margin, "top": [list(u) for u in top]}
        result["specs"][f"{kind}:{k}"] = {
            "units": total, "k": k, "chance_precision": k / total if known else None,
            "oracle_acc": _accuracy(ft.model, tokens, answers, wrapper) if known else None,
            "random_acc": random_acc, "methods": per_method}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "localise.json", result)
    return result
