"""An offline stand-in for TinyStories-Instruct: seeded template stories with real feature traces.

The real dataset (`roneneldan/TinyStoriesInstruct`, GPT-written) cannot be downloaded in tests or
on machines without the hub. This module writes stories in exactly its record format (so the same
parser reads both) from small template grammars over names, objects, places, adjectives and verbs.
Each of the six features leaves a trace in the story text that a small language model can learn
to produce when the instruction asks for it, and that a probe can read:

| feature       | trace in the story                                                         |
|---------------|----------------------------------------------------------------------------|
| Twist         | a surprise sentence ("But then, something unexpected happened: ...")       |
| Foreshadowing | an early hint sentence, and a late sentence that pays it off              |
| Dialogue      | quoted speech (stories without Dialogue contain no quotation marks)       |
| BadEnding     | a sad last sentence (otherwise a happy one)                                |
| MoralValue    | "The moral of the story is: ..."                                           |
| Conflict      | an argument or fight over a toy or a turn                                  |

`detect_features(story)` recognises every trace, so it is an exact oracle for this source (not
for the real data, where a trained classifier is needed).

It is a stand-in, not a replacement: the stories are far less varied than GPT-written ones and the
paper's numbers are not expected on it. To run on the real dataset, pass
`StoryDataConfig(source="roneneldan/TinyStoriesInstruct")` (with network) or its downloaded
`TinyStories-Instruct-*.txt` files to `tinystories.data.load_stories`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np

from tinystories.instruct import EOT, FEATURES, RECORD_FEATURES, format_prompt

__all__ = [
    "StorySourceConfig",
    "DEFAULT_FEATURE_PROBS",
    "generate_story",
    "generate_records",
    "story_source_dataset",
    "write_story_files",
    "detect_features",
]

DEFAULT_FEATURE_PROBS = {
    "Twist": 0.3,
    "Foreshadowing": 0.25,
    "Dialogue": 0.4,
    "BadEnding": 0.2,
    "MoralValue": 0.25,
    "Conflict": 0.25,
}

# ----------------------------------------------------------------------------------------------
# Vocabulary. Names carry their pronoun; objects and words are single words so that the
# "Words:" instruction names words that really occur in the story.

_NAMES = [
    ("Lily", "she"), ("Ben", "he"), ("Mia", "she"), ("Tom", "he"), ("Sue", "she"), ("Max", "he"),
    ("Anna", "she"), ("Sam", "he"), ("Lucy", "she"), ("Tim", "he"), ("Zoe", "she"),
    ("Jack", "he"), ("Emma", "she"), ("Leo", "he"), ("Rosa", "she"), ("Finn", "he"),
    ("Ella", "she"), ("Noah", "he"), ("Ava", "she"), ("Jake", "he"),
]
_OBJECTS = [
    "ball", "kite", "bear", "box", "car", "hat", "rock", "boat", "doll", "drum", "book",
    "balloon", "jar", "crayon", "wagon", "bucket", "robot", "shell", "blanket", "train",
]
_PLACES = [
    "park", "garden", "beach", "forest", "farm", "hill", "pond", "backyard", "school", "zoo",
    "market", "lake",
]
_ADJECTIVES = [
    "happy", "shiny", "big", "soft", "little", "bright", "funny", "tiny", "warm", "brave",
    "gentle", "colorful", "red", "blue", "curious", "sleepy",
]
_VERBS = ["play", "run", "jump", "build", "dance", "sing", "climb", "paint", "hide", "swim", "draw"]
_ANIMALS = ["dog", "cat", "bird", "frog", "duck", "bunny", "puppy", "owl"]
_MORALS = [
    "sharing makes everyone happy",
    "always be kind to your friends",
    "it is good to be brave",
    "listen to your mom and dad",
    "never give up",
    "telling the truth is always best",
    "friends help each other",
]

# ----------------------------------------------------------------------------------------------
# Sentence templates. Slots: {name} {Pron} {pron} {pos} {kid} {friend} {object} {adj} {adj2}
# {place} {verb} {animal} {moral}. Feature templates are listed with the marker phrase that
# `detect_features` looks for (a fixed part of the template).

_OPENINGS = [
    "Once upon a time, there was a {adj} {kid} named {name}.",
    "One day, a {adj} {kid} named {name} woke up early.",
    "{name} was a {adj} {kid} who lived near the {place}.",
    "There once was a {adj} {kid} called {name}.",
]
_HAS_OBJECT = [
    "{Pron} had a {adj2} {object} that {pron} loved very much.",
    "{name} had a {adj2} {object} and took it everywhere.",
    "{Pos} favorite toy was a {adj2} {object}.",
]
_GOING = [
    "One morning, {name} went to the {place} with {pos} friend {friend}.",
    "{name} and {friend} walked to the {place} together.",
    "After lunch, {name} took the {object} to the {place} to meet {friend}.",
]
_ACTIVITY = [
    "{name} and {friend} liked to {verb} in the {place}.",
    "They wanted to {verb} all day long.",
    "{friend} showed {name} how to {verb} with the {object}.",
]
_DIALOGUE = [
    '"Look at my {object}!" said {name}. "It is so {adj2}!"',
    '"Can I {verb} with you?" asked {friend}. "Yes, let us {verb} together!" said {name}.',
    '"Do you like the {place}?" asked {friend}. "I love it!" said {name}.',
    '"Wow, what a nice {object}," said {friend}.',
]
_FORESHADOW = [  # (hint early in the story, payoff near its end, marker of the hint)
    ("Nobody noticed the little hole in the {object}.",
     "The little hole in the {object} had grown much bigger.", "Nobody noticed the little hole"),
    ("Far away, dark clouds were slowly coming closer.",
     "The dark clouds were right above them now.", "dark clouds were slowly coming closer"),
    ("{name} did not know that the {object} would soon be very important.",
     "Now {name} knew why the {object} was so important.", "would soon be very important"),
    ("There was a strange sound near the {place}, but no one paid attention.",
     "The strange sound came back, louder than before.", "but no one paid attention"),
]
_CONFLICT = [
    ("{friend} wanted the {object} too, and they started to fight over it.", "started to fight"),
    ("{name} and {friend} had a big argument about who would {verb} first.", "had a big argument"),
    ("{friend} grabbed the {object}, and {name} got very angry.", "got very angry"),
]
_CONFLICT_END = "After a while, they said sorry to each other."
_TWIST = [
    ("But then, something unexpected happened: the {object} started to talk!",
     "something unexpected happened"),
    ("Suddenly, to everyone's surprise, the {animal} was really {friend}'s grandpa in a costume.",
     "to everyone's surprise"),
    ("Nobody expected what happened next: the {object} turned into a {adj2} bird and flew away.",
     "Nobody expected what happened next"),
    ("Then came a big surprise: the old {object} was a magic door to a secret {place}.",
     "Then came a big surprise"),
]
_ANIMAL = "A {adj2} {animal} was watching them from behind a tree."
_HAPPY_ENDINGS = [
    "{name} smiled and went home happy.",
    "They played until the sun went down, and everyone was happy.",
    "From that day on, {name} and {friend} were best friends.",
]
_BAD_ENDINGS = [
    ("In the end, the {object} was broken and {name} was very sad.", "was very sad"),
    ("{name} never saw the {object} again, and {pron} cried all the way home.",
     "cried all the way home"),
    ("The day ended badly, and {name} went to bed feeling sad and alone.", "feeling sad and alone"),
]
_MORAL = ("The moral of the story is: {moral}.", "The moral of the story is")


def detect_features(story: str) -> list[str]:
    """The features whose trace is in `story`, in `FEATURES` order (exact for this source)."""
    found = {
        "Twist": any(marker in story for _, marker in _TWIST),
        "Foreshadowing": any(marker in story for _, _, marker in _FORESHADOW),
        "Dialogue": '"' in story,
        "BadEnding": any(marker in story for _, marker in _BAD_ENDINGS),
        "MoralValue": _MORAL[1] in story,
        "Conflict": any(marker in story for _, marker in _CONFLICT),
    }
    return [f for f in FEATURES if found[f]]


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def generate_story(rng: np.random.Generator, features: Sequence[str]) -> dict[str, Any]:
    """One record (the columns of `RECORD_FEATURES`) whose story has exactly `features`."""
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown features {unknown}; the story source knows {FEATURES}")
    features = [f for f in FEATURES if f in features]
    (name, pron), (friend, _) = [_NAMES[i] for i in rng.choice(len(_NAMES), 2, replace=False)]
    slots = {
        "name": name,
        "pron": pron,
        "Pron": pron.capitalize(),
        "pos": "her" if pron == "she" else "his",
        "Pos": "Her" if pron == "she" else "His",
        "kid": "girl" if pron == "she" else "boy",
        "friend": friend,
        "object": _pick(rng, _OBJECTS),
        "adj": _pick(rng, _ADJECTIVES),
        "adj2": _pick(rng, _ADJECTIVES),
        "place": _pick(rng, _PLACES),
        "verb": _pick(rng, _VERBS),
        "animal": _pick(rng, _ANIMALS),
        "moral": _pick(rng, _MORALS),
    }
    fill = lambda template: template.format(**slots)  # noqa: E731
    opening = [fill(_pick(rng, _OPENINGS)), fill(_pick(rng, _HAS_OBJECT))]
    foreshadow = _pick(rng, _FORESHADOW) if "Foreshadowing" in features else None
    if foreshadow:
        opening.append(fill(foreshadow[0]))
    middle = [fill(_pick(rng, _GOING)), fill(_ACTIVITY[0])]  # _ACTIVITY[0] uses {verb}: Words
    middle.append(fill(_pick(rng, _ACTIVITY[1:])))
    if "Dialogue" in features:
        middle.append(fill(_pick(rng, _DIALOGUE)))
    if "Conflict" in features:
        middle.append(fill(_pick(rng, _CONFLICT)[0]))
        if "BadEnding" not in features:
            middle.append(_CONFLICT_END)
    ending = []
    if "Twist" in features:
        twist = _pick(rng, _TWIST)[0]
        if "{animal}" in twist:
            middle.append(fill(_ANIMAL))
        ending.append(fill(twist))
    if foreshadow:
        ending.append(fill(foreshadow[1]))
    ending.append(
        fill(_pick(rng, _BAD_ENDINGS)[0] if "BadEnding" in features else _pick(rng, _HAPPY_ENDINGS))
    )
    if "MoralValue" in features:
        ending.append(fill(_MORAL[0]))
    paragraphs = [" ".join(opening), " ".join(middle), " ".join(ending)]
    sentences = [s for p in (opening, middle, ending) for s in p]
    return {
        "story": "\n\n".join(paragraphs),
        "summary": f"{name} and {friend} spend a day at the {slots['place']} with "
        f"{slots['pos']} {slots['object']}.",
        "words": [slots["verb"], slots["object"], slots["adj"]],
        "features": features,
        "prompt_features": list(features),
        "random_sentence": _pick(rng, sentences),
        "error": "",
    }


@dataclass(frozen=True)
class StorySourceConfig:
    """How many stories to write and how often each feature occurs.

    Attributes:
        n_stories: Number of records.
        seed: Seed of the numpy Generator; the same seed gives the same stories.
        feature_probs: Independent probability of each feature (missing features: 0).
    """

    n_stories: int = 1000
    seed: int = 0
    feature_probs: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FEATURE_PROBS))

    def __post_init__(self) -> None:
        if self.n_stories < 1:
            raise ValueError(f"story_source.n_stories must be >= 1, got {self.n_stories}")
        for name, p in self.feature_probs.items():
            if name not in FEATURES:
                raise ValueError(f"story_source.feature_probs has unknown feature {name!r}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"story_source.feature_probs[{name!r}] must be in [0, 1], got {p}")


def generate_records(cfg: StorySourceConfig) -> list[dict[str, Any]]:
    """`cfg.n_stories` records, each feature drawn independently with its probability."""
    rng = np.random.default_rng(cfg.seed)
    probs = np.array([cfg.feature_probs.get(f, 0.0) for f in FEATURES])
    records = []
    for _ in range(cfg.n_stories):
        has = rng.random(len(FEATURES)) < probs
        records.append(generate_story(rng, [f for f, h in zip(FEATURES, has) if h]))
    return records


def story_source_dataset(cfg: StorySourceConfig) -> datasets.Dataset:
    """The records as an in-memory `datasets.Dataset` with the `RECORD_FEATURES` schema."""
    records = generate_records(cfg)
    return datasets.Dataset.from_dict(
        {name: [r[name] for r in records] for name in RECORD_FEATURES}, features=RECORD_FEATURES
    )


def write_story_files(
    directory: str | Path,
    cfg: StorySourceConfig,
    formats: Sequence[str] = ("txt",),
    stem: str = "stories",
) -> dict[str, Path]:
    """Write the records as the real dataset's files: `.txt` and/or `.jsonl`.

    The `.txt` file is in the TinyStories-Instruct layout (instruction lines in a random order
    per record, `Story:`, a blank line, the story, `<|endoftext|>`); the `.jsonl` file has one
    flat object per record.

    Returns:
        The written path per format.
    """
    bad = sorted(set(formats) - {"txt", "jsonl"})
    if bad:
        raise ValueError(f"formats must be 'txt' and/or 'jsonl', got {bad}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    records = generate_records(cfg)
    written = {}
    if "txt" in formats:
        order_rng = np.random.default_rng([cfg.seed, 1])
        chunks = [
            f"{format_prompt(r, shuffle_rng=order_rng).rstrip()}\n\n{r['story']}\n{EOT}\n"
            for r in records
        ]
        written["txt"] = directory / f"{stem}.txt"
        written["txt"].write_text("".join(chunks), encoding="utf-8")
    if "jsonl" in formats:
        keys = ("story", "summary", "words", "features", "random_sentence")
        lines = [json.dumps({k: r[k] for k in keys}) + "\n" for r in records]
        written["jsonl"] = directory / f"{stem}.jsonl"
        written["jsonl"].write_text("".join(lines), encoding="utf-8")
    return written
