"""Every two-input primitive with the same SOp on both sides, compiled, against the evaluator.

`SequenceMap(f, x, x)` and `Select(x, x, predicate)` (under `Aggregate` and `SelectorWidth`) read
one SOp twice. The compiled model's decoded output must equal `tasks.rasp.evaluate` on every
input of length 1..5 over a 3-letter vocabulary (363 inputs). Before the fix of the SequenceMap
gates, `SequenceMap(f, tokens, tokens)` compiled to a model with no value at every position.
"""

import itertools

import pytest

from tasks.rasp import (
    NUMERICAL, Aggregate, Comparison, Map, Select, SelectorWidth, SequenceMap, compile_program,
    evaluate, indices, tokens,
)
from wrapperlens.compiled import compiled_model, run_compiled

VOCAB = ["a", "b", "c"]
MAX_LEN = 5
INPUTS = [list(x) for n in range(1, MAX_LEN + 1) for x in itertools.product(VOCAB, repeat=n)]


def _shifted():
    return Map({"a": "b", "b": "c", "c": "a"}.get, tokens, name="shifted")


def _prev():  # nullable: no value at position 0
    return Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens, name="prev")


def _pair():
    return SequenceMap(lambda t, i: f"{t}{i % 2}", tokens, indices, name="pair")


def _is_a():
    return Map(lambda t: 1 if t == "a" else 0, tokens, NUMERICAL, name="is_a")


PROGRAMS = {
    # SequenceMap(f, x, x) over inputs, a Map, a nullable SOp and a SequenceMap.
    "seqmap_tokens": lambda: SequenceMap(lambda x, y: x + y, tokens, tokens),
    "seqmap_tokens_eq": lambda: SequenceMap(lambda x, y: x == y, tokens, tokens),
    "seqmap_indices": lambda: SequenceMap(lambda x, y: x * y, indices, indices),
    "seqmap_map": lambda: (lambda m: SequenceMap(lambda x, y: f"{x}{y}", m, m))(_shifted()),
    "seqmap_nullable": lambda: (lambda p: SequenceMap(lambda x, y: x + y, p, p))(_prev()),
    "seqmap_of_seqmap": lambda: (lambda p: SequenceMap(lambda x, y: x[0] + y[1], p, p))(_pair()),
    "seqmap_then_width": lambda: SelectorWidth(Select(
        SequenceMap(lambda x, y: x + y, tokens, tokens), tokens, lambda k, q: k == q + q)),
    # Select(x, x, predicate): keys and queries one SOp, under SelectorWidth and Aggregate.
    **{f"width_tokens_{c.name}": (lambda c=c: SelectorWidth(Select(tokens, tokens, c)))
       for c in Comparison},
    "width_map": lambda: (lambda m: SelectorWidth(Select(m, m, Comparison.LT)))(_shifted()),
    "mean_tokens_eq": lambda: Aggregate(Select(tokens, tokens, Comparison.EQ), _is_a(),
                                        NUMERICAL),
    "mean_tokens_leq": lambda: Aggregate(Select(tokens, tokens, Comparison.LEQ), _is_a(),
                                         NUMERICAL),
    # The same SOp three times: keys, queries and the aggregated values.
    "aggregate_indices_itself": lambda: Aggregate(Select(indices, indices, Comparison.EQ),
                                                  indices),
    "aggregate_prev_index": lambda: Aggregate(
        Select(indices, indices, lambda k, q: k == q + 1), indices),
    "aggregate_pair_itself": lambda: (lambda p: Aggregate(Select(p, p, Comparison.EQ), p))(
        SequenceMap(lambda t, i: (t, i), tokens, indices, name="tok_idx")),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_same_sop_on_both_sides_equals_evaluator(name):
    program = PROGRAMS[name]()
    compiled = compile_program(program, VOCAB, MAX_LEN)
    got = run_compiled(compiled_model(compiled), compiled, INPUTS)
    wrong = [(x, g, evaluate(program, x)) for x, g in zip(INPUTS, got)
             if g != evaluate(program, x)]
    assert wrong == [], f"{len(wrong)} of {len(INPUTS)} inputs wrong, e.g. {wrong[:3]}"


def test_same_sop_sequence_map_has_only_the_diagonal_values():
    """`f(x, x)` is the only value that can occur, so it is the only output dimension."""
    program = SequenceMap(lambda x, y: x + y, tokens, tokens, name="doubled")
    compiled = compile_program(program, VOCAB, MAX_LEN)
    assert compiled.output_values == ("aa", "bb", "cc")
