"""A story classifier for the generation score: does this story have a twist?

The paper scores generations with a fine-tuned GPT-3.5 (92% held-out accuracy, App. F.2),
which is not available here. This is its stand-in: a logistic regression (without a bias, see
`TwistClassifier`) on hashed word uni- and bigrams of the story text, trained on labelled
stories (the prepared `all.train` split, story text only, label = the record's true `features`
contain the feature) and tested on `all.test`.
Like the paper's classifier it is trained on a class-balanced sample, and its held-out accuracy
is reported with every score.

On the offline story source a twist is a fixed surprise sentence, so the classifier is nearly
exact there, and `tinystories.story_source.detect_features` (an exact oracle for that source
only) gives a second score to check it against. On the real dataset expect a lower accuracy than
GPT-3.5's: a bag of n-grams sees "suddenly" and "surprise", not the plot.

The model is `EmbeddingBag(n_buckets, 1, mode="sum")` over crc32-hashed n-grams (deterministic
across processes, unlike Python's `hash`), each story's n-gram set weighted by 1/sqrt(its size);
full-batch AdamW.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from wrapperlens.checkpoints import (
    CheckpointError,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)

__all__ = [
    "TwistClassifierConfig",
    "TwistClassifier",
    "train_twist_classifier",
    "classifier_accuracy",
    "balanced_sample",
    "save_classifier",
    "load_classifier",
]

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[^\sa-z]")
WEIGHTS_FILE = "classifier.safetensors"
INFO_FILE = "classifier.json"


@dataclass(frozen=True)
class TwistClassifierConfig:
    """The classifier and its training (the `classifier` section).

    Attributes:
        feature: The feature it detects (the paper: Twist).
        n_buckets: Hash buckets of the n-gram features.
        ngram_max: Longest word n-gram (1 = bag of words).
        max_per_class: Balanced training sample: at most this many stories per class.
        steps: Full-batch AdamW steps.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (regularises the n-gram weights).
        seed: Seed of the balanced sample.
    """

    feature: str = "Twist"
    n_buckets: int = 2**16
    ngram_max: int = 2
    max_per_class: int = 5000
    steps: int = 100
    lr: float = 0.05
    weight_decay: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_buckets", "ngram_max", "max_per_class", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"classifier.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("classifier.lr must be > 0 and classifier.weight_decay >= 0")
        if not self.feature:
            raise ValueError("classifier.feature must be non-empty")


def _ngram_ids(text: str, ngram_max: int, n_buckets: int) -> list[int]:
    words = _WORD.findall(text.lower())
    grams = {
        " ".join(words[i : i + n])
        for n in range(1, ngram_max + 1)
        for i in range(len(words) - n + 1)
    }
    return sorted({zlib.crc32(g.encode()) % n_buckets for g in grams})


class TwistClassifier(torch.nn.Module):
    """Bias-free logistic regression on hashed word n-grams; `predict_proba(texts)` in [0, 1].

    Without a bias a text with no known n-gram (empty, or gibberish from an undertrained model)
    gets probability 0.5, which `> 0.5` counts as "no twist"; with one, the classifier learned to
    call such texts twist stories whenever the bias came out positive.
    """

    def __init__(self, cfg: TwistClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weights = torch.nn.EmbeddingBag(cfg.n_buckets, 1, mode="sum")
        torch.nn.init.zeros_(self.weights.weight)

    def featurize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """(n-gram ids, bag offsets, per-id weights) for `EmbeddingBag`."""
        ids, offsets, weights = [], [], []
        for text in texts:
            grams = _ngram_ids(text, self.cfg.ngram_max, self.cfg.n_buckets)
            offsets.append(len(ids))
            ids.extend(grams)
            weights.extend([1.0 / max(1, len(grams)) ** 0.5] * len(grams))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets), torch.tensor(weights)

    def forward(self, features: tuple[Tensor, Tensor, Tensor]) -> Float[Tensor, "batch"]:
        ids, offsets, weights = features
        return self.weights(ids, offsets, per_sample_weights=weights).squeeze(-1)

    def predict_proba(self, texts: Sequence[str]) -> Float[Tensor, "batch"]:
        """Probability that each text has the feature."""
        if not texts:
            return torch.zeros(0)
        with torch.no_grad():
            return torch.sigmoid(self(self.featurize(texts)))


def balanced_sample(labels: Sequence[bool], max_per_class: int, seed: int) -> list[int]:
    """Indices of an equal number of positive and negative examples (at most `max_per_class`)."""
    labels = np.asarray(labels, dtype=bool)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    n = min(len(pos), len(neg), max_per_class)
    if n == 0:
        raise ValueError(
            f"cannot train a classifier: {len(pos)} positive and {len(neg)} negative examples"
        )
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    return sorted(chosen.tolist())


def train_twist_classifier(
    texts: Sequence[str], labels: Sequence[bool], cfg: TwistClassifierConfig
) -> TwistClassifier:
    """Fit the classifier on a class-balanced sample of (`texts`, `labels`)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    chosen = balanced_sample(labels, cfg.max_per_class, cfg.seed)
    model = TwistClassifier(cfg)
    features = model.featurize([texts[i] for i in chosen])
    target = torch.tensor([float(labels[i]) for i in chosen])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    with torch.enable_grad():  # also when first needed inside an evaluation under no_grad
        for _ in range(cfg.steps):
            loss = F.binary_cross_entropy_with_logits(model(features), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def classifier_accuracy(
    model: TwistClassifier, texts: Sequence[str], labels: Sequence[bool]
) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean of the two class recalls) and class counts."""
    pred = (model.predict_proba(texts) > 0.5).numpy()
    labels = np.asarray(labels, dtype=bool)
    if len(labels) == 0:
        raise ValueError("classifier_accuracy needs at least one example")
    recalls = [float((pred[labels == c] == c).mean()) for c in (True, False) if (labels == c).any()]
    return {
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "n_positive": int(labels.sum()),
        "n_negative": int((~labels).sum()),
    }


def save_classifier(model: TwistClassifier, directory: str | Path, info: dict[str, Any]) -> Path:
    """Write `classifier.safetensors` and `classifier.json` (config + `info`, e.g. accuracy)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS_FILE, dict(model.state_dict()))
    write_json(directory / INFO_FILE, {"config": asdict(model.cfg), **info})
    return directory


def load_classifier(directory: str | Path) -> tuple[TwistClassifier, dict[str, Any]]:
    """The classifier saved in `directory`, and its `classifier.json`."""
    directory = Path(directory)
    info = read_json(directory / INFO_FILE)
    try:
        model = TwistClassifier(TwistClassifierConfig(**info["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory / INFO_FILE}: invalid classifier config ({e})") from e
    state = load_tensors(directory / WEIGHTS_FILE)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: does not fit the config ({e})") from e
    return model.eval(), info
