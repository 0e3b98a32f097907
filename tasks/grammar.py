"""Probabilistic context-free grammars: the paper's PCFG, user grammars, and a recogniser.

A `Grammar` is a set of rules `nonterminal -> [(production, probability), ...]` and a start symbol.
Every symbol that never appears on a left-hand side is a terminal; terminals get the integer ids
`0 .. n_terminals - 1` in sorted order (`grammar.terminals`), so the paper's grammar has a=0, b=1,
c=2. Grammars are immutable and validated on construction: anything that would make sampling
meaningless or non-terminating raises a `ValueError` that names the rule.

    >>> g = Grammar.from_rules({"s": [(("a", "s"), 0.4), (("b",), 0.6)]}, start="s")
    >>> g.terminals
    ('a', 'b')
    >>> derives(g, "s", ["a", "a", "b"])
    True

Sampling lives in `tasks.pcfg_sampler` (`sample_derivations`, `sample_windows`,
`sample_window_source`), which imports `Grammar` from here; this module imports nothing of the
sampler. `derives` below is an independent top-down recogniser that shares no code with the
sampler, so tests can check one against the other.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import no_type_check

import numpy as np

__all__ = [
    "Production",
    "Rule",
    "Grammar",
    "PAPER_RULES",
    "paper_grammar",
    "derives",
]

PROBABILITY_TOLERANCE = 1e-6

Production = tuple[str, ...]
Rule = tuple[tuple[Production, float], ...]

# The paper's grammar [Jain et al. Fig. 14, after Allen-Zhu & Li 2023]: six levels of nonterminals,
# two productions each at probability 0.5, terminals a, b, c. Level 1: s; 2: p q r; 3: m n o;
# 4: j k l; 5: g h i; 6: d e f.
PAPER_RULES: Mapping[str, tuple[Production, Production]] = MappingProxyType({
    "s": (("r", "q"), ("q", "p")),
    "p": (("m", "n", "o"), ("n", "o", "m")),
    "q": (("n", "m", "o"), ("m", "n")),
    "r": (("o", "m"), ("m", "o", "n")),
    "m": (("l", "j"), ("j", "l", "k")),
    "n": (("k", "j", "l"), ("l", "j", "k")),
    "o": (("l", "k", "j"), ("k", "j")),
    "j": (("h", "i"), ("i", "h")),
    "k": (("h", "g", "i"), ("g", "h", "i")),
    "l": (("i", "h", "g"), ("h", "i", "g")),
    "g": (("d", "f", "e"), ("f", "e", "d")),
    "h": (("e", "d", "f"), ("d", "e", "f")),
    "i": (("e", "f", "d"), ("f", "d", "e")),
    "d": (("c", "a"), ("a", "b", "c")),
    "e": (("c", "b"), ("c", "a", "b")),
    "f": (("c", "b", "a"), ("b", "a")),
})


@dataclass(frozen=True)
class Grammar:
    """An immutable, validated probabilistic context-free grammar.

    Build one with `Grammar.from_rules` (any mapping of sequences) or directly from the canonical
    tuple form. Productions are non-empty (no epsilon rules); productions of probability 0 are
    allowed but never sampled nor recognised.

    Attributes:
        rules: `((nonterminal, ((production, probability), ...)), ...)` in definition order.
        start: The start symbol (a nonterminal).
        nonterminals: Left-hand sides, in definition order.
        terminals: Symbols never on a left-hand side, sorted; a terminal's id is its index here.
        expected_length: Expected number of terminals of a derivation from `start`.
        token_dtype: Smallest signed integer numpy dtype that holds every terminal id.
    """

    rules: tuple  # tuple[tuple[str, Rule], ...]; loosely typed so that bad input gets a ValueError
    start: str
    nonterminals: tuple[str, ...] = field(init=False, repr=False)
    terminals: tuple[str, ...] = field(init=False, repr=False)
    expected_length: float = field(init=False, repr=False, compare=False)
    token_dtype: np.dtype = field(init=False, repr=False, compare=False)
    # Artefacts derived from the rules by other modules (e.g. the sampler's tables), by name.
    _cache: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_rules(cls, rules: Mapping, start: str = "s") -> Grammar:
        """Builds a grammar from `{nonterminal: [(production, probability), ...]}`.

        Args:
            rules: For each nonterminal, its productions (sequences of symbol names) and their
                probabilities, which must sum to 1.
            start: The start symbol; must have a rule.

        Raises:
            ValueError: Naming the rule, for any malformed or invalid rule (see `__post_init__`).
        """
        if not isinstance(rules, Mapping):
            raise ValueError(f"rules must be a mapping nonterminal -> [(production, probability), ...], got {rules!r}")
        return cls(rules=tuple(rules.items()), start=start)

    def __post_init__(self) -> None:
        """Validates the rules and stores them in canonical form (tuples, float probabilities).

        Raises:
            ValueError: Naming the rule or symbol, if a rule has no productions, a production is
                empty or holds a non-string symbol, a probability is negative or not finite, a
                rule's probabilities do not sum to 1 (tolerance 1e-6), the start symbol has no
                rule, a nonterminal can never derive a string of terminals, or the grammar is
                critical or supercritical (spectral radius of the expected-offspring matrix >= 1:
                derivations have infinite expected length, so sampling would not terminate).
        """
        if not isinstance(self.rules, (tuple, list)) or not self.rules:
            raise ValueError(f"rules must be a non-empty collection of (nonterminal, productions), got {self.rules!r}")
        canonical, lhs_seen = [], set()
        for item in self.rules:
            lhs, productions = item if isinstance(item, (tuple, list)) and len(item) == 2 else (item, None)
            if not isinstance(lhs, str) or not lhs:
                raise ValueError(f"rule {lhs!r}: a nonterminal must be a non-empty string")
            if lhs in lhs_seen:
                raise ValueError(f"rule {lhs!r} is defined twice")
            lhs_seen.add(lhs)
            if not isinstance(productions, (tuple, list)):
                raise ValueError(f"rule {lhs!r}: expected a list of (production, probability), got {productions!r}")
            if not productions:
                raise ValueError(f"rule {lhs!r} has no productions")
            entries = []
            for k, entry in enumerate(productions, 1):
                if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
                    raise ValueError(f"rule {lhs!r}, production {k}: expected (symbols, probability), got {entry!r}")
                symbols, probability = entry
                if not isinstance(symbols, (tuple, list)):
                    raise ValueError(f"rule {lhs!r}, production {k}: symbols must be a sequence such as ('a', 'b'), got {symbols!r}")
                if not symbols:
                    raise ValueError(f"rule {lhs!r}, production {k} is empty (epsilon productions are not supported)")
                for symbol in symbols:
                    if not isinstance(symbol, str) or not symbol:
                        raise ValueError(f"rule {lhs!r}, production {k}: symbol {symbol!r} is not a non-empty string")
                if isinstance(probability, bool) or not isinstance(probability, (int, float, np.integer, np.floating)):
                    raise ValueError(f"rule {lhs!r}, production {k}: probability {probability!r} is not a number")
                if not math.isfinite(probability) or probability < 0:
                    raise ValueError(f"rule {lhs!r}, production {k} {tuple(symbols)}: probability {probability} is negative or not finite")
                entries.append((tuple(symbols), float(probability)))
            total = math.fsum(p for _, p in entries)
            if abs(total - 1.0) > PROBABILITY_TOLERANCE:
                raise ValueError(f"rule {lhs!r}: probabilities sum to {total:.9g}, not 1 (tolerance {PROBABILITY_TOLERANCE})")
            canonical.append((lhs, tuple(entries)))
        object.__setattr__(self, "rules", tuple(canonical))
        nonterminals = tuple(lhs for lhs, _ in self.rules)
        if not isinstance(self.start, str) or self.start not in lhs_seen:
            raise ValueError(f"start symbol {self.start!r} has no rule (nonterminals: {', '.join(nonterminals)})")
        terminals = tuple(sorted({s for _, prods in self.rules for symbols, _ in prods for s in symbols} - lhs_seen))
        object.__setattr__(self, "nonterminals", nonterminals)
        object.__setattr__(self, "terminals", terminals)
        object.__setattr__(self, "token_dtype", np.dtype(np.min_scalar_type(-max(len(terminals), 1))))
        self._check_productive()
        object.__setattr__(self, "expected_length", self._expected_lengths()[self.start])

    def productions(self, nonterminal: str) -> Rule:
        """The `((production, probability), ...)` of one nonterminal."""
        return self._rule_map[nonterminal]

    @property
    def _rule_map(self) -> Mapping[str, Rule]:
        if "rule_map" not in self._cache:
            self._cache["rule_map"] = MappingProxyType(dict(self.rules))
        return self._cache["rule_map"]

    def _check_productive(self) -> None:
        """Fixed point: a nonterminal is productive if one of its productions of nonzero
        probability consists of terminals and productive nonterminals only."""
        productive = set(self.terminals)
        changed = True
        while changed:
            changed = False
            for lhs, productions in self.rules:
                if lhs not in productive and any(
                    p > 0 and all(s in productive for s in symbols) for symbols, p in productions
                ):
                    productive.add(lhs)
                    changed = True
        stuck = [lhs for lhs in self.nonterminals if lhs not in productive]
        if stuck:
            raise ValueError(
                f"rule(s) {', '.join(map(repr, stuck))} can never terminate: every production of nonzero "
                "probability contains a nonterminal that never derives a string of terminals"
            )

    def _expected_lengths(self) -> dict[str, float]:
        """Expected yield length of every nonterminal, after checking it is finite.

        With `M[A, B]` the expected number of B in one expansion of A and `t[A]` the expected
        number of terminals, the expected yields solve `E = t + M E`, finite iff the spectral
        radius of `M` is below 1. The radius of `M` is the largest radius of its strongly
        connected blocks, so the check runs per block and names the rules of a bad one.
        """
        index = {nt: i for i, nt in enumerate(self.nonterminals)}
        n = len(index)
        offspring, terminal_yield = np.zeros((n, n)), np.zeros(n)
        for lhs, productions in self.rules:
            for symbols, p in productions:
                for s in symbols:
                    if s in index:
                        offspring[index[lhs], index[s]] += p
                    else:
                        terminal_yield[index[lhs]] += p
        reach = offspring > 0  # transitive closure by repeated squaring
        while True:
            wider = reach | ((reach.astype(np.float64) @ reach.astype(np.float64)) > 0)
            if (wider == reach).all():
                break
            reach = wider
        checked = set()
        for i in range(n):
            if not reach[i, i] or i in checked:
                continue
            block = np.flatnonzero(reach[i] & reach[:, i])
            checked.update(block.tolist())
            radius = float(np.abs(np.linalg.eigvals(offspring[np.ix_(block, block)])).max())
            if radius >= 1 - 1e-9:
                names = ", ".join(repr(self.nonterminals[b]) for b in block)
                raise ValueError(
                    f"rule(s) {names} are recursive with spectral radius {radius:.6g} >= 1 of the "
                    "expected-offspring matrix: derivations have infinite expected length and "
                    "sampling would not terminate; lower the probability of the recursive productions"
                )
        expected = np.linalg.solve(np.eye(n) - offspring, terminal_yield)
        return {nt: float(expected[i]) for nt, i in index.items()}


@lru_cache(maxsize=None)
def paper_grammar() -> Grammar:
    """The paper's grammar (Fig. 14, App. B.2): 16 nonterminals, start `s`, terminals a b c.

    Returns one shared (immutable) instance, so the sampler's compiled tables are built once.
    """
    return Grammar.from_rules({lhs: [(prod, 0.5) for prod in prods] for lhs, prods in PAPER_RULES.items()}, start="s")


def derives(grammar: Grammar, symbol: str, tokens: Sequence | np.ndarray) -> bool:
    """Whether `symbol` derives exactly `tokens` with nonzero probability.

    A memoised top-down recogniser, written independently of the sampler: `ends(X, i)` is the set
    of positions j such that X derives `tokens[i:j]`. Productions are matched symbol by symbol,
    keeping the set of positions reachable so far; because no production is empty, a position
    that leaves fewer tokens than symbols still to match is dropped. Left and right recursion are
    handled by iterating sweeps to a least fixed point: a request for a pair still being computed
    returns its current (smaller) set, and a sweep that saw such a request is repeated with the
    grown sets until nothing changes. Ambiguous grammars (like the paper's) are fine.

    Args:
        grammar: The grammar.
        symbol: A nonterminal or terminal of `grammar`.
        tokens: Terminal names, or terminal ids (indices into `grammar.terminals`).

    Returns:
        True iff some derivation of nonzero probability yields `tokens`.

    Raises:
        ValueError: If `symbol` is not a symbol of the grammar or an id is out of range.
    """
    if symbol not in grammar.nonterminals and symbol not in grammar.terminals:
        raise ValueError(f"symbol {symbol!r} is not a symbol of the grammar")
    names = []
    for t in tokens:
        if isinstance(t, str):
            names.append(t)
        elif 0 <= int(t) < len(grammar.terminals):
            names.append(grammar.terminals[int(t)])
        else:
            raise ValueError(f"terminal id {t} is out of range 0..{len(grammar.terminals) - 1}")
    n = len(names)
    rules = {lhs: [syms for syms, p in prods if p > 0] for lhs, prods in grammar.rules}
    memo: dict[tuple[str, int], frozenset[int]] = {}

    @no_type_check  # hot inner loop: keep the test suite's run-time type checks off it
    def ends(x: str, i: int, in_progress: set, done: set, saw_cycle: list) -> frozenset[int]:
        if x not in rules:
            return frozenset([i + 1]) if i < n and names[i] == x else frozenset()
        key = (x, i)
        if key in in_progress:
            saw_cycle[0] = True
            return memo.get(key, frozenset())
        if key in done:
            return memo[key]
        in_progress.add(key)
        found: set[int] = set()
        for symbols in rules[x]:
            positions = {i}
            for k, s in enumerate(symbols):
                left = len(symbols) - k  # each remaining symbol needs at least one token
                positions = {j for p in positions if p + left <= n for j in ends(s, p, in_progress, done, saw_cycle)}
                if not positions:
                    break
            found |= positions
        in_progress.discard(key)
        done.add(key)
        memo[key] = frozenset(found) | memo.get(key, frozenset())
        return memo[key]

    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 100 * n + 1000))  # right recursion nests ~n calls deep
    try:
        while True:
            saw_cycle = [False]
            before = dict(memo)
            result = ends(symbol, 0, set(), set(), saw_cycle)
            if not saw_cycle[0] or memo == before:
                return n in result
    finally:
        sys.setrecursionlimit(old_limit)

