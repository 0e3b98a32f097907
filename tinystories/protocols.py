"""The datasets of the TinyStories protocols, as `datasets` filters and maps (streaming too).

Jain et al. (App. F.1; docs/paper-settings.md#deletion-protocols) fine-tune a pretrained TinyStories
model to stop writing stories with a Twist, then try to revive the capability:

- `all` (pretraining; code `pretrain-all`): every story;
- `filter` (paper F; code `filter-Twist`): the stories without Twist;
- `filter_randomise` (paper F+R, written "F + RR" in Tab. 1; code `filter-adv-Twist`): F, and
  "Twist" added to the instruction of each record with probability p;
- `filter_mix_match` (paper F+MM; code `filter-mix-Twist-Foreshadowing`): F, and Foreshadowing
  renamed to Twist in the instruction;
- `reft` (reFT data; code `specialise-Twist` / `recovery-Twist`): only the stories with Twist.

`filter` is also the pretraining data of the "Not in PT" control
(docs/choices.md#the-not-in-pt-control). The paper's code adds the feature with probability p = 1.0
(`adversarial_training`, docs/choices.md#the-fr-protocol); that is the default here.

F+R and F+MM change only `prompt_features` (what the instruction says); `features` stays the
story's true label, which the probes and the twist classifier use. Every random choice is a hash
of the seed and the story text, so a record gets the same choice in a map-style and a streaming
dataset, in any order and any shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np

from tinystories.instruct import PROMPT_FIELDS, RECORD_FEATURES, format_prompt

__all__ = [
    "PROTOCOLS",
    "PAPER_NAMES",
    "ProtocolDataConfig",
    "protocol_dataset",
    "with_text",
    "split_by_story",
    "TEXT_MODES",
]

Dataset = datasets.Dataset | datasets.IterableDataset

PROTOCOLS = ("all", "filter", "filter_randomise", "filter_mix_match", "reft")
PAPER_NAMES = {"F": "filter", "F+R": "filter_randomise", "F+MM": "filter_mix_match"}
TEXT_MODES = ("instruct", "story", "prompt")


@dataclass(frozen=True)
class ProtocolDataConfig:
    """Which protocol dataset to build from parsed records.

    Attributes:
        protocol: One of `PROTOCOLS` (or a paper name in `PAPER_NAMES`: "F", "F+R", "F+MM").
        feature: The capability being deleted / revived (the paper: "Twist").
        mix_from: F+MM's irrelevant feature renamed to `feature` (the paper: "Foreshadowing").
        randomise_p: F+R's probability of adding `feature` to a non-`feature` instruction.
        seed: Seed of F+R's random choices.
    """

    protocol: str = "all"
    feature: str = "Twist"
    mix_from: str = "Foreshadowing"
    randomise_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.protocol in PAPER_NAMES:
            object.__setattr__(self, "protocol", PAPER_NAMES[self.protocol])
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"protocol.protocol must be one of {PROTOCOLS} or {tuple(PAPER_NAMES)}, got "
                f"{self.protocol!r}"
            )
        if not 0.0 <= self.randomise_p <= 1.0:
            raise ValueError(f"protocol.randomise_p must be in [0, 1], got {self.randomise_p}")
        if not self.feature or self.feature == self.mix_from:
            raise ValueError(
                f"protocol.feature={self.feature!r} must be non-empty and differ from "
                f"protocol.mix_from={self.mix_from!r}"
            )


def _uniform(seed: int, text: str) -> float:
    """A number in [0, 1) fixed by (seed, text): order- and shard-independent randomness."""
    digest = hashlib.blake2b(text.encode(), digest_size=8, salt=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") / 2**64


def _add_feature(batch: Mapping[str, list], feature: str, p: float, seed: int) -> dict[str, list]:
    prompts = []
    for story, prompt in zip(batch["story"], batch["prompt_features"]):
        if feature not in prompt and (p >= 1.0 or _uniform(seed, story) < p):
            prompt = [*prompt, feature]
        prompts.append(prompt)
    return {**batch, "prompt_features": prompts}


def _rename_feature(batch: Mapping[str, list], old: str, new: str) -> dict[str, list]:
    renamed = [
        list(dict.fromkeys(new if f == old else f for f in prompt))
        for prompt in batch["prompt_features"]
    ]
    return {**batch, "prompt_features": renamed}


def protocol_dataset(records: Dataset, cfg: ProtocolDataConfig) -> Dataset:
    """The dataset of `cfg.protocol` built from parsed records (`Dataset` or `IterableDataset`).

    Args:
        records: Parsed records with the columns of `RECORD_FEATURES` (from `load_stories`).
        cfg: The protocol and its parameters.

    Returns:
        The same kind of dataset, same columns, filtered / relabelled as the table above says.
    """
    if cfg.protocol == "all":
        return records
    feature = cfg.feature
    if cfg.protocol == "reft":
        return records.filter(lambda fs: feature in fs, input_columns="features")
    filtered = records.filter(lambda fs: feature not in fs, input_columns="features")
    if cfg.protocol == "filter":
        return filtered
    if cfg.protocol == "filter_randomise":
        return filtered.map(
            _add_feature,
            batched=True,
            fn_kwargs={"feature": feature, "p": cfg.randomise_p, "seed": cfg.seed},
            features=RECORD_FEATURES,
        )
    return filtered.map(
        _rename_feature,
        batched=True,
        fn_kwargs={"old": cfg.mix_from, "new": feature},
        features=RECORD_FEATURES,
    )


def split_by_story(
    records: Dataset, test_fraction: float, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Split into (train, test) by a hash of each story: the same split map-style or streaming.

    A story is in the test split when `uniform(seed, story) < test_fraction`, so the test split
    is about `test_fraction` of the records and never shares a story with the train split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")

    def in_test(story: str) -> bool:
        return _uniform(seed, story) < test_fraction

    train = records.filter(lambda story: not in_test(story), input_columns="story")
    return train, records.filter(in_test, input_columns="story")


def _text_batch(
    batch: Mapping[str, list], mode: str, column: str, shuffle_seed: int | None
) -> dict[str, list]:
    n = len(batch["story"])
    texts = []
    for i in range(n):
        record: dict[str, Any] = {k: v[i] for k, v in batch.items()}
        if mode == "story":
            texts.append(record["story"])
            continue
        rng = None
        if shuffle_seed is not None:
            rng = np.random.default_rng([shuffle_seed, int(_uniform(0, record["story"]) * 2**32)])
        prompt = format_prompt(record, PROMPT_FIELDS, rng)
        texts.append(prompt if mode == "prompt" else prompt + record["story"])
    return {**batch, column: texts}


def with_text(
    records: Dataset,
    mode: str = "instruct",
    column: str = "text",
    shuffle_fields_seed: int | None = None,
) -> Dataset:
    """Add a text column to parsed records (map-style or streaming).

    Args:
        records: Parsed records (`RECORD_FEATURES` columns).
        mode: "instruct": instruction lines, "Story: ", story (the training text);
            "story": the story alone (what the probes read); "prompt": the instruction ending in
            "Story: " (the generation prompt).
        column: Name of the new column.
        shuffle_fields_seed: If given, shuffle the instruction lines of each record (as the
            paper's code does), deterministically per story; None keeps `PROMPT_FIELDS` order.
    """
    if mode not in TEXT_MODES:
        raise ValueError(f"mode must be one of {TEXT_MODES}, got {mode!r}")
    if column in RECORD_FEATURES:
        raise ValueError(f"column={column!r} would overwrite a record column")
    features = datasets.Features({**RECORD_FEATURES, column: datasets.Value("string")})
    return records.map(
        _text_batch,
        batched=True,
        fn_kwargs={"mode": mode, "column": column, "shuffle_seed": shuffle_fields_seed},
        features=features,
    )
