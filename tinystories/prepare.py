"""The `prepare` and `tokenizer` stages of a TinyStories run: protocol datasets and a tokenizer.

`prepare_stories(cfg, out_dir)` reads the stories (the offline story source by default, or any
source `tinystories.data.load_stories` takes: a hub name or local files), splits them into train
and test by a hash of each story, builds every protocol dataset of `tinystories.protocols` for
both splits and writes them as parquet files beside a `prepare.json` summary:

    out_dir/
      source/stories.txt            (story source only: the generated Instruct file)
      all.train.parquet, all.test.parquet
      filter.{train,test}.parquet   (F; also the control's pretraining data)
      filter_randomise.*.parquet    (F+R)
      filter_mix_match.*.parquet    (F+MM)
      reft.{train,test}.parquet     (Twist stories only: reFT data, twist-loss evaluation)
      prepare.json                  (config, parse report, record and feature counts)

`load_prepared(out_dir, protocol, split)` reads one back (with its edited `prompt_features`),
`training_texts(out_dir, protocol, split)` gives the text a model trains and is evaluated on, and
`build_run_tokenizer(out_dir, tokenizer_dir, cfg)` trains the run's tokenizer on the training
text of `all.train`.

**Plain stories.** The most common form of TinyStories is plain text (`TinyStories-train.txt`:
stories separated by `<|endoftext|>`, or the hub's `roneneldan/TinyStories` rows), with no
instruction and so no Feature labels. The deletion protocols (F, F+R, F+MM, reFT) need to know
which stories have a Twist, so on such data `prepare_stories` writes only `all.{train,test}`
(pretraining data), records in `prepare.json` (`"data"`) that the stories are plain and
unlabelled, and `load_prepared` refuses the other protocols with `UnlabelledDataError`. The
training text of a plain story is the story itself; of an Instruct record, its instruction lines,
`Story: ` and the story (`tinystories.protocols.with_text`).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets

from tinystories.data import StoryDataConfig, load_stories
from tinystories.instruct import FEATURES, RECORD_FEATURES
from tinystories.protocols import PAPER_NAMES, PROTOCOLS, ProtocolDataConfig, protocol_dataset
from tinystories.protocols import split_by_story, with_text
from tinystories.story_source import StorySourceConfig, write_story_files
from tinystories.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer
from wrapperlens.checkpoints import CheckpointError, read_json, write_json

__all__ = [
    "STORY_SOURCE",
    "FIELD_SHUFFLE_SEED",
    "CLASSIFIER_DIR",
    "PrepareConfig",
    "PreparedInfo",
    "UnlabelledDataError",
    "prepare_stories",
    "prepared_info",
    "load_prepared",
    "training_texts",
    "build_run_tokenizer",
]

STORY_SOURCE = "story_source"
"""`PrepareConfig.source` value that selects the offline story source."""
FIELD_SHUFFLE_SEED = 0
"""Seed of the per-story instruction-line order (`with_text(shuffle_fields_seed=...)`)."""
SUMMARY_FILE = "prepare.json"
CLASSIFIER_DIR = "twist_classifier"
"""Where `tinystories.evaluation.ensure_story_classifier` keeps the classifier, in here."""
LABELLED_PROTOCOLS = tuple(p for p in PROTOCOLS if p != "all")
"""Protocols that select stories by their Feature labels (not available on plain stories)."""
_PAPER_NAME = {v: k for k, v in PAPER_NAMES.items()}


class UnlabelledDataError(ValueError):
    """A protocol that needs Feature labels was asked of prepared stories that have none."""


@dataclass(frozen=True)
class PreparedInfo:
    """What kind of stories a prepared directory holds (the `"data"` block of `prepare.json`).

    Attributes:
        directory: The prepared-data directory.
        text_format: "instruct" (records with instruction lines) or "plain" (stories only).
        labelled: Whether stories carry `feature` labels (the deletion protocols need them).
        feature: The feature the protocols delete and revive.
        protocols: The protocols written (every one of `PROTOCOLS` when labelled, else "all").
    """

    directory: Path
    text_format: str
    labelled: bool
    feature: str
    protocols: tuple[str, ...]

    def require(self, protocol: str) -> str:
        """The canonical name of `protocol`; raises `UnlabelledDataError` if it was not written."""
        protocol = ProtocolDataConfig(protocol).protocol  # accepts "F", "F+R", "F+MM" too
        if protocol in self.protocols:
            return protocol
        name = f"{protocol!r}" + (f" ({_PAPER_NAME[protocol]})" if protocol in _PAPER_NAME else "")
        raise UnlabelledDataError(
            f"{self.directory}: protocol {name} needs Feature labels (which stories have "
            f"{self.feature!r}), but the prepared stories are {self.text_format} text without them "
            f"({self.directory / SUMMARY_FILE}: \"labelled\": false); only {list(self.protocols)} "
            "was prepared (pretraining, tokenizer, generation, compare). The deletion protocols "
            "need TinyStoriesInstruct records with 'Features:' lines."
        )


@dataclass(frozen=True)
class PrepareConfig:
    """Which stories, how many, and the protocol parameters.

    Attributes:
        source: `STORY_SOURCE`, a hub dataset name or local files (see `StoryDataConfig`).
        n_stories: Stories to generate (story source only).
        story_seed: Seed of the story source.
        max_stories: Read at most this many stories from a hub or local source (streamed).
        hub_split: Hub split to read.
        test_fraction: Fraction of stories in the test split.
        split_seed: Seed of the train/test hash split.
        feature: The feature deleted and revived (the paper: Twist).
        mix_from: F+MM's renamed feature (the paper: Foreshadowing).
        randomise_p: F+R's probability of adding `feature` (the paper's code: 1.0).
        protocol_seed: Seed of F+R's choices.
        fix_mojibake: Repair text decoded with the wrong codec (`tinystories.mojibake`) on load.
    """

    source: str = STORY_SOURCE
    n_stories: int = 4000
    story_seed: int = 0
    max_stories: int | None = None
    hub_split: str = "train"
    test_fraction: float = 0.1
    split_seed: int = 0
    feature: str = "Twist"
    mix_from: str = "Foreshadowing"
    randomise_p: float = 1.0
    protocol_seed: int = 0
    fix_mojibake: bool = True

    def __post_init__(self) -> None:
        if self.n_stories < 2:
            raise ValueError(f"prepare.n_stories must be >= 2, got {self.n_stories}")
        if self.max_stories is not None and self.max_stories < 2:
            raise ValueError(f"prepare.max_stories must be >= 2 or None, got {self.max_stories}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"prepare.test_fraction must be in (0, 1), got {self.test_fraction}")
        self.protocol_config("filter_randomise")  # validates feature / mix_from / randomise_p

    def protocol_config(self, protocol: str) -> ProtocolDataConfig:
        return ProtocolDataConfig(
            protocol=protocol,
            feature=self.feature,
            mix_from=self.mix_from,
            randomise_p=self.randomise_p,
            seed=self.protocol_seed,
        )


def _read_records(cfg: PrepareConfig, out_dir: Path) -> tuple[datasets.Dataset, dict[str, Any]]:
    cache = str(out_dir / ".cache")
    if cfg.source == STORY_SOURCE:
        files = write_story_files(
            out_dir / "source", StorySourceConfig(n_stories=cfg.n_stories, seed=cfg.story_seed)
        )
        data_cfg = StoryDataConfig(str(files["txt"]), cache_dir=cache)
    else:
        data_cfg = StoryDataConfig(
            cfg.source, split=cfg.hub_split, streaming=cfg.max_stories is not None, cache_dir=cache,
            fix_mojibake=cfg.fix_mojibake,
        )
    records, report = load_stories(data_cfg)
    if cfg.max_stories is not None:
        rows = list(records.take(cfg.max_stories))
        records = datasets.Dataset.from_list(rows, features=RECORD_FEATURES)
    parse = {
        "source": report.source,
        "n_good": report.n_good,
        "n_malformed": report.n_malformed,
        "n_repaired": report.n_repaired,
        "reasons": dict(report.reasons),
        "examples": report.examples,
        "counts_cover_whole_source": report.complete,
    }
    return records, parse


def _data_kind(records: datasets.Dataset, feature: str) -> dict[str, Any]:
    """The `"data"` block of `prepare.json`: text format, labels and the protocols they allow."""
    labelled = any(feature in fs for fs in records["features"])
    instruct = any(records["features"]) or any(
        any(records[column]) for column in ("summary", "words", "random_sentence")
    )
    return {
        "format": "instruct" if instruct else "plain",
        "labelled": labelled,
        "feature": feature,
        "protocols": list(PROTOCOLS if labelled else ("all",)),
        "n_stories": len(records),
    }


def prepare_stories(cfg: PrepareConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write the protocol datasets of `cfg` into `out_dir` (layout in the module docstring).

    On stories without `cfg.feature` labels (plain TinyStories text) only `all` is written, and
    the summary's `"data"` block says so (see the module docstring).

    Returns:
        The `prepare.json` summary: config, parse report, records per file, feature counts, and
        `"data"`: {"format": "instruct" | "plain", "labelled", "feature", "protocols",
        "n_stories"}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, parse = _read_records(cfg, out_dir)
    data_kind = _data_kind(records, cfg.feature)
    train, test = split_by_story(records, cfg.test_fraction, cfg.split_seed)
    counts: dict[str, int] = {}
    for split, split_records in (("train", train), ("test", test)):
        for protocol in PROTOCOLS:
            path = out_dir / f"{protocol}.{split}.parquet"
            if protocol not in data_kind["protocols"]:
                path.unlink(missing_ok=True)  # a stale file of an earlier, labelled prepare
                continue
            data = protocol_dataset(split_records, cfg.protocol_config(protocol))
            data.remove_columns("error").to_parquet(str(path))
            counts[f"{protocol}.{split}"] = len(data)
    if not data_kind["labelled"]:  # a stale classifier would score against labels now absent
        shutil.rmtree(out_dir / CLASSIFIER_DIR, ignore_errors=True)
    feature_counts = {
        split: {f: sum(f in fs for fs in data["features"]) for f in FEATURES}
        for split, data in (("train", train), ("test", test))
    }
    summary = {
        "config": asdict(cfg),
        "parse": parse,
        "data": data_kind,
        "records": counts,
        "feature_counts": feature_counts,
    }
    write_json(out_dir / SUMMARY_FILE, summary)
    return summary


#: The keys of `prepare.json` and of its `"data"` block (what `prepare_stories` writes).
SUMMARY_KEYS = ("config", "parse", "data", "records", "feature_counts")
DATA_KEYS = ("format", "labelled", "feature", "protocols", "n_stories")


def prepared_info(prepared_dir: str | Path) -> PreparedInfo:
    """The kind of stories in `prepared_dir` (a directory written by `prepare_stories`).

    A directory prepared before `prepare.json` had a `"data"` block holds Instruct records with
    every protocol.

    Raises:
        CheckpointError: `prepare.json` is not JSON, has an unknown key, or a `"data"` block
            that lacks a key, adds one or has a value `prepare_stories` never writes; the
            message names the file and the key.
    """
    prepared_dir = Path(prepared_dir)
    path = prepared_dir / SUMMARY_FILE
    summary = read_json(path) if path.is_file() else {}
    if not isinstance(summary, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    unknown = sorted(str(k) for k in summary if k not in SUMMARY_KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unknown keys {unknown}")
    if "data" not in summary:  # prepared before the "data" block: Instruct records
        config = summary.get("config", {})
        feature = config.get("feature", "Twist") if isinstance(config, dict) else None
        if not isinstance(feature, str):
            raise CheckpointError(f"{path}: invalid \"config\" block (its 'feature' {feature!r})")
        return PreparedInfo(prepared_dir, "instruct", True, feature, tuple(PROTOCOLS))
    data = summary["data"]
    if not isinstance(data, dict) or set(data) != set(DATA_KEYS):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: the \"data\" block must have the keys {list(DATA_KEYS)},"
                              f" got {keys}")
    protocols, labelled = data["protocols"], data["labelled"]
    checks = {
        "format": data["format"] in ("instruct", "plain"),
        "labelled": isinstance(labelled, bool),
        "feature": isinstance(data["feature"], str) and bool(data["feature"]),
        "protocols": isinstance(protocols, list)
        and protocols == list(PROTOCOLS if labelled is True else ("all",)),
        "n_stories": isinstance(data["n_stories"], int)
        and not isinstance(data["n_stories"], bool) and data["n_stories"] >= 0,
    }
    for key, ok in checks.items():
        if not ok:
            raise CheckpointError(f"{path}: \"data\" has an invalid {key!r}: {data[key]!r}")
    return PreparedInfo(prepared_dir, data["format"], labelled, data["feature"],
                        tuple(protocols))


def load_prepared(
    prepared_dir: str | Path, protocol: str, split: str = "train", streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """One dataset written by `prepare_stories` (records, with `prompt_features` as edited).

    Raises:
        UnlabelledDataError: `protocol` needs Feature labels and the stories have none.
        FileNotFoundError: The file was never prepared.
    """
    return _load_prepared(prepared_info(prepared_dir), protocol, split, streaming)


def _load_prepared(
    info: PreparedInfo, protocol: str, split: str, streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    protocol = info.require(protocol)
    path = info.directory / f"{protocol}.{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found; run prepare_stories into {info.directory} first")
    data, _ = load_stories(
        StoryDataConfig(str(path), streaming=streaming, cache_dir=str(info.directory / ".cache"))
    )
    return data


def training_texts(
    prepared_dir: str | Path,
    protocol: str = "all",
    split: str = "train",
    *,
    shuffle_fields: bool = True,
    limit: int | None = None,
) -> list[str]:
    """The texts a model trains (and is evaluated) on: one per record of `protocol.split`.

    Plain stories: the story itself. Instruct records: the instruction lines, `Story: ` and the
    story, with the lines in a fixed per-story shuffled order (seed `FIELD_SHUFFLE_SEED`) when
    `shuffle_fields` (`BatchConfig.shuffle_fields`), else in `PROMPT_FIELDS` order.

    Args:
        prepared_dir: Output of `prepare_stories`.
        protocol: One of `PROTOCOLS` (or "F", "F+R", "F+MM"); plain stories have only "all".
        split: "train" or "test".
        shuffle_fields: Shuffle the instruction lines (ignored for plain stories).
        limit: The first `limit` records only (None: all).

    Raises:
        UnlabelledDataError: `protocol` needs Feature labels and the stories have none.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    info = prepared_info(prepared_dir)
    data = _load_prepared(info, protocol, split)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    if info.text_format == "plain":
        return list(data["story"])
    seed = FIELD_SHUFFLE_SEED if shuffle_fields else None
    return list(with_text(data, "instruct", shuffle_fields_seed=seed)["text"])


def build_run_tokenizer(
    prepared_dir: str | Path, tokenizer_dir: str | Path, cfg: TokenizerConfig
) -> Path:
    """Train the tokenizer on the training text of `all.train` and save it in `tokenizer_dir`.

    The instruction lines keep their fixed order (the merges hardly depend on it).
    """
    texts = training_texts(prepared_dir, "all", "train", shuffle_fields=False)
    tokenizer = train_tokenizer(iter(texts), cfg)
    tokenizer_dir = save_tokenizer(tokenizer, tokenizer_dir)
    write_json(
        tokenizer_dir / "tokenizer_training.json",
        {"config": asdict(cfg), "trained_on": str(Path(prepared_dir) / "all.train.parquet"),
         "n_texts": len(texts)},
    )
    return tokenizer_dir
