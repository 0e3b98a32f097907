"""The PCFG presets: `paper`, `cpu`, `demo` and `tiny` (docs/choices.md#what-each-preset-is-for).

The PCFG scales (docs/choices.md#what-each-preset-is-for):

`paper` is the paper's setting (App. C.2; docs/paper-settings.md#model-and-training): minGPT
6 × 192 × 6 heads, 250-token strings, 200K pretraining and 10K fine-tuning iterations,
η = 1e-4 / 1e-5 / 1e-6.

`cpu` is scaled so that the whole grid of `wrapperlens reproduce --preset cpu` (priors L and H ×
6 Counter fine-tuning cells × 3 seeds, with reFT, Scr.+FT, pruning, probes and the four appendix
experiments) fits the 2-core budget (docs/reproduction.md#the-grid); the Indexer is pretrained
but not fine-tuned (no claim reads it): 32-token strings with a 16-token window, the 3rd
occurrence for I,
a 2-layer 64-wide model, the paper's next-token loss, pretraining on the Counter and Indexer
families only (the ones fine-tuned; 1500 steps learn count a, and under P^H count b, while P^L
leaves count b weak), 400 fine-tuning and 200 reFT steps, and fine-tuning learning rates
η_L / η_M / η_S = 3e-4 / 1e-4 / 1e-5: η_M and η_S one decade higher than the paper's (20x fewer
steps need a larger step to move as far), η_L only 3x, so that every fine-tuning rate stays below
the pretraining rate 1e-3 (docs/choices.md#each-stages-learning-rate-is-below-its-parents). With
every family (`--task.families=C,CC,I,IC,T`) and 8000 steps it learns the whole task mixture
(docs/choices.md#what-each-preset-is-for).

`demo` is the README's main command: the Counter alone on 24-token strings, 1200 pretraining
and 300 fine-tuning steps, one seed; it covers claims 1, 2, 4, 5, 6 and 7 in under five minutes.

`tiny` is for tests and notebooks in CI: seconds. It pretrains at 3e-3 and fine-tunes at
η_L / η_M / η_S = 1e-3 / 3e-4 / 1e-4, all below it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tasks.config import FinetuneDataConfig, PCFGTaskConfig
from wrapperlens.experiments.pcfg.grid_config import APPENDIX_EXPERIMENTS, GridConfig
from wrapperlens.models import ModelConfig
from wrapperlens.presets import Preset, get_preset, register_preset
from wrapperlens.training import TrainConfig

__all__ = ["EXPERIMENT", "PAPER", "CPU", "DEMO", "TINY", "get"]

EXPERIMENT = "pcfg"


def _pcfg_preset(name: str, etas: dict[str, float], **sections: Any) -> Preset:
    """A PCFG preset: fine-tuning at η_M and reFT at η_S by default, like the paper's."""
    sections.setdefault("finetune_data", FinetuneDataConfig())  # count b; C_Tr = 1
    return Preset(name, EXPERIMENT, sections, etas, default_eta={"finetune": "M", "reft": "S"})


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
    grid=GridConfig(  # the paper's grid: 3 priors × 4 C_Tr × 3 ηs, Counter and Indexer
        priors=("L", "M", "H"),
        cells=tuple(f"{f}:{c}:{e}" for f in "CI" for c in (0, 0.5, 0.8, 1) for e in "LMS"),
        appendix=APPENDIX_EXPERIMENTS,
    ),
)

CPU = _pcfg_preset(
    "cpu",
    etas={"L": 3e-4, "M": 1e-4, "S": 1e-5},  # M, S: the paper's × 10; L below pretraining
    # 32-token strings; the 3rd occurrence for I and the last `oo` pair for IC (see above).
    # Pretraining on the Counter and Indexer families alone learns both in 1500 steps.
    task=PCFGTaskConfig(text_length=32, count_window=16, index_occurrence=3,
                        pair_index_occurrence=1, token_offset=16, families=("C", "I")),
    model=ModelConfig(),  # the defaults: minGPT, 2 layers × 64, 4 heads
    pretrain=TrainConfig(steps=1500, eval_every=500, checkpoint_every=500),
    finetune=TrainConfig(steps=400, loss="answer", eval_every=100, checkpoint_every=200,
                         eval_samples=500),
    reft=TrainConfig(steps=200, loss="answer", eval_every=30, log_spaced_eval=True,
                     eval_samples=500),
    grid=GridConfig(seeds=3, cells=("C:1:L", "C:1:M", "C:1:S", "C:0:M", "C:0:S", "C:0.8:M"),
                    prune_ks=(0, 1, 2, 3, 4, 6, 8, 12, 15), appendix=APPENDIX_EXPERIMENTS),
)

# `demo`: the Counter alone on 24-token strings, one seed; the README's main command (≤ 5 min).
DEMO = _pcfg_preset(
    "demo",
    etas={"L": 3e-4, "M": 1e-4, "S": 1e-5},
    task=PCFGTaskConfig(text_length=24, count_window=12, token_offset=12, families=("C",)),
    model=ModelConfig(),
    pretrain=TrainConfig(steps=1200, eval_every=300, checkpoint_every=300, eval_samples=500),
    finetune=TrainConfig(steps=300, loss="answer", eval_every=50, checkpoint_every=150,
                         eval_samples=500),
    reft=TrainConfig(steps=200, loss="answer", eval_every=20, log_spaced_eval=True,
                     eval_samples=500),
    grid=GridConfig(seeds=1, prune_ks=(0, 1, 2, 5, 8, 10, 12, 15), prune_random_draws=2,
                    probe_etas=("L", "S"), probe_samples=1000),
)

# Batches of 64 and 300 evaluation samples keep every stage to seconds; pretraining on the
# answer alone at a larger LR learns the tiny task in 300 steps.
_TINY_FINETUNE = TrainConfig(steps=100, batch_size=64, loss="answer", eval_every=50,
                             eval_samples=300, checkpoint_every=50)
TINY = _pcfg_preset(
    "tiny",
    etas={"L": 1e-3, "M": 3e-4, "S": 1e-4},  # all below the pretraining rate 3e-3
    task=PCFGTaskConfig(text_length=16, count_window=8, index_occurrence=2,
                        pair_index_occurrence=1, token_offset=8),
    model=ModelConfig(n_layers=1, d_model=32, n_heads=2),
    pretrain=dataclasses.replace(_TINY_FINETUNE, steps=300, lr=3e-3, eval_every=100,
                                 checkpoint_every=100),
    finetune=_TINY_FINETUNE,
    reft=dataclasses.replace(_TINY_FINETUNE, log_spaced_eval=True),
    grid=GridConfig(seeds=1, cells=("C:1:L", "C:1:M", "C:1:S", "C:0:M", "C:0:S"),
                    prune_ks=(0, 1, 5, 10, 15), prune_random_draws=1, probe_etas=("L", "M", "S"),
                    probe_samples=300, appendix=APPENDIX_EXPERIMENTS),
)

register_preset(PAPER, CPU, DEMO, TINY)


def get(name: str) -> Preset:
    """The PCFG preset `name` (a ConfigError lists the known ones otherwise)."""
    return get_preset(name, EXPERIMENT)
