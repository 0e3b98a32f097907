"""Activation patching between two runs: two inputs of one model, or two models of one shape.

A patch copies one activation of the *source* run into the *target* run and measures a metric of
the target's logits. The source and target may be

- the same model on two inputs (clean -> corrupted, as in `transformer_lens.patching`), or
- two models with the same architecture, e.g. a pretrained and a fine-tuned model, on the same or
  on different inputs: the pretrained model's activation is spliced into the fine-tuned model's
  forward (or the other way round).

A component is one of the patchable activations of `wrapperlens.components` (`COMPONENTS`:
TransformerLens's activation names). A patch copies one *unit* of it, and a sweep's result has
one axis per swept index, `result_axes(component, per_position)`; the shapes are those of the
matching `transformer_lens.patching.get_act_patch_*` functions:

| unit of the component                      | per position          | all positions   |
|--------------------------------------------|-----------------------|-----------------|
| position: the whole vector (residual       | [layer, pos]          | [layer]         |
| stream, attention or MLP output)           |                       |                 |
| head (`z`: one head's output before W_O)   | [layer, pos, head]    | [layer, head]   |
| neuron (`post`: one MLP neuron)            | [layer, pos, neuron]  | [layer, neuron] |

Each axis is as long as the list swept (default: n_layers, every position, n_heads, d_mlp). A
metric that returns one value per example adds a trailing `batch` axis.

Speed: each patched forward starts at the patched activation and recomputes only positions from
the first patched one onwards (`partial_forward.SuffixForward`); several patches can share one
forward (`patches_per_forward`), which pays on a GPU, where small models are bound by calls rather
than arithmetic. Architectures the suffix forward does not cover fall back to TransformerLens's
forward from the patched layer (`recompute="layer"`).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.logit_metrics import Metric
from wrapperlens.analysis.partial_forward import (
    ENTRY_POINTS,
    RowEdit,
    SuffixForward,
    suffix_unsupported_reason,
)
from wrapperlens.analysis.run_pair import check_same_architecture, resolve_source
from wrapperlens.components import (
    COMPONENTS,
    check_component,
    check_patchable,
    components_with_unit,
    exists,
    hook_name,
    result_axes,
    unit_count,
)

__all__ = [
    "COMPONENTS",
    "Patch",
    "PatchingConfig",
    "ActivationPatcher",
    "activation_patching",
    "check_same_architecture",
    "result_axes",
]

# The `PatchingConfig` field that picks the units of each unit kind.
_UNIT_FIELDS = {"head": "heads", "neuron": "neurons"}


@dataclass(frozen=True)
class Patch:
    """One patch: copy `component` at `layer` (one position or all; one head or neuron or the
    whole vector) from the source run into the target run."""

    layer: int
    component: str
    position: int | None = None
    index: int | None = None

    def edit(self) -> RowEdit:
        return RowEdit(self.layer, self.component, self.position, self.index)


@dataclass(frozen=True)
class PatchingConfig:
    """Which patches a sweep runs, and how.

    Attributes:
        component: One of `COMPONENTS`.
        per_position: Patch one position at a time (True) or all positions at once.
        layers: Layers to sweep (default all), in output order.
        positions: Positions to sweep when `per_position` (default all).
        heads: Heads to sweep for a component whose unit is a head, "z" (default all).
        neurons: Neurons to sweep for a component whose unit is a neuron, "post" (default all;
            there are d_mlp per layer).
        patches_per_forward: Patches batched into one forward; 0 picks a number for the
            device (`ActivationPatcher.auto_patches_per_forward`).
        recompute: "suffix" (only what a patch can change; falls back to "layer" with a warning
            for architectures it does not cover) or "layer" (every position from the patched layer
            on, through TransformerLens's forward and hooks).
    """

    component: str = "resid_pre"
    per_position: bool = True
    layers: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    neurons: tuple[int, ...] | None = None
    patches_per_forward: int = 0
    recompute: str = "suffix"

    def __post_init__(self) -> None:
        unit = check_patchable(self.component).unit
        for name in ("layers", "positions", "heads", "neurons"):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(value)
            object.__setattr__(self, name, value)
            if not value or any(not isinstance(v, int) or v < 0 for v in value):
                raise ValueError(f"{name} must be a non-empty tuple of ints >= 0, got {value!r}")
        for kind, name in _UNIT_FIELDS.items():
            if getattr(self, name) is not None and unit != kind:
                allowed = " or ".join(repr(c) for c in components_with_unit(kind))
                raise ValueError(
                    f"{name} apply to component {allowed} only, not {self.component!r}"
                )
        if self.positions is not None and not self.per_position:
            raise ValueError("positions were given but per_position=False patches all positions")
        if self.patches_per_forward < 0:
            raise ValueError(f"patches_per_forward must be >= 0, got {self.patches_per_forward}")
        if self.recompute not in ("suffix", "layer"):
            raise ValueError(f"recompute must be 'suffix' or 'layer', got {self.recompute!r}")


class ActivationPatcher:
    """Caches the source and target runs once, then runs any number of patches against them.

    Args:
        target_model: The model whose forward is patched.
        target_tokens: Its input, `[batch, pos]`.
        source_model: The model the patched activations come from (default: `target_model`).
            Must have the same architecture (`check_same_architecture`).
        source_tokens: Its input, same shape as `target_tokens` (default: `target_tokens`).

    Attributes:
        target_logits, source_logits: Logits of the two unpatched runs, `[batch, pos, d_vocab]`.
        suffix_unsupported: Why the suffix forward cannot run this model, or None.

    Both runs (and the target's weights) are read once, here: make a new patcher after changing
    a model.
    """

    def __init__(
        self,
        target_model: HookedTransformer,
        target_tokens: Int[Tensor, "batch pos"],
        *,
        source_model: HookedTransformer | None = None,
        source_tokens: Int[Tensor, "batch pos"] | None = None,
    ):
        source_model, source_tokens = resolve_source(
            target_model, target_tokens, source_model, source_tokens
        )
        self.model = target_model
        self.device = next(target_model.parameters()).device
        cfg = target_model.cfg
        present = [c for c in COMPONENTS if exists(c, cfg)]
        self.suffix_unsupported = suffix_unsupported_reason(target_model)
        extra = (
            [] if self.suffix_unsupported else SuffixForward.needed_target_components(target_model)
        )
        layers = range(cfg.n_layers)
        source_names = {hook_name(c, layer) for layer in layers for c in present}
        target_names = source_names | {hook_name(c, layer) for layer in layers for c in extra}
        with torch.no_grad():
            logits, cache = source_model.run_with_cache(
                source_tokens.to(next(source_model.parameters()).device),
                names_filter=lambda name: name in source_names,
            )
            self.source_logits = logits.to(self.device)
            self.source_acts = {k: v.to(self.device) for k, v in cache.cache_dict.items()}
            self.target_logits, cache = target_model.run_with_cache(
                target_tokens.to(self.device), names_filter=lambda name: name in target_names
            )
            self.target_acts = dict(cache.cache_dict)
        self._suffix = (
            None
            if self.suffix_unsupported
            else SuffixForward(target_model, self.target_acts, self.target_logits)
        )

    @property
    def batch(self) -> int:
        return self.target_logits.shape[0]

    @property
    def n_positions(self) -> int:
        return self.target_logits.shape[1]

    def check_patch(self, patch: Patch) -> None:
        """Raise ValueError if `patch` names an unknown component or an out-of-range index."""
        cfg = self.model.cfg
        unit = check_component(self.model, patch.component).unit
        if not 0 <= patch.layer < cfg.n_layers:
            raise ValueError(f"layer {patch.layer} is out of range for n_layers={cfg.n_layers}")
        if patch.position is not None and not 0 <= patch.position < self.n_positions:
            raise ValueError(
                f"position {patch.position} is out of range for {self.n_positions} positions"
            )
        size = unit_count(patch.component, cfg)
        if patch.index is not None and size is None:
            raise ValueError(f"component {patch.component!r} takes no head or neuron index")
        if patch.index is not None and not 0 <= patch.index < size:
            raise ValueError(f"{unit} {patch.index} is out of range for {size} {unit}s")

    def patched_metrics(
        self,
        patches: Sequence[Patch],
        metric: Metric,
        *,
        patches_per_forward: int = 0,
        recompute: str = "suffix",
    ) -> Float[Tensor, "n_patches *batch"]:
        """The metric of the target run's logits under each patch.

        Args:
            patches: Any patches (checked with `check_patch`).
            metric: Function of the logits, returning a 0-d tensor or one value per example.
            patches_per_forward: As in `PatchingConfig`.
            recompute: As in `PatchingConfig`.

        Returns:
            `[n_patches]`, or `[n_patches, batch]` for a per-example metric: the metric under
            each patch, in the order of `patches`.
        """
        if not patches:
            raise ValueError("no patches given")
        if recompute not in ("suffix", "layer"):
            raise ValueError(f"recompute must be 'suffix' or 'layer', got {recompute!r}")
        for patch in patches:
            self.check_patch(patch)
        if recompute == "suffix" and self._suffix is None:
            warnings.warn(
                f"suffix forward unsupported ({self.suffix_unsupported}); "
                "recomputing from the patched layer instead",
                stacklevel=2,
            )
            recompute = "layer"
        edits = [p.edit() for p in patches]
        read_positions = self._read_positions(metric)
        size = patches_per_forward or self.auto_patches_per_forward()
        results: list[Tensor | None] = [None] * len(edits)
        with torch.no_grad():
            for chunk in _chunks(edits, size, same_layer=recompute == "layer"):
                chunk_edits = [edits[i] for i in chunk]
                sources = [self.source_acts[hook_name(e.component, e.layer)] for e in chunk_edits]
                if recompute == "suffix":
                    logits = self._suffix.run(chunk_edits, sources, read_positions)
                else:
                    logits = self._run_from_layer(chunk_edits, sources)
                for row, i in enumerate(chunk):
                    rows = logits[row * self.batch : (row + 1) * self.batch]
                    results[i] = self._evaluate(metric, rows)
        return torch.stack(results)

    def auto_patches_per_forward(self) -> int:
        """4 x n_layers patches per forward on CPU, 64 x n_layers on GPU, fewer if the widest
        activation of the expanded batch would pass 256 MiB.

        Sorted by first position and layer, n_layers consecutive patches of a layer sweep share
        their first position, so a forward of a few such groups wastes no arithmetic and saves
        calls; on a CPU that helps small models (measured: 3 x 128 model, 71 positions, batch 8:
        about 1.2x over one patch per forward; 2 x 64, 40 positions: 1.6x).
        """
        cfg = self.model.cfg
        width = max(cfg.d_model, cfg.d_mlp or 0, cfg.d_vocab)
        bytes_per_patch = self.batch * self.n_positions * width * self.target_logits.element_size()
        wanted = cfg.n_layers * (4 if self.device.type == "cpu" else 64)
        return max(1, min(wanted, (256 << 20) // bytes_per_patch))

    def _read_positions(self, metric: Metric) -> list[int] | None:
        """The sorted positions `metric.positions` declares, or None if it declares none."""
        declared = getattr(metric, "positions", None)
        if declared is None:
            return None
        n = self.n_positions
        if any(not -n <= p < n for p in declared):
            raise ValueError(f"metric.positions {declared!r} out of range for {n} positions")
        return sorted({p % n for p in declared})

    def _evaluate(self, metric: Metric, logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
        value = metric(logits)
        if not isinstance(value, Tensor) or value.shape not in ((), (self.batch,)):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"metric must return a 0-d tensor or shape ({self.batch},), got {shape}"
            )
        return value.detach().float()

    def _run_from_layer(
        self, edits: Sequence[RowEdit], sources: Sequence[Tensor]
    ) -> Float[Tensor, "rows pos d_vocab"]:
        """TransformerLens's forward from the (shared) patched layer, the edits applied by hooks."""
        layer, batch = edits[0].layer, self.batch
        resid = self.target_acts[hook_name("resid_pre", layer)].repeat(len(edits), 1, 1)

        def hook_for(component: str):
            def hook(act: Tensor, hook) -> Tensor:
                for row, (edit, source) in enumerate(zip(edits, sources)):
                    if edit.component == component:
                        edit.apply(act, slice(row * batch, (row + 1) * batch), source, 0)
                return act

            return hook

        components = sorted({e.component for e in edits})
        fwd_hooks = [(hook_name(c, layer), hook_for(c)) for c in components]
        return self.model.run_with_hooks(resid, start_at_layer=layer, fwd_hooks=fwd_hooks)

    def sweep(
        self, metric: Metric, config: PatchingConfig = PatchingConfig()
    ) -> Float[Tensor, "layer *axes"]:
        """Patch every combination of the swept axes; shaped as `transformer_lens.patching`.

        Returns:
            The metric under each patch, with the axes `result_axes(config.component,
            config.per_position)` (e.g. `[layer, pos, head]` for "z"), plus a trailing `batch`
            axis for a per-example metric.
        """
        cfg = self.model.cfg
        unit = check_component(self.model, config.component).unit
        axes: list[Sequence[int] | Sequence[None]] = [config.layers or range(cfg.n_layers)]
        positions = config.positions or range(self.n_positions)
        axes.append(positions if config.per_position else [None])
        if unit in _UNIT_FIELDS:
            chosen = getattr(config, _UNIT_FIELDS[unit])
            axes.append(chosen or range(unit_count(config.component, cfg)))
        else:
            axes.append([None])
        patches = [
            Patch(layer, config.component, position, index)
            for layer, position, index in itertools.product(*axes)
        ]
        values = self.patched_metrics(
            patches,
            metric,
            patches_per_forward=config.patches_per_forward,
            recompute=config.recompute,
        )
        shape = [len(axis) for axis in axes if list(axis) != [None]]
        return values.reshape(*shape, *values.shape[1:])


def _chunks(edits: Sequence[RowEdit], size: int, same_layer: bool) -> list[list[int]]:
    """Group edit indices into forwards of at most `size`, each sorted by (layer, entry point).

    Ordered by first position, then layer: neighbours share their first position, so a group
    recomputes few positions that some of its patches could not change. A forward that starts
    at a layer (`same_layer`) can only hold patches of that layer.
    """

    def stage(i: int) -> tuple[int, int]:
        return edits[i].layer, ENTRY_POINTS.index(edits[i].component)

    if same_layer:
        order = sorted(range(len(edits)), key=stage)
        runs = [list(g) for _, g in itertools.groupby(order, key=lambda i: edits[i].layer)]
    else:
        runs = [sorted(range(len(edits)), key=lambda i: (edits[i].first_position, *stage(i)))]
    groups = [run[s : s + size] for run in runs for s in range(0, len(run), size)]
    return [sorted(group, key=stage) for group in groups]


def activation_patching(
    target_model: HookedTransformer,
    target_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    config: PatchingConfig = PatchingConfig(),
    *,
    source_model: HookedTransformer | None = None,
    source_tokens: Int[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "layer *axes"]:
    """Sweep one component with activation patching from the source run into the target run.

    Example (pretrained activations spliced into the fine-tuned model, same prompts)::

        effect = activation_patching(
            finetuned, tokens, logit_difference(a_token, b_token),
            PatchingConfig(component="resid_pre"), source_model=pretrained,
        )  # [layer, pos]

    See `ActivationPatcher` for the arguments.

    Returns:
        The metric under each patch, with the axes `result_axes(config.component,
        config.per_position)` (module docstring), plus a trailing `batch` axis when the metric
        returns one value per example.
    """
    patcher = ActivationPatcher(
        target_model, target_tokens, source_model=source_model, source_tokens=source_tokens
    )
    return patcher.sweep(metric, config)
