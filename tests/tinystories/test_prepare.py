"""The prepare and tokenizer stages on the offline story source."""

import json

import pytest

from tinystories.prepare import PrepareConfig, build_run_tokenizer, load_prepared, prepare_stories
from tinystories.story_source import StorySourceConfig, generate_records
from tinystories.tokenizer import TokenizerConfig, load_tokenizer


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    return out, prepare_stories(PrepareConfig(n_stories=240, story_seed=4, test_fraction=0.25), out)


def test_prepare_writes_every_protocol_and_split_with_consistent_counts(prepared):
    out, summary = prepared
    assert json.loads((out / "prepare.json").read_text()) == summary
    records = summary["records"]
    assert records["all.train"] + records["all.test"] == 240
    assert 30 < records["all.test"] < 90
    for split in ("train", "test"):
        n_twist = summary["feature_counts"][split]["Twist"]
        assert records[f"reft.{split}"] == n_twist
        for protocol in ("filter", "filter_randomise", "filter_mix_match"):
            assert records[f"{protocol}.{split}"] == records[f"all.{split}"] - n_twist
    train = {r["story"] for r in load_prepared(out, "all", "train")}
    test = {r["story"] for r in load_prepared(out, "all", "test")}
    assert not train & test
    assert train | test == {r["story"] for r in generate_records(StorySourceConfig(240, seed=4))}


def test_prepared_files_keep_the_edited_instruction(prepared):
    out, _ = prepared
    for row in load_prepared(out, "F+R", "train", streaming=True):
        assert "Twist" in row["prompt_features"] and "Twist" not in row["features"]
    mixed = list(load_prepared(out, "F+MM", "test"))
    assert any("Twist" in r["prompt_features"] for r in mixed)
    assert all("Twist" not in r["features"] for r in mixed)
    with pytest.raises(FileNotFoundError, match="run prepare_stories"):
        load_prepared(out, "all", "validation")


def test_run_tokenizer_is_saved_and_reloads(prepared, tmp_path):
    out, summary = prepared
    directory = build_run_tokenizer(out, tmp_path / "tok", TokenizerConfig(vocab_size=350))
    tokenizer = load_tokenizer(directory)
    assert len(tokenizer) == 350
    info = json.loads((directory / "tokenizer_training.json").read_text())
    assert info["n_texts"] == summary["records"]["all.train"]
    text = "Features: Twist\nStory: Once upon a time"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
