"""The random-unit control of g·w pruning: is pruning the top-K units special, or would any K do?

`wrapperlens.analysis.pruning.prune_sweep` zeroes the K units with the largest g·w and watches the
pretraining accuracy come back (Jain et al. 2024, App. D, Fig. 7). That is evidence for a wrapper
only if pruning K *random* units of the same kind does not do the same: zeroing a few units could
just as well disrupt the fine-tuned behaviour anywhere and let a default answer through.
`random_prune_sweep` measures that baseline with the same eligible units, granularity and unit
axis, and the same reversible masking (`pruned`), so the two curves differ only in which units
were chosen. Both sweeps are built on the units of `wrapperlens.analysis.pruning_units`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from transformer_lens import HookedTransformer

from wrapperlens.analysis.pruning_units import (
    PruneConfig,
    PruneScores,
    PruneSweep,
    eligible_parameters,
    evaluate_prefixes,
    sorted_ks,
    sum_per_unit,
)

__all__ = ["RandomPruneSweep", "random_prune_sweep"]


@dataclass
class RandomPruneSweep:
    """The random-unit control of `prune_sweep`, made by `random_prune_sweep`.

    Attributes:
        ks: Numbers of units pruned, ascending.
        metrics: ``metrics[i][name]``: the mean over the draws at ``ks[i]``.
        per_draw: ``per_draw[d]`` is draw d as a `PruneSweep`: its ``metrics[i]`` at ``ks[i]``,
            and its `units`, the first max(ks) units of its permutation (score 0.0: no gradient
            is taken).
        seed: The seed of the `torch.Generator` the draws came from.
    """

    ks: list[int]
    metrics: list[dict[str, float]]
    per_draw: list[PruneSweep]
    seed: int

    def curve(self, metric: str) -> list[float]:
        return [m[metric] for m in self.metrics]

    def to_dict(self) -> dict:
        draws = [{"metrics": d.metrics, "units": [u.label for u in d.units]} for d in self.per_draw]
        return {
            "config": asdict(self.per_draw[0].config),
            "draws": len(draws),
            "seed": self.seed,
            "nested": True,  # draw d prunes the first k of one permutation at K = k
            "ks": self.ks,
            "metrics": self.metrics,
            "per_draw": draws,
        }


def random_prune_sweep(
    model: HookedTransformer,
    ks: Sequence[int],
    evaluate: Callable[[HookedTransformer], dict[str, float]],
    config: PruneConfig = PruneConfig(),
    draws: int = 5,
    seed: int = 0,
) -> RandomPruneSweep:
    """Prune K eligible units drawn uniformly at random (without replacement) and evaluate.

    Draws are *nested*, like the top-K prefixes of `prune_sweep`: draw d is one random
    permutation of all eligible units (listed in parameter order, then flat index, as
    `PruneScores.unit` numbers them), and K = k prunes its first k units, so the K-unit set grows
    with K within a draw. The permutations are ``torch.randperm(n_units, generator=g)``, called
    once per draw in order, with ``g = torch.Generator().manual_seed(seed)``: a seed fixes every
    unit drawn.

    Args:
        model: The model; left bit-identical afterwards (units are zeroed inside `pruned`).
        ks: Numbers of units to prune, as for `prune_sweep`; at most the number of units.
        evaluate: ``evaluate(model) -> {metric: value}``, as for `prune_sweep`.
        config: Which units are eligible (matrices, granularity, unit axis), as for `prune_sweep`.
        draws: Independent permutations (>= 1); `RandomPruneSweep.metrics` is their mean.
        seed: Seed of the generator.

    Returns:
        A `RandomPruneSweep`: the mean `metrics` per K and every draw in `per_draw`.
    """
    ks = sorted_ks(ks)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    params = dict(model.named_parameters())
    names = eligible_parameters(model, config.eligible)
    # One zero per unit: the table `PruneScores.unit` turns a position into a unit's index.
    table = PruneScores(
        {n: sum_per_unit(n, torch.zeros(params[n].shape), config) for n in names}, config
    )
    if ks[-1] > table.n_units:
        raise ValueError(f"k={ks[-1]} must be in [0, {table.n_units}] (the number of units)")
    generator, per_draw = torch.Generator().manual_seed(seed), []
    for _ in range(draws):
        order = torch.randperm(table.n_units, generator=generator)[: ks[-1]]
        units = [table.unit(int(i)) for i in order]
        metrics = evaluate_prefixes(model, units, ks, evaluate)
        per_draw.append(PruneSweep(ks=ks, metrics=metrics, units=units, config=config))
    mean = [{name: sum(d.metrics[i][name] for d in per_draw) / draws for name in metrics_k}
            for i, metrics_k in enumerate(per_draw[0].metrics)]
    return RandomPruneSweep(ks=ks, metrics=mean, per_draw=per_draw, seed=seed)
