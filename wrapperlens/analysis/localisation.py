"""Localisation methods as one score per unit, and how well a ranking finds a known unit set.

The known-wrapper benchmark (`wrapperlens.experiments.wrappers`, docs/wrappers.md) asks each of
wrapperlens's ways of localising fine-tuning's change the same question: given a pretrained /
fine-tuned pair and "count a" prompts, which units (attention heads, MLP neurons) hold the
wrapper? `unit_scores` answers it once per method, as one score per unit where higher means
"more likely the wrapper", all on the same prompts and the same metric (the probability of the
pretraining-task answer):

| method | score of a head / neuron | from |
|---|---|---|
| `prune` | g·w of its output row(s), g of the pretraining-task loss on the fine-tuned model | `wrapper_map` |
| `weight` | ‖W_ft - W_pt‖ / ‖W_pt‖ over its own parameters | `wrapper_map` |
| `patch` | abs(effect of patching its pretrained activation into the fine-tuned run) | `wrapper_map` |
| `attribution` | abs(attribution-patching estimate of the same patch) | `attribution_scores` |
| `eap`, `eap_ig` | sum of abs(edge score) over the edges out of its node, across the pair | `edges` |
| `random` | a uniform random number (seeded): the chance level of every metric | |

EAP and EAP-IG score edges between nodes (a head, a whole MLP), so every neuron of an MLP gets
its MLP's score: they cannot tell neurons of one layer apart, and the ranking metrics below
count such ties as a random order would. Across a pair with the same embeddings and tokens
EAP-IG's every step is the clean run, so it equals EAP there (`wrapperlens.analysis.edges`).

Ranking metrics (`precision_at_k`, `auroc`) compare a score vector with a 0/1 membership vector;
both take the expectation over a random order of tied scores, so constant scores give exactly
the chance level (k / n and 0.5). `spearman` compares two score vectors (an estimate against
exact patching), tied scores sharing their average rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.attribution import attribution_scores
from wrapperlens.analysis.edges import EdgeGraph, eap_ig_scores, eap_scores
from wrapperlens.analysis.logit_metrics import answer_probability
from wrapperlens.analysis.run_pair import check_same_architecture
from wrapperlens.analysis.wrapper_map import WrapperMapConfig, wrapper_map

__all__ = ["LOCALISATION_METHODS", "UNIT_COMPONENTS", "unit_scores", "precision_at_k", "auroc",
           "spearman", "top_units"]

#: Every method `unit_scores` knows (the module docstring's table).
LOCALISATION_METHODS = ("prune", "weight", "patch", "attribution", "eap", "eap_ig", "random")
#: The unit kinds scored, with the attribution component each is a unit of.
UNIT_COMPONENTS = {"head": "z", "neuron": "post"}


def _edge_node_scores(scores, graph: EdgeGraph, n_layers: int, n_heads: int,
                      d_mlp: int) -> dict[str, Tensor]:
    """Per-unit scores from edge scores: a head's is the sum of abs(score) of its outgoing
    edges, a neuron's that of its MLP's."""
    per_node = dict.fromkeys(graph.upstream, 0.0)
    for edge, value in zip(scores.edges, scores.values.abs().tolist()):
        per_node[edge.split("->")[0]] += value
    heads = torch.tensor([[per_node[f"a{l}.h{h}"] for h in range(n_heads)]
                          for l in range(n_layers)])
    neurons = torch.tensor([[per_node.get(f"m{l}", 0.0)] * d_mlp for l in range(n_layers)])
    return {"head": heads, "neuron": neurons}


def unit_scores(
    pretrained: HookedTransformer,
    finetuned: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    answers: Int[Tensor, "batch"],
    methods: Sequence[str] = LOCALISATION_METHODS,
    *,
    eap_ig_steps: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, Float[Tensor, "n_layers width"]]]:
    """Every method's score of every head and neuron of a pair (module docstring).

    Args:
        pretrained: The model before fine-tuning (patching source).
        finetuned: The model after (the run that is patched; gradients are taken here). Neither
            model is changed.
        tokens: Pretraining-task prompts cut after the answer request (the last position
            predicts the answer).
        answers: The pretraining-task answer token of each prompt.
        methods: Any of `LOCALISATION_METHODS`.
        eap_ig_steps: EAP-IG's integration steps.
        seed: The seed of the `random` baseline's scores.

    Returns:
        {method: {"head": [n_layers, n_heads], "neuron": [n_layers, d_mlp]}}; higher = more
        likely part of the wrapper.

    Raises:
        ValueError: an unknown method, or two models of different architectures.
    """
    unknown = [m for m in methods if m not in LOCALISATION_METHODS]
    if unknown:
        raise ValueError(f"unknown localisation methods {unknown}; known: "
                         f"{', '.join(LOCALISATION_METHODS)}")
    check_same_architecture(pretrained, finetuned)
    cfg = finetuned.cfg
    out: dict[str, dict[str, Tensor]] = {}
    if {"prune", "weight", "patch"} & set(methods):
        wmap = wrapper_map(pretrained, finetuned, tokens, answers,
                           config=WrapperMapConfig(kinds=tuple(UNIT_COMPONENTS)))
        for method, column, transform in (("prune", "prune_score", lambda g: g),
                                          ("weight", "weight_change", lambda g: g),
                                          ("patch", "patch_effect", torch.abs)):
            if method in methods:
                out[method] = {kind: transform(wmap.grid(kind, column))
                               for kind in UNIT_COMPONENTS}
    metric = answer_probability(answers)
    if "attribution" in methods:
        attr = attribution_scores(finetuned, tokens, metric, tuple(UNIT_COMPONENTS.values()),
                                  per_position=False, source_model=pretrained)
        out["attribution"] = {kind: attr[c].abs().cpu() for kind, c in UNIT_COMPONENTS.items()}
    graph = EdgeGraph.of(finetuned)
    for method in ("eap", "eap_ig"):
        if method not in methods:
            continue
        scores = (eap_scores(finetuned, tokens, None, metric, source_model=pretrained)
                  if method == "eap" else
                  eap_ig_scores(finetuned, tokens, None, metric, steps=eap_ig_steps,
                                source_model=pretrained))
        out[method] = _edge_node_scores(scores, graph, cfg.n_layers, cfg.n_heads, cfg.d_mlp)
    if "random" in methods:
        generator = torch.Generator().manual_seed(seed)
        out["random"] = {"head": torch.rand(cfg.n_layers, cfg.n_heads, generator=generator),
                         "neuron": torch.rand(cfg.n_layers, cfg.d_mlp, generator=generator)}
    return {m: out[m] for m in methods}


def _check(scores: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
    scores, members = scores.flatten().double(), members.flatten().bool()
    if scores.shape != members.shape:
        raise ValueError(f"scores ({scores.numel()}) and members ({members.numel()}) differ in "
                         "size")
    if torch.isnan(scores).any():
        raise ValueError("scores hold NaN: every unit needs a score")
    return scores, members


def precision_at_k(scores: Float[Tensor, "..."], members: Bool[Tensor, "..."], k: int) -> float:
    """The expected fraction of members among the k best-scored units, ties in random order.

    Units strictly above the k-th best score all count; of the units tied with it, the
    expected share of members fills the remaining places.
    """
    scores, members = _check(scores, members)
    if not 1 <= k <= scores.numel():
        raise ValueError(f"k={k} must be in [1, {scores.numel()}]")
    kth = scores.sort(descending=True).values[k - 1]
    above, tied = scores > kth, scores == kth
    places = k - int(above.sum())
    hits = float(members[above].sum()) + places * float(members[tied].double().mean())
    return hits / k


def auroc(scores: Float[Tensor, "..."], members: Bool[Tensor, "..."]) -> float:
    """The probability that a member outscores a non-member (ties count half): the area under
    the ROC curve, 0.5 for a random ranking. NaN without members or without non-members."""
    scores, members = _check(scores, members)
    pos, neg = scores[members], scores[~members]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    equal = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * equal)


def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks, tied values sharing the mean of the ranks they span (one sort: per-position
    attribution compares tens of thousands of nodes, too many for pairwise comparisons)."""
    values, order = x.sort()
    _, group, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # the rank of each group's last member
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = (last - (counts.double() - 1) / 2)[group]
    return ranks


def spearman(a: Float[Tensor, "..."], b: Float[Tensor, "..."]) -> float:
    """Spearman's rank correlation of two score vectors of one size (ties: average ranks); NaN
    when either is constant."""
    a, b = a.flatten().double(), b.flatten().double()
    if a.shape != b.shape:
        raise ValueError(f"spearman: {a.numel()} and {b.numel()} scores differ in size")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom else float("nan")


def top_units(scores: Float[Tensor, "..."], k: int, generator: torch.Generator) -> list[int]:
    """The flat indices of the k best-scored units; ties are broken by `generator`'s order."""
    flat = scores.flatten().double()
    if not 0 <= k <= flat.numel():
        raise ValueError(f"k={k} must be in [0, {flat.numel()}]")
    shuffle = torch.randperm(flat.numel(), generator=generator)
    order = shuffle[flat[shuffle].argsort(descending=True, stable=True)]
    return order[:k].tolist()
