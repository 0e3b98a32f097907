"""The RASP evaluator on hand-computed examples, one per primitive and comparison."""

import pytest

from tasks.rasp import (
    CATEGORICAL, NUMERICAL, Aggregate, Comparison, Map, RASPEvaluationError, Select,
    SelectorWidth, SequenceMap, evaluate, indices, tokens,
)

XS = ["b", "a", "c", "a"]


def test_tokens_and_indices():
    assert evaluate(tokens, XS) == XS
    assert evaluate(indices, XS) == [0, 1, 2, 3]
    assert evaluate(tokens, []) == []


def test_maps():
    assert evaluate(Map(lambda t: t.upper(), tokens), XS) == ["B", "A", "C", "A"]
    is_a = Map(lambda t: -2 if t == "a" else 1, tokens, NUMERICAL)
    assert evaluate(is_a, XS) == [1, -2, 1, -2]
    assert evaluate(Map(lambda x: x * 3, is_a, NUMERICAL), XS) == [3, -6, 3, -6]
    assert evaluate(SequenceMap(lambda t, i: f"{t}{i}", tokens, indices), XS) == [
        "b0", "a1", "c2", "a3"]


@pytest.mark.parametrize("comparison,expected", [
    # selected[q][k] = comparison(key k, query q), over indices 0..2.
    (Comparison.EQ, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    (Comparison.LT, [[0, 0, 0], [1, 0, 0], [1, 1, 0]]),
    (Comparison.LEQ, [[1, 0, 0], [1, 1, 0], [1, 1, 1]]),
    (Comparison.GT, [[0, 1, 1], [0, 0, 1], [0, 0, 0]]),
    (Comparison.GEQ, [[1, 1, 1], [0, 1, 1], [0, 0, 1]]),
    (Comparison.NEQ, [[0, 1, 1], [1, 0, 1], [1, 1, 0]]),
    (Comparison.TRUE, [[1, 1, 1], [1, 1, 1], [1, 1, 1]]),
    (Comparison.FALSE, [[0, 0, 0], [0, 0, 0], [0, 0, 0]]),
])
def test_select_comparisons_and_width(comparison, expected):
    sel = Select(indices, indices, comparison)
    assert evaluate(sel, list("xyz")) == [[bool(v) for v in row] for row in expected]
    assert evaluate(SelectorWidth(sel), list("xyz")) == [sum(row) for row in expected]


def test_select_is_key_then_query():
    # Key "a" < query "b": only the query "b" (position 0) selects the key "a" (position 1).
    sel = Select(tokens, tokens, Comparison.LT)
    assert evaluate(sel, ["b", "a"]) == [[False, True], [False, False]]


def test_counter():
    count = SelectorWidth(Select(tokens, tokens, lambda k, q: k == "a"))
    assert evaluate(count, XS) == [2, 2, 2, 2]
    assert evaluate(count, ["b"] * 3) == [0, 0, 0]


def test_categorical_aggregate_one_none_or_several():
    prev = Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens, CATEGORICAL)
    assert evaluate(prev, XS) == [None, "b", "a", "c"]
    # None propagates through a categorical Map and is never selected.
    assert evaluate(Map(str.upper, prev), XS) == [None, "B", "A", "C"]
    assert evaluate(SelectorWidth(Select(prev, tokens, Comparison.TRUE)), XS) == [3] * 4
    assert evaluate(Map(lambda t: 1, prev, NUMERICAL), XS) == [0, 1, 1, 1]
    with pytest.raises(RASPEvaluationError, match="selects 2 keys"):
        evaluate(Aggregate(Select(tokens, tokens, Comparison.TRUE), tokens), ["a", "b"])


def test_numerical_mean():
    is_a = Map(lambda t: 1 if t == "a" else 0, tokens, NUMERICAL)
    frac = Aggregate(Select(indices, indices, Comparison.LEQ), is_a, NUMERICAL)
    assert evaluate(frac, XS) == [0, 0.5, 1 / 3, 0.5]
    none = Aggregate(Select(indices, indices, Comparison.FALSE), is_a, NUMERICAL)
    assert evaluate(none, XS) == [0, 0, 0, 0]


def test_not_an_expression():
    with pytest.raises(TypeError, match="not an expression"):
        evaluate(object(), XS)
