"""Wrapper map: where in the network does fine-tuning's change live? (beyond the paper)

Jain et al. (2024) argue that fine-tuning often learns a small *wrapper* on top of an intact
capability. Given a pretrained model and its fine-tuned copy (same architecture), this module
scores every component three independent ways and ranks them, so the three views can be compared
side by side:

1. **Pruning score** (`pruning.py`): g·w on the fine-tuned model, with g the gradient of the
   *pretraining-task* loss, summed over the component's output rows: ``attn.W_O[h]`` for head h,
   ``mlp.W_out[n]`` for neuron n, the whole ``W_O`` / ``W_out`` for a layer's attention / MLP. By
   first-order Taylor expansion it predicts how much zeroing the component's output *lowers* the
   pretraining loss: a high score marks a component that blocks the old capability.
2. **Cross-model patching effect** (`patching.py`): the pretrained model's activation of the
   component, spliced into the fine-tuned model's run on pretraining-task inputs (all positions),
   and the change of a pretraining-task metric (default: probability of the correct answer):
   ``metric(fine-tuned, patched) - metric(fine-tuned)``. Heads are patched at component ``z``,
   neurons at ``post``, layers at ``attn_out`` / ``mlp_out`` (`KIND_COMPONENTS`). A z or post patch
   restores what the component *computes* (its input-side weights and everything upstream); a
   change of the head's own ``W_O`` or the neuron's ``W_out`` row is seen by the weight change and
   by the layer-level ``attn_out`` / ``mlp_out`` patch instead. `patch_restored` is the effect as a
   fraction of the gap ``metric(pretrained) - metric(fine-tuned)``.
3. **Weight change** (`weight_change.py`): ``‖W_ft - W_pt‖ / ‖W_pt‖`` over the component's
   own parameters (a head's slices of ``W_Q, W_K, W_V, W_O`` and their biases, a neuron's
   ``W_in`` column and ``W_out`` row, every parameter of a layer part and its LayerNorm).

Ranks are within a kind of component (heads among heads, neurons among neurons, layer parts among
layer parts), 1 = first: pruning by the signed score (as pruning picks units), patching by the
absolute effect (a change in either direction is part of the change), weight change by size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.figures import save_figure
from wrapperlens.analysis.logit_metrics import Metric, answer_probability
from wrapperlens.analysis.patching import ActivationPatcher, Patch
from wrapperlens.analysis.positions import Positions
from wrapperlens.analysis.pruning import LossFn, PruneConfig, answer_loss, pruning_scores
from wrapperlens.analysis.run_pair import check_same_architecture
from wrapperlens.analysis.weight_change import weight_changes
from wrapperlens.components import exists, output_weight, output_weight_suffix, unit_count

__all__ = [
    "KINDS",
    "KIND_COMPONENTS",
    "SCORES",
    "WrapperMapConfig",
    "WrapperMap",
    "weight_changes",
    "wrapper_map",
    "plot_wrapper_map",
]

#: Component kinds (one attention head, one MLP neuron, a layer's attention, a layer's MLP) and
#: the `wrapperlens.components` component each one is a unit of: a head is a unit of z, a layer's
#: attention the whole of attn_out.
KIND_COMPONENTS: dict[str, str] = {
    "head": "z", "neuron": "post", "attn": "attn_out", "mlp": "mlp_out",
}
KINDS = tuple(KIND_COMPONENTS)
#: The three scores of every component (columns of the table and of the plot).
SCORES = ("prune_score", "patch_effect", "weight_change")


@dataclass(frozen=True)
class WrapperMapConfig:
    """What a wrapper map scores.

    Attributes:
        kinds: Component kinds to include (subset of `KINDS`).
        patch_neurons: Patch every MLP neuron (d_mlp patched forwards per layer); False leaves
            the neurons' patch effect empty (None), which is much faster on wide MLPs.
        patches_per_forward: Passed to the patcher (0 = its automatic choice).
        eps: Added to ‖W_pt‖ in the relative weight change (a zero-initialised bias).
    """

    kinds: tuple[str, ...] = KINDS
    patch_neurons: bool = True
    patches_per_forward: int = 0
    eps: float = 1e-12

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if not kinds or unknown:
            raise ValueError(
                f"wrapper_map.kinds must be a non-empty subset of {KINDS}, got {kinds}"
            )
        if self.patches_per_forward < 0:
            raise ValueError(
                f"wrapper_map.patches_per_forward must be >= 0, got {self.patches_per_forward}"
            )
        if self.eps < 0:
            raise ValueError(f"wrapper_map.eps must be >= 0, got {self.eps}")


def _label(kind: str, layer: int, index: int | None) -> str:
    return {
        "head": f"L{layer}H{index}",
        "neuron": f"L{layer}N{index}",
        "attn": f"L{layer} attn",
        "mlp": f"L{layer} mlp",
    }[kind]


def _components(
    model: HookedTransformer, kinds: Sequence[str]
) -> list[tuple[str, int, int | None]]:
    """(kind, layer, unit index or None) of every component of `kinds` that `model` has."""
    cfg = model.cfg
    out: list[tuple[str, int, int | None]] = []
    for kind in kinds:
        component = KIND_COMPONENTS[kind]
        if not exists(component, cfg):
            continue
        count = unit_count(component, cfg)
        for layer in range(cfg.n_layers):
            indices = [None] if count is None else range(count)
            out += [(kind, layer, index) for index in indices]
    return out


# -------------------------------------------------------------------------------- the map
@dataclass
class WrapperMap:
    """Scores and ranks of every component, one row (a dict) per component.

    Row keys: kind, layer, index (None for layer parts), label, prune_score, patch_effect,
    patch_restored, weight_change, rank_prune, rank_patch, rank_weight.

    Attributes:
        rows: The table.
        metric_pretrained: The patching metric on the pretrained (source) run.
        metric_finetuned: The patching metric on the fine-tuned (target) run.
        shape: {"n_layers", "n_heads", "d_mlp"} of the models.
        config: The config used.
    """

    rows: list[dict]
    metric_pretrained: float
    metric_finetuned: float
    shape: dict[str, int]
    config: WrapperMapConfig = field(default_factory=WrapperMapConfig)

    def top(self, kind: str, by: str = "weight_change", k: int = 5) -> list[dict]:
        """The k best-ranked rows of `kind` by one of `SCORES`."""
        if by not in SCORES:
            raise ValueError(f"by must be one of {SCORES}, got {by!r}")
        rank = {
            "prune_score": "rank_prune",
            "patch_effect": "rank_patch",
            "weight_change": "rank_weight",
        }[by]
        rows = [r for r in self.rows if r["kind"] == kind and r[rank] is not None]
        return sorted(rows, key=lambda r: r[rank])[:k]

    def grid(self, kind: str, score: str) -> Float[Tensor, "n_layers width"]:
        """One score as a `[n_layers, width]` grid, width = n_heads, d_mlp or 1 (a layer part);
        NaN where a component has no value."""
        count = unit_count(KIND_COMPONENTS[kind], self.shape)
        width = 1 if count is None else count
        out = torch.full((self.shape["n_layers"], width), float("nan"))
        for r in self.rows:
            if r["kind"] == kind and r[score] is not None:
                out[r["layer"], r["index"] or 0] = r[score]
        return out

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "metric_pretrained": self.metric_pretrained,
            "metric_finetuned": self.metric_finetuned,
            "shape": self.shape,
            "config": asdict(self.config),
        }

    def table(self, k: int = 3) -> str:
        """Plain text: per kind, the top-k components by each score."""
        lines = [
            f"patching metric: pretrained {self.metric_pretrained:.4f}, "
            f"fine-tuned {self.metric_finetuned:.4f}"
        ]
        for kind in self.config.kinds:
            if not any(r["kind"] == kind for r in self.rows):
                continue
            for score in SCORES:
                top = self.top(kind, score, k)
                if top:
                    cells = ", ".join(f"{r['label']} ({r[score]:+.3g})" for r in top)
                    lines.append(f"{kind:6s} by {score:13s}: {cells}")
        return "\n".join(lines)


def _ranks(values: list[float | None], key) -> list[int | None]:
    present = [i for i, v in enumerate(values) if v is not None]
    order = sorted(present, key=lambda i: (-key(values[i]), i))
    ranks: list[int | None] = [None] * len(values)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def wrapper_map(
    pretrained: HookedTransformer,
    finetuned: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    answers: Int[Tensor, "batch"],
    positions: Positions = -1,
    *,
    metric: Metric | None = None,
    loss_fn: LossFn | None = None,
    config: WrapperMapConfig = WrapperMapConfig(),
) -> WrapperMap:
    """Rank every component of a pretrained / fine-tuned pair by three scores (module docstring).

    Args:
        pretrained: The model before fine-tuning (patching source).
        finetuned: The model after (patching target; pruning gradient taken here). Neither model
            is modified.
        tokens: Pretraining-task inputs, e.g. "count a" prompts up to the answer-request token.
        answers: The pretraining-task answer token of each input.
        positions: Where the answer is predicted (int for all, or one per input).
        metric: Patching metric of the logits (a 0-d tensor); default the mean probability of
            `answers` at `positions`.
        loss_fn: Pruning loss ``loss_fn(model) -> scalar``; default cross-entropy of `answers`.
        config: Which kinds, and patching settings.

    Returns:
        A `WrapperMap` (`.rows`, `.table()`, `.top(kind, by)`; plot with `plot_wrapper_map`).
    """
    check_same_architecture(pretrained, finetuned)
    metric = metric or answer_probability(answers, position=positions)
    loss_fn = loss_fn or answer_loss(tokens, positions, answers)
    cfg = finetuned.cfg
    components = _components(finetuned, config.kinds)

    # (a) g·w of the output rows, summed per component: the output weight's first axis is the
    # unit (W_O[head], W_out[neuron]); a layer part sums all of its units.
    present = [c for c in KIND_COMPONENTS.values() if exists(c, cfg)]
    eligible = tuple(dict.fromkeys(output_weight_suffix(c) for c in present))
    scores = pruning_scores(finetuned, loss_fn, PruneConfig(eligible, "row", "input")).scores
    prune = []
    for kind, layer, index in components:
        rows = scores[output_weight(KIND_COMPONENTS[kind], layer)]
        per_unit = rows.flatten(1).sum(1) if rows.ndim > 1 else rows  # [n_heads] or [d_mlp]
        prune.append(float(per_unit.sum() if index is None else per_unit[index]))

    # (b) cross-model patching, pretrained -> fine-tuned, all positions at once.
    patcher = ActivationPatcher(finetuned, tokens, source_model=pretrained)
    with torch.no_grad():
        m_ft = float(metric(patcher.target_logits))
        m_pt = float(metric(patcher.source_logits))
    wanted = [
        i for i, (kind, _, _) in enumerate(components) if kind != "neuron" or config.patch_neurons
    ]
    patches = [
        Patch(components[i][1], KIND_COMPONENTS[components[i][0]], None, components[i][2])
        for i in wanted
    ]
    patch: list[float | None] = [None] * len(components)
    if patches:
        values = patcher.patched_metrics(
            patches, metric, patches_per_forward=config.patches_per_forward
        )
        for i, value in zip(wanted, values.tolist()):
            patch[i] = value - m_ft
    gap = m_pt - m_ft

    # (c) relative weight change.
    change = weight_changes(pretrained, finetuned, components, config.eps)

    rows = []
    for i, (kind, layer, index) in enumerate(components):
        rows.append(
            {
                "kind": kind,
                "layer": layer,
                "index": index,
                "label": _label(kind, layer, index),
                "prune_score": prune[i],
                "patch_effect": patch[i],
                "patch_restored": None if patch[i] is None or abs(gap) < 1e-9 else patch[i] / gap,
                "weight_change": change[i],
            }
        )
    for kind in config.kinds:
        idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
        for rank_key, score, key in (
            ("rank_prune", "prune_score", lambda v: v),
            ("rank_patch", "patch_effect", abs),
            ("rank_weight", "weight_change", lambda v: v),
        ):
            ranks = _ranks([rows[i][score] for i in idx], key)
            for i, rank in zip(idx, ranks):
                rows[i][rank_key] = rank
    shape = {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_mlp": cfg.d_mlp or 0}
    return WrapperMap(rows, m_pt, m_ft, shape, config)


def plot_wrapper_map(wmap: WrapperMap, path: str | Path, title: str | None = None) -> Path:
    """Layer × component heatmaps of the three scores into a PNG.

    Rows of panels: heads ([layer, head]), neurons ([layer, neuron]) and layer parts
    ([layer, attn | mlp]); columns: pruning score, patching effect, relative weight change.
    Signed scores use a diverging map centred on 0; the best-ranked component of each panel is
    boxed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    groups = [
        g
        for g in (("head",), ("neuron",), ("attn", "mlp"))
        if any(r["kind"] in g for r in wmap.rows)
    ]
    titles = {
        "prune_score": "pruning score g·w (PT loss)",
        "patch_effect": "patching effect PT→FT (PT metric)",
        "weight_change": "relative weight change",
    }
    fig, axes = plt.subplots(len(groups), 3, figsize=(13, 2.6 * len(groups) + 0.6), squeeze=False)
    for row, group in enumerate(groups):
        for col, score in enumerate(SCORES):
            ax = axes[row][col]
            grids = [wmap.grid(kind, score) for kind in group if kind in wmap.config.kinds]
            grid = torch.cat(grids, dim=1) if grids else torch.full((1, 1), float("nan"))
            finite = grid[~grid.isnan()]
            bound = float(finite.abs().max()) if finite.numel() else 1.0
            bound = bound or 1.0
            signed = score != "weight_change"
            image = ax.imshow(
                grid.numpy(),
                aspect="auto",
                interpolation="nearest",
                cmap="RdBu_r" if signed else "viridis",
                vmin=-bound if signed else 0.0,
                vmax=bound,
            )
            fig.colorbar(image, ax=ax, fraction=0.046)
            key = grid.abs() if score == "patch_effect" else grid
            key = torch.nan_to_num(key, nan=-float("inf")).flatten()
            if finite.numel() and float(finite.abs().max()) > 0:  # an all-zero panel has no best
                y, x = divmod(int(key.argmax()), grid.shape[1])
                ax.add_patch(
                    Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", lw=2)
                )
            ax.set_yticks(range(grid.shape[0]))
            ax.set_ylabel("layer")
            if group == ("attn", "mlp"):
                ax.set_xticks(range(grid.shape[1]))
                ax.set_xticklabels([k for k in group if k in wmap.config.kinds])
            else:
                ax.xaxis.get_major_locator().set_params(integer=True)
                ax.set_xlabel(group[0])
            ax.set_title(f"{group[0] if len(group) == 1 else 'layer'}: {titles[score]}", fontsize=9)
    fig.suptitle(
        title
        or f"wrapper map (patching metric: pretrained {wmap.metric_pretrained:.3f}, "
        f"fine-tuned {wmap.metric_finetuned:.3f})"
    )
    return save_figure(fig, path, dpi=110)
