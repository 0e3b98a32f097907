"""Single-step g·w pruning (Jain et al. 2024, App. D, Alg. 3).

The question pruning asks: is the pretraining capability still inside the fine-tuned model,
blocked by a few units? Take the gradient g of the *pretraining-task* loss on the fine-tuned
model and score every unit by g·w. Zeroing a weight w changes the loss by about -g·w (first-order
Taylor expansion, L(0) ≈ L(w) - g·w), so the units with the **largest g·w** are the ones whose
removal is predicted to **decrease** the pretraining loss most. Setting the top-K of them to zero
(K = 0, 1, 2, ..., cumulative, one gradient only) and watching the pretraining accuracy come back
is the paper's evidence for a "wrapper".

Units. A *weight* is one entry of a parameter. A *row* is a slice of a weight matrix along one
axis, scored by the sum of g·w over its entries and zeroed as a whole. TransformerLens stores every
linear map as ``[..., d_in, d_out]`` (``x @ W``), the transpose of ``torch.nn.Linear.weight``:

- ``unit_axis="input"`` (default): a unit is TransformerLens's row ``W[..., i, :]``, every weight
  leaving input coordinate i. For ``mlp.W_out [d_mlp, d_model]`` that is MLP neuron i's output
  vector; for ``attn.W_O [n_heads, d_head, d_model]`` it is head h's z-dimension i's output. Both
  remove one hidden unit's contribution to the residual stream, which is what worked best at CPU
  scale (docs/choices.md §S7: W_out rows together with W_O rows). For ``mlp.W_in [d_model, d_mlp]``
  it is residual coordinate i's input to every neuron.
- ``unit_axis="output"``: a unit is ``W[..., :, j]``, every weight entering output coordinate j,
  i.e. a row of ``nn.Linear.weight`` as in minGPT, which is the paper's literal "a row in the
  weight matrix". For ``mlp.W_in`` this is neuron j's input vector.

Eligible matrices are a preset name or a tuple of parameter names (``"blocks.1.mlp.W_out"``) or
suffixes that match in every block (``"mlp.W_out"``). Biases, LayerNorm weights, the embeddings
and the unembedding are never pruned unless named explicitly.

The control: `wrapperlens.analysis.pruning_control.random_prune_sweep` prunes K randomly drawn
eligible units instead of the top-K, so a sweep can be compared with chance.

Pruning is reversible: `pruned` zeroes units inside a ``with`` block and writes the saved values
back afterwards, bit for bit. (`wrapperlens.analysis.ablation` removes heads and MLP neurons
through hooks instead, leaving the weights alone.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.figures import save_figure
from wrapperlens.analysis.positions import Positions, gather_positions, resolve_positions
from wrapperlens.components import LINEAR_WEIGHTS, output_weight_suffix

if TYPE_CHECKING:
    from wrapperlens.analysis.pruning_control import RandomPruneSweep

__all__ = [
    "LossFn",
    "ELIGIBLE_PRESETS",
    "PruneConfig",
    "PruneUnit",
    "PruneScores",
    "PruneSweep",
    "answer_loss",
    "answer_accuracy",
    "eligible_parameters",
    "pruning_scores",
    "pruned",
    "prune_sweep",
    "plot_prune_sweep",
]

LossFn = Callable[[HookedTransformer], Float[Tensor, ""]]

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
    """Exact-match accuracy of the greedy token at `positions` (docs/choices.md §11)."""
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
        scores[name] = _per_unit(name, (grad * params[name]).detach().float().cpu(), config)
    return PruneScores(scores=scores, config=config)


def _per_unit(name: str, per_weight: Tensor, config: PruneConfig) -> Tensor:
    """Sum a per-weight tensor of parameter `name` over each unit (rows) or keep it (weights)."""
    if config.granularity == "weight":
        return per_weight
    if per_weight.ndim < 2:
        raise ValueError(f"{name} has shape {tuple(per_weight.shape)}: rows need a matrix")
    return per_weight.sum(-1) if config.unit_axis == "input" else per_weight.sum(-2)


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
    """Metrics after pruning the top-K units, for each K (cumulative: K units ⊂ K+1 units)."""

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
    ks = _sorted_ks(ks)
    scores = pruning_scores(model, loss_fn, config)
    units = scores.top(ks[-1])
    metrics = _evaluate_prefixes(model, units, ks, evaluate)
    return PruneSweep(ks=ks, metrics=metrics, units=units, config=config)


def _sorted_ks(ks: Sequence[int]) -> list[int]:
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 0:
        raise ValueError(f"ks must be non-empty and >= 0, got {ks}")
    return ks


def _evaluate_prefixes(
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
