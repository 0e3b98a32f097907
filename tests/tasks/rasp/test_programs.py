"""The paper's programs under the evaluator, against hand-computed answers (paper Fig. 13)."""

import pytest

from tasks.rasp import counter, evaluate, max_identifier


def test_counter():
    assert evaluate(counter("a"), list("abaca")) == [3] * 5
    assert evaluate(counter("b", broadcast=True), list("abaca")) == [1] * 5
    assert evaluate(counter("a"), list("bcd")) == [0] * 3


def test_max_identifier_paper_figure_13():
    # Fig. 13: input b d a f h m x p q n -> h (sorted a > b > d > f > h > ...).
    assert evaluate(max_identifier(5), list("bdafhmxpqn")) == ["h"] * 10
    assert evaluate(max_identifier(1), list("bdafhmxpqn")) == ["a"] * 10
    assert evaluate(max_identifier(5), list("dcba")) == [None] * 4  # fewer than 5 tokens
    with pytest.raises(ValueError, match="rank"):
        max_identifier(0)
