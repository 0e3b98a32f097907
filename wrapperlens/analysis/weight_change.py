"""Relative weight change of one component between a pretrained model and its fine-tuned copy.

One view of the wrapper map (`wrapper_map.py`): how far fine-tuning moved the parameters that
are a component's own, ``‖W_ft - W_pt‖ / (‖W_pt‖ + eps)`` over all of them together. A
component is (kind, layer, index) with the wrapper map's kinds:

- "head" h: the slices ``[h]`` of ``W_Q, W_K, W_V, W_O, b_Q, b_K, b_V`` (grouped-query K/V are
  shared by several heads, so not one head's own);
- "neuron" n: ``W_in[:, n]``, ``b_in[n]`` (and ``W_gate[:, n]``) and ``W_out[n]``;
- "attn" / "mlp" of a layer: every ``blocks.{l}.attn.*`` parameter and ``ln1``, or every
  ``blocks.{l}.mlp.*`` parameter and ``ln2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

__all__ = ["component_parameters", "weight_changes"]


def component_parameters(params: dict[str, Tensor], n_heads: int, kind: str, layer: int,
                         index: int | None) -> list[tuple[str, tuple]]:
    """(parameter name, selector) pairs of one component's own parameters (the module
    docstring's list): ``params[name][selector]`` is its part of that parameter.

    `params` is the model's ``dict(named_parameters())``, built once by the caller (there is one
    call per head and neuron). The known-wrapper fine-tuning trains exactly these slices
    (`wrapperlens.experiments.wrappers.stages`)."""
    if kind in ("attn", "mlp"):
        prefixes = (
            f"blocks.{layer}.{kind}.",
            f"blocks.{layer}.{'ln1' if kind == 'attn' else 'ln2'}.",
        )
        return [(n, (...,)) for n in params if n.startswith(prefixes)]
    if kind == "head":
        names = [
            f"blocks.{layer}.attn.{w}" for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
        ]
        # Grouped-query K/V (`_W_K`, first axis n_key_value_heads) are not one head's own.
        return [
            (n, (index,)) for n in names if n in params and params[n].shape[0] == n_heads
        ]
    mlp = f"blocks.{layer}.mlp."
    candidates = [
        ("W_in", (..., index)),
        ("W_gate", (..., index)),
        ("b_in", (index,)),
        ("W_out", (index, ...)),
    ]
    return [(mlp + w, sel) for w, sel in candidates if mlp + w in params]


def weight_changes(
    pretrained: HookedTransformer,
    finetuned: HookedTransformer,
    components: Sequence[tuple[str, int, int | None]],
    eps: float = 1e-12,
) -> list[float]:
    """Relative weight change ‖W_ft - W_pt‖ / (‖W_pt‖ + eps) of each (kind, layer, index)."""
    pt, ft = dict(pretrained.named_parameters()), dict(finetuned.named_parameters())
    out = []
    with torch.no_grad():
        for kind, layer, index in components:
            delta_sq, base_sq = 0.0, 0.0
            for name, sel in component_parameters(ft, finetuned.cfg.n_heads, kind, layer, index):
                a, b = pt[name][sel].float(), ft[name][sel].float().to(pt[name].device)
                delta_sq += float(((b - a) ** 2).sum())
                base_sq += float((a**2).sum())
            out.append(delta_sq**0.5 / (base_sq**0.5 + eps))
    return out
