"""The PCFG presets: `paper`, `cpu` and `tiny` (docs/choices.md §S1).

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
from typing import Any

from tasks.config import FinetuneDataConfig, PCFGTaskConfig
from wrapperlens.models import ModelConfig
from wrapperlens.presets import Preset, register_preset
from wrapperlens.training import TrainConfig

__all__ = ["PAPER", "CPU", "TINY"]


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
