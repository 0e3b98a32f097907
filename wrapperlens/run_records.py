"""The records of a run directory, checked on read: its metrics lines and its provenance.

`wrapperlens.runs.RunDir` owns the files; this module says what a valid record is, so a reader
refuses (naming the file, the line and the key) whatever a writer never writes.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from wrapperlens.checkpoints import CheckpointError

__all__ = ["PROVENANCE_KEYS", "PROVENANCE_EXTRAS", "parse_metrics", "check_provenance"]

PROVENANCE_KEYS = (
    "run_id", "stage", "package_version", "git_commit", "torch_version",
    "transformer_lens_version", "python_version", "state_dict_sha256", "finished_at",
)
#: Keys the stage runners add to `provenance.json` (`write_provenance(model, **extra)`), all
#: of them or none.
PROVENANCE_EXTRAS = ("world_size", "device")


def _hex(n: int) -> Any:
    return lambda v: isinstance(v, str) and len(v) == n and all(c in "0123456789abcdef" for c in v)


def _optional_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _timestamp(v: Any) -> bool:
    try:
        return isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


_PROVENANCE_TYPES: dict[str | None, Any] = {
    "run_id": _hex(16), "state_dict_sha256": _hex(64), "finished_at": _timestamp,
    "git_commit": lambda v: v is None or _hex(40)(v) or _hex(64)(v),
    "torch_version": lambda v: isinstance(v, str), "python_version": lambda v: isinstance(v, str),
    "world_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "device": lambda v: isinstance(v, str),
    None: _optional_str,  # stage, package_version, transformer_lens_version
}


def _metric_error(path: Path, line: int, message: str) -> CheckpointError:
    return CheckpointError(f"{path}: line {line} {message}")


def parse_metrics(path: Path) -> list[dict]:
    """The records of a `metrics.jsonl` file.

    A torn last line (a run killed mid-write: no final newline, and the JSON stops short) is
    ignored; any other line that is not a record is an error. A record is a JSON object with an
    integer "step" >= 0 (not a bool), steps increasing line by line, and numbers as its other
    values (NaN included: a diverged run logs a NaN loss).

    Raises:
        CheckpointError (a ValueError): the file is not UTF-8, or a line is not such a record;
            the message names the file, the line and the key.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text ({e})") from e
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline, as every complete write does
    records: list[dict] = []
    for i, line in enumerate(lines + ([torn] if torn else [])):
        last_torn = bool(torn) and i == len(lines)
        if not line.strip():
            if line:
                raise _metric_error(path, i + 1, "is blank but not empty")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            # A write cut short leaves a prefix of a record: the parser runs out of input.
            if last_torn and e.msg.startswith(("Expecting", "Unterminated string")):
                break
            raise _metric_error(path, i + 1, f"is not JSON ({e.msg})") from None
        except RecursionError:
            raise _metric_error(path, i + 1, "is not JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise _metric_error(path, i + 1, "is not a JSON object")
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise _metric_error(path, i + 1, f"has no integer 'step' >= 0 (got {step!r})")
        if records and step <= records[-1]["step"]:
            raise _metric_error(path, i + 1, f"has 'step' {step}, not after the step "
                                             f"{records[-1]['step']} of the line before")
        for key, value in record.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise _metric_error(path, i + 1, f"has {key!r} = {value!r}, not a number")
        records.append(record)
    return records


def check_provenance(record: Any, path: Path) -> dict[str, Any]:
    """`record` (a parsed `provenance.json`) if valid.

    Raises:
        CheckpointError: not a JSON object, lacks a key of `PROVENANCE_KEYS`, has a key of
            neither `PROVENANCE_KEYS` nor `PROVENANCE_EXTRAS`, or a value of the wrong type; the
            message names the file and the key.
    """
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    missing = [k for k in PROVENANCE_KEYS if k not in record]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    unknown = sorted(k for k in record
                     if k not in PROVENANCE_KEYS and k not in PROVENANCE_EXTRAS)
    if unknown:
        raise CheckpointError(f"{path}: unknown keys {unknown}")
    extras = [k for k in PROVENANCE_EXTRAS if k in record]
    if extras and len(extras) != len(PROVENANCE_EXTRAS):  # the stage runners write both
        raise CheckpointError(f"{path}: {extras} without "
                              f"{[k for k in PROVENANCE_EXTRAS if k not in extras]}")
    for key, value in record.items():
        check = _PROVENANCE_TYPES.get(key, _PROVENANCE_TYPES.get(None))
        if not check(value):
            raise CheckpointError(f"{path}: {key!r} has an invalid value {value!r}")
    return record

