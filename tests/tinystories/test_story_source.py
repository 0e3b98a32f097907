"""The offline story source: seeded, varied, and every feature leaves its trace."""

import re

import numpy as np
import pytest

from tinystories.instruct import FEATURES
from tinystories.story_source import (
    DEFAULT_FEATURE_PROBS,
    StorySourceConfig,
    detect_features,
    generate_records,
    generate_story,
)

N = 600


@pytest.fixture(scope="module")
def records():
    return generate_records(StorySourceConfig(n_stories=N, seed=0))


def test_same_seed_same_stories_other_seed_other_stories():
    a = generate_records(StorySourceConfig(n_stories=20, seed=5))
    assert a == generate_records(StorySourceConfig(n_stories=20, seed=5))
    assert a != generate_records(StorySourceConfig(n_stories=20, seed=6))


def test_every_feature_trace_is_present_exactly_when_the_feature_is(records):
    for r in records:
        assert detect_features(r["story"]) == r["features"]


def test_traces_by_hand():
    # Checks independent of detect_features' marker lists.
    rng = np.random.default_rng(0)
    for _ in range(50):
        plain = generate_story(rng, [])["story"]
        assert '"' not in plain and "moral" not in plain and "unexpected" not in plain
        assert generate_story(rng, ["Dialogue"])["story"].count('"') >= 2
        assert "The moral of the story is: " in generate_story(rng, ["MoralValue"])["story"]
        twist = generate_story(rng, ["Twist"])["story"]
        assert re.search(r"unexpected|surprise|Nobody expected", twist)
        sad = generate_story(rng, ["BadEnding"])["story"].split("\n\n")[-1]
        assert re.search(r"sad|cried", sad)
        # Foreshadowing: the hint is in the first paragraph, its payoff in the last.
        first, _, last = generate_story(rng, ["Foreshadowing"])["story"].split("\n\n")
        assert len(first.split(". ")) == 3 and len(last.split(". ")) == 2


def test_feature_frequencies_follow_the_probabilities(records):
    for name, p in DEFAULT_FEATURE_PROBS.items():
        observed = np.mean([name in r["features"] for r in records])
        assert abs(observed - p) < 4 * np.sqrt(p * (1 - p) / N), name


def test_instruction_fields_are_faithful_and_stories_vary(records):
    for r in records:
        assert all(re.search(rf"\b{w}\b", r["story"]) for w in r["words"])
        assert r["random_sentence"] in r["story"]
        assert r["prompt_features"] == r["features"]
    assert len({r["story"] for r in records}) == N
    twist_sentences = {
        s for r in records if "Twist" in r["features"] for s in r["story"].split("\n\n")[-1:]
    }
    assert len(twist_sentences) > 50


def test_forced_features_and_config_errors():
    only_twist = StorySourceConfig(n_stories=30, feature_probs={"Twist": 1.0})
    assert all(r["features"] == ["Twist"] for r in generate_records(only_twist))
    with pytest.raises(ValueError, match="feature_probs has unknown feature 'Sarcasm'"):
        StorySourceConfig(feature_probs={"Sarcasm": 0.5})
    with pytest.raises(ValueError, match="n_stories"):
        StorySourceConfig(n_stories=0)
    with pytest.raises(ValueError, match="unknown features"):
        generate_story(np.random.default_rng(0), ["Sarcasm"])
    assert set(DEFAULT_FEATURE_PROBS) == set(FEATURES)
