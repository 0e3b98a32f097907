"""Single-step g·w pruning (Jain et al. 2024, App. D, Alg. 3).

The question pruning asks: is the pretraining capability still inside the fine-tuned model,
blocked by a few units? Take the gradient g of the *pretraining-task* loss on the fine-tuned
model and score every unit by g·w. Zeroing a weight w changes the loss by about -g·w (first-order
Taylor expansion, L(0) ≈ L(w) - g·w), so the units with the **largest g·w** are the ones whose
removal is predicted to **decrease** the pretraining loss most. Setting the top-K of them to zero
(K = 0, 1, 2, ..., cumulative, one gradient only) and watching the pretraining accuracy come back
is the paper's evidence for a "wrapper".

The units (rows or single weights of chosen matrices), their score table, the reversible zeroing
`pruned` and the evaluation of K-unit prefixes are `wrapperlens.analysis.pruning_units`; their
names are importable from here too. This module takes the gradient (`pruning_scores`), sweeps
the top-K (`prune_sweep`) and plots a sweep beside its control.

The control: `wrapperlens.analysis.pruning_control.random_prune_sweep` prunes K randomly drawn
eligible units instead of the top-K, so a sweep can be compared with chance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.figures import save_figure
from wrapperlens.analysis.positions import Positions, gather_positions, resolve_positions
from wrapperlens.analysis.pruning_units import (
    ELIGIBLE_PRESETS,
    PruneConfig,
    PruneScores,
    PruneSweep,
    PruneUnit,
    eligible_parameters,
    evaluate_prefixes,
    pruned,
    sorted_ks,
    sum_per_unit,
)

if TYPE_CHECKING:
    from wrapperlens.analysis.pruning_control import RandomPruneSweep

__all__ = [
    "LossFn",
    "answer_loss",
    "answer_accuracy",
    "pruning_scores",
    "prune_sweep",
    "plot_prune_sweep",
    # from `pruning_units`, importable from here as before the split
    "ELIGIBLE_PRESETS",
    "PruneConfig",
    "PruneUnit",
    "PruneScores",
    "PruneSweep",
    "eligible_parameters",
    "pruned",
]

LossFn = Callable[[HookedTransformer], Float[Tensor, ""]]


def answer_loss(
    tokens: Int[Tensor, "batch pos"], positions: Positions, answers: Int[Tensor, "batch"]
) -> LossFn:
    """A `loss_fn(model)`: cross-entropy of the answer token predicted at `positions`.

    For pruning, pass pretraining-task inputs (O_PT ∘ X) and their pretraining answers.
    """
    index = resolve_positions(positions, tokens.shape[0], tokens.shape[1])

    def loss_fn(model: HookedTransformer) -> Float[Tensor, ""]:
        logits = model(tokens.to(model.cfg.device))
        return F.cross_entropy(gather_positions(logits, index), answers.to(logits.device))

    return loss_fn


@torch.no_grad()
def answer_accuracy(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    positions: Positions,
    answers: Int[Tensor, "batch"],
) -> float:
    """Exact-match accuracy of the greedy token at `positions`
    (docs/choices.md#the-accuracy-metric)."""
    index = resolve_positions(positions, tokens.shape[0], tokens.shape[1])
    logits = gather_positions(model(tokens.to(model.cfg.device)), index)
    return (logits.argmax(-1).cpu() == answers.cpu()).float().mean().item()


def _gradients(model: HookedTransformer, loss_fn: LossFn, names: list[str]) -> list[Tensor]:
    """d loss / d param for `names`, in eval mode (no dropout), leaving `.grad` untouched."""
    params = dict(model.named_parameters())
    was_training = model.training
    flags = {name: params[name].requires_grad for name in names}
    model.eval()
    try:
        for name in names:
            params[name].requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model)
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    finally:
        for name, flag in flags.items():
            params[name].requires_grad_(flag)
        model.train(was_training)
    return [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]


def pruning_scores(
    model: HookedTransformer, loss_fn: LossFn, config: PruneConfig = PruneConfig()
) -> PruneScores:
    """Score every eligible unit by g·w, with g the gradient of `loss_fn(model)` (one backward).

    Args:
        model: The (fine-tuned) model; not modified, and its `.grad` fields are not touched.
        loss_fn: ``loss_fn(model) -> scalar``: the pretraining-task loss, e.g. `answer_loss`.
        config: Which units to score.

    Returns:
        `PruneScores` whose `scores[name]` holds one g·w per unit of parameter `name`: its
        leading axes for rows by input (``[n_heads, d_head]`` for ``attn.W_O``, ``[d_mlp]`` for
        ``mlp.W_out``), see `PruneScores`.
    """
    names = eligible_parameters(model, config.eligible)
    params = dict(model.named_parameters())
    scores = {}
    for name, grad in zip(names, _gradients(model, loss_fn, names)):
        scores[name] = sum_per_unit(name, (grad * params[name]).detach().float().cpu(), config)
    return PruneScores(scores=scores, config=config)


def prune_sweep(
    model: HookedTransformer,
    loss_fn: LossFn,
    ks: Sequence[int],
    evaluate: Callable[[HookedTransformer], dict[str, float]],
    config: PruneConfig = PruneConfig(),
) -> PruneSweep:
    """Prune the top-K units for every K in `ks` and evaluate; one gradient for all K.

    Args:
        model: The fine-tuned model; left bit-identical afterwards.
        loss_fn: Pretraining-task loss (see `pruning_scores`).
        ks: Numbers of units to prune, e.g. ``range(16)``; sorted and de-duplicated.
        evaluate: ``evaluate(model) -> {"acc_pt_cte0": ..., "acc_ft_cte1": ..., ...}``.
        config: Which units to score.

    Returns:
        A `PruneSweep` whose `units` are the top-max(ks) units, best first.
    """
    ks = sorted_ks(ks)
    scores = pruning_scores(model, loss_fn, config)
    units = scores.top(ks[-1])
    metrics = evaluate_prefixes(model, units, ks, evaluate)
    return PruneSweep(ks=ks, metrics=metrics, units=units, config=config)


def plot_prune_sweep(
    sweep: PruneSweep,
    path: str | Path,
    title: str | None = None,
    control: RandomPruneSweep | None = None,
) -> Path:
    """Plot every metric of `sweep` against K into a PNG at `path`; `control` dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for metric in sweep.metrics[0]:
        (line,) = ax.plot(sweep.ks, sweep.curve(metric), marker="o", label=metric)
        if control is not None:
            ax.plot(control.ks, control.curve(metric), linestyle="--", color=line.get_color(),
                    label=f"{metric}, random units (mean of {len(control.per_draw)})")
    ax.set(xlabel="units pruned (K)", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.set_title(title or f"g·w pruning ({sweep.config.granularity}s)")
    ax.legend(fontsize="small")
    return save_figure(fig, path)
