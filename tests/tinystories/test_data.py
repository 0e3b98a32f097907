"""Loading stories from local files and the hub path, with malformed records counted."""

import json
import time

import datasets
import pytest

from tinystories.data import StoryDataConfig, load_stories
from tinystories.hub import HubUnavailableError
from tinystories.instruct import EOT, parse_instruct_record
from tinystories.story_source import StorySourceConfig, generate_records, write_story_files

FIELDS = ("story", "summary", "words", "features", "random_sentence")
MALFORMED = [
    "Features: Twist\nWords: a, b, c\nSummary: no story line here.",  # missing story
    "Words: cat, dog, sun\nStory:   \n\n",  # empty story
    "Words: a\nWords: b\nStory: Hi.",  # duplicate field
    "Colour: blue\nStory: A story.",  # unrecognised line
]


def _project(rows):
    return [{k: r[k] for k in FIELDS} for r in rows]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stories")
    cfg = StorySourceConfig(n_stories=60, seed=3)
    files = write_story_files(directory, cfg, formats=("txt", "jsonl"))
    return files, _project(generate_records(cfg))


@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
@pytest.mark.parametrize("streaming", [False, True])
def test_story_source_files_parse_back_to_the_generated_records(source, tmp_path, fmt, streaming):
    files, expected = source
    cfg = StoryDataConfig(str(files[fmt]), streaming=streaming, cache_dir=str(tmp_path))
    ds, report = load_stories(cfg)
    assert isinstance(ds, datasets.IterableDataset) == streaming
    rows = list(ds)
    assert _project(rows) == expected  # the .txt has its instruction lines in shuffled order
    assert all(r["prompt_features"] == r["features"] and r["error"] == "" for r in rows)
    assert (report.n_good, report.n_malformed) == (60, 0)
    assert report.complete == (not streaming)


def _with_malformed(tmp_path, good_records):
    good = [f"Features: Dialogue\nStory: {r['story']}" for r in good_records]
    chunks = good[:2] + MALFORMED[:2] + good[2:] + MALFORMED[2:]
    path = tmp_path / "mixed.txt"
    path.write_text("".join(c + f"\n{EOT}\n" for c in chunks))
    return path


@pytest.mark.parametrize("streaming", [False, True])
def test_malformed_records_are_counted_reported_and_dropped(source, tmp_path, caplog, streaming):
    _, expected = source
    path = _with_malformed(tmp_path, expected[:5])
    cfg = StoryDataConfig(str(path), streaming=streaming, cache_dir=str(tmp_path / "cache"))
    ds, report = load_stories(cfg)
    rows = list(ds)
    assert [r["story"] for r in rows] == [r["story"] for r in expected[:5]]
    assert (report.n_good, report.n_malformed) == (5, 4)
    assert dict(report.reasons) == {
        "missing story": 1, "empty story": 1, "duplicate field": 1, "unrecognised line": 1
    }
    assert "4 malformed" in report.summary()
    assert sum("malformed record" in m for m in caplog.messages) == 4


def test_keep_malformed_keeps_them_with_the_reason(source, tmp_path):
    _, expected = source
    path = _with_malformed(tmp_path, expected[:3])
    ds, report = load_stories(
        StoryDataConfig(str(path), keep_malformed=True, cache_dir=str(tmp_path / "c"))
    )
    errors = [e for e in ds["error"] if e]
    assert len(ds) == 7 and len(errors) == 4 == report.n_malformed
    assert errors[0].startswith("missing story")


def test_json_layouts_and_parquet(tmp_path):
    records = [
        # The original TinyStories_all_data layout.
        {"story": "Tom ran.", "summary": "Tom runs.", "source": "GPT-4",
         "instruction": {"prompt:": "Write...", "words": ["run"], "features": ["Dialogue"]}},
        # Flat fields, lists as comma-separated strings, a lower-case feature name.
        {"story": "Sue sang.", "words": "sing, sun", "features": "bad ending, Twist"},
        # A raw Instruct record in a text field.
        {"text": "Summary: A cat.\nStory: The cat sat."},
        {"text": ""},  # the file holds Instruct records, and this one has no Story: malformed
    ]
    path = tmp_path / "all_data.json"  # a JSON array, as the original archive ships
    path.write_text(json.dumps(records))
    ds, report = load_stories(StoryDataConfig(str(path), cache_dir=str(tmp_path / "c")))
    assert report.n_malformed == 1 and report.reasons == {"missing story": 1}
    assert ds["features"] == [["Dialogue"], ["BadEnding", "Twist"], []]
    assert ds["words"] == [["run"], ["sing", "sun"], []]
    assert ds["summary"] == ["Tom runs.", "", "A cat."]
    parquet = tmp_path / "stories.parquet"
    ds.select_columns(["story", "features"]).to_parquet(str(parquet))
    again, _ = load_stories(StoryDataConfig(str(parquet), cache_dir=str(tmp_path / "c")))
    assert again["story"] == ds["story"] and again["features"] == ds["features"]


def test_parser_is_robust_to_order_missing_fields_and_same_line_story():
    record = parse_instruct_record(
        "Random sentence: It was red.\nsummary: A ball.\nFeatures: MoralValue\nStory: It was red. "
        "The end.\n\nSecond paragraph."
    )
    assert record["error"] == ""
    assert record["story"] == "It was red. The end.\n\nSecond paragraph."
    assert (record["summary"], record["random_sentence"]) == ("A ball.", "It was red.")
    assert record["features"] == ["MoralValue"] and record["words"] == []


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no local"):
        load_stories(StoryDataConfig(str(tmp_path / "nothing" / "here.txt")))
    with pytest.raises(ValueError, match="data.kind"):
        StoryDataConfig("x", kind="poems")


def test_hub_name_offline_fails_within_seconds_saying_how_to_pass_files():
    start = time.perf_counter()  # tests/conftest.py sets HF_HUB_OFFLINE=1
    with pytest.raises(HubUnavailableError, match="Pass local files instead"):
        load_stories(StoryDataConfig("roneneldan/TinyStoriesInstruct", split="validation"))
    assert time.perf_counter() - start < 5.0


def test_unreachable_hub_fails_fast_without_offline_mode(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="unreachable"):
        load_stories(StoryDataConfig("roneneldan/TinyStories", hub_timeout_s=2.0))
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_instruct_lines_are_regrouped_into_records(monkeypatch, source, tmp_path, streaming):
    # The hub serves TinyStoriesInstruct one line per row; stand in for the download.
    files, expected = source
    lines = files["txt"].read_text().split("\n")
    rows = datasets.Dataset.from_dict({"text": lines})

    def fake_load_dataset(name, split, streaming, cache_dir):
        assert name == "roneneldan/TinyStoriesInstruct"
        return rows.to_iterable_dataset() if streaming else rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = StoryDataConfig(
        "roneneldan/TinyStoriesInstruct", streaming=streaming, cache_dir=str(tmp_path)
    )
    ds, report = load_stories(cfg)
    assert _project(list(ds)) == expected


@pytest.mark.parametrize("streaming", [False, True])
def test_text_after_the_last_separator_is_an_unterminated_record(tmp_path, streaming):
    # A byte-range sample of TinyStories-train.txt ends in a story cut off mid-sentence.
    cut = tmp_path / "cut.txt"
    cut.write_text(f"One day, Tom ran.\n{EOT}\nLily had a cat.\n{EOT}\nThe dog was ha")
    cfg = StoryDataConfig(str(cut), streaming=streaming, cache_dir=str(tmp_path / "c"))
    ds, report = load_stories(cfg)
    assert [r["story"] for r in ds] == ["One day, Tom ran.", "Lily had a cat."]
    assert (report.n_good, report.n_malformed) == (2, 1)
    assert dict(report.reasons) == {"unterminated record": 1}
    assert str(cut) in report.examples[0] and "The dog was ha" in report.examples[0]
    single = tmp_path / "single.txt"  # no separator at all: the whole file is one story
    single.write_text("Once upon a time, a frog sang.\n")
    ds, report = load_stories(StoryDataConfig(str(single), cache_dir=str(tmp_path / "c")))
    assert ds["story"] == ["Once upon a time, a frog sang."] and report.n_malformed == 0


@pytest.mark.parametrize("streaming", [False, True])
def test_mojibake_is_repaired_and_counted_unless_switched_off(tmp_path, streaming):
    rows = ["Sue said, \u00e2\u20ac\u0153Hi!\u00e2\u20ac It\u00e2\u20ac\u2122s sunny.",
            "Tom said, “Hi!” It’s sunny.", "A cat sat."]
    path = tmp_path / "rows.json"  # the hub's `datasets` rows, as a JSON list of strings
    path.write_text(json.dumps(rows))
    cfg = StoryDataConfig(str(path), streaming=streaming, cache_dir=str(tmp_path / "c"))
    ds, report = load_stories(cfg)
    assert [r["story"] for r in ds] == ["Sue said, “Hi!” It’s sunny.", *rows[1:]]
    assert report.n_repaired == 1 and "1 with mojibake repaired" in report.summary()
    off = StoryDataConfig(str(path), fix_mojibake=False, cache_dir=str(tmp_path / "c"))
    ds, report = load_stories(off)
    assert list(ds["story"]) == rows and report.n_repaired == 0
