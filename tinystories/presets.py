"""Named scales of the TinyStories experiments: `paper`, `cpu` and `tiny`.

A preset fixes every stage's config; any value can still be overridden
(`--train.lr=...`, `--eval.n_generations=...`). The deletion learning rates are named as in the
paper: η_M and η_S (`--eta M|S`).

**paper** (App. F; docs/paper-settings.md §3): the real TinyStories-Instruct from the hub, a BPE of
8192 tokens, the 91M LLaMA-like model on 1024-token windows of the concatenated records, pretraining
30K steps × batch 128 at LR 1e-3 (linear warmup, cosine to 0; the paper's numbers, docs/choices.md
§21); deletion 4000 steps × 128 at constant η_M = 1e-4 or η_S = 1e-5; reFT 4000 steps at constant
1e-5; loss evaluated every 30 steps and log-spaced, generations (64 per point, 350 tokens,
temperature 1) at 0, 30, 300 and 3000; probes 2000 AdamW steps, LR 1e-3, batch 128, on the
unstandardised residual.

**cpu**: the offline story source (6000 stories), scaled to run the whole pipeline (2
pretrainings, 6 deletions, 7 reFTs, probes of 15 models, comparisons, generations) in about 20
minutes on 2 cores (`benchmarks/tinystories_cpu_pipeline.py` measures it). The model is the
paper's architecture at 3 × 64 (0.28M parameters, vocabulary 1024, one whole record per row,
`batches.layout="records"`); after 800 pretraining steps it follows the Features instruction (a
Twist prompt gives a twist story in 30 of 32 samples; measured numbers in notebook 03). Stages are ~10× shorter than the paper's (pretrain 800,
deletion 200, reFT 300 steps of 32 records), so every LR is the paper's × 3-10 to move as
far: pretraining 3e-3 (cosine), deletion η_M = 1e-3 and η_S = 1e-4 (a decade apart, as
1e-4 / 1e-5), reFT 1e-4.
Generations (32 per point, 200 tokens) at 0, 10, 30, 100 and 300 reFT steps stand in for the
paper's 0/30/300/3000 of 4000; the twist loss averages 64 Twist test stories.

**tiny**: seconds; for tests and notebooks. Numbers mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinystories.evaluation import EvalConfig
from tinystories.lm import LM_SHAPES, BatchConfig, LMConfig
from tinystories.prepare import PrepareConfig
from tinystories.story_probes import ProbeDataConfig
from tinystories.tokenizer import TokenizerConfig
from tinystories.twist_classifier import TwistClassifierConfig
from wrapperlens.analysis.probing import ProbeConfig
from wrapperlens.training import TrainConfig

__all__ = ["StoryPreset", "STORY_PRESETS", "get_story_preset"]


@dataclass(frozen=True)
class StoryPreset:
    """Every stage's defaults.

    Attributes:
        name: Preset name.
        prepare: Data source and protocol parameters.
        tokenizer: BPE training.
        model: Shape of pretrained models.
        batches: How rows are cut from records.
        pretrain, delete, reft: Optimisation per stage (delete's `lr` is replaced by
            `etas[eta]` unless overridden).
        eval: Twist loss and generation scoring during training.
        probe, probe_data: Feature probes.
        classifier: The twist classifier of the generation score.
        etas: Deletion learning rates η_M, η_S.
    """

    name: str
    prepare: PrepareConfig
    tokenizer: TokenizerConfig
    model: LMConfig
    batches: BatchConfig
    pretrain: TrainConfig
    delete: TrainConfig
    reft: TrainConfig
    eval: EvalConfig
    probe: ProbeConfig
    probe_data: ProbeDataConfig
    classifier: TwistClassifierConfig = field(default_factory=TwistClassifierConfig)
    etas: dict[str, float] = field(default_factory=dict)


PAPER = StoryPreset(
    name="paper",
    prepare=PrepareConfig(source="roneneldan/TinyStoriesInstruct", test_fraction=0.02),
    tokenizer=TokenizerConfig(vocab_size=8192, max_texts=200_000, model_max_length=1024),
    model=LM_SHAPES["paper"],
    batches=BatchConfig(layout="packed"),
    pretrain=TrainConfig(steps=30_000, batch_size=128, lr=1e-3, schedule="cosine",
                         warmup_frac=1000 / 30_000, min_lr_frac=0.0, weight_decay=0.1,
                         eval_every=1000, checkpoint_every=1000),
    delete=TrainConfig(steps=4000, batch_size=128, lr=1e-4, schedule="constant", eval_every=30,
                       log_spaced_eval=True, checkpoint_every=500),
    reft=TrainConfig(steps=4000, batch_size=128, lr=1e-5, schedule="constant", eval_every=30,
                     log_spaced_eval=True, checkpoint_every=500),
    eval=EvalConfig(n_loss_stories=512, generation_steps=(0, 30, 300, 3000), n_generations=64,
                    max_new_tokens=350),
    probe=ProbeConfig(steps=2000, lr=1e-3, batch_size=128, standardize=False,
                      activation_batch_size=64),
    probe_data=ProbeDataConfig(n_stories=10_000),  # 13 points x 10K x 768 floats: 400 MB
    classifier=TwistClassifierConfig(max_per_class=20_000),
    etas={"M": 1e-4, "S": 1e-5},
)

CPU = StoryPreset(
    name="cpu",
    prepare=PrepareConfig(n_stories=6000, test_fraction=0.15),
    tokenizer=TokenizerConfig(vocab_size=1024, model_max_length=256),
    model=LM_SHAPES["cpu"],
    batches=BatchConfig(layout="records"),
    pretrain=TrainConfig(steps=800, batch_size=32, lr=3e-3, schedule="cosine", warmup_frac=0.05,
                         min_lr_frac=0.1, eval_every=200, checkpoint_every=200),
    delete=TrainConfig(steps=200, batch_size=32, lr=1e-3, schedule="constant", eval_every=30,
                       log_spaced_eval=True, checkpoint_every=100),
    reft=TrainConfig(steps=300, batch_size=32, lr=1e-4, schedule="constant", eval_every=30,
                     log_spaced_eval=True, checkpoint_every=100),
    eval=EvalConfig(n_loss_stories=64, generation_steps=(0, 10, 30, 100, 300), n_generations=32,
                    max_new_tokens=200, generation_batch_size=32),
    probe=ProbeConfig(steps=300),
    probe_data=ProbeDataConfig(n_stories=900),
    etas={"M": 1e-3, "S": 1e-4},
)

TINY = StoryPreset(
    name="tiny",
    prepare=PrepareConfig(n_stories=300, test_fraction=0.3),
    tokenizer=TokenizerConfig(vocab_size=1024, model_max_length=256),
    model=LM_SHAPES["tiny"],
    batches=BatchConfig(layout="records"),
    pretrain=TrainConfig(steps=30, batch_size=16, lr=3e-3, schedule="cosine", warmup_frac=0.1,
                         eval_every=15, checkpoint_every=15),
    delete=TrainConfig(steps=6, batch_size=16, lr=1e-3, schedule="constant", eval_every=3,
                       log_spaced_eval=True, checkpoint_every=3),
    reft=TrainConfig(steps=6, batch_size=16, lr=1e-4, schedule="constant", eval_every=3,
                     log_spaced_eval=True, checkpoint_every=3),
    eval=EvalConfig(n_loss_stories=16, generation_steps=(0, 3), n_generations=4,
                    max_new_tokens=16, generation_batch_size=4),
    probe=ProbeConfig(steps=100),
    probe_data=ProbeDataConfig(n_stories=80),
    classifier=TwistClassifierConfig(n_buckets=4096, steps=100),
    etas={"M": 1e-3, "S": 1e-4},
)

STORY_PRESETS: dict[str, StoryPreset] = {p.name: p for p in (PAPER, CPU, TINY)}


def get_story_preset(name: str) -> StoryPreset:
    """The preset called `name`; an unknown name raises ValueError listing the known ones."""
    try:
        return STORY_PRESETS[name]
    except KeyError:
        known = ", ".join(STORY_PRESETS)
        raise ValueError(f"unknown preset {name!r}; known presets: {known}") from None
