"""What a TinyStories run measures while it trains: twist loss and the twist generation score.

The paper tracks two things during deletion and reFT (App. F.2, F.3;
docs/paper-settings.md#twist-loss-and-generation-score):

- the **loss on Twist stories** (Fig. 11b, 31, 33): here the mean next-token loss of the first
  `n_loss_stories` records of `reft.test` (Twist stories, instruction + story, as trained), logged
  as `twist_loss`; the same on `filter.test` (stories without Twist) is `other_loss`, which
  shows whether a change is specific to twists;
- the **generation score** (Tab. 1, Fig. 32, 34): prompts that ask for a Twist (the F+R test set:
  non-twist records whose Features line names Twist), sampled at temperature 1.0, each story
  classified by the twist classifier; `twist_score` is the fraction classified as twist stories.
  `twist_oracle` is the fraction in which `detect_features` finds a twist sentence, which is
  exact for the offline story source only (on real data it is a lower bound).

On plain stories (no Feature labels, see `tinystories.prepare`) there are no Twist stories to
measure: the evaluator logs `test_loss`, the mean next-token loss of the first `n_loss_stories`
stories of `all.test` (held out, as trained), and its generations are unconditional (sampled
from `<|endoftext|>` alone) with only `gen_tokens` scored; no twist classifier is trained.

The trainer calls `evaluate(model, step)`; generations (the expensive part) run only at
`EvalConfig.generation_steps` and at the end of the stage, and are written to
`RUN_DIR/generations/step_XXXXXX.jsonl`.
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
from tinystories.prepare import CLASSIFIER_DIR, FIELD_SHUFFLE_SEED, UnlabelledDataError
from tinystories.prepare import load_prepared, prepared_info, training_texts
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

__all__ = [
    "EvalConfig",
    "FIELD_SHUFFLE_SEED",
    "CLASSIFIER_DIR",
    "StoryEvaluator",
    "fit_story_classifier",
    "ensure_story_classifier",
]


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
        prompt_protocol: Protocol test set the prompts come from (the paper: the F+R set);
            ignored on unlabelled stories, whose generations are unconditional.
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


def fit_story_classifier(
    prepared_dir: str | Path, cfg: TwistClassifierConfig, out_dir: str | Path
) -> tuple[TwistClassifier, dict[str, Any]]:
    """Train the twist classifier on `all.train` stories and test it on `all.test`; save it.

    Returns:
        The classifier and its info (held-out accuracy, balanced accuracy, class counts).

    Raises:
        UnlabelledDataError: The prepared stories carry no Feature labels to train on.
    """
    train = load_prepared(prepared_dir, "all", "train")
    if not any(train["features"]):
        raise UnlabelledDataError(_no_classifier(prepared_dir, cfg.feature))
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


def _no_classifier(prepared_dir: str | Path, feature: str) -> str:
    return (f"{prepared_dir}: no twist classifier: the prepared stories have no {feature!r} "
            "labels (plain text without 'Features:' lines); twist scores need labelled stories")


def ensure_story_classifier(
    prepared_dir: str | Path, cfg: TwistClassifierConfig | None = None
) -> tuple[TwistClassifier | None, dict[str, Any]]:
    """The classifier saved in `prepared_dir/twist_classifier`, trained there first if absent.

    Returns:
        `(classifier, info)`; on unlabelled stories `(None, {"held_out": None, "skipped": why})`
        (nothing is trained: a classifier needs labelled stories).
    """
    cfg = cfg or TwistClassifierConfig()
    info = prepared_info(prepared_dir)
    if not info.labelled:
        return None, {"held_out": None, "skipped": _no_classifier(prepared_dir, info.feature)}
    directory = Path(prepared_dir) / CLASSIFIER_DIR
    if (directory / "classifier.json").is_file():
        return load_classifier(directory)
    return fit_story_classifier(prepared_dir, cfg, directory)


class StoryEvaluator:
    """Twist loss, other loss and generation scores of a model; `callback` hooks it into `train`.

    On unlabelled (plain) stories: `test_loss` and unconditional generations instead (module
    docstring).

    Args:
        prepared_dir: Output of `tinystories.prepare.prepare_stories`.
        tokenizer: The run's tokenizer.
        n_ctx: The model's context length.
        cfg: What to evaluate.
        classifier: The twist classifier (None: no `twist_score`).
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
        info = prepared_info(prepared_dir)
        self.labelled = info.labelled

        def sequences(protocol: str) -> list[list[int]]:
            texts = training_texts(prepared_dir, protocol, "test", shuffle_fields=shuffle_fields,
                                   limit=cfg.n_loss_stories)
            return encode_records(tokenizer, texts, n_ctx + 1)[0]

        # name -> held-out sequences whose mean loss is logged under that name
        self.loss_sequences = (
            {"twist_loss": sequences("reft"), "other_loss": sequences("filter")} if self.labelled
            else {"test_loss": sequences("all")}
        )
        self.prompts: list[list[int]] = []
        if cfg.n_generations and info.text_format == "plain":  # unconditional: <|endoftext|> only
            self.prompts = encode_prompts(tokenizer, [""] * cfg.n_generations)
        elif cfg.n_generations:  # unlabelled Instruct records: their own instructions
            protocol = cfg.prompt_protocol if self.labelled else "all"
            data = load_prepared(prepared_dir, protocol, "test")
            if len(data) == 0:
                raise ValueError(f"{prepared_dir}: {protocol}.test is empty; no prompts")
            data = data.select(range(min(cfg.n_generations, len(data))))
            texts = with_text(data, "prompt", shuffle_fields_seed=seed)["text"]
            prompts = encode_prompts(tokenizer, texts)
            self.prompts = [prompts[i % len(prompts)] for i in range(cfg.n_generations)]

    def losses(self, model: HookedTransformer) -> dict[str, float]:
        """`twist_loss` and `other_loss` (labelled stories) or `test_loss` (unlabelled)."""
        out = {}
        for name, seqs in self.loss_sequences.items():
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
        rows = [{"prompt": self.tokenizer.decode(p[1:]), "story": s, "n_tokens": len(c)}
                for p, s, c in zip(self.prompts, stories, continuations)]
        metrics = {"gen_tokens": sum(len(c) for c in continuations) / len(continuations)}
        if self.labelled:  # the oracle's score only means something where prompts ask for twists
            oracle = [self.feature in detect_features(s) for s in stories]
            for row, o in zip(rows, oracle):
                row["oracle"] = o
            metrics["twist_oracle"] = sum(oracle) / len(oracle)
        if self.classifier is not None:
            probs = self.classifier.predict_proba(stories)
            for row, p in zip(rows, probs.tolist()):
                row["classifier_p"] = p
            metrics["twist_score"] = float((probs > 0.5).float().mean())
        return metrics, rows

    def callback(
        self, generation_steps: Sequence[int], run_dir: str | Path
    ) -> Callable[[HookedTransformer, int], dict[str, float]]:
        """`evaluate(model, step)` for the trainer: losses always, generations at
        `generation_steps`."""
        wanted = set(generation_steps)
        out_dir = Path(run_dir) / "generations"

        def evaluate(model: HookedTransformer, step: int) -> dict[str, float]:
            metrics = self.losses(model)
            if step in wanted and self.prompts:
                scores, rows = self.generate(model, step)
                metrics.update(scores)
                out_dir.mkdir(parents=True, exist_ok=True)
                text = "".join(json.dumps(r) + "\n" for r in rows)
                atomic_write(out_dir / f"step_{step:06d}.jsonl",
                             lambda tmp: Path(tmp).write_text(text))
            return metrics

        return evaluate
