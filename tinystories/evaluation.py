"""What a TinyStories run measures while it trains: twist loss and the twist generation score.

The paper tracks two things during deletion and reFT (NOTES §3.4, §4.2):

- the **loss on Twist stories** (Fig. 11b, 31, 33): here the mean next-token loss of the first
  `n_loss_stories` records of `reft.test` (Twist stories, instruction + story, as trained), logged
  as `twist_loss`; the same on `filter.test` (stories without Twist) is `other_loss`, which
  shows whether a change is specific to twists;
- the **generation score** (Tab. 1, Fig. 32, 34): prompts that ask for a Twist (the F+R test set:
  non-twist records whose Features line names Twist), sampled at temperature 1.0, each story
  classified by the twist classifier; `twist_score` is the fraction classified as twist stories.
  `twist_oracle` is the fraction in which `detect_features` finds a twist sentence, which is
  exact for the offline story source only (on real data it is a lower bound).

The trainer calls `evaluate(model)` without a step, so `StepClock` wraps the batch function and
remembers the step; generations (the expensive part) run only at `EvalConfig.generation_steps`
and at the end of the stage, and are written to `RUN_DIR/generations/step_XXXXXX.jsonl`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from tinystories.generation import encode_prompts, generated_story, sample_continuations
from tinystories.lm import encode_records, pad_id_of, sequence_loss
from tinystories.prepare import load_prepared
from tinystories.protocols import with_text
from tinystories.story_source import detect_features
from tinystories.twist_classifier import (
    TwistClassifier,
    TwistClassifierConfig,
    classifier_accuracy,
    load_classifier,
    save_classifier,
    train_twist_classifier,
)
from wrapperlens.checkpoints import atomic_write
from wrapperlens.training import TrainBatch

__all__ = [
    "EvalConfig",
    "FIELD_SHUFFLE_SEED",
    "CLASSIFIER_DIR",
    "StepClock",
    "StoryEvaluator",
    "fit_story_classifier",
    "ensure_story_classifier",
]

FIELD_SHUFFLE_SEED = 0
"""Seed of the per-story instruction-line order (`with_text(shuffle_fields_seed=...)`)."""
CLASSIFIER_DIR = "twist_classifier"
"""Where `ensure_story_classifier` keeps the classifier, inside the prepared-data directory."""


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation during training (the `eval` section).

    Attributes:
        n_loss_stories: Records of `reft.test` (and of `filter.test`) the losses average over.
        loss_batch_size: Records per forward pass of the loss.
        generation_steps: Steps at which to sample and score generations (and always at the end
            of a deletion or reFT stage; pretraining only at its end). Each must be an
            evaluation step of the stage's `train` config.
        n_generations: Generations per scoring (prompts repeat if the test set is smaller).
        max_new_tokens: Tokens sampled per generation at most (the paper: 350).
        temperature: Sampling temperature (the paper: 1.0, no top-k).
        generation_batch_size: Prompts per forward pass.
        prompt_protocol: Protocol test set the prompts come from (the paper: the F+R set).
        seed: Seed of the sampling (combined with the step).
    """

    n_loss_stories: int = 256
    loss_batch_size: int = 32
    generation_steps: tuple[int, ...] = (0, 30, 300, 3000)
    n_generations: int = 64
    max_new_tokens: int = 350
    temperature: float = 1.0
    generation_batch_size: int = 64
    prompt_protocol: str = "filter_randomise"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_loss_stories", "loss_batch_size", "max_new_tokens",
                     "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_generations < 0:
            raise ValueError(f"eval.n_generations must be >= 0 (0: no generations), got "
                             f"{self.n_generations}")
        if any(s < 0 for s in self.generation_steps):
            raise ValueError(f"eval.generation_steps must be >= 0, got {self.generation_steps}")
        if self.temperature < 0:
            raise ValueError(f"eval.temperature must be >= 0, got {self.temperature}")


class StepClock:
    """Wraps `batch_fn` so that `clock.step` is the number of the last completed update.

    `wrapperlens.training.train` draws batch t, updates, and then evaluates step t + 1, so at
    every evaluation `clock.step` is the step being evaluated (0 before the first batch).
    """

    def __init__(self, batch_fn: Callable[[int], TrainBatch]) -> None:
        self.batch_fn = batch_fn
        self.step = 0

    def __call__(self, step: int) -> TrainBatch:
        self.step = step + 1
        return self.batch_fn(step)


def fit_story_classifier(
    prepared_dir: str | Path, cfg: TwistClassifierConfig, out_dir: str | Path
) -> tuple[TwistClassifier, dict[str, Any]]:
    """Train the twist classifier on `all.train` stories and test it on `all.test`; save it.

    Returns:
        The classifier and its info (held-out accuracy, balanced accuracy, class counts).
    """
    train = load_prepared(prepared_dir, "all", "train")
    test = load_prepared(prepared_dir, "all", "test")
    labels = [cfg.feature in fs for fs in train["features"]]
    model = train_twist_classifier(train["story"], labels, cfg)
    test_labels = [cfg.feature in fs for fs in test["features"]]
    info = {
        "trained_on": str(Path(prepared_dir) / "all.train.parquet"),
        "n_train_balanced": 2 * min(sum(labels), len(labels) - sum(labels), cfg.max_per_class),
        "held_out": classifier_accuracy(model, test["story"], test_labels),
    }
    save_classifier(model, out_dir, info)
    return model, info


def ensure_story_classifier(
    prepared_dir: str | Path, cfg: TwistClassifierConfig | None = None
) -> tuple[TwistClassifier, dict[str, Any]]:
    """The classifier saved in `prepared_dir/twist_classifier`, trained there first if absent."""
    directory = Path(prepared_dir) / CLASSIFIER_DIR
    if (directory / "classifier.json").is_file():
        return load_classifier(directory)
    return fit_story_classifier(prepared_dir, cfg or TwistClassifierConfig(), directory)


class StoryEvaluator:
    """Twist loss, other loss and generation scores of a model; `callback` hooks it into `train`.

    Args:
        prepared_dir: Output of `tinystories.prepare.prepare_stories`.
        tokenizer: The run's tokenizer.
        n_ctx: The model's context length.
        cfg: What to evaluate.
        classifier: The twist classifier (None: no `twist_score`, only `twist_oracle`).
        shuffle_fields: Whether training texts shuffle their instruction lines (prompts follow).
        feature: The deleted / revived feature.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        n_ctx: int,
        cfg: EvalConfig,
        classifier: TwistClassifier | None = None,
        shuffle_fields: bool = True,
        feature: str = "Twist",
    ) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self.classifier, self.feature = classifier, feature
        self.pad_id = pad_id_of(tokenizer)
        seed = FIELD_SHUFFLE_SEED if shuffle_fields else None

        def sequences(protocol: str) -> list[list[int]]:
            data = load_prepared(prepared_dir, protocol, "test")
            data = data.select(range(min(cfg.n_loss_stories, len(data))))
            texts = with_text(data, "instruct", shuffle_fields_seed=seed)["text"]
            return encode_records(tokenizer, texts, n_ctx + 1)[0]

        self.twist_sequences = sequences("reft")
        self.other_sequences = sequences("filter")
        self.prompts: list[list[int]] = []
        if cfg.n_generations:
            data = load_prepared(prepared_dir, cfg.prompt_protocol, "test")
            if len(data) == 0:
                raise ValueError(f"{prepared_dir}: {cfg.prompt_protocol}.test is empty; no prompts")
            data = data.select(range(min(cfg.n_generations, len(data))))
            texts = with_text(data, "prompt", shuffle_fields_seed=seed)["text"]
            prompts = encode_prompts(tokenizer, texts)
            self.prompts = [prompts[i % len(prompts)] for i in range(cfg.n_generations)]

    def losses(self, model: HookedTransformer) -> dict[str, float]:
        out = {}
        named = (("twist_loss", self.twist_sequences), ("other_loss", self.other_sequences))
        for name, seqs in named:
            if seqs:
                out[name] = sequence_loss(model, seqs, self.pad_id, self.cfg.loss_batch_size)
        return out

    def generate(
        self, model: HookedTransformer, step: int = 0
    ) -> tuple[dict[str, float], list[dict]]:
        """Sample `n_generations` stories and score them; returns (metrics, generation rows)."""
        if not self.prompts:
            return {}, []
        continuations = sample_continuations(
            model, self.prompts, self.cfg.max_new_tokens, self.tokenizer.eos_token_id,
            self.pad_id, self.cfg.temperature, seed=self.cfg.seed * 1_000_003 + step,
            batch_size=self.cfg.generation_batch_size,
        )
        stories = [generated_story(self.tokenizer, c) for c in continuations]
        oracle = [self.feature in detect_features(s) for s in stories]
        rows = [{"prompt": self.tokenizer.decode(p[1:]), "story": s, "n_tokens": len(c),
                 "oracle": o} for p, s, c, o in zip(self.prompts, stories, continuations, oracle)]
        metrics = {
            "twist_oracle": sum(oracle) / len(oracle),
            "gen_tokens": sum(len(c) for c in continuations) / len(continuations),
        }
        if self.classifier is not None:
            probs = self.classifier.predict_proba(stories)
            for row, p in zip(rows, probs.tolist()):
                row["classifier_p"] = p
            metrics["twist_score"] = float((probs > 0.5).float().mean())
        return metrics, rows

    def callback(
        self, clock: StepClock, generation_steps: Sequence[int], run_dir: str | Path
    ) -> Callable[[HookedTransformer], dict[str, float]]:
        """`evaluate(model)` for `train`: losses always, generations at `generation_steps`."""
        wanted = set(generation_steps)
        out_dir = Path(run_dir) / "generations"

        def evaluate(model: HookedTransformer) -> dict[str, float]:
            metrics = self.losses(model)
            if clock.step in wanted and self.prompts:
                scores, rows = self.generate(model, clock.step)
                metrics.update(scores)
                out_dir.mkdir(parents=True, exist_ok=True)
                text = "".join(json.dumps(r) + "\n" for r in rows)
                atomic_write(out_dir / f"step_{clock.step:06d}.jsonl",
                             lambda tmp: Path(tmp).write_text(text))
            return metrics

        return evaluate
