"""Named scales of the PCFG experiments: `paper`, `cpu` and `tiny` (docs/choices.md §S1).

A preset fixes the task shape, the model and the optimisation of each stage. Everything in it can
still be overridden (`--train.lr=...`). The fine-tuning learning rates are named as in the paper:
η_L, η_M, η_S (`--eta L|M|S`).

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

from dataclasses import dataclass, field

from tasks.config import FinetuneDataConfig, PCFGTaskConfig
from wrapperlens.models import ModelConfig
from wrapperlens.training import TrainConfig

__all__ = ["Preset", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """Everything a stage needs by default.

    Attributes:
        name: Preset name.
        task: The PCFG data shape.
        model: The model shape.
        pretrain, finetune, reft: Optimisation of each stage (finetune's and reft's `lr` are
            replaced by `etas[...]` / `reft_eta` unless overridden).
        finetune_data: The fine-tuning question and correlation.
        etas: Fine-tuning learning rates η_L, η_M, η_S.
        reft_eta: Which η reverse fine-tuning uses by default (smaller than fine-tuning's).
        finetune_eta: Which η fine-tuning uses by default.
    """

    name: str
    task: PCFGTaskConfig
    model: ModelConfig
    pretrain: TrainConfig
    finetune: TrainConfig
    reft: TrainConfig
    finetune_data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    etas: dict[str, float] = field(default_factory=dict)
    finetune_eta: str = "M"
    reft_eta: str = "S"


PAPER = Preset(
    name="paper",
    task=PCFGTaskConfig(),
    model=ModelConfig(n_layers=6, d_model=192, n_heads=6),
    pretrain=TrainConfig(steps=200_000, batch_size=96, lr=1e-3, loss="next_token",
                         eval_every=5000, checkpoint_every=5000),
    finetune=TrainConfig(steps=10_000, batch_size=96, lr=1e-5, loss="answer",
                         eval_every=500, checkpoint_every=1000),
    reft=TrainConfig(steps=10_000, batch_size=96, lr=1e-6, loss="answer", eval_every=500,
                     log_spaced_eval=True, checkpoint_every=1000),
    etas={"L": 1e-4, "M": 1e-5, "S": 1e-6},
)

CPU = Preset(
    name="cpu",
    task=PCFGTaskConfig(text_length=32, count_window=16, index_occurrence=3,
                        pair_index_occurrence=1, token_offset=16),
    model=ModelConfig(n_layers=2, d_model=64, n_heads=4),
    pretrain=TrainConfig(steps=8000, batch_size=96, lr=1e-3, loss="next_token",
                         eval_every=1000, checkpoint_every=1000),
    finetune=TrainConfig(steps=1000, batch_size=96, lr=1e-4, loss="answer",
                         eval_every=250, checkpoint_every=250),
    reft=TrainConfig(steps=500, batch_size=96, lr=1e-5, loss="answer", eval_every=100,
                     log_spaced_eval=True, checkpoint_every=250),
    etas={"L": 1e-3, "M": 1e-4, "S": 1e-5},
)

TINY = Preset(
    name="tiny",
    task=PCFGTaskConfig(text_length=16, count_window=8, index_occurrence=2,
                        pair_index_occurrence=1, token_offset=8),
    model=ModelConfig(n_layers=1, d_model=32, n_heads=2),
    pretrain=TrainConfig(steps=300, batch_size=64, lr=3e-3, loss="answer", eval_every=100,
                         eval_samples=300, checkpoint_every=100),
    finetune=TrainConfig(steps=100, batch_size=64, lr=1e-3, loss="answer", eval_every=50,
                         eval_samples=300, checkpoint_every=50),
    reft=TrainConfig(steps=100, batch_size=64, lr=1e-4, loss="answer", eval_every=50,
                     log_spaced_eval=True, eval_samples=300, checkpoint_every=50),
    etas={"L": 3e-3, "M": 1e-3, "S": 1e-4},
)

PRESETS: dict[str, Preset] = {p.name: p for p in (PAPER, CPU, TINY)}


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name raises ValueError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
