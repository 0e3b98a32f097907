"""Compiled RASP programs as HookedTransformers: the model's decoded output equals the evaluator's
on every input up to length 5 over a 3-letter vocabulary and on 1000 random longer inputs."""

import itertools
import random

import numpy as np
import pytest

from tasks.rasp import (
    NUMERICAL, Aggregate, Comparison, Map, RASPCompileError, Select,
    SelectorWidth, SequenceMap, SOp, compile_program, counter, evaluate, indices,
    max_identifier, tokens,
)
from wrapperlens.checkpoints import CheckpointError
from wrapperlens.compiled import compiled_model, read_residual, run_compiled

VOCAB = ["a", "b", "c"]
MAX_LEN = 8


def _is_a():
    return Map(lambda t: 1 if t == "a" else 0, tokens, NUMERICAL, name="is_a")


def _signed():
    return Map({"a": -2, "b": 3, "c": 0}.get, tokens, NUMERICAL, name="signed")


def _prev():
    return Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens, name="prev")


PROGRAMS = {
    "tokens": lambda: tokens,
    "indices": lambda: indices,
    "numerical_map_of_width": lambda: Map(lambda w: 2 - w, SelectorWidth(
        Select(tokens, tokens, Comparison.EQ)), NUMERICAL),
    "map_categorical": lambda: Map({"a": "b", "b": "c", "c": "a"}.get, tokens),
    "map_to_numerical_negative": _signed,
    "map_numerical_to_numerical": lambda: Map(lambda x: x * x - 1, _signed(), NUMERICAL),
    "sequence_map": lambda: SequenceMap(lambda t, i: f"{t}{i % 3}", tokens, indices),
    "aggregate_categorical": _prev,
    "map_after_none": lambda: Map(lambda t: t == "a", _prev()),
    "mean_binary": lambda: Aggregate(Select(indices, indices, Comparison.LEQ), _is_a(),
                                     NUMERICAL),
    "numerical_map_after_mean": lambda: Map(
        lambda x: round(1 - 3 * x, 9), Aggregate(Select(indices, indices, Comparison.LEQ),
                                                 _signed(), NUMERICAL), NUMERICAL),
    "categorical_map_after_mean": lambda: Map(
        lambda x: x > 0.5, Aggregate(Select(tokens, tokens, Comparison.TRUE), _is_a(),
                                     NUMERICAL)),
    "width_tokens_lt": lambda: SelectorWidth(Select(tokens, tokens, Comparison.LT)),
    "three_layers": lambda: SelectorWidth(Select(
        SequenceMap(lambda p, t: p == t, _prev(), tokens), tokens, lambda k, q: k is True)),
    **{f"width_indices_{c.name}": (lambda c=c: SelectorWidth(Select(indices, indices, c)))
       for c in Comparison},
}


def _inputs():
    exhaustive = [list(x) for n in range(1, 6) for x in itertools.product(VOCAB, repeat=n)]
    rng = random.Random(0)
    randoms = [rng.choices(VOCAB, k=rng.randint(6, MAX_LEN)) for _ in range(1000)]
    return exhaustive + randoms


INPUTS = _inputs()


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_compiled_program_equals_evaluator(name):
    program = PROGRAMS[name]()
    compiled = compile_program(program, VOCAB, MAX_LEN)
    model = compiled_model(compiled)
    got = run_compiled(model, compiled, INPUTS)
    wrong = [(x, g, evaluate(program, x)) for x, g in zip(INPUTS, got)
             if g != evaluate(program, x)]
    assert wrong == [], wrong[:3]
    assert model.cfg.normalization_type is None and model.cfg.act_fn == "relu"


def test_counter_exact_for_every_count():
    """Tracr's Counter (vocabulary a-i, max_seq_len 48) is wrong from 10 `a`s; this one is not."""
    program = SelectorWidth(Select(tokens, tokens, lambda k, q: k == "a"), name="count")
    vocab = list("abcdefghi")
    compiled = compile_program(program, vocab, 48)
    rng = random.Random(1)
    inputs = []
    for n in range(49):
        for length in sorted({max(n, 1), 48, rng.randint(max(n, 1), 48)}):
            rest = rng.choices(vocab[1:], k=length - n)
            inputs.append(rng.sample(["a"] * n + rest, length))
    got = run_compiled(compiled_model(compiled), compiled, inputs)
    assert [g[0] for g in got] == [x.count("a") for x in inputs]
    assert [g for g in got] == [evaluate(program, x) for x in inputs]
    assert {f"count:{n}" for n in range(49)} <= set(compiled.residual_labels)
    assert {f"tokens:{t}" for t in vocab} | {"tokens:BOS"} <= set(compiled.residual_labels)
    assert compiled.config["n_layers"] == 1 and compiled.config["n_ctx"] == 49


def test_unembedding_reads_the_labelled_dimensions():
    compiled = compile_program(SelectorWidth(Select(tokens, tokens, Comparison.EQ), name="w"),
                               VOCAB, 4)
    labels = compiled.residual_labels
    rows = compiled.weights["unembed.W_U"].argmax(axis=0)
    assert [labels[r] for r in rows] == [f"w:{v}" for v in compiled.output_values]


def test_compiling_is_deterministic():
    a = compile_program(PROGRAMS["three_layers"](), VOCAB, MAX_LEN)
    b = compile_program(PROGRAMS["three_layers"](), VOCAB, MAX_LEN)
    assert a.residual_labels == b.residual_labels and a.config == b.config
    assert a.weights.keys() == b.weights.keys()
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)


@pytest.mark.parametrize("program,match", [
    (lambda: Select(tokens, tokens, Comparison.EQ), "must be a SOp"),
    (lambda: SelectorWidth(Select(_is_a(), tokens, Comparison.EQ)), "'is_a' is numerical"),
    (lambda: Aggregate(Select(tokens, tokens, Comparison.EQ), _is_a()), "'is_a' is numerical"),
    (lambda: Aggregate(Select(tokens, tokens, Comparison.EQ), tokens, NUMERICAL, name="m"),
     "Aggregate 'm'.*'tokens' is categorical"),
    (lambda: SequenceMap(lambda x, y: x, _is_a(), tokens, name="s"), "SequenceMap 's'"),
    (lambda: Aggregate(Select(indices, indices, Comparison.LEQ),
                       Map(lambda t: 0.5, tokens, NUMERICAL), NUMERICAL, name="half"),
     "Aggregate 'half'.*integer"),
    (lambda: Map(lambda t: 1 / 0, tokens, name="boom"), "Map 'boom'.*ZeroDivisionError"),
    (lambda: Map(lambda t: [t], tokens, name="lists"), "Map 'lists'.*cannot be tabulated"),
    (lambda: Map(lambda t: t, type("Length", (SOp,), {})()), "unsupported expression"),
    (lambda: Map(lambda x: x, Map({"a": 0.0, "b": 1e-7, "c": 1.0}.get, tokens, NUMERICAL),
                 NUMERICAL, name="tight"), "Map 'tight'.*too close"),
])
def test_unsupported_programs_raise_named_errors(program, match):
    with pytest.raises(RASPCompileError, match=match):
        compile_program(program(), VOCAB, MAX_LEN)


def test_bad_description_is_refused():
    compiled = compile_program(tokens, VOCAB, 3)
    broken = compiled.__class__(**{**compiled.__dict__, "weights": {
        k: v for k, v in compiled.weights.items() if k != "unembed.b_U"}})
    with pytest.raises(CheckpointError, match="missing.*unembed.b_U"):
        compiled_model(broken)
    with pytest.raises(ValueError, match="not in the compiled vocabulary"):
        compiled.encode(["z"])


def test_counter_with_broadcast_aggregate_exact_for_every_count():
    """The paper's Alg. 1 shape (count, then an identity Aggregate): 2 layers, still exact."""
    program = counter("a", broadcast=True)
    compiled = compile_program(program, list("abcdefghi"), 48)
    rng = random.Random(2)
    inputs = [rng.sample(["a"] * n + rng.choices(list("bcdefghi"), k=48 - n), 48)
              for n in range(49)] + [["a"] * n for n in range(1, 49)]
    got = run_compiled(compiled_model(compiled), compiled, inputs)
    assert got == [[x.count("a")] * len(x) for x in inputs]
    assert compiled.config["n_layers"] == 2


def test_max_identifier_exact():
    """The paper's Max-identifier (5th largest of distinct letters, a > b > ...): 3 blocks with one
    head each, exact on every distinct-letter input of length <= 5 over a-g and on 1000 random
    10-letter inputs over a-z."""
    letters = [chr(ord("a") + i) for i in range(26)]
    program = max_identifier(5)
    compiled = compile_program(program, letters, 10)
    inputs = [list(x) for n in range(1, 6) for x in itertools.permutations("abcdefg", n)]
    rng = random.Random(3)
    inputs += [rng.sample(letters, 10) for _ in range(1000)]
    got = run_compiled(compiled_model(compiled), compiled, inputs)
    wrong = [(x, g) for x, g in zip(inputs, got) if g != evaluate(program, x)]
    assert wrong == [], wrong[:3]
    assert (compiled.config["n_layers"], compiled.config["n_heads"]) == (3, 1)


def test_residual_labels_read_the_compiled_values():
    compiled = compile_program(counter("a"), list("abc"), 8)
    resid = read_residual(compiled_model(compiled), compiled, list("abacab"))
    # One-hot to within float32 rounding of the gates' pre-activations (tasks.rasp.mlp); the BOS
    # row is exactly 0.
    assert resid["count:3"].tolist() == pytest.approx([0.0] + [1.0] * 6, abs=1e-4)
    assert resid["count:3"][0] == 0.0
    for n in (0, 1, 2, 4, 5, 6, 7, 8):
        assert resid[f"count:{n}"].tolist() == pytest.approx([0.0] * 7, abs=1e-4)
    assert resid["count:bos_weight"][1:].tolist() == pytest.approx([0.25] * 6, abs=1e-7)
    assert resid["tokens:b"].tolist() == [0, 0, 1, 0, 0, 0, 1]
    assert resid["indices:0"].tolist() == [0, 1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("name", ["three_layers", "numerical_map_after_mean", "map_after_none"])
def test_every_program_dimension_is_zero_at_bos_after_every_layer(name):
    """BOS stays a clean default key: every MLP gate is switched off there (tasks.rasp.mlp)."""
    compiled = compile_program(PROGRAMS[name](), VOCAB, MAX_LEN)
    model = compiled_model(compiled)
    for layer in range(compiled.config["n_layers"]):
        resid = read_residual(model, compiled, list("abcab"), layer)
        nonzero = {k for k, v in resid.items() if v[0] != 0.0}
        assert nonzero <= {"tokens:BOS"} | {k for k in resid if k.endswith(":bos_weight")}
