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
     "tables": {name: rows} (e.g. "table3"),
     "claims": [{"id", "setting", "title", "paper", "rule", "quantity", "threshold", "values",
                 "mean", "spread", "floor", "status", "seeds_vary", "note"}]}

`setting_view(results, name)` is one setting's part, in the layout its claims and figures read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_FORMAT", "RESULTS_FILE", "setting_view", "read_results", "check_results"]

RESULTS_FORMAT = 2
RESULTS_FILE = "results.json"
_KEYS = {"format": int, "settings": list, "preset": str, "seeds": dict, "seed_roles": dict,
         "runs": list, "analyses": list, "tables": dict, "claims": list}
_RECORD_KEYS = {"runs": ("setting", "key", "stage", "params", "status"),
                "analyses": ("setting", "key", "kind", "run", "params", "status")}


def check_results(results: Any, source: str = RESULTS_FILE) -> Mapping[str, Any]:
    """`results` if it has this format's layout; ValueError naming `source` and the key
    otherwise."""
    if not isinstance(results, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(results).__name__}")
    if results.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{source}: key 'format' is {results.get('format')!r}; this version "
                         f"reads format {RESULTS_FORMAT} (rebuild it with `wrapperlens report`)")
    for key, kind in _KEYS.items():
        if not isinstance(results.get(key), kind):
            raise ValueError(f"{source}: key {key!r} must be a {kind.__name__}, got "
                             f"{type(results.get(key)).__name__}")
    for section, keys in _RECORD_KEYS.items():
        for i, record in enumerate(results[section]):
            missing = [k for k in keys if not isinstance(record, Mapping) or k not in record]
            if missing:
                raise ValueError(f"{source}: {section}[{i}] lacks {missing}")
    return results


def read_results(out: str | Path) -> Mapping[str, Any]:
    """`out/results.json` (or the file `out`), checked (`check_results`)."""
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
