"""The activations of a transformer block that the analyses read, as one table.

Patching, attribution, ablation, pruning presets, probing, the wrapper map and the command line
all name an activation by a short name (TransformerLens's own, as in
`transformer_lens.utilities.get_act_name`: "resid_pre", "z", "post", ...) and look everything
else up here. One row of `TABLE` says

- **hook**: the hook-point name, a template of the block index (``blocks.{layer}.attn.hook_z``);
- **axes**: the axes of the activation cached there. "batch" and "pos" come from the input;
  every other axis is named by the `HookedTransformerConfig` field that holds its size, so
  `activation_shape` and `component_size` turn a row into sizes for any model;
- **unit**: what one index of the component is, i.e. what one patch, one attribution node or
  one ablation replaces: "position" (the whole vector at one position), "head" (one attention
  head's slice, axis ``n_heads``) or "neuron" (one MLP hidden unit, axis ``d_mlp``);
- **requires**: "mlp" for rows an attention-only model lacks, "rotary" for rows only rotary
  models have;
- **output_weight**: the block parameter that writes the component into the residual stream,
  whose first axis indexes its unit (``attn.W_O[head]``, ``mlp.W_out[neuron]``): a head's or a
  neuron's g·w pruning score is the sum over that parameter's rows (`wrapper_map`), and the
  pruning presets "mlp_out" / "mlp_out_and_attn_out" are these parameters;
- **patchable**: whether activation patching can splice it. The patchable rows are the points a
  block can be re-entered at, listed in the order the block computes them (`COMPONENTS`);
  the rest (keys, values, the attention pattern) are read only.

A second, smaller table, `LINEAR_WEIGHTS`, lists the linear maps of each block part, as
parameter names inside a block, for the pruning presets that select weights rather than outputs.

This module imports nothing heavy (no torch, no TransformerLens), so the command line can read
the names at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = [
    "Component",
    "Unit",
    "TABLE",
    "COMPONENTS",
    "LINEAR_WEIGHTS",
    "UNIT_AXES",
    "get_component",
    "check_patchable",
    "hook_name",
    "exists",
    "check_component",
    "activation_shape",
    "component_size",
    "unit_count",
    "components_with_unit",
    "result_axes",
    "output_weight",
    "output_weight_suffix",
]

Unit = Literal["position", "head", "neuron"]

#: The config field that holds the number of units of each kind ("position" has none: the whole
#: vector at a position is one unit).
UNIT_AXES: dict[str, str] = {"head": "n_heads", "neuron": "d_mlp"}


@dataclass(frozen=True)
class Component:
    """One row of `TABLE` (see the module docstring for what each field means).

    Attributes:
        name: The short name, TransformerLens's `get_act_name` name.
        hook: Hook-point name with ``{layer}`` for the block index.
        axes: Axes of the cached activation: "batch", "pos" or a `HookedTransformerConfig` field.
        unit: "position", "head" or "neuron".
        requires: "mlp", "rotary" or None.
        output_weight: Parameter-name template of the matrix whose first axis indexes the unit
            and that writes the component into the residual stream, or None.
        patchable: A point activation patching can splice (and a block can be re-entered at).
    """

    name: str
    hook: str
    axes: tuple[str, ...]
    unit: Unit
    requires: Literal["mlp", "rotary"] | None = None
    output_weight: str | None = None
    patchable: bool = True

    @property
    def feature_axes(self) -> tuple[str, ...]:
        """The axes inside one unit (summed to give one number per unit): everything after the
        unit's axis, or after "pos" for whole-vector units. A neuron has none."""
        axis = UNIT_AXES.get(self.unit, "pos")
        return self.axes[self.axes.index(axis) + 1 :]


_RESID = ("batch", "pos", "d_model")
_HEADS = ("batch", "pos", "n_heads", "d_head")
_NEURONS = ("batch", "pos", "d_mlp")
_PATTERN = ("batch", "n_heads", "pos", "pos")  # [batch, head, query, key]
_W_O, _W_OUT = "blocks.{layer}.attn.W_O", "blocks.{layer}.mlp.W_out"

# fmt: off
#: Every activation the analyses name. The patchable rows come first, in the order a block
#: computes them (attention, then MLP); the partial forward relies on that order.
TABLE: dict[str, Component] = {c.name: c for c in (
    #         name          hook                               axes      unit        requires weight
    Component("resid_pre",  "blocks.{layer}.hook_resid_pre",   _RESID,   "position"),
    Component("z",          "blocks.{layer}.attn.hook_z",      _HEADS,   "head",     None,  _W_O),
    Component("attn_out",   "blocks.{layer}.hook_attn_out",    _RESID,   "position", None,  _W_O),
    Component("resid_mid",  "blocks.{layer}.hook_resid_mid",   _RESID,   "position", "mlp"),
    Component("post",       "blocks.{layer}.mlp.hook_post",    _NEURONS, "neuron",   "mlp", _W_OUT),
    Component("mlp_out",    "blocks.{layer}.hook_mlp_out",     _RESID,   "position", "mlp", _W_OUT),
    Component("resid_post", "blocks.{layer}.hook_resid_post",  _RESID,   "position"),
    # Read only: the partial forward's key / value cache, and the attention views.
    Component("k",       "blocks.{layer}.attn.hook_k",       _HEADS,   "head", patchable=False),
    Component("rot_k",   "blocks.{layer}.attn.hook_rot_k",   _HEADS,   "head", "rotary",
              patchable=False),
    Component("v",       "blocks.{layer}.attn.hook_v",       _HEADS,   "head", patchable=False),
    Component("pattern", "blocks.{layer}.attn.hook_pattern", _PATTERN, "head", patchable=False),
)}

#: The linear maps of each block part, as parameter names inside a block. Entries a model lacks
#: are skipped by whoever selects them: `_W_K` / `_W_V` exist only with grouped-query attention,
#: `W_gate` only in gated MLPs.
LINEAR_WEIGHTS: dict[str, tuple[str, ...]] = {
    "attn": ("attn.W_Q", "attn.W_K", "attn.W_V", "attn._W_K", "attn._W_V", "attn.W_O"),
    "mlp":  ("mlp.W_in", "mlp.W_gate", "mlp.W_out"),
}
# fmt: on

#: The patchable components, in the order a block computes them.
COMPONENTS: tuple[str, ...] = tuple(name for name, c in TABLE.items() if c.patchable)


def get_component(name: str) -> Component:
    """The row of `name`.

    Raises:
        ValueError: If `name` is not in the table; the message lists the names that are.
    """
    if not isinstance(name, str) or name not in TABLE:
        raise ValueError(f"unknown component {name!r}; the components are {', '.join(TABLE)}")
    return TABLE[name]


def check_patchable(name: str) -> Component:
    """The row of `name` if activation patching can splice it.

    Raises:
        ValueError: Naming `name` and listing `COMPONENTS` otherwise.
    """
    if not isinstance(name, str) or name not in COMPONENTS:
        raise ValueError(
            f"unknown component {name!r}: component must be one of {', '.join(COMPONENTS)}"
        )
    return TABLE[name]


def hook_name(name: str, layer: int) -> str:
    """The hook-point name of component `name` in block `layer`, e.g. "blocks.1.attn.hook_z"."""
    component = get_component(name)
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer must be an int >= 0, got {layer!r} (component {name!r})")
    return component.hook.format(layer=layer)


def _size(cfg: Any, axis: str) -> int:
    """`cfg.<axis>` of a `HookedTransformerConfig` or a mapping of its fields."""
    value = cfg[axis] if isinstance(cfg, Mapping) else getattr(cfg, axis)
    if not isinstance(value, int):
        raise ValueError(f"config field {axis!r} is {value!r}, not a size")
    return value


def exists(name: str, cfg: Any) -> bool:
    """Whether models of config `cfg` have component `name` (by its `requires` column)."""
    requires = get_component(name).requires
    if requires == "mlp":
        return not cfg.attn_only
    if requires == "rotary":
        return cfg.positional_embedding_type == "rotary"
    return True


def check_component(model: HookedTransformer, name: str) -> Component:
    """The row of patchable component `name`, checked to exist in `model`.

    Raises:
        ValueError: If `name` is not patchable, or `model` lacks it (attn-only models have no
            MLP components; some architectures lack a hook, e.g. `resid_mid` with parallel
            attention and MLP).
    """
    component = check_patchable(name)
    if not exists(name, model.cfg):
        kind = "an attn-only" if component.requires == "mlp" else "a non-rotary"
        raise ValueError(f"component {name!r} does not exist in {kind} model")
    if hook_name(name, 0) not in model.hook_dict:
        raise ValueError(f"component {name!r} does not exist in this model's blocks")
    return component


def activation_shape(name: str, cfg: Any, *, batch: int, pos: int) -> tuple[int, ...]:
    """The shape of component `name`'s cached activation on a `[batch, pos]` input."""
    run = {"batch": batch, "pos": pos}
    return tuple(run[a] if a in run else _size(cfg, a) for a in get_component(name).axes)


def component_size(name: str, cfg: Any) -> tuple[int, ...]:
    """The sizes of the axes of `name` that the config fixes (all but "batch" and "pos"): e.g.
    ``(d_model,)`` for `resid_pre`, ``(n_heads, d_head)`` for `z`, ``(d_mlp,)`` for `post`."""
    return tuple(_size(cfg, a) for a in get_component(name).axes if a not in ("batch", "pos"))


def unit_count(name: str, cfg: Any) -> int | None:
    """Units of `name` per layer and position: n_heads for heads, d_mlp for neurons, None when
    the whole vector is the unit."""
    axis = UNIT_AXES.get(get_component(name).unit)
    return None if axis is None else _size(cfg, axis)


def components_with_unit(unit: str) -> tuple[str, ...]:
    """The patchable components whose unit is `unit` ("position", "head" or "neuron")."""
    return tuple(c for c in COMPONENTS if TABLE[c].unit == unit)


def result_axes(name: str, per_position: bool = True) -> list[str]:
    """The axes of a patching or attribution result for component `name`.

    ``["layer", "pos", unit]``: "pos" only when patching one position at a time, the unit
    ("head" / "neuron") only for components indexed by one. A metric that returns one value per
    example adds a trailing "batch" axis.
    """
    component = check_patchable(name)
    axes = ["layer"] + (["pos"] if per_position else [])
    return axes + ([component.unit] if component.unit in UNIT_AXES else [])


def output_weight(name: str, layer: int) -> str:
    """The parameter of block `layer` that writes `name` into the residual stream.

    Raises:
        ValueError: If no single parameter does (the residual stream itself).
    """
    template = get_component(name).output_weight
    if template is None:
        writers = [c for c, row in TABLE.items() if row.output_weight]
        raise ValueError(f"component {name!r} has no output weight; those that do: {writers}")
    hook_name(name, layer)  # the same layer check
    return template.format(layer=layer)


def output_weight_suffix(name: str) -> str:
    """`output_weight` inside a block ("mlp.W_out"), as pruning's eligible entries name it."""
    return output_weight(name, 0).removeprefix("blocks.0.")
