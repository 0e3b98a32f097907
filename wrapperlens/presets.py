"""Presets: named scales of an experiment (`paper`, `cpu`, `tiny`, ...), in one registry.

A `Preset` is every config section an experiment's stages read by default (PCFG: `task`, `model`,
`pretrain`, `finetune`, `reft`, `finetune_data`), plus its named learning rates (the paper's η_L,
η_M, η_S; `--eta L|M|S`) and which η each fine-tuning stage uses by default. Everything in it can
still be overridden (`--train.lr=...`, `Preset.with_overrides`). Each preset is written as the
configs' own defaults plus the few values that make the scale (minGPT's composed defaults).

One registry holds every experiment's presets, named by experiment: `get_preset("cpu", "pcfg")`
is the PCFG `cpu` preset, `get_preset("cpu", "tinystories")` the TinyStories one. Each
experiment registers its presets (`register_preset`) in its own presets module
(`wrapperlens.experiments.pcfg.presets`, `wrapperlens.experiments.compiled.presets`,
`tinystories.presets`), which its stages module imports: resolving a stage always finds its
presets, and this module imports no experiment (no string imports either).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wrapperlens.config import ConfigError, apply_overrides

__all__ = ["Preset", "register_preset", "presets", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """Every stage's defaults of one experiment at one scale.

    Sections read as attributes: `p.task`, `p.pretrain`, ... (`p.sections[name]`).

    Attributes:
        name: Preset name ("paper", "cpu", "tiny").
        experiment: The experiment it belongs to ("pcfg", "tinystories").
        sections: Section name -> frozen config (the `--SECTION.KEY=VALUE` sections).
        etas: Named learning rates (η_L, η_M, η_S).
        default_eta: Stage section -> the η it trains at by default. Such a stage's learning
            rate is always an η: its section's `lr` is set to its default η here.
    """

    name: str
    experiment: str
    sections: Mapping[str, Any]
    etas: Mapping[str, float] = field(default_factory=dict)
    default_eta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sections = dict(self.sections)
        where = f"preset {self.name!r} ({self.experiment})"
        for section, cfg in sections.items():
            if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
                raise TypeError(f"{where}: section {section!r} is not a config instance: {cfg!r}")
            if section in _RESERVED:
                raise ValueError(f"{where}: section name {section!r} is a Preset attribute")
        for stage, eta in self.default_eta.items():
            if stage not in sections or not hasattr(sections[stage], "lr"):
                raise ValueError(f"{where}: default_eta names {stage!r}, not a training section")
            if eta not in self.etas:
                raise ValueError(f"{where}: default_eta[{stage!r}] = {eta!r} is not one of "
                                 f"its etas {tuple(self.etas)}")
            sections[stage] = dataclasses.replace(sections[stage], lr=self.etas[eta])
        object.__setattr__(self, "sections", sections)
        object.__setattr__(self, "etas", {k: float(v) for k, v in self.etas.items()})
        object.__setattr__(self, "default_eta", dict(self.default_eta))

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections")
        if sections is None or name.startswith("__"):  # unpickling, copy: not a section lookup
            raise AttributeError(name)
        try:
            return sections[name]
        except KeyError:
            raise AttributeError(f"preset {self.name!r} ({self.experiment}) has no section "
                                 f"{name!r}; sections: {', '.join(sections)}") from None

    def eta(self, stage: str, name: str | None = None) -> tuple[str, float]:
        """The named learning rate `name` (default: `stage`'s default η) and its value.

        Raises:
            ConfigError: `name` is not one of the preset's etas, or `stage` has no default η.
        """
        name = name or self.default_eta.get(stage)
        if name is None:
            raise ConfigError(f"{stage} has no default eta in preset {self.name!r}")
        if name not in self.etas:
            raise ConfigError(f"eta {name!r}: expected one of {', '.join(self.etas)}")
        return name, self.etas[name]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Preset:
        """A copy with `section.key` overrides applied (`wrapperlens.config.apply_overrides`).

        `eta.NAME=VALUE` changes a named learning rate. The `lr` of a stage that trains at an η
        is refused: override the η instead.

        Raises:
            ConfigError: an unknown section, key or η, a bad value, or such an `lr`.
        """
        overrides = dict(overrides)
        etas = dict(self.etas)
        for key in [k for k in overrides if k.startswith("eta.")]:
            name = key.split(".", 1)[1]
            if name not in etas:
                raise ConfigError(
                    f"unknown key {key}; known: {', '.join('eta.' + e for e in etas)}"
                )
            try:
                etas[name] = float(overrides.pop(key))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{key}: expected a number ({e})") from e
        for stage in self.default_eta:
            if f"{stage}.lr" in overrides:
                raise ConfigError(f"{stage}.lr is set by the {stage} stage's eta; override "
                                  + " or ".join(f"eta.{e}" for e in etas))
        sections = apply_overrides(dict(self.sections), overrides)
        return dataclasses.replace(self, sections=sections, etas=etas)


_RESERVED = frozenset(f.name for f in dataclasses.fields(Preset)) | {"eta", "with_overrides"}

#: experiment -> preset name -> preset, in registration order.
_REGISTRY: dict[str, dict[str, Preset]] = {}

def register_preset(*new: Preset) -> None:
    """Add presets to the registry (an experiment's presets module calls this on import).

    Raises:
        ValueError: another preset of the same experiment already has that name.
    """
    for preset in new:
        known = _REGISTRY.setdefault(preset.experiment, {})
        if known.get(preset.name, preset) != preset:
            raise ValueError(f"a different {preset.experiment} preset {preset.name!r} "
                             "is already registered")
        known[preset.name] = preset


def presets(experiment: str) -> dict[str, Preset]:
    """The presets of `experiment`, by name.

    Raises:
        ConfigError: no presets are registered for `experiment` (its presets module, e.g.
            `tinystories.presets`, registers them when imported).
    """
    if experiment not in _REGISTRY:
        raise ConfigError(
            f"no presets registered for experiment {experiment!r} (import the experiment's "
            f"presets module first); experiments with presets: {', '.join(_REGISTRY)}"
        )
    return dict(_REGISTRY[experiment])


def get_preset(name: str, experiment: str) -> Preset:
    """The preset called `name` of `experiment`; an unknown name raises ConfigError listing the
    known ones."""
    known = presets(experiment)
    if name not in known:
        raise ConfigError(
            f"unknown preset {name!r} for {experiment}; known presets: {', '.join(known)}"
        )
    return known[name]
