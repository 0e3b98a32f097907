"""Per-layer story-feature probes, as the paper runs them on TinyStories (App. F.2).

One bias-free linear probe per residual point with one logit per story feature (multi-label,
BCE), reading the mean of the residual stream over the last 10 tokens of the *story text only*
(no instruction: the instruction names the features, and a probe reading it would test nothing),
with the model frozen. Accuracy is per feature at logit > 0 on held-out stories. The probing
itself is `wrapperlens.analysis.probing.probe_features_by_layer`, which also probes a randomly
initialised model of the same shape as a baseline; this module builds its inputs from a prepared
dataset.

Differences from the paper's code: the inputs are right-padded (lengths passed to the probe)
rather than left-padded with text from other stories, and every residual point B0..BL is probed
(the paper shows B0..B10 of 12 blocks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from tinystories.instruct import FEATURES
from tinystories.lm import encode_records, pad_id_of
from tinystories.prepare import load_prepared
from tinystories.tokenizer import pad_batch
from wrapperlens.analysis.probing import ProbeConfig, ProbeReport, probe_features_by_layer

__all__ = ["ProbeDataConfig", "StoryProbeInputs", "story_probe_inputs", "probe_story_features"]


@dataclass(frozen=True)
class ProbeDataConfig:
    """Which stories the probes read (the `probe_data` section).

    Attributes:
        split: Prepared split the stories come from ("test": stories no model trained on).
        n_stories: At most this many stories (the probe's own train/test split divides them).
        last_k: Positions averaged (the paper: 10).
        features: Feature names, one logit each (the paper's six, in its order).
    """

    split: str = "test"
    n_stories: int = 2000
    last_k: int = 10
    features: tuple[str, ...] = FEATURES

    def __post_init__(self) -> None:
        if self.n_stories < 8:
            raise ValueError(f"probe_data.n_stories must be >= 8, got {self.n_stories}")
        if self.last_k < 1:
            raise ValueError(f"probe_data.last_k must be >= 1, got {self.last_k}")
        if not self.features:
            raise ValueError("probe_data.features must name at least one feature")


@dataclass
class StoryProbeInputs:
    """Right-padded story tokens, their lengths and 0/1 feature labels."""

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, "batch"]
    labels: Float[Tensor, "batch n_features"]
    feature_names: list[str]


def story_probe_inputs(
    prepared_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    n_ctx: int,
    cfg: ProbeDataConfig = ProbeDataConfig(),
) -> StoryProbeInputs:
    """`<|endoftext|>` + story of up to `cfg.n_stories` records (the end kept if too long)."""
    data = load_prepared(prepared_dir, "all", cfg.split)
    data = data.select(range(min(cfg.n_stories, len(data))))
    if len(data) < 8:
        raise ValueError(f"{prepared_dir}: only {len(data)} stories in all.{cfg.split}")
    sequences, _ = encode_records(tokenizer, data["story"], n_ctx, add_eos=False, keep="end")
    short = min(len(s) for s in sequences)
    if short < cfg.last_k:
        raise ValueError(f"a story has {short} tokens, fewer than probe_data.last_k={cfg.last_k}")
    tokens, real = pad_batch(sequences, pad_id_of(tokenizer))
    lengths = real.sum(-1)
    labels = torch.tensor(
        [[float(f in fs) for f in cfg.features] for fs in data["features"]], dtype=torch.float32
    )
    return StoryProbeInputs(tokens, lengths, labels, list(cfg.features))


def probe_story_features(
    models: dict[str, HookedTransformer],
    inputs: StoryProbeInputs,
    config: ProbeConfig = ProbeConfig(),
    last_k: int = 10,
    points: Sequence[int] | None = None,
) -> ProbeReport:
    """Feature probes at every residual point of every model (plus a random-init baseline).

    Returns:
        A `ProbeReport`: `accuracy[model][point]` is a list over `inputs.feature_names`.
    """
    return probe_features_by_layer(
        models, inputs.tokens, inputs.labels, inputs.feature_names, last_k=last_k,
        lengths=inputs.lengths, config=config, points=points,
    )
