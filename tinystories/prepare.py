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

`load_prepared(out_dir, protocol, split)` reads one back (with its edited `prompt_features`), and
`build_run_tokenizer(out_dir, tokenizer_dir, cfg)` trains the run's tokenizer on the training
text of `all.train`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets

from tinystories.data import StoryDataConfig, load_stories
from tinystories.instruct import FEATURES, RECORD_FEATURES
from tinystories.protocols import PROTOCOLS, ProtocolDataConfig, protocol_dataset, split_by_story
from tinystories.protocols import with_text
from tinystories.story_source import StorySourceConfig, write_story_files
from tinystories.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer
from wrapperlens.checkpoints import write_json

__all__ = [
    "STORY_SOURCE",
    "PrepareConfig",
    "prepare_stories",
    "load_prepared",
    "build_run_tokenizer",
]

STORY_SOURCE = "story_source"
"""`PrepareConfig.source` value that selects the offline story source."""


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
            cfg.source, split=cfg.hub_split, streaming=cfg.max_stories is not None, cache_dir=cache
        )
    records, report = load_stories(data_cfg)
    if cfg.max_stories is not None:
        rows = list(records.take(cfg.max_stories))
        records = datasets.Dataset.from_list(rows, features=RECORD_FEATURES)
    parse = {
        "source": report.source,
        "n_good": report.n_good,
        "n_malformed": report.n_malformed,
        "reasons": dict(report.reasons),
        "examples": report.examples,
        "counts_cover_whole_source": report.complete,
    }
    return records, parse


def prepare_stories(cfg: PrepareConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write the protocol datasets of `cfg` into `out_dir` (layout in the module docstring).

    Returns:
        The `prepare.json` summary: config, parse report, records per file, feature counts.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, parse = _read_records(cfg, out_dir)
    train, test = split_by_story(records, cfg.test_fraction, cfg.split_seed)
    counts: dict[str, int] = {}
    for split, split_records in (("train", train), ("test", test)):
        for protocol in PROTOCOLS:
            data = protocol_dataset(split_records, cfg.protocol_config(protocol))
            data.remove_columns("error").to_parquet(str(out_dir / f"{protocol}.{split}.parquet"))
            counts[f"{protocol}.{split}"] = len(data)
    feature_counts = {
        split: {f: sum(f in fs for fs in data["features"]) for f in FEATURES}
        for split, data in (("train", train), ("test", test))
    }
    summary = {
        "config": asdict(cfg),
        "parse": parse,
        "records": counts,
        "feature_counts": feature_counts,
    }
    write_json(out_dir / "prepare.json", summary)
    return summary


def load_prepared(
    prepared_dir: str | Path, protocol: str, split: str = "train", streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """One dataset written by `prepare_stories` (records, with `prompt_features` as edited)."""
    prepared_dir = Path(prepared_dir)
    protocol = ProtocolDataConfig(protocol).protocol  # accepts "F", "F+R", "F+MM" too
    path = prepared_dir / f"{protocol}.{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run prepare_stories into {prepared_dir} first")
    data, _ = load_stories(
        StoryDataConfig(str(path), streaming=streaming, cache_dir=str(prepared_dir / ".cache"))
    )
    return data


def build_run_tokenizer(
    prepared_dir: str | Path, tokenizer_dir: str | Path, cfg: TokenizerConfig
) -> Path:
    """Train the tokenizer on the training text of `all.train` and save it in `tokenizer_dir`."""
    texts = with_text(load_prepared(prepared_dir, "all", "train"))["text"]
    tokenizer = train_tokenizer(iter(texts), cfg)
    tokenizer_dir = save_tokenizer(tokenizer, tokenizer_dir)
    write_json(
        tokenizer_dir / "tokenizer_training.json",
        {"config": asdict(cfg), "trained_on": str(Path(prepared_dir) / "all.train.parquet"),
         "n_texts": len(texts)},
    )
    return tokenizer_dir
