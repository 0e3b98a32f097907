"""Load TinyStories (hub or local files) as HF `datasets` of parsed records, counting bad ones.

Sources (`StoryDataConfig.source`):

- a hub dataset by name: `roneneldan/TinyStoriesInstruct` (Instruct records; the hub serves its
  text files one line per row, regrouped here at `<|endoftext|>`) or `roneneldan/TinyStories`
  (plain stories, one per row), through `datasets.load_dataset(name, split=..., streaming=...)`.
  Without a network this fails within seconds (`tinystories.hub`) and says how to pass files;
- local files — a file, a directory or a glob — in one of these formats:
  - `.txt`: records separated by `<|endoftext|>` (the hub's own text files; what
    `tinystories.story_source` writes);
  - `.json` / `.jsonl`: one object per record (`{"text": ...}`, flat fields, or the original
    `TinyStories_all_data` layout; see `tinystories.instruct.record_from_json`);
  - `.parquet`: the same columns as JSON.

Every record is parsed into the columns of `tinystories.instruct.RECORD_FEATURES`. A malformed
record is never dropped silently: the loader returns a `ParseReport` with the count, the reasons
and a few examples, and logs it. For a map-style dataset the count is exact when `load_stories`
returns; for a streaming dataset it grows as the stream is consumed (in the consuming process) and
each malformed record is logged as it is met. `keep_malformed=True` keeps them, with `error` set.

Two repairs of real-data defects (both counted in the `ParseReport`, never silent):

- a `.txt` file cut off mid-story (a byte-range sample such as the first 2 MiB of
  `TinyStories-train.txt`) ends in text after its last `<|endoftext|>`: that record is malformed
  ("unterminated record") and dropped. A file without any `<|endoftext|>` is one record;
- mojibake (`â€™` for `’`, found in some hub rows) is decoded back by
  `tinystories.mojibake.repair_mojibake` unless `StoryDataConfig.fix_mojibake` is off;
  `ParseReport.n_repaired` counts the records it changed.
"""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any

import datasets

from tinystories.hub import check_hub_reachable, hub_unavailable
from tinystories.mojibake import repair_record
from tinystories.instruct import (
    EOT,
    RECORD_FEATURES,
    parse_instruct_record,
    plain_story_record,
    record_from_json,
)

__all__ = ["HUB_DATASETS", "StoryDataConfig", "ParseReport", "load_stories", "parse_records"]

logger = logging.getLogger(__name__)

HUB_DATASETS = {"roneneldan/TinyStoriesInstruct": "instruct", "roneneldan/TinyStories": "plain"}
"""Hub datasets this module knows, and the kind of record each holds."""

_FORMATS = {".txt": "txt", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_KINDS = ("auto", "instruct", "plain")
_LOCAL_HINT = (
    "Pass local files instead, e.g. StoryDataConfig(source='data/TinyStories-Instruct-valid.txt'): "
    "text with <|endoftext|> between records, .json/.jsonl, or .parquet (a file, a directory or a "
    "glob); or write an offline stand-in with tinystories.story_source.write_story_files()."
)
Dataset = datasets.Dataset | datasets.IterableDataset


@dataclass(frozen=True)
class StoryDataConfig:
    """Where the stories come from and how to read them.

    Attributes:
        source: A hub dataset name (see `HUB_DATASETS`), or a local file, directory or glob.
        split: Hub split ("train", "validation"); ignored for local files (they are the split).
        streaming: Return a `datasets.IterableDataset` that reads lazily.
        kind: "instruct" (records with instruction lines and `Story:`), "plain" (the text is the
            story) or "auto" (decided from the first records; the hub names fix it).
        file_format: "txt", "json", "parquet" or "auto" (from the file extensions).
        keep_malformed: Keep malformed records (with their `error` set) instead of dropping them.
        fix_mojibake: Decode cp1252-mojibake in the text fields back to UTF-8 (module docstring).
        cache_dir: `datasets` cache directory (None: the HF default).
        hub_timeout_s: How long to wait for a connection to the hub before failing.
    """

    source: str
    split: str = "train"
    streaming: bool = False
    kind: str = "auto"
    file_format: str = "auto"
    keep_malformed: bool = False
    fix_mojibake: bool = True
    cache_dir: str | None = None
    hub_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("data.source must name a hub dataset or local files, got ''")
        if self.kind not in _KINDS:
            raise ValueError(f"data.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.file_format not in ("auto", "txt", "json", "parquet"):
            raise ValueError(
                f"data.file_format must be 'auto', 'txt', 'json' or 'parquet', got "
                f"{self.file_format!r}"
            )
        if self.hub_timeout_s <= 0:
            raise ValueError(f"data.hub_timeout_s must be > 0, got {self.hub_timeout_s}")


@dataclass
class ParseReport:
    """How many records were read and which were malformed (and why).

    Attributes:
        source: What was loaded.
        n_good: Well-formed records seen so far.
        n_malformed: Malformed records seen so far.
        reasons: Count per reason.
        examples: The first few malformed-record messages.
        n_repaired: Records whose text had mojibake repaired (counted like `n_good`).
        complete: True when the counts cover the whole dataset (map-style datasets). A streaming
            dataset's counts grow as it is read, and every pass over it counts again.
    """

    source: str
    n_good: int = 0
    n_malformed: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    complete: bool = False
    n_repaired: int = 0

    def add(self, error: str) -> None:
        if not error:
            self.n_good += 1
            return
        self.n_malformed += 1
        self.reasons[error.split(": ", 1)[0]] += 1
        if len(self.examples) < 5:
            self.examples.append(error)
        if self.n_malformed <= 10 or self.n_malformed % 1000 == 0:
            logger.warning("%s: malformed record #%d: %s", self.source, self.n_malformed, error)

    def summary(self) -> str:
        total = self.n_good + self.n_malformed
        scope = "" if self.complete else " so far"
        text = f"{self.source}: {total} records{scope}, {self.n_malformed} malformed"
        if self.reasons:
            text += " (" + "; ".join(f"{r}: {n}" for r, n in self.reasons.most_common()) + ")"
        if self.n_repaired:
            text += f", {self.n_repaired} with mojibake repaired"
        return text


# ---------------------------------------------------------------------------------------------
# Raw rows: one row per record, before parsing.


def _resolve_local(source: str) -> list[str]:
    path = Path(source)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix in _FORMATS and p.is_file())
    elif path.is_file():
        files = [str(path)]
    else:
        files = sorted(f for f in glob.glob(source) if os.path.isfile(f))
    return files


def _file_format(files: list[str], requested: str) -> str:
    if requested != "auto":
        return requested
    found = {_FORMATS.get(Path(f).suffix) for f in files}
    if None in found or len(found) != 1:
        raise ValueError(
            f"cannot tell one file format from the extensions of {files[:5]}; use one of "
            f"{sorted(_FORMATS)} for all files or set data.file_format"
        )
    return found.pop()


def _txt_records(paths: list[str], signature: str = "") -> Iterator[dict[str, str]]:
    """Yield `{"text": record, _ROW_ERROR: ""}` for each `<|endoftext|>`-separated record.

    Reads 1 MiB at a time, so files larger than memory stream. Whitespace between separators is
    not a record. Text after the last separator of a file that has separators is a record cut
    off mid-story: it comes with its `_ROW_ERROR` set. `signature` only keys the `datasets`
    cache (file sizes and times).
    """
    del signature
    for path in paths:
        with open(path, encoding="utf-8") as f:
            buffer, n_records = "", 0
            while chunk := f.read(1 << 20):
                buffer += chunk
                *records, buffer = buffer.split(EOT)
                n_records += len(records)
                for record in records:
                    if record.strip():
                        yield {"text": record.strip("\n"), _ROW_ERROR: ""}
            if buffer.strip():
                error = "" if n_records == 0 else (
                    f"unterminated record: {path} ends in {len(buffer.strip())} characters after "
                    f"its last {EOT} (a story cut off mid-file?): {buffer.strip()[-40:]!r}"
                )
                yield {"text": buffer.strip("\n"), _ROW_ERROR: error}


def _grouped_lines(lines: Any) -> Iterator[dict[str, str]]:
    """Regroup a line-per-row text dataset (the hub's Instruct files) into records at EOT."""
    current: list[str] = []
    for row in lines:
        pieces = row["text"].split(EOT)
        for piece in pieces[:-1]:
            current.append(piece)
            record = "\n".join(current).strip("\n")
            if record.strip():
                yield {"text": record, _ROW_ERROR: ""}
            current = []
        current.append(pieces[-1])
    record = "\n".join(current).strip("\n")
    if record.strip():
        yield {"text": record, _ROW_ERROR: ""}


_ROW_ERROR = "row_error"  # set by a text reader on a record it knows to be broken
_TEXT_ROWS = datasets.Features(
    {"text": datasets.Value("string"), _ROW_ERROR: datasets.Value("string")}
)
_REPAIRED = "mojibake_repaired"  # internal column: whether the record's text was repaired


def _from_generator(
    generator, gen_kwargs: dict, cfg: StoryDataConfig, fingerprint: str | None
) -> Dataset:
    if cfg.streaming:
        return datasets.IterableDataset.from_generator(
            generator, features=_TEXT_ROWS, gen_kwargs=gen_kwargs
        )
    return datasets.Dataset.from_generator(
        generator,
        features=_TEXT_ROWS,
        gen_kwargs=gen_kwargs,
        cache_dir=cfg.cache_dir,
        fingerprint=fingerprint,
    )


def _load_local(cfg: StoryDataConfig, files: list[str]) -> Dataset:
    fmt = _file_format(files, cfg.file_format)
    if fmt == "txt":
        stats = [os.stat(f) for f in files]
        signature = ";".join(
            f"{os.path.abspath(f)}:{s.st_size}:{s.st_mtime_ns}" for f, s in zip(files, stats)
        )
        fingerprint = datasets.fingerprint.Hasher.hash(("tinystories-txt-2", signature))
        return _from_generator(
            _txt_records, {"paths": files, "signature": signature}, cfg, fingerprint
        )
    return datasets.load_dataset(
        fmt, data_files=files, split="train", streaming=cfg.streaming, cache_dir=cfg.cache_dir
    )


def _load_hub(cfg: StoryDataConfig) -> Dataset:
    name = cfg.source
    check_hub_reachable(name, "dataset", _LOCAL_HINT, cfg.hub_timeout_s)
    try:
        raw = datasets.load_dataset(
            name, split=cfg.split, streaming=cfg.streaming, cache_dir=cfg.cache_dir
        )
    except ConnectionError as e:  # offline mode without a cached copy, or a dropped connection
        raise hub_unavailable(name, "dataset", _LOCAL_HINT, e) from e
    if HUB_DATASETS.get(name) != "instruct":
        return raw
    fingerprint = None if cfg.streaming else f"tinystories-grouped-2-{raw._fingerprint}"
    return _from_generator(_grouped_lines, {"lines": raw}, cfg, fingerprint)


# ---------------------------------------------------------------------------------------------
# Parsing.


def _row_to_record(row: dict[str, Any], kind: str, fix_mojibake: bool) -> dict[str, Any]:
    if row.get("story") is not None or "text" not in row:
        record = record_from_json(row)
    else:
        text = row["text"] if isinstance(row["text"], str) else ""
        record = parse_instruct_record(text) if kind == "instruct" else plain_story_record(text)
    if row.get(_ROW_ERROR) and not record["error"]:
        record["error"] = row[_ROW_ERROR]
    if fix_mojibake and not record["error"]:
        record, repaired = repair_record(record)
        return {**record, _REPAIRED: repaired}
    return {**record, _REPAIRED: False}


def _parse_batch(batch: Mapping[str, list], kind: str, fix_mojibake: bool) -> dict[str, list]:
    n = len(next(iter(batch.values())))
    records = [
        _row_to_record({k: v[i] for k, v in batch.items()}, kind, fix_mojibake) for i in range(n)
    ]
    return {name: [r[name] for r in records] for name in _PARSED_FEATURES}


_PARSED_FEATURES = datasets.Features({**RECORD_FEATURES, _REPAIRED: datasets.Value("bool")})


def _detect_kind(raw: Dataset) -> str:
    sample = raw.take(50) if isinstance(raw, datasets.IterableDataset) else raw.select(
        range(min(50, len(raw)))
    )
    for row in sample:
        text = row.get("text")
        if isinstance(text, str) and any(
            line.strip().lower().startswith("story:") for line in text.split("\n")
        ):
            return "instruct"
    return "plain"


def _parse(raw: Dataset, kind: str, fix_mojibake: bool) -> Dataset:
    """`RECORD_FEATURES` columns and the internal `_REPAIRED` one."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if kind == "auto":
        kind = _detect_kind(raw)
    columns = raw.column_names
    parsed = raw.map(
        _parse_batch,
        batched=True,
        fn_kwargs={"kind": kind, "fix_mojibake": fix_mojibake},
        remove_columns=columns,
        features=_PARSED_FEATURES,
    )
    if columns is None:  # a streaming JSON source whose columns are only known when read
        parsed = parsed.select_columns(list(_PARSED_FEATURES))
    return parsed


def parse_records(raw: Dataset, kind: str = "auto", fix_mojibake: bool = True) -> Dataset:
    """Map raw rows (a `text` column, or JSON-style columns) to `RECORD_FEATURES` columns.

    Works on `Dataset` and `IterableDataset` alike. Malformed rows are kept, with `error` set;
    mojibake is repaired unless `fix_mojibake` is False (module docstring).
    """
    return _parse(raw, kind, fix_mojibake).remove_columns(_REPAIRED)


def _count_malformed(parsed: Dataset, report: ParseReport, drop: bool) -> Dataset:
    """Count errors and repairs into `report`; drop malformed records (if `drop`), `_REPAIRED`."""
    if isinstance(parsed, datasets.IterableDataset):
        # Counted lazily, in the process that consumes the stream.
        def count(error: str, repaired: bool) -> bool:
            report.add(error)
            report.n_repaired += bool(repaired)
            return not (drop and error)

        kept = parsed.filter(count, input_columns=["error", _REPAIRED])
        return kept.remove_columns(_REPAIRED)
    for error in parsed["error"]:
        report.add(error)
    report.n_repaired = sum(parsed[_REPAIRED])
    report.complete = True
    parsed = parsed.remove_columns(_REPAIRED)
    if not drop or not report.n_malformed:
        return parsed
    return parsed.filter(lambda error: not error, input_columns="error")


def load_stories(cfg: StoryDataConfig) -> tuple[Dataset, ParseReport]:
    """Load and parse the stories `cfg` names.

    Returns:
        `(dataset, report)`: a `datasets.Dataset` (or `IterableDataset` when streaming) with the
        columns of `RECORD_FEATURES`, malformed records dropped unless `cfg.keep_malformed`; and
        the `ParseReport` counting them (already logged for map-style datasets).

    Raises:
        HubUnavailableError: A hub name was given and the hub (or a cached copy) is unavailable.
        FileNotFoundError: `cfg.source` is neither local files nor a hub name.
    """
    files = _resolve_local(cfg.source)
    if files:
        raw = _load_local(cfg, files)
        kind = cfg.kind
    elif cfg.source in HUB_DATASETS or (
        cfg.source.count("/") == 1 and not os.path.exists(cfg.source.split("/")[0])
    ):
        raw = _load_hub(cfg)
        kind = HUB_DATASETS.get(cfg.source, cfg.kind) if cfg.kind == "auto" else cfg.kind
    else:
        raise FileNotFoundError(
            f"data.source={cfg.source!r} matches no local .txt/.json/.jsonl/.parquet file and is "
            f"not a hub dataset name (known: {sorted(HUB_DATASETS)})"
        )
    parsed = _parse(raw, kind, cfg.fix_mojibake)
    report = ParseReport(source=cfg.source)
    dataset = _count_malformed(parsed, report, drop=not cfg.keep_malformed)
    if report.complete:
        (logger.warning if report.n_malformed else logger.info)(report.summary())
    return dataset, report
