"""The paper's two compiled programs (§4, App. B.1, Alg. 1 and 2), written in the RASP subset.

- `counter(token)`: the number of `token`s in the input, at every position. Vocabulary a-i in the
  paper, inputs up to about 48 letters.
- `counter_alg1(token)`: the same count in the shape of the paper's Alg. 1, three blocks deep: a
  map marking the `token`s, a `SelectorWidth` of the marked keys, and the final identity
  `Aggregate`.
- `max_identifier(rank)`: the `rank`-th largest token in the order a > b > c > ... (so "larger"
  is alphabetically earlier), at every position; the paper uses rank 5 over 26 distinct letters.
  Each token counts the tokens larger than it (`SelectorWidth` of `key < query`), the token with
  `rank - 1` larger ones is marked, and every position reads the marked token. With repeated
  tokens the mark can fall on several positions (the categorical `Aggregate` then has no value),
  which is why the paper samples without replacement; with fewer than `rank` tokens nothing is
  marked and the output is `None`.
"""

from __future__ import annotations

from tasks.rasp.expr import Aggregate, Comparison, Map, Select, SelectorWidth, indices, tokens


__all__ = ["counter", "counter_alg1", "max_identifier"]


def counter(token: str = "a", *, broadcast: bool = False) -> SelectorWidth | Aggregate:
    """Count `token`; `broadcast=True` adds the paper's final identity `Aggregate` (Alg. 1 step 5),
    which copies the count at every position into a new SOp (one more layer)."""
    count = SelectorWidth(Select(tokens, tokens, lambda k, q: k == token), name="count")
    if not broadcast:
        return count
    return Aggregate(Select(indices, indices, Comparison.EQ), count, name="count_out")


def counter_alg1(token: str = "a") -> Aggregate:
    """Count `token` as the paper's Alg. 1: `bin = (tokens == token)`, `Select(bin, indices, .)`,
    `SelectorWidth`, then `Aggregate` over the identity `Select(indices, indices, EQ)`.

    Alg. 1 as the paper prints it compares `bin` with the query's index (EQ); read literally that
    counts the `token`s only at position 1 (True == 1). Here the selector keeps its keys and
    queries but selects, for every query, the keys where `bin` holds, so the count is at every
    position, as the paper's Counter outputs it. Compiled: the map in block 0's MLP, the width in
    block 1, the identity Aggregate in block 2's attention (three blocks, as App. B.1)."""
    is_token = Map(lambda t: t == token, tokens, name="bin")
    count = SelectorWidth(Select(is_token, indices, lambda k, q: k is True), name="count")
    return Aggregate(Select(indices, indices, Comparison.EQ), count, name="count_out")


def max_identifier(rank: int = 5) -> Aggregate:
    """The `rank`-th largest token (a > b > c > ...), compiled to 3 layers."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    n_larger = SelectorWidth(Select(tokens, tokens, Comparison.LT), name="n_larger")
    target = Map(lambda n: n == rank - 1, n_larger, name="is_target")
    return Aggregate(Select(target, tokens, lambda k, q: k is True), tokens, name="max_id")
