"""Tests of tasks.grammar and tasks.pcfg_sampler.

Every distributional check compares the sampler with a reference computed here independently of it:
the recogniser `derives` (a parser, sharing no code with the sampler), and small dynamic programs
over the rules (exact length distributions, exact expected terminal counts).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest

import tasks.pcfg_sampler as pcfg_sampler
from tasks.grammar import PAPER_RULES, Grammar, derives, paper_grammar
from tasks.pcfg_sampler import sample_derivations, sample_window_source, sample_windows

# The grammar table of the paper's Fig. 14 (docs/paper-settings.md#grammar), copied verbatim:
# level | lhs | prod 1 | prod 2.
FIG14_TABLE = """
| 1 | s | r q | q p |
| 2 | p | m n o | n o m |
| 2 | q | n m o | m n |
| 2 | r | o m | m o n |
| 3 | m | l j | j l k |
| 3 | n | k j l | l j k |
| 3 | o | l k j | k j |
| 4 | j | h i | i h |
| 4 | k | h g i | g h i |
| 4 | l | i h g | h i g |
| 5 | g | d f e | f e d |
| 5 | h | e d f | d e f |
| 5 | i | e f d | f d e |
| 6 | d | c a | a b c |
| 6 | e | c b | c a b |
| 6 | f | c b a | b a |
"""


def fig14_rules() -> dict[str, list[tuple[tuple[str, ...], float]]]:
    rules = {}
    for line in FIG14_TABLE.strip().splitlines():
        _, _, lhs, first, second, _ = (cell.strip() for cell in line.split("|"))
        rules[lhs] = [(tuple(first.split()), 0.5), (tuple(second.split()), 0.5)]
    return rules


def fresh_paper_grammar() -> Grammar:
    """The paper grammar as a new instance (sampler tables are cached per instance)."""
    return Grammar.from_rules(fig14_rules(), start="s")


# ---- independent references: dynamic programs over the rules --------------------------------------


def length_pmf(grammar: Grammar, symbol: str) -> np.ndarray:
    """Exact distribution of the yield length of `symbol` (non-recursive grammars): pmf[k] = P(len = k)."""

    @lru_cache(maxsize=None)
    def pmf(x: str) -> tuple[float, ...]:
        if x in grammar.terminals:
            return (0.0, 1.0)
        out = np.zeros(1)
        for symbols, p in grammar.productions(x):
            conv = np.ones(1)
            for s in symbols:
                conv = np.convolve(conv, pmf(s))
            out = np.pad(out, (0, max(0, conv.size - out.size)))
            out[: conv.size] += p * conv
        return tuple(out)

    return np.array(pmf(symbol))


def expected_terminal_counts(grammar: Grammar, symbol: str) -> dict[str, float]:
    """Exact expected number of each terminal in a derivation of `symbol` (non-recursive grammars)."""

    @lru_cache(maxsize=None)
    def counts(x: str) -> tuple[float, ...]:
        if x in grammar.terminals:
            return tuple(float(t == x) for t in grammar.terminals)
        total = np.zeros(len(grammar.terminals))
        for symbols, p in grammar.productions(x):
            total += p * sum(np.array(counts(s)) for s in symbols)
        return tuple(total)

    return dict(zip(grammar.terminals, counts(symbol)))


def ks_distance(samples: np.ndarray, pmf: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the empirical CDF of integer samples and an exact pmf."""
    empirical = np.cumsum(np.bincount(samples, minlength=pmf.size)[: pmf.size]) / samples.size
    return float(np.abs(empirical - np.cumsum(pmf)).max())


# ---- the grammar object -----------------------------------------------------------------------------


def test_paper_grammar_is_the_notes_table():
    g = paper_grammar()
    assert g.start == "s"
    assert len(g.nonterminals) == 16
    assert g.terminals == ("a", "b", "c")
    assert {lhs: list(prods) for lhs, prods in g.rules} == fig14_rules()
    assert dict(PAPER_RULES) == {lhs: tuple(p for p, _ in prods) for lhs, prods in fig14_rules().items()}
    assert all(p == 0.5 for _, prods in g.rules for _, p in prods)
    assert g.token_dtype == np.int8
    assert paper_grammar() is g  # one shared instance, so sampler tables are compiled once


def test_grammar_is_frozen_hashable_and_canonical():
    g = Grammar.from_rules({"s": [(["a", "s"], 0.25), (["b"], 3 / 4)]}, start="s")
    assert g.rules == (("s", ((("a", "s"), 0.25), (("b",), 0.75))),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.start = "t"  # type: ignore[misc]
    same = Grammar.from_rules({"s": [(("a", "s"), 0.25), (("b",), 0.75)]})
    assert g == same and hash(g) == hash(same)
    assert g.expected_length == pytest.approx(1 / 0.75)  # a^k b, k ~ Geometric: E = 1 + 0.25 / 0.75


def test_terminal_ids_are_sorted_and_dtype_widens():
    g = Grammar.from_rules({"s": [(("zeta", "alpha", "mid"), 1.0)]})
    assert g.terminals == ("alpha", "mid", "zeta")
    tokens, _ = sample_derivations(g, np.random.default_rng(0), 3)
    assert tokens.tolist() == [2, 0, 1] * 3
    many = Grammar.from_rules({"s": [((f"t{i:03d}",), 1 / 200) for i in range(200)]})
    assert many.token_dtype == np.int16
    windows = sample_windows(many, np.random.default_rng(0), 64, 5)
    assert windows.dtype == np.int16 and windows.min() >= 0 and windows.max() < 200


INVALID = [
    ({"s": [(("a",), 1.0)]}, "x", "start symbol 'x'"),
    ({"s": [(("t",), 1.0)], "t": []}, "s", "rule 't' has no productions"),
    ({"s": [((), 1.0)]}, "s", "rule 's', production 1 is empty"),
    ({"s": [(("a",), 0.5), (("b",), 0.4)]}, "s", "rule 's': probabilities sum to 0.9"),
    ({"s": [(("a",), 1.5), (("b",), -0.5)]}, "s", "rule 's', production 2"),
    ({"s": [(("a",), float("nan")), (("b",), 1.0)]}, "s", "rule 's', production 1"),
    ({"s": [(("a",), "1")]}, "s", "rule 's', production 1: probability '1' is not a number"),
    ({"s": [("ab", 1.0)]}, "s", "rule 's', production 1: symbols must be a sequence"),
    ({"s": [(("a", ""), 1.0)]}, "s", "rule 's', production 1: symbol ''"),
    ({"s": "a b"}, "s", "rule 's': expected a list"),
    ({"s": [(("a",), 0.5), (("t",), 0.5)], "t": [(("t", "a"), 1.0)]}, "s", "rule(s) 't' can never terminate"),
    # u only terminates through a production of probability 0
    ({"s": [(("a", "u"), 1.0)], "u": [(("u",), 1.0), (("b",), 0.0)]}, "s", "rule(s) 's', 'u' can never terminate"),
    ({"s": [(("s", "s"), 0.6), (("a",), 0.4)]}, "s", "rule(s) 's' are recursive with spectral radius 1.2"),
    ({"s": [(("s", "s"), 0.5), (("a",), 0.5)]}, "s", "rule(s) 's' are recursive with spectral radius 1 "),
    # x -> y y, y -> x: mutual recursion with radius sqrt(1.4 * 0.8) > 1; the healthy s is not named
    (
        {"s": [(("a", "x"), 1.0)], "x": [(("y", "y"), 0.7), (("b",), 0.3)], "y": [(("x",), 0.8), (("c",), 0.2)]},
        "s",
        "rule(s) 'x', 'y' are recursive",
    ),
]


@pytest.mark.parametrize("rules,start,message", INVALID, ids=[m for _, _, m in INVALID])
def test_invalid_grammars_raise_naming_the_rule(rules, start, message):
    with pytest.raises(ValueError) as info:
        Grammar.from_rules(rules, start=start)
    assert message in str(info.value)


def test_unreachable_rules_and_zero_probability_productions_are_allowed():
    g = Grammar.from_rules({"s": [(("a",), 1.0), (("b",), 0.0)], "unused": [(("c",), 1.0)]})
    assert g.terminals == ("a", "b", "c")
    tokens, _ = sample_derivations(g, np.random.default_rng(0), 100)
    assert (tokens == 0).all()  # b has probability 0: never sampled ...
    assert derives(g, "s", ["a"]) and not derives(g, "s", ["b"])  # ... nor recognised


# ---- the recogniser itself --------------------------------------------------------------------------


def test_recogniser_handles_left_recursion_and_ambiguity():
    # E -> E + T | T ; T -> ( E ) | x : left-recursive, so a naive top-down parser would loop.
    g = Grammar.from_rules(
        {"E": [(("E", "+", "T"), 0.3), (("T",), 0.7)], "T": [(("(", "E", ")"), 0.2), (("x",), 0.8)]}, start="E"
    )
    for text, ok in [
        ("x", True), ("x + x + x", True), ("( x + x ) + x", True), ("( ( x ) )", True),
        ("x +", False), ("( x", False), ("x x", False), ("+ x", False), ("", False),
    ]:
        assert derives(g, "E", text.split()) is ok, text
    assert derives(g, "T", ["x"]) and not derives(g, "T", ["x", "+", "x"])
    assert derives(g, "x", ["x"]) and not derives(g, "x", ["x", "x"])
    with pytest.raises(ValueError, match="'nope' is not a symbol"):
        derives(g, "nope", ["x"])


def test_recogniser_accepts_hand_built_paper_derivation_and_ids():
    # s -> q p; q -> m n; ... built by hand along the first productions where possible.
    g = paper_grammar()
    d, e, f = "c a".split(), "c b".split(), "b a".split()  # shortest yields
    g_, h_, i_ = d + f + e, e + d + f, e + f + d
    j_, k_, l_ = h_ + i_, h_ + g_ + i_, i_ + h_ + g_
    m_, n_, o_ = l_ + j_, k_ + j_ + l_, k_ + j_
    text = (o_ + m_) + (m_ + n_)  # s -> r q, r -> o m, q -> m n: the shortest derivation
    assert len(text) == 138
    assert derives(g, "s", text)
    assert derives(g, "s", [g.terminals.index(t) for t in text])
    assert not derives(g, "s", text[:-1]) and not derives(g, "s", text + ["a"])
    with pytest.raises(ValueError, match="out of range"):
        derives(g, "s", [0, 1, 7])


# ---- derivations ------------------------------------------------------------------------------------


def test_sampled_paper_derivations_parse():
    g = paper_grammar()
    tokens, offsets = sample_derivations(g, np.random.default_rng(1), 250)
    assert tokens.dtype == np.int8 and offsets.shape == (251,) and offsets[0] == 0 and offsets[-1] == tokens.size
    for i in range(250):
        assert derives(g, "s", tokens[offsets[i] : offsets[i + 1]]), i


def test_single_token_corruptions_are_mostly_rejected():
    g = paper_grammar()
    rng = np.random.default_rng(2)
    tokens, offsets = sample_derivations(g, rng, 150)
    rejected = 0
    for i in range(150):
        text = tokens[offsets[i] : offsets[i + 1]].copy()
        k = rng.integers(text.size)
        text[k] = (text[k] + rng.integers(1, 3)) % 3  # a different terminal
        rejected += not derives(g, "s", text)
    assert rejected >= 0.8 * 150  # the grammar is ambiguous, so a few corruptions still parse


@pytest.mark.parametrize("flatten", [True, False], ids=["flattened", "plain"])
def test_paper_derivation_lengths_match_exact_distribution(flatten, monkeypatch):
    if not flatten:  # the plain level-by-level expansion, without precomputed subtree tables
        monkeypatch.setattr(pcfg_sampler, "MAX_FLAT_TREES", 0)
    g = fresh_paper_grammar()
    pmf = length_pmf(g, "s")
    support = np.flatnonzero(pmf)
    # Sampled derivations almost all fall in 161-384; the exact range is wider but its ends are rare.
    assert (support.min(), support.max()) == (138, 432)
    assert pmf[:161].sum() < 1e-3 and pmf[385:].sum() < 1e-3
    tokens, offsets = sample_derivations(g, np.random.default_rng(3), 20_000)
    lengths = np.diff(offsets)
    assert lengths.min() >= support.min() and lengths.max() <= support.max()
    assert ks_distance(lengths, pmf) < 2.0 / np.sqrt(lengths.size)
    assert lengths.mean() == pytest.approx(g.expected_length, abs=1.0)
    assert g.expected_length == pytest.approx((np.arange(pmf.size) * pmf).sum())
    if not flatten:
        for i in range(50):
            assert derives(g, "s", tokens[offsets[i] : offsets[i + 1]])


def test_terminal_frequencies_match_exact_expectation():
    g = paper_grammar()
    expected = expected_terminal_counts(g, "s")
    total = sum(expected.values())
    assert total == pytest.approx(g.expected_length)
    windows = sample_windows(g, np.random.default_rng(4), 4096, 250)
    frequencies = np.bincount(windows.ravel(), minlength=3) / windows.size
    for t, name in enumerate(g.terminals):
        assert expected[name] / total == pytest.approx(1 / 3)  # a, b, c are exactly balanced
        assert frequencies[t] == pytest.approx(1 / 3, abs=0.005)


@pytest.mark.parametrize("flatten", [True, False], ids=["flattened", "plain"])
def test_unequal_probabilities_are_sampled_exactly(flatten, monkeypatch):
    # s -> x x x; each x independently a/b/c with 0.1/0.3/0.6: 27 strings with product probabilities.
    if not flatten:
        monkeypatch.setattr(pcfg_sampler, "MAX_FLAT_TREES", 0)
    g = Grammar.from_rules({"s": [(("x", "x", "x"), 1.0)], "x": [(("a",), 0.1), (("b",), 0.3), (("c",), 0.6)]})
    n = 30_000
    tokens, _ = sample_derivations(g, np.random.default_rng(5), n)
    codes = tokens.reshape(n, 3).astype(np.int64) @ np.array([9, 3, 1])
    observed = np.bincount(codes, minlength=27)
    p = np.array([0.1, 0.3, 0.6])
    expected = n * np.einsum("i,j,k->ijk", p, p, p).ravel()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 60  # 26 degrees of freedom: P(chi2 > 60) ~ 2e-4


def test_recursive_grammar_samples_and_parses():
    # s -> a s (0.4) | b (0.6): the yield is a^k b with k ~ Geometric, P(len = k) = 0.4**(k-1) * 0.6.
    g = Grammar.from_rules({"s": [(("a", "s"), 0.4), (("b",), 0.6)]})
    tokens, offsets = sample_derivations(g, np.random.default_rng(6), 20_000)
    lengths = np.diff(offsets)
    k = np.arange(lengths.max() + 2)
    pmf = np.where(k >= 1, 0.4 ** np.maximum(k - 1, 0) * 0.6, 0.0)
    assert ks_distance(lengths, pmf) < 2.0 / np.sqrt(lengths.size)
    for i in range(200):
        assert derives(g, "s", tokens[offsets[i] : offsets[i + 1]])
    # A left-recursive, mutually recursive grammar: every sample parses.
    expr = Grammar.from_rules(
        {"E": [(("E", "+", "T"), 0.3), (("T",), 0.7)], "T": [(("(", "E", ")"), 0.2), (("x",), 0.8)]}, start="E"
    )
    tokens, offsets = sample_derivations(expr, np.random.default_rng(7), 300)
    for i in range(300):
        assert derives(expr, "E", tokens[offsets[i] : offsets[i + 1]])
    windows = sample_windows(expr, np.random.default_rng(8), 16, 12)
    assert windows.shape == (16, 12) and windows.min() >= 0 and windows.max() < len(expr.terminals)


def test_runaway_depth_raises():
    g = Grammar.from_rules({"s": [(("a", "s"), 0.9), (("b",), 0.1)]})
    with pytest.raises(RuntimeError, match="expansion rounds"):
        sample_derivations(g, np.random.default_rng(0), 1000, max_rounds=5)


# ---- windows ----------------------------------------------------------------------------------------


def test_windows_shape_dtype_and_values():
    g = paper_grammar()
    for batch, length in [(1, 1), (7, 32), (64, 250), (0, 10)]:
        windows = sample_windows(g, np.random.default_rng(9), batch, length)
        assert windows.shape == (batch, length) and windows.dtype == np.int8
        assert windows.size == 0 or (windows.min() >= 0 and windows.max() <= 2)
    with pytest.raises(ValueError):
        sample_windows(g, np.random.default_rng(0), 4, 0)


def test_windows_are_slices_of_parsed_derivations():
    g = paper_grammar()
    batch, length = 24, 250
    windows = sample_windows(g, np.random.default_rng(10), batch, length)
    draw = sample_window_source(g, np.random.default_rng(10), batch, length)
    np.testing.assert_array_equal(windows, draw.windows)  # only-the-windows path == full-stream path
    assert np.all(np.diff(draw.starts) >= length)  # disjoint: windows share no tokens
    used = set()
    for w, start in zip(draw.windows, draw.starts):
        np.testing.assert_array_equal(w, draw.tokens[start : start + length])
        first = np.searchsorted(draw.offsets, start, side="right") - 1
        last = np.searchsorted(draw.offsets, start + length - 1, side="right") - 1
        used.update(range(first, last + 1))
    for i in sorted(used):  # every derivation a window touches parses from the start symbol
        assert derives(g, "s", draw.tokens[draw.offsets[i] : draw.offsets[i + 1]]), i


def test_window_starts_are_uniform_relative_to_derivation_boundaries():
    # In an endless stream of derivations a given position starts a derivation with probability
    # 1 / E[length]; windows that favoured derivation starts would exceed it (the paper's concern).
    g = paper_grammar()
    batch, length = 50_000, 4
    draw = sample_window_source(g, np.random.default_rng(11), batch, length)
    positions = draw.starts[:, None] + np.arange(length)
    boundaries = np.isin(positions, draw.offsets[:-1]).sum()
    expected = batch * length / g.expected_length
    assert abs(boundaries - expected) < 4 * np.sqrt(expected)


def test_small_batches_do_not_start_at_derivation_starts():
    # batch = 1 uses only the first segment of a fresh stream, which begins with a derivation: the
    # random burn-in must move the window off it (expected hits: 2000 / E[length] ~ 7).
    g = paper_grammar()
    rng = np.random.default_rng(16)
    hits = 0
    for _ in range(2000):
        draw = sample_window_source(g, rng, 1, 1)
        hits += int(np.isin(draw.starts[0], draw.offsets))
    assert hits < 25


def test_same_seed_same_output_different_seed_different_output():
    g = paper_grammar()
    a = sample_windows(g, np.random.default_rng(12), 32, 64)
    b = sample_windows(g, np.random.default_rng(12), 32, 64)
    c = sample_windows(g, np.random.default_rng(13), 32, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    t1, o1 = sample_derivations(g, np.random.default_rng(14), 50)
    t2, o2 = sample_derivations(g, np.random.default_rng(14), 50)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(o1, o2)
    # The generator passed in is the only randomness: the global numpy RNG is untouched.
    state = np.random.get_state()[1].copy()
    sample_windows(g, np.random.default_rng(15), 8, 8)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
