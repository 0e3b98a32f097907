"""Attribution patching: a first-order estimate of every activation patch at once.

Activation patching runs one forward per patch. Attribution patching (Nanda, 2023; Syed et al.,
2023) linearises the metric around the target run instead:

    metric(target with act := source_act) - metric(target)
        ~= (source_act - target_act) . d metric / d act   (at the target run)

so one forward on the source (for its activations) and one forward and backward on the target
(for its activations and gradients) estimate the effect of patching every node. A node is one
unit of a component (`wrapperlens.components`) summed over the axes inside it, exactly as
`patching.py` patches it, so the result has the same axes, `result_axes(component,
per_position)`:

| unit of the component              | node                             | per position         |
|------------------------------------|----------------------------------|----------------------|
| position (resid_pre, mlp_out, ...) | one layer's vector, summed       | [layer, pos]         |
| head (z)                           | one head's z, summed over d_head | [layer, pos, head]   |
| neuron (post)                      | one MLP neuron (one number)      | [layer, pos, neuron] |

With `per_position=False` the position axis is summed (all positions patched at once). The
estimate is exact where the metric is linear in the activation (e.g. the last block's outputs of
a model without a final normalisation, read by a logit difference).

Attribution estimates a *change* of the metric: compare it with
`activation_patching(...) - metric(target_logits)`. Source and target may be one model on two
inputs or two models of the same architecture, as in `patching.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.logit_metrics import Metric
from wrapperlens.analysis.run_pair import resolve_source
from wrapperlens.components import check_component, hook_name

__all__ = ["attribution_patching", "attribution_scores"]


def attribution_scores(
    target_model: HookedTransformer,
    target_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    components: Sequence[str] = ("resid_pre", "z", "post"),
    *,
    per_position: bool = True,
    source_model: HookedTransformer | None = None,
    source_tokens: Int[Tensor, "batch pos"] | None = None,
) -> dict[str, Float[Tensor, "layer ..."]]:
    """Attribution-patching estimates for several components from one forward and backward.

    Args:
        target_model: The model whose run is (notionally) patched.
        target_tokens: Its input, `[batch, pos]`.
        metric: Function of the logits returning a 0-d tensor or one value per example; it must
            be differentiable.
        components: Names from `wrapperlens.components.COMPONENTS`.
        per_position: One node per position (True) or per layer/head/neuron over all positions.
        source_model: Model the activations come from (default `target_model`), same
            architecture.
        source_tokens: Its input (default `target_tokens`), same shape.

    Returns:
        One tensor per component with the axes `result_axes(component, per_position)` (e.g.
        `[layer, pos, head]` for "z"), plus a trailing `batch` axis when the metric returns one
        value per example. The model is left as it was (its parameters' `.grad` are not
        touched).
    """
    source_model, source_tokens = resolve_source(
        target_model, target_tokens, source_model, source_tokens
    )
    cfg = target_model.cfg
    rows = {component: check_component(target_model, component) for component in components}
    names = [hook_name(c, l) for c in components for l in range(cfg.n_layers)]
    device = next(target_model.parameters()).device

    with torch.no_grad():
        _, source_cache = source_model.run_with_cache(
            source_tokens.to(next(source_model.parameters()).device),
            names_filter=lambda name: name in names,
        )
    target_acts: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> Tensor:
        target_acts[hook.name] = act
        return act

    def require_grad(embed: Tensor, hook) -> Tensor:
        # Frozen models (requires_grad=False) still need a graph from the embedding onwards.
        return embed if embed.requires_grad else embed.detach().requires_grad_(True)

    with torch.enable_grad():
        logits = target_model.run_with_hooks(
            target_tokens.to(device),
            fwd_hooks=[("hook_embed", require_grad), (lambda name: name in names, keep)],
        )
        value = metric(logits)
        batch = target_tokens.shape[0]
        if not isinstance(value, Tensor) or value.shape not in ((), (batch,)):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"metric must return a 0-d tensor or shape ({batch},), got {shape}")
        # Examples do not interact, so the gradient of the sum holds each example's gradient.
        acts = [target_acts[name] for name in names]
        grads = torch.autograd.grad(value.sum(), acts, allow_unused=True)

    per_example = value.ndim == 1
    scores = {}
    with torch.no_grad():
        for component in components:
            layers = []
            for layer in range(cfg.n_layers):
                name = hook_name(component, layer)
                i = names.index(name)
                grad = torch.zeros_like(acts[i]) if grads[i] is None else grads[i]
                delta = source_cache[name].to(device) - acts[i]
                node = delta * grad  # [batch, pos, *component_size]
                inside = len(rows[component].feature_axes)  # none for a neuron: one number
                if inside:
                    node = node.sum(tuple(range(-inside, 0)))
                if not per_position:
                    node = node.sum(1)
                # batch first -> batch last (per-example metric) or summed (scalar metric).
                layers.append(node.movedim(0, -1) if per_example else node.sum(0))
            scores[component] = torch.stack(layers)
    return scores


def attribution_patching(
    target_model: HookedTransformer,
    target_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    component: str = "resid_pre",
    *,
    per_position: bool = True,
    source_model: HookedTransformer | None = None,
    source_tokens: Int[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "layer *axes"]:
    """Attribution-patching estimate for one component; see `attribution_scores`.

    Example (where would splicing pretrained activations into the fine-tuned model matter?)::

        estimate = attribution_patching(
            finetuned, tokens, logit_difference(a_token, b_token), "z", source_model=pretrained
        )  # [layer, pos, head]

    Returns:
        The estimate with the axes `result_axes(component, per_position)`, plus a trailing
        `batch` axis for a per-example metric.
    """
    return attribution_scores(
        target_model,
        target_tokens,
        metric,
        (component,),
        per_position=per_position,
        source_model=source_model,
        source_tokens=source_tokens,
    )[component]
