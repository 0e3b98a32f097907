"""RASP expressions: sequence operations (SOps) and selectors, as small frozen classes.

Follows the RASP of Tracr (`tracr.rasp.rasp`) restricted to what `tasks.rasp.compiler` compiles:

- `tokens`, `indices`: the input tokens and their positions 0..n-1 (BOS is not part of the input);
- `Map(f, sop, encoding)`: `f` elementwise; the output is categorical (one-hot) or numerical
  (a scalar);
- `SequenceMap(f, fst, snd)`: `f(x, y)` elementwise over two categorical SOps (categorical out);
- `Select(keys, queries, predicate)`: a selector, `selected[q][k] = predicate(keys[k], queries[q])`
  (argument order key, query, as in Tracr); `predicate` is a `Comparison` or any callable;
- `Aggregate(selector, sop, encoding)`: per query, the selected value (categorical) or the mean of
  the selected values (numerical);
- `SelectorWidth(selector)`: per query, the number of selected keys (categorical).

Expressions compare by identity (`eq=False`), like Tracr's, so a program is a DAG of objects and
a shared sub-expression is computed once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "CATEGORICAL", "NUMERICAL", "Aggregate", "Comparison", "Indices", "Map", "Select",
    "SelectorWidth", "SequenceMap", "SOp", "Tokens", "indices", "tokens",
]

CATEGORICAL = "categorical"
NUMERICAL = "numerical"
ENCODINGS = (CATEGORICAL, NUMERICAL)


class Comparison(enum.Enum):
    """The predicates of Tracr's `Select`, called as `predicate(key, query)`."""

    EQ = "=="
    LT = "<"
    LEQ = "<="
    GT = ">"
    GEQ = ">="
    NEQ = "!="
    TRUE = "True"
    FALSE = "False"

    def __call__(self, key: Any, query: Any) -> bool:
        return bool(_COMPARISONS[self](key, query))


_COMPARISONS: dict[Comparison, Callable[[Any, Any], bool]] = {
    Comparison.EQ: lambda k, q: k == q,
    Comparison.LT: lambda k, q: k < q,
    Comparison.LEQ: lambda k, q: k <= q,
    Comparison.GT: lambda k, q: k > q,
    Comparison.GEQ: lambda k, q: k >= q,
    Comparison.NEQ: lambda k, q: k != q,
    Comparison.TRUE: lambda k, q: True,
    Comparison.FALSE: lambda k, q: False,
}


def _check_encoding(expr: Any, encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"{type(expr).__name__}: encoding must be one of {ENCODINGS}, "
                         f"got {encoding!r}")


class SOp:
    """Base class of sequence operations (one value per input position)."""

    encoding: str = CATEGORICAL
    name: str | None = None

    def children(self) -> tuple[Any, ...]:
        """The direct sub-expressions."""
        return ()


@dataclass(frozen=True, eq=False)
class Tokens(SOp):
    """The input tokens (categorical)."""

    name: str | None = "tokens"

    def __repr__(self) -> str:
        return "tokens"


@dataclass(frozen=True, eq=False)
class Indices(SOp):
    """The input positions 0..n-1 (categorical)."""

    name: str | None = "indices"

    def __repr__(self) -> str:
        return "indices"


tokens = Tokens()
indices = Indices()


@dataclass(frozen=True, eq=False)
class Map(SOp):
    """`f` applied to every value of `inner`; `encoding` is the encoding of the output."""

    f: Callable[[Any], Any]
    inner: SOp
    encoding: str = CATEGORICAL
    name: str | None = None

    def __post_init__(self) -> None:
        _check_encoding(self, self.encoding)
        if not isinstance(self.inner, SOp) or not callable(self.f):
            raise TypeError(f"Map needs a callable and a SOp, got {self.f!r}, {self.inner!r}")

    def children(self) -> tuple[Any, ...]:
        return (self.inner,)


@dataclass(frozen=True, eq=False)
class SequenceMap(SOp):
    """`f(x, y)` for the values `x` of `fst` and `y` of `snd` at each position (categorical)."""

    f: Callable[[Any, Any], Any]
    fst: SOp
    snd: SOp
    name: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.fst, SOp) and isinstance(self.snd, SOp)) or not callable(self.f):
            raise TypeError(f"SequenceMap needs a callable and two SOps, got {self!r}")

    def children(self) -> tuple[Any, ...]:
        return (self.fst, self.snd)


@dataclass(frozen=True, eq=False)
class Select:
    """A selector: query position q selects key position k iff `predicate(keys[k], queries[q])`."""

    keys: SOp
    queries: SOp
    predicate: Comparison | Callable[[Any, Any], bool]
    name: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.keys, SOp) and isinstance(self.queries, SOp)):
            raise TypeError(f"Select needs two SOps, got {self.keys!r}, {self.queries!r}")
        if not callable(self.predicate):
            raise TypeError(f"Select predicate must be callable, got {self.predicate!r}")

    def children(self) -> tuple[Any, ...]:
        return (self.keys, self.queries)


@dataclass(frozen=True, eq=False)
class Aggregate(SOp):
    """Per query, the selected value of `sop` (categorical) or the selected values' mean."""

    selector: Select
    sop: SOp
    encoding: str = CATEGORICAL
    name: str | None = None

    def __post_init__(self) -> None:
        _check_encoding(self, self.encoding)
        if not isinstance(self.selector, Select) or not isinstance(self.sop, SOp):
            raise TypeError(f"Aggregate needs a Select and a SOp, got {self!r}")

    def children(self) -> tuple[Any, ...]:
        return (self.selector, self.sop)


@dataclass(frozen=True, eq=False)
class SelectorWidth(SOp):
    """Per query, the number of keys the selector selects (categorical, 0..n)."""

    selector: Select
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.selector, Select):
            raise TypeError(f"SelectorWidth needs a Select, got {self.selector!r}")

    def children(self) -> tuple[Any, ...]:
        return (self.selector,)
