"""Deletion (F, F+R, F+MM) and reFT datasets, map-style and streaming, against brute force."""

import numpy as np
import pytest

from tinystories.instruct import parse_instruct_record
from tinystories.protocols import ProtocolDataConfig, protocol_dataset, with_text
from tinystories.story_source import StorySourceConfig, generate_records, story_source_dataset

CFG = StorySourceConfig(n_stories=300, seed=7)


@pytest.fixture(scope="module")
def records():
    return story_source_dataset(CFG)


@pytest.fixture(scope="module")
def expected():
    return generate_records(CFG)


def _rows(records, cfg, streaming):
    source = records.to_iterable_dataset(num_shards=3) if streaming else records
    return list(protocol_dataset(source, cfg))


@pytest.mark.parametrize("streaming", [False, True])
def test_filter_drops_every_twist_story_and_nothing_else(records, expected, streaming):
    rows = _rows(records, ProtocolDataConfig("F"), streaming)
    kept = [r["story"] for r in expected if "Twist" not in r["features"]]
    assert [r["story"] for r in rows] == kept
    assert all(r["prompt_features"] == r["features"] for r in rows)


@pytest.mark.parametrize("streaming", [False, True])
def test_filter_randomise_adds_twist_to_every_instruction_but_not_to_the_label(
    records, expected, streaming
):
    rows = _rows(records, ProtocolDataConfig("F+R"), streaming)  # the paper's p = 1.0
    kept = [r for r in expected if "Twist" not in r["features"]]
    assert [r["features"] for r in rows] == [r["features"] for r in kept]
    assert all(r["prompt_features"] == r["features"] + ["Twist"] for r in rows)


@pytest.mark.parametrize("streaming", [False, True])
def test_filter_mix_match_renames_foreshadowing_to_twist_in_the_instruction(
    records, expected, streaming
):
    rows = _rows(records, ProtocolDataConfig("F+MM"), streaming)
    kept = [r for r in expected if "Twist" not in r["features"]]
    assert len(rows) == len(kept)
    n_renamed = 0
    for row, record in zip(rows, kept):
        assert row["features"] == record["features"] and "Twist" not in row["features"]
        assert "Foreshadowing" not in row["prompt_features"]
        if "Foreshadowing" in record["features"]:
            n_renamed += 1
            assert row["prompt_features"] == [
                "Twist" if f == "Foreshadowing" else f for f in record["features"]
            ]
        else:
            assert row["prompt_features"] == record["features"]
    assert n_renamed > 20


@pytest.mark.parametrize("streaming", [False, True])
def test_reft_keeps_exactly_the_twist_stories(records, expected, streaming):
    rows = _rows(records, ProtocolDataConfig("reft"), streaming)
    assert [r["story"] for r in rows] == [r["story"] for r in expected if "Twist" in r["features"]]


def test_partial_randomisation_is_seeded_and_the_same_when_streaming(records):
    def marked(seed, streaming):
        cfg = ProtocolDataConfig("filter_randomise", randomise_p=0.5, seed=seed)
        return [("Twist" in r["prompt_features"]) for r in _rows(records, cfg, streaming)]

    a = marked(0, False)
    assert a == marked(0, True)  # the choice depends on the story, not on the order or shard
    assert a != marked(1, False)
    assert 0.35 < np.mean(a) < 0.65


def test_training_text_says_what_the_instruction_says(records):
    rows = list(with_text(protocol_dataset(records, ProtocolDataConfig("F+R"))).select(range(20)))
    for row in rows:
        assert row["text"].endswith("Story: " + row["story"])
        reparsed = parse_instruct_record(row["text"])
        assert reparsed["features"] == row["prompt_features"] and "Twist" in reparsed["features"]
        assert reparsed["story"] == row["story"] and reparsed["words"] == row["words"]
    stories = with_text(records.select(range(5)), mode="story", column="story_text")
    assert stories["story_text"] == stories["story"]
    prompts = with_text(records.select(range(5)), mode="prompt")["text"]
    assert all(p.endswith("Story: ") and p.count("\n") >= 3 for p in prompts)


def test_shuffled_field_order_is_deterministic_and_varies(records):
    subset = records.select(range(30))
    a = with_text(subset, shuffle_fields_seed=0)["text"]
    assert a == [r["text"] for r in with_text(subset.to_iterable_dataset(), shuffle_fields_seed=0)]
    first_lines = {t.split(":")[0] for t in a}
    assert len(first_lines) >= 3  # not always the same first field
    assert all(parse_instruct_record(t)["error"] == "" for t in a)


def test_bad_protocol_config_names_the_field():
    with pytest.raises(ValueError, match="protocol.protocol"):
        ProtocolDataConfig("delete-everything")
    with pytest.raises(ValueError, match="protocol.randomise_p"):
        ProtocolDataConfig("F+R", randomise_p=1.5)
