"""The reference semantics of the RASP subset: `evaluate(program, tokens)` in plain Python.

Follows Tracr's `tracr.rasp.rasp.DefaultRASPEvaluator`, with these stated differences, each chosen
so that the evaluator says what the compiled transformer computes:

- `Map` and `SequenceMap` give `None` where an input is `None` (as Tracr), except a numerical
  `Map`, which gives 0 there (a numerical residual dimension holds no "no value").
- `Select` never selects a `None` key or query (Tracr raises).
- Categorical `Aggregate`: one selected key gives its value; none gives `None` (Tracr's default);
  several raise `RASPEvaluationError` (Tracr averages numbers and raises for strings; its compiled
  model then outputs a mixture of one-hot vectors, which is no value).
- Numerical `Aggregate`: the mean of the selected values, as Tracr; none selected gives 0 (Tracr's
  evaluator gives its default `None`, its compiled model 0).
- `SelectorWidth`: the number of selected keys, as Tracr.
"""

from __future__ import annotations

from typing import Any

from tasks.rasp.expr import (
    CATEGORICAL,
    NUMERICAL,
    Aggregate,
    Indices,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    Tokens,
)


__all__ = ["RASPEvaluationError", "evaluate"]


class RASPEvaluationError(ValueError):
    """A program has no value on an input (e.g. a categorical Aggregate selecting two keys)."""


def evaluate(program: Any, tokens: list) -> list:
    """Run `program` on `tokens`.

    Args:
        program: A SOp (or a `Select`, which gives the selection matrix `[query][key]` of bools).
        tokens: The input, without BOS.

    Returns:
        One value per position (a list of lists of bools for a `Select`).

    Raises:
        RASPEvaluationError: The program has no value on this input.
        TypeError: `program` is not an expression of the subset.
    """
    memo: dict[int, Any] = {}
    return _eval(program, list(tokens), memo)


def _eval(expr: Any, xs: list, memo: dict[int, Any]) -> Any:
    key = id(expr)
    if key not in memo:
        memo[key] = _eval_uncached(expr, xs, memo)
    return memo[key]


def _eval_uncached(expr: Any, xs: list, memo: dict[int, Any]) -> Any:
    if isinstance(expr, Tokens):
        return list(xs)
    if isinstance(expr, Indices):
        return list(range(len(xs)))
    if isinstance(expr, Map):
        inner = _eval(expr.inner, xs, memo)
        missing = 0 if expr.encoding == NUMERICAL else None
        return [missing if x is None else expr.f(x) for x in inner]
    if isinstance(expr, SequenceMap):
        fst, snd = _eval(expr.fst, xs, memo), _eval(expr.snd, xs, memo)
        return [None if x is None or y is None else expr.f(x, y) for x, y in zip(fst, snd)]
    if isinstance(expr, Select):
        keys, queries = _eval(expr.keys, xs, memo), _eval(expr.queries, xs, memo)
        return [[k is not None and q is not None and bool(expr.predicate(k, q)) for k in keys]
                for q in queries]
    if isinstance(expr, SelectorWidth):
        return [sum(row) for row in _eval(expr.selector, xs, memo)]
    if isinstance(expr, Aggregate):
        rows = _eval(expr.selector, xs, memo)
        values = _eval(expr.sop, xs, memo)
        return [_aggregate(expr, [v for s, v in zip(row, values) if s], q)
                for q, row in enumerate(rows)]
    raise TypeError(f"not an expression of the RASP subset: {expr!r}")


def _aggregate(expr: Aggregate, selected: list, query: int) -> Any:
    if expr.encoding == CATEGORICAL:
        if len(selected) > 1:
            raise RASPEvaluationError(
                f"categorical Aggregate {expr.name or expr!r} selects {len(selected)} keys at "
                f"query position {query}; it needs at most one")
        return selected[0] if selected else None
    if not selected:
        return 0
    return sum(selected) / len(selected)
