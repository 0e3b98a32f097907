"""Presets: named scales of an experiment, and the PCFG ones (`paper`, `cpu`, `tiny`).

A `Preset` is every config section an experiment's stages read by default (PCFG: `task`, `model`,
`pretrain`, `finetune`, `reft`, `finetune_data`), plus its named learning rates (the paper's η_L,
η_M, η_S; `--eta L|M|S`) and which η each fine-tuning stage uses by default. Everything in it can
still be overridden (`--train.lr=...`, `Preset.with_overrides`). Each preset is written as the
configs' own defaults plus the few values that make the scale (minGPT's composed defaults).

One registry holds every experiment's presets: `get_preset("cpu")` is the PCFG `cpu` preset,
`get_preset("cpu", "tinystories")` the TinyStories one. An experiment registers its presets
(`register_preset`) in its own presets module (`tinystories.presets`), so this package never
imports an experiment built on it.

The PCFG scales (docs/choices.md §S1):

`paper` is the paper's setting (App. C.2; docs/paper-settings.md §1.8): minGPT 6 × 192 × 6
heads, 250-token strings, 200K pretraining and 10K fine-tuning iterations, η = 1e-4 / 1e-5 / 1e-6.

`cpu` is scaled to finish in minutes on 2 CPU cores while still learning every task family (its
measured numbers are in the README): 32-token strings with a 16-token window, the 3rd occurrence
for I and the last `oo` pair for IC (at L = 32 six `aa` pairs almost never occur, so the paper's
O' = 6 would make IC a constant "NONE"), a 2-layer 64-wide model, the paper's next-token loss
(answer-only pretraining left CC and IC at chance in 3000 steps: pair detection needs the
previous-token features that language modelling the strings teaches), 8000 steps, and
fine-tuning learning rates one decade higher than the paper's (10x fewer steps need a larger
step to move as far; the three regimes stay a decade apart).

`tiny` is for tests and notebooks in CI: seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.config import FinetuneDataConfig, PCFGTaskConfig
from wrapperlens.config import ConfigError, apply_overrides
from wrapperlens.models import ModelConfig
from wrapperlens.training import TrainConfig

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


def presets(experiment: str = "pcfg") -> dict[str, Preset]:
    """The presets of `experiment`, by name.

    Raises:
        ConfigError: no presets are registered for `experiment` (its presets module, e.g.
            `tinystories.presets`, registers them when imported).
    """
    if experiment not in _REGISTRY:
        raise ConfigError(
            f"no presets registered for experiment {experiment!r} (import its presets module "
            f"first); experiments with presets: {', '.join(_REGISTRY)}"
        )
    return dict(_REGISTRY[experiment])


def get_preset(name: str, experiment: str = "pcfg") -> Preset:
    """The preset called `name` of `experiment`; an unknown name raises ConfigError listing the
    known ones."""
    known = presets(experiment)
    if name not in known:
        raise ConfigError(
            f"unknown preset {name!r} for {experiment}; known presets: {', '.join(known)}"
        )
    return known[name]


def _pcfg_preset(name: str, etas: dict[str, float], **sections: Any) -> Preset:
    """A PCFG preset: fine-tuning at η_M and reFT at η_S by default, like the paper's."""
    sections.setdefault("finetune_data", FinetuneDataConfig())  # count b; C_Tr = 1
    return Preset(name, "pcfg", sections, etas, default_eta={"finetune": "M", "reft": "S"})


# Every default of PCFGTaskConfig, TrainConfig (batch 96, LR 1e-3 cosine, next-token loss) and
# FinetuneDataConfig is the paper's; only the model and the length of each stage are spelled out.
# Fine-tuning and reFT score the answer token only.
_PAPER_FINETUNE = TrainConfig(steps=10_000, loss="answer", eval_every=500, checkpoint_every=1000)
PAPER = _pcfg_preset(
    "paper",
    etas={"L": 1e-4, "M": 1e-5, "S": 1e-6},
    task=PCFGTaskConfig(),
    model=ModelConfig(n_layers=6, d_model=192, n_heads=6),
    pretrain=TrainConfig(steps=200_000, eval_every=5000, checkpoint_every=5000),
    finetune=_PAPER_FINETUNE,
    reft=dataclasses.replace(_PAPER_FINETUNE, log_spaced_eval=True),  # the early steps matter
)

CPU = _pcfg_preset(
    "cpu",
    etas={"L": 1e-3, "M": 1e-4, "S": 1e-5},  # the paper's × 10: 10x fewer steps
    # 32-token strings; the 3rd occurrence for I and the last `oo` pair for IC (see above).
    task=PCFGTaskConfig(text_length=32, count_window=16, index_occurrence=3,
                        pair_index_occurrence=1, token_offset=16),
    model=ModelConfig(),  # the defaults: minGPT, 2 layers × 64, 4 heads
    pretrain=TrainConfig(steps=8000, eval_every=1000, checkpoint_every=1000),
    finetune=TrainConfig(steps=1000, loss="answer"),
    reft=TrainConfig(steps=500, loss="answer", eval_every=100, log_spaced_eval=True),
)

# Batches of 64 and 300 evaluation samples keep every stage to seconds; pretraining on the
# answer alone at a larger LR learns the tiny task in 300 steps.
_TINY_FINETUNE = TrainConfig(steps=100, batch_size=64, loss="answer", eval_every=50,
                             eval_samples=300, checkpoint_every=50)
TINY = _pcfg_preset(
    "tiny",
    etas={"L": 3e-3, "M": 1e-3, "S": 1e-4},
    task=PCFGTaskConfig(text_length=16, count_window=8, index_occurrence=2,
                        pair_index_occurrence=1, token_offset=8),
    model=ModelConfig(n_layers=1, d_model=32, n_heads=2),
    pretrain=dataclasses.replace(_TINY_FINETUNE, steps=300, lr=3e-3, eval_every=100,
                                 checkpoint_every=100),
    finetune=_TINY_FINETUNE,
    reft=dataclasses.replace(_TINY_FINETUNE, log_spaced_eval=True),
)

register_preset(PAPER, CPU, TINY)
