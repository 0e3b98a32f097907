"""Shared machinery of the fuzzed-reader tests (`tests/*/test_fuzz_readers.py`).

Every file a reader takes is corrupted by a hypothesis strategy (a truncation, a byte flip, an
invalid UTF-8 sequence, a key removed or added, a value of the wrong JSON type, NaN / inf, a huge
size) and the reader's answer is sorted into one of the outcomes of `OUTCOMES`:

- "refused_named": it raised an error whose message names the file (the test also checks that
  the file and key names it promises are there);
- "read_correctly": it returned what it returns for the uncorrupted file;
- "unnamed_error": it raised something that names no file (a bug);
- "accepted_changed": it returned something else without a word (a bug);
- "emptied": a refused writer (resume) left a file changed (a bug).

`Tally` keeps the counts per reader class; the test modules print them as a table at the end
and write them to `$WRAPPERLENS_FUZZ_COUNTS` (JSON) when it is set.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

OUTCOMES = ("refused_named", "read_correctly", "unnamed_error", "accepted_changed", "emptied")
BAD = ("unnamed_error", "accepted_changed", "emptied")

#: The settings of every fuzz test: reproducible, no example database, no deadline.
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture,
                                   HealthCheck.too_slow, HealthCheck.data_too_large])


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, **FUZZ)


class Tally:
    """Counts of outcomes per reader class."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {}
        self.examples: dict[str, list[str]] = {}

    def record(self, reader: str, outcome: str, detail: str = "") -> str:
        self.counts.setdefault(reader, Counter())[outcome] += 1
        self.counts[reader]["inputs"] += 1
        if outcome in BAD:
            self.examples.setdefault(reader, []).append(detail[:300])
        return outcome

    def check(self, reader: str, outcome: str, detail: str, what: str) -> None:
        """Record one input's outcome and fail the test on a bug (`BAD`)."""
        self.record(reader, outcome, f"{what}: {detail}")
        assert outcome not in BAD, f"{reader}: {what}: {outcome}: {detail}"

    def table(self) -> str:
        cols = ("inputs",) + OUTCOMES
        lines = [f"{'reader':34s}" + "".join(f"{c:>17s}" for c in cols)]
        for reader, c in sorted(self.counts.items()):
            lines.append(f"{reader:34s}" + "".join(f"{c[k]:>17d}" for k in cols))
        return "\n".join(lines)

    def write(self, module: str) -> None:
        print(f"\nfuzzed readers ({module}):\n" + self.table())
        target = os.environ.get("WRAPPERLENS_FUZZ_COUNTS")
        if not target:
            return
        path = Path(target)
        existing = json.loads(path.read_text()) if path.is_file() else {}
        existing.update({reader: {k: c[k] for k in ("inputs",) + OUTCOMES}
                         for reader, c in self.counts.items()})
        path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


def classify(
    read: Callable[[], Any], expected: Any, names: Iterable[str], *,
    equal: Callable[[Any, Any], bool] = lambda a, b: a == b,
    refusals: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError),
) -> tuple[str, str]:
    """(outcome, detail) of calling `read`: refused naming one of `names`, read as `expected`,
    or one of the bugs. Only `refusals` count as refusals (CheckpointError and ConfigError are
    ValueErrors); anything else is an unnamed error however it reads."""
    try:
        result = read()
    except refusals as e:
        message = str(e)
        if any(name in message for name in names):
            return "refused_named", message
        return "unnamed_error", f"{type(e).__name__}: {message}"
    except Exception as e:  # noqa: BLE001 - the point of the test
        return "unnamed_error", f"{type(e).__name__}: {e}"
    if equal(result, expected):
        return "read_correctly", ""
    return "accepted_changed", f"returned {str(result)[:200]}"


# --------------------------------------------------------------------------- byte corruptions
#: Bytes that are never valid where they land in a JSON text the project writes (ASCII): C0
#: controls other than whitespace (refused inside strings too) and lone non-ASCII bytes (never
#: valid UTF-8 after or before an ASCII byte).
BAD_TEXT_BYTES = [b for b in range(0x20) if b not in (0x09, 0x0A, 0x0D)] + list(range(0x80, 0x100))
#: Invalid UTF-8 sequences: a lone continuation byte, an overlong "/", a surrogate, a truncated
#: 3-byte sequence, a code point above U+10FFFF, bytes that never occur.
BAD_UTF8 = [b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xff",
            b"\xfe", b"\xc3\x28"]


def truncations(data: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.integers(0, len(data) - 1).map(lambda n: (f"truncated to {n} bytes", data[:n]))


def text_flips(data: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    """One byte replaced by a byte that is invalid wherever it lands (`BAD_TEXT_BYTES`)."""
    return st.tuples(st.integers(0, len(data) - 1), st.sampled_from(BAD_TEXT_BYTES)).map(
        lambda pb: (f"byte {pb[0]} -> {pb[1]:#04x}",
                    data[:pb[0]] + bytes([pb[1]]) + data[pb[0] + 1:]))


def bit_flips(data: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    """One bit of one byte flipped (binary files: a checksum has to catch it)."""
    return st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)).map(
        lambda pb: (f"bit {pb[1]} of byte {pb[0]} flipped",
                    data[:pb[0]] + bytes([data[pb[0]] ^ (1 << pb[1])]) + data[pb[0] + 1:]))


def bad_utf8(data: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.tuples(st.integers(0, len(data)), st.sampled_from(BAD_UTF8)).map(
        lambda pb: (f"{pb[1]!r} inserted at {pb[0]}", data[:pb[0]] + pb[1] + data[pb[0]:]))


def text_corruptions(data: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(truncations(data), text_flips(data), bad_utf8(data))


# --------------------------------------------------------------------------- JSON corruptions
def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


#: Replacement values of each JSON kind but null (a null may be valid where a value is
#: optional: that is an edit, not a corruption).
WRONG_TYPED = {
    "bool": [True, False],
    "number": [0, 1, -1, 2.5, 7],
    "string": ["", "x", "1", "true", "null", "\u00e9\U0001f600"],
    "array": [[], [1], ["x"], [None, {}]],
    "object": [{}, {"x": 1}, {"step": 1}],
}
#: Sizes that no model here has (and that would take for ever or all memory to allocate).
HUGE = [10**9, 1e15, 2**31, 2**63, 10**18, -(10**9), 1e300]
NON_FINITE = [math.nan, math.inf, -math.inf]


def leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every (path, value) of a JSON value, containers included (the root excluded)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((path + (k,), v))
            out += leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((path + (i,), v))
            out += leaves(v, path + (i,))
    return out


def containers(obj: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every JSON object in `obj` (root included)."""
    out = [path] if isinstance(obj, dict) else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += containers(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += containers(v, path + (i,))
    return out


def _copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _at(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(obj: Any, path: tuple, value: Any) -> Any:
    obj = _copy(obj)
    _at(obj, path[:-1])[path[-1]] = value
    return obj


def _delete(obj: Any, path: tuple) -> Any:
    obj = _copy(obj)
    del _at(obj, path[:-1])[path[-1]]
    return obj


def json_corruptions(
    obj: Any, *, size_keys: Iterable[str] = (), skip: Callable[[tuple], bool] = lambda p: False,
    int_only: Callable[[tuple], bool] = lambda p: True,
) -> st.SearchStrategy[tuple[str, Any]]:
    """Structural corruptions of a JSON value: a key of an object removed, an unknown key added,
    a value (not null) replaced by one of another JSON kind, a number by NaN / inf, an integer
    by a fraction, and a size (a key named in `size_keys`) by a huge value. `skip(path)`
    excludes the paths whose values are free-form (a job's own return value); `int_only(path)`
    says whether an integer there must stay one (else a fraction is a valid edit)."""
    size_keys = set(size_keys)
    all_leaves = [(p, v) for p, v in leaves(obj) if not skip(p)]
    keyed = [(p, v) for p, v in all_leaves if isinstance(p[-1], str)]
    typed = [(p, v) for p, v in all_leaves if v is not None]
    numbers = [(p, v) for p, v in all_leaves if _kind(v) == "number"]
    ints = [(p, v) for p, v in numbers if isinstance(v, int) and int_only(p)]
    sizes = [(p, v) for p, v in ints if p[-1] in size_keys]
    strategies = [
        st.sampled_from(keyed).map(lambda pv: (f"removed {pv[0]}", _delete(obj, pv[0]))),
        st.tuples(st.sampled_from(containers(obj)), st.sampled_from(["extra", "_x", "step "]))
        .filter(lambda pk: pk[1] not in _at(obj, pk[0]))
        .map(lambda pk: (f"added {pk[0] + (pk[1],)}", _set(obj, pk[0] + (pk[1],), 1))),
        st.sampled_from(typed).flatmap(lambda pv: st.sampled_from(
            [w for kind, ws in WRONG_TYPED.items() if kind != _kind(pv[1]) for w in ws])
            .map(lambda w: (f"{pv[0]}: {pv[1]!r} -> {w!r}", _set(obj, pv[0], w)))),
    ]
    if numbers:
        strategies.append(st.tuples(st.sampled_from(numbers), st.sampled_from(NON_FINITE)).map(
            lambda pw: (f"{pw[0][0]} -> {pw[1]}", _set(obj, pw[0][0], pw[1]))))
    if ints:
        strategies.append(st.sampled_from(ints).map(
            lambda pv: (f"{pv[0]} -> {pv[1] + 0.5}", _set(obj, pv[0], pv[1] + 0.5))))
    if sizes:
        strategies.append(st.tuples(st.sampled_from(sizes), st.sampled_from(HUGE)).map(
            lambda pw: (f"{pw[0][0]} -> {pw[1]!r}", _set(obj, pw[0][0], pw[1]))))
    return st.one_of(strategies)


def dumps(obj: Any) -> bytes:
    """JSON as `wrapperlens.checkpoints.write_json` writes it."""
    return (json.dumps(obj, indent=2) + "\n").encode()


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes): what a refused writer must keep."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}
