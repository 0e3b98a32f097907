"""The paper's two compiled programs (§4, App. B.1, Alg. 1 and 2), written in the RASP subset.

- `counter(token)`: the number of `token`s in the input, at every position. Vocabulary a-i in the
  paper, inputs up to about 48 letters.
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


__all__ = ["counter", "max_identifier"]


def counter(token: str = "a", *, broadcast: bool = False) -> SelectorWidth | Aggregate:
    """Count `token`; `broadcast=True` adds the paper's final identity `Aggregate` (Alg. 1 step 5),
    which copies the count at every position into a new SOp (one more layer)."""
    count = SelectorWidth(Select(tokens, tokens, lambda k, q: k == token), name="count")
    if not broadcast:
        return count
    return Aggregate(Select(indices, indices, Comparison.EQ), count, name="count_out")


def max_identifier(rank: int = 5) -> Aggregate:
    """The `rank`-th largest token (a > b > c > ...), compiled to 3 layers."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    n_larger = SelectorWidth(Select(tokens, tokens, Comparison.LT), name="n_larger")
    target = Map(lambda n: n == rank - 1, n_larger, name="is_target")
    return Aggregate(Select(target, tokens, lambda k, q: k is True), tokens, name="max_id")
