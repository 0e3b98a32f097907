"""The units of g·w pruning: which weights one unit is, a score per unit, zeroing them reversibly.

Shared by the top-K sweep (`wrapperlens.analysis.pruning`) and its random-unit control
(`wrapperlens.analysis.pruning_control`): both rank units of the same eligible matrices and
evaluate the model with the first K of them zeroed (`evaluate_prefixes`, into a `PruneSweep`).

Units. A *weight* is one entry of a parameter. A *row* is a slice of a weight matrix along one
axis, scored by the sum of g·w over its entries and zeroed as a whole. TransformerLens stores every
linear map as ``[..., d_in, d_out]`` (``x @ W``), the transpose of ``torch.nn.Linear.weight``:

- ``unit_axis="input"`` (default): a unit is TransformerLens's row ``W[..., i, :]``, every weight
  leaving input coordinate i. For ``mlp.W_out [d_mlp, d_model]`` that is MLP neuron i's output
  vector; for ``attn.W_O [n_heads, d_head, d_model]`` it is head h's z-dimension i's output. Both
  remove one hidden unit's contribution to the residual stream, which is what worked best at CPU
  scale (docs/choices.md#pcfg-cpu-pruning-units: W_out rows together with W_O rows). For
  ``mlp.W_in [d_model, d_mlp]`` it is residual coordinate i's input to every neuron.
- ``unit_axis="output"``: a unit is ``W[..., :, j]``, every weight entering output coordinate j,
  i.e. a row of ``nn.Linear.weight`` as in minGPT, which is the paper's literal "a row in the
  weight matrix". For ``mlp.W_in`` this is neuron j's input vector.

Eligible matrices are a preset name or a tuple of parameter names (``"blocks.1.mlp.W_out"``) or
suffixes that match in every block (``"mlp.W_out"``). Biases, LayerNorm weights, the embeddings
and the unembedding are never pruned unless named explicitly.

Pruning is reversible: `pruned` zeroes units inside a ``with`` block and writes the saved values
back afterwards, bit for bit. (`wrapperlens.analysis.ablation` removes heads and MLP neurons
through hooks instead, leaving the weights alone.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.components import LINEAR_WEIGHTS, output_weight_suffix

__all__ = [
    "ELIGIBLE_PRESETS",
    "PruneConfig",
    "PruneUnit",
    "PruneScores",
    "PruneSweep",
    "eligible_parameters",
    "sum_per_unit",
    "pruned",
    "sorted_ks",
    "evaluate_prefixes",
]

# Suffixes of block parameters (`wrapperlens.components`: the block parts' linear maps, and the
# matrices that write a component into the residual stream); entries a model lacks (gated MLPs,
# grouped-query K/V) are skipped.
ELIGIBLE_PRESETS: dict[str, tuple[str, ...]] = {
    "all_block_linear": LINEAR_WEIGHTS["attn"] + LINEAR_WEIGHTS["mlp"],
    "mlp_out_and_attn_out": (output_weight_suffix("mlp_out"), output_weight_suffix("attn_out")),
    "mlp_out": (output_weight_suffix("mlp_out"),),
    "mlp": LINEAR_WEIGHTS["mlp"],
    "attn": LINEAR_WEIGHTS["attn"],
}


@dataclass(frozen=True)
class PruneConfig:
    """Which units g·w pruning scores.

    Attributes:
        eligible: A key of `ELIGIBLE_PRESETS` or a tuple of parameter names / block suffixes.
        granularity: "row" (sum g·w over a row, zero the row) or "weight" (single entries).
        unit_axis: For rows: "input" = TransformerLens row ``W[..., i, :]``; "output" =
            ``W[..., :, j]`` (an ``nn.Linear`` row). See the module docstring.
    """

    eligible: str | tuple[str, ...] = "all_block_linear"
    granularity: Literal["row", "weight"] = "row"
    unit_axis: Literal["input", "output"] = "input"

    def __post_init__(self) -> None:
        if isinstance(self.eligible, str) and self.eligible not in ELIGIBLE_PRESETS:
            raise ValueError(
                f"prune.eligible={self.eligible!r} is not a preset; choose one of "
                f"{sorted(ELIGIBLE_PRESETS)} or pass a tuple of parameter names"
            )
        if not isinstance(self.eligible, str) and not self.eligible:
            raise ValueError("prune.eligible must name at least one parameter, got ()")
        if self.granularity not in ("row", "weight"):
            raise ValueError(
                f"prune.granularity must be 'row' or 'weight', got {self.granularity!r}"
            )
        if self.unit_axis not in ("input", "output"):
            raise ValueError(f"prune.unit_axis must be 'input' or 'output', got {self.unit_axis!r}")


@dataclass(frozen=True)
class PruneUnit:
    """One prunable unit: ``param[index]``, where ``None`` in `index` spans a whole axis.

    Attributes:
        param: Parameter name, e.g. "blocks.0.mlp.W_out".
        index: One entry per parameter axis: an int, or None for "the whole axis".
        score: Its g·w score (summed over the row for rows).
    """

    param: str
    index: tuple[int | None, ...]
    score: float

    @property
    def selector(self) -> tuple[int | slice, ...]:
        return tuple(slice(None) if i is None else i for i in self.index)

    @property
    def label(self) -> str:
        return f"{self.param}[{', '.join(':' if i is None else str(i) for i in self.index)}]"


def eligible_parameters(model: HookedTransformer, eligible: str | tuple[str, ...]) -> list[str]:
    """Names of the parameters that `eligible` selects, in `named_parameters` order.

    Raises:
        ValueError: If an explicitly named entry matches nothing, or nothing matches at all.
    """
    names = [name for name, _ in model.named_parameters()]
    preset = isinstance(eligible, str)
    entries = ELIGIBLE_PRESETS[eligible] if preset else eligible

    def matches(name: str, entry: str) -> bool:
        return name == entry or (name.startswith("blocks.") and name.endswith("." + entry))

    for entry in () if preset else entries:
        if not any(matches(name, entry) for name in names):
            raise ValueError(f"prune.eligible entry {entry!r} matches no parameter of the model")
    selected = [name for name in names if any(matches(name, e) for e in entries)]
    if not selected:
        raise ValueError(f"prune.eligible={eligible!r} selects no parameter of the model")
    return selected


@dataclass
class PruneScores:
    """g·w per unit for every eligible parameter: `scores[name]` indexes units of that parameter.

    For rows with unit_axis "input" a parameter ``[..., a, b]`` has scores ``[..., a]``; with
    "output" ``[..., b]``; for single weights the scores have the parameter's shape. (So
    ``attn.W_O [n_heads, d_head, d_model]`` rows by input have scores ``[n_heads, d_head]``.)
    """

    scores: dict[str, Float[Tensor, "..."]]
    config: PruneConfig

    @property
    def n_units(self) -> int:
        return sum(s.numel() for s in self.scores.values())

    def _index(self, name: str, flat: int) -> tuple[int | None, ...]:
        unit = [int(i) for i in torch.unravel_index(torch.tensor(flat), self.scores[name].shape)]
        if self.config.granularity == "weight":
            return tuple(unit)
        if self.config.unit_axis == "input":
            return (*unit, None)
        return (*unit[:-1], None, unit[-1])

    def unit(self, position: int) -> PruneUnit:
        """The unit at `position` of all units listed in parameter order, then flat index."""
        for name, scores in self.scores.items():
            if position < scores.numel():
                score = float(scores.flatten()[position])
                return PruneUnit(param=name, index=self._index(name, position), score=score)
            position -= scores.numel()
        raise IndexError(f"unit position out of range: there are {self.n_units} units")

    def top(self, k: int) -> list[PruneUnit]:
        """The k units with the largest g·w, best first (ties: parameter order, then index)."""
        if not 0 <= k <= self.n_units:
            raise ValueError(f"k={k} must be in [0, {self.n_units}] (the number of units)")
        flat = torch.cat([s.flatten() for s in self.scores.values()])
        order = torch.sort(flat, descending=True, stable=True).indices[:k]
        return [self.unit(int(i)) for i in order]


def sum_per_unit(name: str, per_weight: Tensor, config: PruneConfig) -> Tensor:
    """Sum a per-weight tensor of parameter `name` over each unit (rows) or keep it (weights)."""
    if config.granularity == "weight":
        return per_weight
    if per_weight.ndim < 2:
        raise ValueError(f"{name} has shape {tuple(per_weight.shape)}: rows need a matrix")
    return per_weight.sum(-1) if config.unit_axis == "input" else per_weight.sum(-2)


def count_units(model: HookedTransformer, config: PruneConfig) -> int:
    """How many units of `model` `config` makes prunable (every unit a sweep could prune)."""
    params = dict(model.named_parameters())
    return sum(sum_per_unit(name, torch.zeros_like(params[name], device="meta"), config).numel()
               for name in eligible_parameters(model, config.eligible))


@contextmanager
def pruned(model: HookedTransformer, units: Iterable[PruneUnit]) -> Iterator[HookedTransformer]:
    """Zero `units` inside the ``with`` block; restore the exact saved values afterwards."""
    params = dict(model.named_parameters())
    saved: list[tuple[Tensor, tuple[int | slice, ...], Tensor]] = []
    try:
        with torch.no_grad():
            for unit in units:
                if unit.param not in params:
                    raise ValueError(f"pruned: the model has no parameter {unit.param!r}")
                param = params[unit.param]
                if len(unit.index) != param.ndim:
                    raise ValueError(
                        f"pruned: {unit.label} has {len(unit.index)} indices for "
                        f"{unit.param} of shape {tuple(param.shape)}"
                    )
                saved.append((param, unit.selector, param[unit.selector].clone()))
                param[unit.selector] = 0.0
        yield model
    finally:
        with torch.no_grad():
            for param, selector, values in reversed(saved):
                param[selector] = values


@dataclass
class PruneSweep:
    """Metrics after pruning the first K of a list of units, for each K (K units ⊂ K+1 units).

    `prune_sweep` lists the top units by g·w, best first; each draw of `random_prune_sweep`
    lists a random permutation of the eligible units.
    """

    ks: list[int]
    metrics: list[dict[str, float]]
    units: list[PruneUnit]
    config: PruneConfig

    def curve(self, metric: str) -> list[float]:
        return [m[metric] for m in self.metrics]

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "ks": self.ks,
            "metrics": self.metrics,
            "units": [{"label": u.label, **asdict(u)} for u in self.units],
        }


def sorted_ks(ks: Sequence[int]) -> list[int]:
    """The numbers of units of a sweep: `ks` sorted and de-duplicated; non-empty and >= 0."""
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 0:
        raise ValueError(f"ks must be non-empty and >= 0, got {ks}")
    return ks


def evaluate_prefixes(
    model: HookedTransformer,
    units: list[PruneUnit],
    ks: list[int],
    evaluate: Callable[[HookedTransformer], dict[str, float]],
) -> list[dict[str, float]]:
    """``evaluate(model)`` with ``units[:k]`` pruned, for each k in `ks`."""
    metrics = []
    for k in ks:
        with pruned(model, units[:k]):
            result = evaluate(model)
        if not isinstance(result, dict):
            raise TypeError(f"evaluate must return a dict of metrics, got {type(result).__name__}")
        metrics.append({name: float(value) for name, value in result.items()})
    return metrics
