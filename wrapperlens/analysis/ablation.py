"""Ablate attention heads and MLP neurons through hooks; the weights are never touched.

Heads are removed at component ``z`` (`wrapperlens.components`: the per-head output before
``W_O``, so head h's contribution to the residual stream is exactly ``z[..., h, :] @ W_O[h]``) and
MLP neurons at ``post`` (after the nonlinearity, before ``W_out``). Zero ablation of a head is
therefore the same as zeroing ``W_O[h]``, and of a neuron the same as zeroing its ``W_out`` row;
mean ablation replaces the unit by its mean over a reference batch (per position by default,
since procedural prompts put the same kind of token at the same index).

The hook lists are ordinary TransformerLens ``fwd_hooks`` and compose with
``model.run_with_hooks`` / ``model.hooks``; `ablated` is the context-manager form.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.components import get_component, hook_name, unit_count

__all__ = [
    "AblationHook",
    "mean_activations",
    "head_ablation_hooks",
    "neuron_ablation_hooks",
    "ablated",
]

AblationHook = tuple[str, Callable[..., Tensor]]


@torch.no_grad()
def mean_activations(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    hook_names: Iterable[str],
    per_position: bool = True,
) -> dict[str, Float[Tensor, "..."]]:
    """Mean of each hook's activation over the batch (and over positions if not per_position).

    Returns:
        {hook name: mean}: the activation's axes without `batch` (e.g. `[pos, n_heads, d_head]`
        for ``z``), and without `pos` too when not `per_position`.
    """
    names = set(hook_names)
    _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=lambda n: n in names)
    dims = (0,) if per_position else (0, 1)
    return {name: cache[name].mean(dim=dims) for name in names}


def _replacement(act: Tensor, means: dict[str, Tensor] | None, name: str) -> Tensor | None:
    if means is None:
        return None
    if name not in means:
        raise ValueError(f"mean ablation: no mean for hook {name!r}")
    mean = means[name]
    if mean.ndim == act.ndim - 1 and mean.shape[0] != act.shape[1]:
        raise ValueError(
            f"mean ablation at {name}: means are per position for {mean.shape[0]} positions, "
            f"the input has {act.shape[1]}"
        )
    return mean.to(act.device, act.dtype)


def head_ablation_hooks(
    model: HookedTransformer,
    heads: Iterable[tuple[int, int]],
    means: dict[str, Tensor] | None = None,
) -> list[AblationHook]:
    """Forward hooks on component ``z`` (``blocks.{l}.attn.hook_z``) that replace the listed
    heads' z.

    Args:
        model: Used to check that layer and head indices exist.
        heads: (layer, head) pairs.
        means: None for zero ablation, else `mean_activations` of the z hook names
            ([pos, n_heads, d_head] per position or [n_heads, d_head]).
    """
    by_layer: dict[int, list[int]] = defaultdict(list)
    n_heads = unit_count("z", model.cfg)
    for layer, head in heads:
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < n_heads):
            raise ValueError(f"head ({layer}, {head}) does not exist in a model with "
                             f"{model.cfg.n_layers} layers and {n_heads} heads")
        by_layer[layer].append(head)
    return [_unit_hook("z", l, hs, means) for l, hs in by_layer.items()]


def neuron_ablation_hooks(
    model: HookedTransformer,
    neurons: Iterable[tuple[int, int]],
    means: dict[str, Tensor] | None = None,
) -> list[AblationHook]:
    """Forward hooks on component ``post`` (``blocks.{l}.mlp.hook_post``) that replace the
    listed MLP neurons."""
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, neuron in neurons:
        if not (0 <= layer < model.cfg.n_layers and 0 <= neuron < (model.cfg.d_mlp or 0)):
            raise ValueError(f"neuron ({layer}, {neuron}) does not exist in a model with "
                             f"{model.cfg.n_layers} layers and d_mlp={model.cfg.d_mlp}")
        by_layer[layer].append(neuron)
    return [_unit_hook("post", l, ns, means) for l, ns in by_layer.items()]


def _unit_hook(component: str, layer: int, units: list[int], means: dict[str, Tensor] | None):
    """A hook that replaces `units` of `component` at `layer` (by zero or by `means`)."""
    name = hook_name(component, layer)
    index = torch.tensor(sorted(set(units)))
    inside = (slice(None),) * len(get_component(component).feature_axes)

    def hook(act: Float[Tensor, "batch pos ..."], hook) -> Tensor:
        act = act.clone()  # never edit a tensor autograd may have saved
        mean = _replacement(act, means, name)
        selector = (Ellipsis, index.to(act.device), *inside)
        act[selector] = 0.0 if mean is None else mean[selector].expand_as(act[selector])
        return act

    return (name, hook)


@contextmanager
def ablated(
    model: HookedTransformer,
    heads: Iterable[tuple[int, int]] = (),
    neurons: Iterable[tuple[int, int]] = (),
    mode: Literal["zero", "mean"] = "zero",
    reference_tokens: Int[Tensor, "batch pos"] | None = None,
) -> Iterator[HookedTransformer]:
    """Run the model with heads (``z``) and MLP neurons (``post``) zero- or mean-ablated.

    Mean ablation replaces each unit by its per-position mean over `reference_tokens`.
    """
    heads, neurons = list(heads), list(neurons)
    means = None
    if mode == "mean":
        if reference_tokens is None:
            raise ValueError("mode='mean' needs reference_tokens to take the means over")
        names = {hook_name("z", l) for l, _ in heads}
        names |= {hook_name("post", l) for l, _ in neurons}
        means = mean_activations(model, reference_tokens, names)
    elif mode != "zero":
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    hooks = head_ablation_hooks(model, heads, means) + neuron_ablation_hooks(model, neurons, means)
    with model.hooks(fwd_hooks=hooks):
        yield model
