"""The paper's programs under the evaluator, against hand-computed answers (paper Fig. 13)."""

import pytest

import itertools

from tasks.rasp import compile_program, counter, counter_alg1, evaluate, max_identifier
from wrapperlens.compiled import compiled_model, run_compiled


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


def test_alg1_counter_equals_the_one_block_counter_on_every_short_input():
    """Evaluator and compiled model (exact and Tracr-like gains), every input of length 1..6 over
    a, b, c, d (5460 inputs): the same count at every position as `counter`."""
    inputs = [list(x) for n in range(1, 7) for x in itertools.product("abcd", repeat=n)]
    for token in ("a", "d"):
        want = [evaluate(counter(token), x) for x in inputs]
        assert [evaluate(counter_alg1(token), x) for x in inputs] == want
        assert want[:4] == [[int(t == token)] for t in "abcd"]
        for gains in ({}, {"scale": 30.0, "mlp_slope": 100.0}):
            compiled = compile_program(counter_alg1(token), list("abcd"), 6, **gains)
            assert compiled.config["n_layers"] == 3
            assert run_compiled(compiled_model(compiled), compiled, inputs) == want
