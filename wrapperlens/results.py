"""`results.json`: the one schema of every reproduction (format `RESULTS_FORMAT`).

Written by `wrapperlens.reproduction` (its only writer) and read back by `read_results` (its
only reader; the report and `wrapperlens report` take what it returns). Layout:

    {"format": 2, "settings": ["pcfg", "compiled"], "preset": "cpu",
     "seeds": {setting: N}, "seed_roles": {setting: {stage: what seed s varies}},
     "executor", "threads", "wall_seconds",
     "runs": [{"setting", "key", "stage", "params": {typed grid parameters},
               "status": finished | failed | skipped | missing, "error", "run_id", "dir",
               "seconds", "final": {metric: value}, "curve": [{"step", metric: value}],
               "floors": {metric: chance floor}}],
     "analyses": [{"setting", "key", "kind", "run": key of the analysed run, "params",
                   "status", "error", "result": the job's value}],
     "tables": {name: rows, or {"title", "note", "columns", "rows", ...}: a table the report
                draws} (e.g. "table3", "wrappers_leaderboard"),
     "claims": [{"id", "setting", "title", "paper", "rule", "quantity", "threshold", "values",
                 "mean", "spread", "floor", "status", "seeds_vary", "note"}],
     "sha256": the SHA-256 of the rest (canonical JSON): an edited file is refused}

`setting_view(results, name)` is one setting's part, in the layout its claims and figures read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_FORMAT", "RESULTS_FILE", "SCHEMA", "setting_view", "read_results",
           "check_results", "sealed", "check_seal", "content_hash"]

RESULTS_FORMAT = 2
RESULTS_FILE = "results.json"
STATUSES = ("finished", "failed", "skipped", "missing")
CLAIM_STATUSES = ("reproduced", "not reproduced", "inconclusive", "undefined", "not covered")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _metrics(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())


def _param(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool)) or _number(v)


_str, _opt_str = (lambda v: isinstance(v, str)), (lambda v: v is None or isinstance(v, str))
_opt_number = lambda v: v is None or _number(v)  # noqa: E731
_RECORD = {"setting": _str, "key": _str, "params": lambda v: isinstance(v, dict) and all(
    isinstance(k, str) and _param(x) for k, x in v.items()),
    "status": lambda v: v in STATUSES, "error": _opt_str,
    "seconds": lambda v: _number(v) and v >= 0}
#: Each key of a record, and what its value must be (a job's `result` is its own JSON).
SCHEMA = {
    "runs": {**_RECORD, "stage": _str, "run_id": _opt_str, "dir": _opt_str, "final": _metrics,
             "curve": lambda v: isinstance(v, list) and all(
                 _metrics(r) and isinstance(r.get("step"), int) for r in v),
             "floors": _metrics},
    "analyses": {**_RECORD, "kind": _str, "run": _str, "result": lambda v: True},
    "claims": {"id": lambda v: isinstance(v, int) and not isinstance(v, bool), "setting": _str,
               "title": _str, "paper": _str, "rule": _str, "quantity": _str,
               "threshold": _opt_number,
               "values": lambda v: isinstance(v, list) and all(map(_number, v)),
               "mean": _opt_number, "floor": _opt_number,
               "spread": lambda v: v is None or (isinstance(v, list) and len(v) == 2
                                                 and all(map(_number, v))),
               "status": lambda v: v in CLAIM_STATUSES, "seeds_vary": _str, "note": _str},
}
_TOP = {"format": lambda v: v == RESULTS_FORMAT,
        "settings": lambda v: isinstance(v, list) and all(map(_str, v)),
        "preset": _str, "executor": _str,
        "threads": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "wall_seconds": lambda v: _number(v) and v >= 0,
        "seeds": lambda v: isinstance(v, dict) and all(
            isinstance(n, int) and not isinstance(n, bool) for n in v.values()),
        "seed_roles": lambda v: isinstance(v, dict) and all(
            isinstance(r, dict) and all(map(_str, r.values())) for r in v.values()),
        "tables": lambda v: isinstance(v, dict) and all(
            isinstance(t, list) or (isinstance(t, dict) and isinstance(t.get("rows"), list))
            for t in v.values()),
        **{section: lambda v: isinstance(v, list) for section in SCHEMA}}


def content_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `record` without its own "sha256" key."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     allow_nan=False).encode()).hexdigest()


def sealed(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` with its "sha256" (`content_hash`): what the writers of results.json and
    sweep.json write, so that any edit of a value is caught on read (`check_seal`)."""
    return {**{k: v for k, v in record.items() if k != "sha256"}, "sha256": content_hash(record)}


def check_seal(record: Mapping[str, Any], source: str) -> None:
    """Refuse a record whose "sha256" is missing or is not its content's (ValueError naming
    `source`): the file was edited or damaged after it was written."""
    recorded = record.get("sha256")
    if not isinstance(recorded, str):
        raise ValueError(f"{source}: key 'sha256' is {recorded!r}; rebuild the file")
    try:
        actual = content_hash(record)
    except ValueError as e:  # NaN / inf, which the writer never writes
        raise ValueError(f"{source}: a value is not finite ({e})") from e
    if actual != recorded:
        raise ValueError(f"{source}: the content does not match its 'sha256' (edited or damaged "
                         "after it was written); rebuild it")


def check_results(results: Any, source: str = RESULTS_FILE) -> Mapping[str, Any]:
    """`results` if it has this format's layout (`SCHEMA`: every key there, of its type, and no
    other) and its content is what was written (`check_seal`); ValueError naming `source` and
    the key otherwise."""
    if not isinstance(results, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(results).__name__}")
    if results.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{source}: key 'format' is {results.get('format')!r}; this version "
                         f"reads format {RESULTS_FORMAT} (rebuild it with `wrapperlens report`)")
    _check_keys({k: v for k, v in results.items() if k != "sha256"}, _TOP, source, "")
    for section, keys in SCHEMA.items():
        for i, record in enumerate(results[section]):
            if not isinstance(record, Mapping):
                raise ValueError(f"{source}: {section}[{i}] is not an object")
            _check_keys(record, keys, source, f"{section}[{i}].")
    check_seal(results, source)
    return results


def _check_keys(record: Mapping[str, Any], keys: Mapping[str, Any], source: str,
                where: str) -> None:
    missing, extra = sorted(set(keys) - set(record)), sorted(set(record) - set(keys))
    if missing or extra:
        raise ValueError(f"{source}: {where or 'the file '}lacks {missing} / has unknown keys "
                         f"{extra}")
    for key, ok in keys.items():
        if not ok(record[key]):
            raise ValueError(f"{source}: key {where}{key} has a bad value {record[key]!r}")


def read_results(out: str | Path) -> Mapping[str, Any]:
    """`out/results.json` (or the file `out`), checked (`check_results`).

    Raises:
        ValueError: (a `wrapperlens.checkpoints.CheckpointError` for a file that is not JSON)
            naming the file and the key.
    """
    from wrapperlens.checkpoints import read_json

    path = Path(out)
    path = path / RESULTS_FILE if path.is_dir() else path
    return check_results(read_json(path), str(path))


def setting_view(results: Mapping[str, Any], setting: str) -> dict[str, Any]:
    """The part of `results` of one setting: its runs, analyses, seeds and seed roles."""
    def mine(section: str) -> list:
        return [r for r in results.get(section) or [] if r.get("setting", setting) == setting]
    return {"preset": results.get("preset"), "setting": setting,
            "seeds": (results.get("seeds") or {}).get(setting),
            "seed_roles": (results.get("seed_roles") or {}).get(setting, {}),
            "runs": mine("runs"), "analyses": mine("analyses"),
            "tables": results.get("tables") or {}}
