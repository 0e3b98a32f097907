"""The wrappers presets: `cpu`, `tiny` and `paper`, each its PCFG namesake's task, model and
stages plus a localised fine-tuning section and the benchmark grid.

A localised fine-tuning trains only the wrapper's units, at η_L and without weight decay
(`wrapperlens.experiments.wrappers.stages`); it runs as many steps as the preset's fine-tuning.
At `cpu` 400 steps at η_L = 3e-4 are enough for 4 neurons or one head to learn the shortcut
(Acc O_FT on C_Te = 1 above 0.9 at seed 0, docs/wrappers.md#measured).
"""

from __future__ import annotations

import dataclasses

from wrapperlens.experiments.pcfg import presets as pcfg
from wrapperlens.experiments.wrappers.grid_config import BenchmarkConfig
from wrapperlens.experiments.wrappers.units import UnitSetConfig
from wrapperlens.presets import Preset, get_preset, register_preset

__all__ = ["EXPERIMENT", "CPU", "TINY", "PAPER", "get"]

EXPERIMENT = "wrappers"


def _from_pcfg(base: Preset, benchmark: BenchmarkConfig) -> Preset:
    sections = {k: v for k, v in base.sections.items() if k != "grid"}
    sections["localised"] = dataclasses.replace(base.finetune, weight_decay=0.0)
    sections["units"] = UnitSetConfig()
    sections["benchmark"] = benchmark
    return Preset(base.name, EXPERIMENT, sections, base.etas,
                  default_eta={**base.default_eta, "localised": "L"})


CPU = _from_pcfg(pcfg.CPU, BenchmarkConfig())
TINY = _from_pcfg(pcfg.TINY, BenchmarkConfig(seeds=1, wrappers=("neuron:4", "head:1"),
                                             samples=64, random_draws=2, eap_ig_steps=2))
PAPER = _from_pcfg(pcfg.PAPER, BenchmarkConfig(samples=1000))

register_preset(CPU, TINY, PAPER)


def get(name: str) -> Preset:
    """The wrappers preset `name` (a ConfigError lists the known ones otherwise)."""
    return get_preset(name, EXPERIMENT)
