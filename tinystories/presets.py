"""Named scales of the TinyStories experiments: `paper`, `cpu`, `demo` and `tiny`.

Each is a `wrapperlens.presets.Preset` of experiment "tinystories", registered on import:
`get_preset("cpu", EXPERIMENT)`. Its sections are `prepare`, `tokenizer`, `model`, `batches`,
`pretrain`, `delete`, `reft`, `eval`, `probe`, `probe_data` and `classifier`; any value can
still be overridden (`--train.lr=...`, `--eval.n_generations=...`). The deletion learning rates
are named as in the paper: η_M and η_S (`--eta M|S`); deletion trains at η_M by default. Each
preset is the configs' own defaults plus the values that make its scale.

The models (`model` section; `wrapperlens.models.ModelConfig`, `architecture="llama"`): the
paper's is a 91M-parameter LLaMA-2-like decoder (App. F.1;
docs/paper-settings.md#tinystories-model): RMSNorm, rotary positions, a gated SiLU ("SwiGLU") MLP,
vocabulary 8192, 1024-token windows.

| preset | layers × d_model (heads) | d_mlp | n_ctx | parameters |
|---|---|---|---|---|
| `paper` | 12 × 768 (12) | 2048 | 1024 | 97.6M at vocab 8192 (91.3M tied: the paper's 91M) |
| `cpu`   | 3 × 64 (4)     | 176  | 256  | 0.28M at vocab 1024 |
| `tiny`  | 2 × 32 (2)     | 96   | 256  | 0.09M at vocab 1024 |

Two differences from the paper's code remain: TransformerLens keeps separate input and output
embeddings (the code ties them), and its blocks have biases (zero at initialisation, then
trained; the code has none).

**paper** (App. F; docs/paper-settings.md#the-tinystories-setting): the real TinyStories-Instruct
from the hub, a BPE of 8192 tokens, the 91M LLaMA-like model on 1024-token windows of the
concatenated records, pretraining 30K steps × batch 128 at LR 1e-3 (linear warmup, cosine to 0; the
paper's numbers, docs/choices.md#tinystories-pretraining-hyperparameters); deletion
4000 steps × 128 at constant η_M = 1e-4 or η_S = 1e-5; reFT 4000 steps at constant 1e-5; loss
evaluated every 30 steps and log-spaced, generations (64 per point, 350 tokens, temperature 1) at
0, 30, 300 and 3000; probes 2000 AdamW steps, LR 1e-3, batch 128, on the unstandardised residual.

**cpu**: the offline story source (6000 stories), scaled so that the whole pipeline (per seed 2
pretrainings, 6 deletions, 7 reFTs, probes of 15 models, comparisons, generations) fits the
`cpu` reproduction's budget on 2 cores (`benchmarks/tinystories_cpu_pipeline.py --estimate`
predicts the minutes of one seed). The model is the paper's architecture at 3 × 64 (0.28M
parameters, vocabulary 1024, one whole record per row, `batches.layout="records"`); after 600
pretraining steps it follows the Features instruction (a Twist prompt gives a twist story in 29
of 32 samples at seed 0; docs/choices.md#tinystories-cpu-data-model-and-stages). Stages are
40-50× shorter than the paper's (pretrain 600, deletion 75, reFT 100 steps of 32 records), so
every LR is the paper's × 3-10 to move as far: pretraining 3e-3 (cosine), deletion η_M = 1e-3 and η_S = 1e-4 (a decade apart, as
1e-4 / 1e-5), reFT 1e-4.
Generations (32 per point, 200 tokens) at 0, 10, 20, 50 and 100 steps stand in for the paper's
0/30/300/3000 of 4000 (10: the first evaluation at or after its early point, 7.5 % of reFT); the
twist loss averages 64 Twist test stories. Three seeds (`grid.seeds`), as every `cpu` grid.

**demo**: the TinyStories part of the main job (`wrapperlens reproduce --preset demo`), under a
minute: the `tiny` model pretrained 120 steps on 600 stories, protocol F only, short deletion and
reFT, 8 generations of 64 tokens. It decides claims 17-20, on a model too small to learn much.

**tiny**: seconds; for tests and notebooks. Numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tinystories.evaluation import EvalConfig
from tinystories.lm import BatchConfig
from tinystories.prepare import PrepareConfig
from tinystories.story_probes import ProbeDataConfig
from tinystories.tokenizer import TokenizerConfig
from tinystories.twist_classifier import TwistClassifierConfig
from wrapperlens.analysis.probing import ProbeConfig
from wrapperlens.models import ModelConfig
from wrapperlens.presets import Preset, register_preset
from wrapperlens.training import TrainConfig

__all__ = ["EXPERIMENT", "PAPER", "CPU", "TINY", "DEMO", "StoryGridConfig", "PROTOCOLS", "ETAS"]

#: The experiment name of these presets in the registry of `wrapperlens.presets`.
EXPERIMENT = "tinystories"
PROTOCOLS = ("F", "F+R", "F+MM")
ETAS = ("M", "S")


@dataclass(frozen=True)
class StoryGridConfig:
    """What the TinyStories pipeline runs (`tinystories.grid.plan`; the `grid` section).

    Attributes:
        seeds: Seeds (each: `train.seed` and `model.init_seed` of the pretrainings, `train.seed`
            of every later stage).
        first_seed: The first seed: seeds `first_seed .. first_seed + seeds - 1`.
        protocols: Deletion protocols (F, F+R, F+MM).
        etas: Deletion learning rates (M, S).
    """

    seeds: int = 1
    first_seed: int = 0
    protocols: tuple[str, ...] = PROTOCOLS
    etas: tuple[str, ...] = ETAS

    def __post_init__(self) -> None:
        bad = [p for p in self.protocols if p not in PROTOCOLS] + [
            e for e in self.etas if e not in ETAS]
        if self.seeds < 1 or self.first_seed < 0 or bad or not self.protocols or not self.etas:
            raise ValueError(f"grid: seeds >= 1, first_seed >= 0, protocols of {PROTOCOLS} and "
                             f"etas of {ETAS} (got seeds={self.seeds}, first_seed="
                             f"{self.first_seed}, unknown {bad or 'none'})")

    @property
    def seed_range(self) -> range:
        """The seeds the grid runs."""
        return range(self.first_seed, self.first_seed + self.seeds)


def _story_preset(name: str, etas: dict[str, float], **sections: Any) -> Preset:
    """A TinyStories preset: sections in stage order, deletion at η_M by default."""
    sections.setdefault("batches", BatchConfig())  # one whole record per row
    sections.setdefault("classifier", TwistClassifierConfig())
    sections.setdefault("grid", StoryGridConfig())
    order = ("prepare", "tokenizer", "model", "batches", "pretrain", "delete", "reft", "eval",
             "probe", "probe_data", "classifier", "grid")
    return Preset(name, EXPERIMENT, {k: sections[k] for k in order}, etas,
                  default_eta={"delete": "M"})


# Deletion and reFT: constant LR, log-spaced evaluation (the paper's code).
_PAPER_DELETE = TrainConfig(steps=4000, batch_size=128, schedule="constant", eval_every=30,
                            log_spaced_eval=True, checkpoint_every=500)
PAPER = _story_preset(
    "paper",
    etas={"M": 1e-4, "S": 1e-5},
    prepare=PrepareConfig(source="roneneldan/TinyStoriesInstruct", test_fraction=0.02),
    tokenizer=TokenizerConfig(max_texts=200_000, model_max_length=1024),  # 8192 tokens
    # The 91M LLaMA-like model of App. F.1 (the table above).
    model=ModelConfig(architecture="llama", n_layers=12, d_model=768, n_heads=12, d_mlp=2048,
                      n_ctx=1024),
    batches=BatchConfig(layout="packed"),
    # LR 1e-3, cosine to 0 after 1000 warmup steps
    # (docs/choices.md#tinystories-pretraining-hyperparameters).
    pretrain=TrainConfig(steps=30_000, batch_size=128, warmup_frac=1000 / 30_000,
                         min_lr_frac=0.0, eval_every=1000, checkpoint_every=1000),
    delete=_PAPER_DELETE,
    reft=dataclasses.replace(_PAPER_DELETE, lr=1e-5),
    eval=EvalConfig(n_loss_stories=512),  # generation defaults: the paper's
    probe=ProbeConfig(steps=2000, lr=1e-3, batch_size=128, standardize=False,
                      activation_batch_size=64),
    probe_data=ProbeDataConfig(n_stories=10_000),  # 13 points x 10K x 768 floats: 400 MB
    classifier=TwistClassifierConfig(max_per_class=20_000),
)

# Stages ~10x shorter than the paper's, so every LR is the paper's x 3-10 (see above).
_CPU_DELETE = TrainConfig(steps=75, batch_size=32, schedule="constant", eval_every=25,
                          log_spaced_eval=True, checkpoint_every=25)
CPU = _story_preset(
    "cpu",
    etas={"M": 1e-3, "S": 1e-4},
    prepare=PrepareConfig(n_stories=6000, test_fraction=0.15),
    tokenizer=TokenizerConfig(vocab_size=1024, model_max_length=256),
    model=ModelConfig(architecture="llama", n_layers=3, d_model=64, n_heads=4, n_ctx=256),
    pretrain=TrainConfig(steps=600, batch_size=32, lr=3e-3, warmup_frac=0.05, min_lr_frac=0.1,
                         eval_every=200, checkpoint_every=200),
    delete=_CPU_DELETE,
    reft=dataclasses.replace(_CPU_DELETE, steps=100, eval_every=25, checkpoint_every=50,
                             lr=1e-4),
    # 10: the first evaluation at or after the paper's early point, 300 of 4000 steps (claim 19)
    eval=EvalConfig(n_loss_stories=64, generation_steps=(0, 10, 20, 50, 100), n_generations=32,
                    max_new_tokens=200, generation_batch_size=32),
    probe=ProbeConfig(),
    probe_data=ProbeDataConfig(n_stories=900),
    grid=StoryGridConfig(seeds=3),
)

_TINY_DELETE = TrainConfig(steps=6, batch_size=16, schedule="constant", eval_every=3,
                           log_spaced_eval=True, checkpoint_every=3)
TINY = _story_preset(
    "tiny",
    etas={"M": 1e-3, "S": 1e-4},
    prepare=PrepareConfig(n_stories=300, test_fraction=0.3),
    tokenizer=TokenizerConfig(vocab_size=1024, model_max_length=256),
    model=ModelConfig(architecture="llama", n_layers=2, d_model=32, n_heads=2, n_ctx=256),
    pretrain=TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup_frac=0.1, eval_every=15,
                         checkpoint_every=15),
    delete=_TINY_DELETE,
    reft=dataclasses.replace(_TINY_DELETE, lr=1e-4),
    eval=EvalConfig(n_loss_stories=16, generation_steps=(0, 3), n_generations=4,
                    max_new_tokens=16, generation_batch_size=4),
    probe=ProbeConfig(steps=100),
    probe_data=ProbeDataConfig(n_stories=80),
    classifier=TwistClassifierConfig(n_buckets=4096),  # a small hashed n-gram space
)

# The main job's preset (`wrapperlens reproduce --preset demo`): under a minute, one protocol.
_DEMO_DELETE = TrainConfig(steps=20, batch_size=16, schedule="constant", eval_every=5,
                           log_spaced_eval=True, checkpoint_every=10)
DEMO = _story_preset(
    "demo",
    etas={"M": 1e-3, "S": 1e-4},
    prepare=PrepareConfig(n_stories=600, test_fraction=0.25),
    tokenizer=TokenizerConfig(vocab_size=1024, model_max_length=256),
    model=ModelConfig(architecture="llama", n_layers=2, d_model=32, n_heads=2, n_ctx=256),
    pretrain=TrainConfig(steps=120, batch_size=16, lr=3e-3, warmup_frac=0.05, min_lr_frac=0.1,
                         eval_every=60, checkpoint_every=60),
    delete=_DEMO_DELETE,
    reft=dataclasses.replace(_DEMO_DELETE, steps=30, lr=1e-4),
    eval=EvalConfig(n_loss_stories=32, generation_steps=(0, 5, 10), n_generations=8,
                    max_new_tokens=64, generation_batch_size=8),
    probe=ProbeConfig(steps=200),
    probe_data=ProbeDataConfig(n_stories=150),
    classifier=TwistClassifierConfig(n_buckets=4096),
    grid=StoryGridConfig(protocols=("F",)),
)

register_preset(PAPER, CPU, TINY, DEMO)
