"""The unit sets of known wrappers: which units (MLP neurons or attention heads), drawn how.

A unit is (kind, layer, index), as the wrapper map names components
(`wrapperlens.analysis.wrapper_map`): ("neuron", 1, 17) is MLP neuron 17 of block 1, ("head",
0, 3) head 3 of block 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wrapperlens.config import ConfigError

__all__ = ["UNIT_KINDS", "Unit", "UnitSetConfig", "draw_units"]

#: The kinds of unit a wrapper can be made of (the wrapper map's "neuron" and "head").
UNIT_KINDS = ("neuron", "head")

#: (kind, layer, index) of one unit, as the wrapper map names components.
Unit = tuple[str, int, int]


@dataclass(frozen=True)
class UnitSetConfig:
    """Which units a localised fine-tuning may change.

    Attributes:
        kind: "neuron" (MLP neurons) or "head" (attention heads).
        count: How many units, drawn uniformly without replacement over every layer.
        seed: The draw's seed (`draw_units`).
    """

    kind: str = "neuron"
    count: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in UNIT_KINDS:
            raise ValueError(f"units.kind={self.kind!r} must be one of {', '.join(UNIT_KINDS)}")
        if self.count < 1:
            raise ValueError(f"units.count={self.count} must be >= 1")
        if self.seed < 0:
            raise ValueError(f"units.seed={self.seed} must be >= 0")


def draw_units(config: UnitSetConfig, n_layers: int, width: int) -> tuple[Unit, ...]:
    """`config.count` units of `config.kind` drawn with `config.seed` from `n_layers` layers of
    `width` units each (d_mlp neurons or n_heads heads), sorted by (layer, index).

    Raises:
        ConfigError: more units asked than the model has.
    """
    total = n_layers * width
    if config.count > total:
        raise ConfigError(f"units.count={config.count}: the model has only {total} "
                          f"{config.kind}s ({n_layers} layers x {width})")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(config.seed))
    return tuple(sorted((config.kind, *divmod(int(u), width)) for u in order[:config.count]))
