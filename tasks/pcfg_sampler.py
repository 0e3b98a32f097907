"""Fast, seeded, vectorised sampling of PCFG derivations and of windows cut from them.

The sampler expands every nonterminal of every derivation at once, one round per tree level, on
flat numpy arrays (no Python loop over symbols or derivations):

1. **Choose.** Each symbol in the flat array picks one of its *expansions* with one
   `rng.random` draw, through a per-symbol alias table (Walker/Vose; O(1) per draw whatever the
   number of expansions). A terminal has one expansion: itself.
2. **Replace.** Each symbol is replaced by its chosen expansion, a slice of one shared `body`
   array, with the `np.repeat` + `np.cumsum` ragged-gather trick; CSR offsets track where each
   derivation starts.

**Flattened subtrees.** A nonterminal with a finite set of at most `MAX_FLAT_TREES` derivation
trees gets, as its expansions, the terminal yields of all its trees, each with the product of its
production probabilities. Choosing one of them is an exact draw of a whole subtree, so the paper
grammar needs 4 rounds instead of 6 and draws ~20 random numbers per derivation instead of ~120.
Recursive or large nonterminals keep their productions as expansions.

**Windows.** `sample_windows` follows the paper ("randomly subsample a string of 250 tokens from
the generated sequence") and docs/choices.md#derivations-shorter-than-the-string-length (concatenate
derivations until long enough): it draws one stream of independent derivations, drops a random
burn-in of W..3W tokens (W = ceil(expected derivation length)), splits the rest into `batch`
disjoint segments of `length + W` tokens, and starts one window uniformly in the first W + 1
positions of each segment. Windows share no tokens, and each start is spread over a whole
derivation's length of phases, so windows begin anywhere relative to derivation boundaries, as a
random window of an endless stream would (no bias towards the first tokens of a derivation). For the
paper grammar, an exact renewal computation gives a derivation-boundary density within 0.5 % of the
stationary 1/E[length] at every window position, already for the first segment (a fixed burn-in of W
would leave up to 9 %). Only the tokens inside windows are written out.

Same `Generator` state in, same output out; the global numpy RNG is never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jaxtyping import Int

from tasks.grammar import Grammar

__all__ = ["WindowDraw", "sample_derivations", "sample_windows", "sample_window_source", "MAX_FLAT_TREES"]

MAX_FLAT_TREES = 16384  # flatten a nonterminal whose number of derivation trees is at most this
MAX_FLAT_TOKENS = 1 << 21  # ... and whose table of yields holds at most this many tokens
MAX_ROUNDS = 10_000  # expansion rounds (= tree depth) before a sample is declared runaway


@dataclass(frozen=True)
class _Tables:
    """A grammar compiled to flat arrays. Symbol ids: terminals 0..T-1, nonterminals T..T+N-1.

    Expansions of all symbols are numbered globally, symbol by symbol; expansion e of a symbol is
    `body[start[e] : start[e] + length[e]]`.
    """

    start_symbol: int
    n_choices: np.ndarray  # [n_symbols] expansions per symbol
    first_choice: np.ndarray  # [n_symbols] global id of a symbol's first expansion
    alias_keep: np.ndarray  # [n_expansions] alias table: keep e if the fraction is below this
    alias_other: np.ndarray  # [n_expansions] ... else take this expansion
    start: np.ndarray  # [n_expansions] offset into body
    length: np.ndarray  # [n_expansions]
    body: np.ndarray  # symbol ids
    body_tokens: np.ndarray  # body as terminal ids in the grammar's token dtype (-1: nonterminal)
    is_flat: np.ndarray  # [n_symbols] every expansion is terminals only


def _alias_table(weights: list[float]) -> tuple[list[float], list[int]]:
    """Vose's alias method: draw index i = floor(n u), keep it if frac(n u) < keep[i], else other[i]."""
    n, total = len(weights), math.fsum(weights)
    scaled = [w * n / total for w in weights]
    keep, other = [1.0] * n, list(range(n))
    small = [i for i, s in enumerate(scaled) if s < 1.0]
    large = [i for i, s in enumerate(scaled) if s >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        keep[s], other[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return keep, other  # leftovers (round-off) keep themselves with probability 1


def _flat_yields(grammar: Grammar, ids: dict[str, int]) -> dict[str, list[tuple[float, tuple[int, ...]]]]:
    """All (probability, terminal yield) of every nonterminal that has few enough trees."""
    rules = {lhs: [(syms, p) for syms, p in prods if p > 0] for lhs, prods in grammar.rules}
    tables: dict[str, list] = {t: [(1.0, (ids[t],))] for t in grammar.terminals}
    n_tokens = {t: 1 for t in grammar.terminals}  # total tokens over all yields of a table
    pending = set(rules)
    while True:  # bottom-up: a nonterminal is ready when all its children are flattened
        ready = [a for a in pending if all(s in tables for syms, _ in rules[a] for s in syms)]
        if not ready:
            return {a: y for a, y in tables.items() if a in rules}
        for a in ready:
            pending.discard(a)
            n_trees, tokens = 0, 0
            for syms, _ in rules[a]:
                counts = [len(tables[s]) for s in syms]
                n_trees += math.prod(counts)  # each child's yields appear prod(others) times:
                tokens += sum(n_tokens[s] * math.prod(counts) // c for s, c in zip(syms, counts))
            if n_trees > MAX_FLAT_TREES or tokens > MAX_FLAT_TOKENS:
                continue
            yields = []
            for syms, p in rules[a]:
                partial = [(p, ())]
                for s in syms:
                    partial = [(q * r, y + z) for q, y in partial for r, z in tables[s]]
                yields += partial
            tables[a], n_tokens[a] = yields, tokens


def _compile(grammar: Grammar) -> _Tables:
    """Builds (once per grammar, cached on it) the flat tables the sampler runs on."""
    if "pcfg_sampler" in grammar._cache:
        return grammar._cache["pcfg_sampler"]
    terminals, nonterminals = grammar.terminals, grammar.nonterminals
    ids = {s: i for i, s in enumerate(terminals + nonterminals)}
    flat = _flat_yields(grammar, ids)
    expansions: list[list[tuple[float, tuple[int, ...]]]] = [[(1.0, (i,))] for i in range(len(terminals))]
    for a in nonterminals:
        expansions.append(flat.get(a) or [(p, tuple(ids[s] for s in syms)) for syms, p in grammar.productions(a) if p > 0])
    n_choices = np.array([len(e) for e in expansions], dtype=np.int64)
    first_choice = np.concatenate(([0], np.cumsum(n_choices)[:-1]))
    keep, other = [], []
    for first, exps in zip(first_choice.tolist(), expansions):
        k, o = _alias_table([p for p, _ in exps])
        keep += k
        other += [first + i for i in o]
    bodies = [y for exps in expansions for _, y in exps]
    length = np.array([len(y) for y in bodies], dtype=np.int64)
    body = np.fromiter((s for y in bodies for s in y), dtype=np.int32, count=int(length.sum()))
    body_tokens = np.where(body < len(terminals), body, -1).astype(grammar.token_dtype)
    tables = _Tables(
        start_symbol=ids[grammar.start],
        n_choices=n_choices,
        first_choice=first_choice,
        alias_keep=np.array(keep),
        alias_other=np.array(other, dtype=np.int64),
        start=np.concatenate(([0], np.cumsum(length)[:-1])),
        length=length,
        body=body,
        body_tokens=body_tokens,
        is_flat=np.array([all(s < len(terminals) for _, y in exps for s in y) for exps in expansions]),
    )
    grammar._cache["pcfg_sampler"] = tables
    return tables


def _choose(tables: _Tables, symbols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global expansion id for each symbol: one uniform per symbol, through the alias tables."""
    scaled = rng.random(symbols.size) * tables.n_choices[symbols]
    index = scaled.astype(np.int64)  # < n_choices: (1 - 2**-53) * n rounds below n for n < 2**52
    choice = tables.first_choice[symbols] + index
    return np.where(scaled - index < tables.alias_keep[choice], choice, tables.alias_other[choice])


def _ragged_gather(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`concatenate([source[s:s+l] for s, l in zip(starts, lengths)])` and the cumulative lengths."""
    ends = np.cumsum(lengths)
    if ends.size == 0:
        return source[:0], ends
    index = np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1])
    return source[index], ends


def _sample_leaves(tables: _Tables, rng: np.random.Generator, n: int, max_rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Expands n derivations until every symbol is flat, then draws its terminal expansion.

    Returns:
        The chosen terminal-only expansion of every leaf node, derivations concatenated, and CSR
        offsets of each derivation's nodes.
    """
    symbols = np.full(n, tables.start_symbol, dtype=np.int32)
    node_offsets = np.arange(n + 1)
    for _ in range(max_rounds):
        choice = _choose(tables, symbols, rng)
        if tables.is_flat[symbols].all():
            return choice, node_offsets
        symbols, ends = _ragged_gather(tables.body, tables.start[choice], tables.length[choice])
        node_offsets = np.concatenate(([0], ends))[node_offsets]
    raise RuntimeError(
        f"sampling did not finish within {max_rounds} expansion rounds (derivation trees deeper than "
        "that); the grammar is close to critical, raise max_rounds or lower its recursion probabilities"
    )


def sample_derivations(
    grammar: Grammar, rng: np.random.Generator, n: int, *, max_rounds: int = MAX_ROUNDS
) -> tuple[Int[np.ndarray, " n_tokens"], Int[np.ndarray, " n_plus_one"]]:
    """Samples n independent derivations from the start symbol, concatenated.

    Args:
        grammar: A `tasks.grammar.Grammar`.
        rng: Source of all randomness.
        n: Number of derivations.
        max_rounds: Cap on the depth of derivation trees (a RuntimeError beyond it).

    Returns:
        `(tokens, offsets)`: terminal ids in `grammar.token_dtype`, and int64 CSR offsets of length
        n + 1; derivation i is `tokens[offsets[i]:offsets[i + 1]]`.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    tables = _compile(grammar)
    choice, node_offsets = _sample_leaves(tables, rng, n, max_rounds)
    tokens, ends = _ragged_gather(tables.body_tokens, tables.start[choice], tables.length[choice])
    return tokens, np.concatenate(([0], ends))[node_offsets]


@dataclass(frozen=True)
class WindowDraw:
    """Windows together with the derivation stream they were cut from (for checks and analysis).

    Attributes:
        windows: `[batch, length]` terminal ids.
        tokens: The whole stream of concatenated derivations.
        offsets: CSR offsets of the derivations in `tokens`.
        starts: Position in `tokens` of each window's first token.
    """

    windows: np.ndarray
    tokens: np.ndarray
    offsets: np.ndarray
    starts: np.ndarray


def _draw_stream(grammar: Grammar, rng: np.random.Generator, batch: int, length: int) -> tuple[_Tables, np.ndarray, np.ndarray, np.ndarray]:
    """Leaves of enough derivations for `batch` windows, their derivation offsets (in leaves) and
    the window starts (in tokens)."""
    if batch < 0 or length < 1:
        raise ValueError(f"batch={batch} must be >= 0 and length={length} >= 1")
    tables = _compile(grammar)
    gap = max(1, math.ceil(grammar.expected_length))
    needed = 3 * gap + batch * (length + gap)
    choices, node_offsets, have, leaves = [], [np.zeros(1, dtype=np.int64)], 0, 0
    while have < needed:  # usually one round; a short stream is topped up
        n = int((needed - have) / grammar.expected_length * 1.05) + 8
        choice, offsets = _sample_leaves(tables, rng, n, MAX_ROUNDS)
        choices.append(choice)
        node_offsets.append(offsets[1:] + leaves)
        have += int(tables.length[choice].sum())
        leaves += choice.size
    burn_in = rng.integers(gap, 3 * gap + 1)
    starts = burn_in + np.arange(batch) * (length + gap) + rng.integers(0, gap + 1, size=batch)
    return tables, np.concatenate(choices), np.concatenate(node_offsets), starts


def sample_windows(grammar: Grammar, rng: np.random.Generator, batch: int, length: int) -> Int[np.ndarray, "batch length"]:
    """Samples `batch` windows of `length` terminals cut from concatenated derivations.

    See the module docstring for how windows are placed. Equal to
    `sample_window_source(grammar, rng, batch, length).windows` for the same generator state, but
    writes out only the tokens inside the windows.

    Args:
        grammar: A `tasks.grammar.Grammar`.
        rng: Source of all randomness.
        batch: Number of windows.
        length: Terminals per window (the paper uses 250).

    Returns:
        `[batch, length]` terminal ids in `grammar.token_dtype`.
    """
    tables, choice, _, starts = _draw_stream(grammar, rng, batch, length)
    leaf_ends = np.cumsum(tables.length[choice])
    # The leaves overlapping each window: [first, last], materialised window by window.
    first = np.searchsorted(leaf_ends, starts, side="right")
    last = np.searchsorted(leaf_ends, starts + (length - 1), side="right")
    leaves, group_ends = _ragged_gather(np.arange(choice.size), first, last - first + 1)
    picked = choice[leaves]
    tokens, _ = _ragged_gather(tables.body_tokens, tables.start[picked], tables.length[picked])
    # Where each window's first leaf begins in `tokens`, plus the window's offset into that leaf.
    group_starts = np.concatenate(([0], np.cumsum(tables.length[picked])))[group_ends - (last - first + 1)]
    offset_in_leaf = starts - (leaf_ends[first] - tables.length[choice[first]])
    return tokens[(group_starts + offset_in_leaf)[:, None] + np.arange(length)]


def sample_window_source(grammar: Grammar, rng: np.random.Generator, batch: int, length: int) -> WindowDraw:
    """Like `sample_windows`, but also returns the derivation stream the windows were cut from."""
    tables, choice, node_offsets, starts = _draw_stream(grammar, rng, batch, length)
    tokens, ends = _ragged_gather(tables.body_tokens, tables.start[choice], tables.length[choice])
    offsets = np.concatenate(([0], ends))[node_offsets]
    windows = tokens[starts[:, None] + np.arange(length)]
    return WindowDraw(windows=windows, tokens=tokens, offsets=offsets, starts=starts)

