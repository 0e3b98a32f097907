"""The five PCFG task families and their labels, vectorised over a batch of strings.

Every function takes `text`, an integer array `[batch, L]` of terminal ids (the string between
`<sot>` and `<eot>`), and returns one label per row (paper App. B.2;
docs/choices.md#o-of-each-family and docs/choices.md#how-indices-are-counted):

| family | question | parameter |
|---|---|---|
| C  | occurrences of operand `o` in the last `window` positions | `window` (paper 40) |
| CC | occurrences of the pair `o o` (overlapping) inside the last `window` positions | `window` |
| I  | index of the `k`-th occurrence of `o` counted from the end | `k` (paper 6) |
| IC | index of the `k`-th occurrence of the pair `o o` counted from the end | `k` (paper 6) |
| T  | the terminal `offset` positions before `<eot>` | `offset` (paper 40) |

**Index convention** (the paper says "index from the EOT token"): the distance from `<eot>` to the
occurrence, so the last text token has index 1 and the first has index L. A pair `o o` occupying
positions (p, p+1) is located at its second token, p+1. When fewer than `k` occurrences exist the
label is `NO_OCCURRENCE` (-1), encoded as the `NONE` token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FAMILIES",
    "NO_OCCURRENCE",
    "TaskFamily",
    "count_in_window",
    "count_pairs_in_window",
    "index_of_occurrence",
    "index_of_pair_occurrence",
    "token_at_offset",
]

NO_OCCURRENCE = -1


def count_in_window(text: np.ndarray, operand: int, window: int) -> np.ndarray:
    """Occurrences of `operand` among the last `window` tokens of each row."""
    return (text[:, -window:] == operand).sum(axis=1)


def _pair_ends(text: np.ndarray, operand: int) -> np.ndarray:
    """Bool `[batch, L]`: True at position p when tokens p-1 and p are both `operand`."""
    hit = text == operand
    ends = np.zeros_like(hit)
    ends[:, 1:] = hit[:, 1:] & hit[:, :-1]
    return ends


def count_pairs_in_window(text: np.ndarray, operand: int, window: int) -> np.ndarray:
    """Occurrences of the pair `operand operand` with both tokens among the last `window`."""
    return _pair_ends(text[:, -window:], operand).sum(axis=1)


def _kth_from_end(hits: np.ndarray, k: int) -> np.ndarray:
    """Distance from `<eot>` (last position = 1) of the k-th True counted from the end."""
    from_end = np.cumsum(hits[:, ::-1], axis=1)
    found = from_end[:, -1] >= k
    first = np.argmax(from_end >= k, axis=1)  # first column (from the end) reaching k
    return np.where(found, first + 1, NO_OCCURRENCE)


def index_of_occurrence(text: np.ndarray, operand: int, k: int) -> np.ndarray:
    """Index from `<eot>` of the `k`-th occurrence of `operand` counted from the end."""
    return _kth_from_end(text == operand, k)


def index_of_pair_occurrence(text: np.ndarray, operand: int, k: int) -> np.ndarray:
    """Index from `<eot>` (at the pair's second token) of the `k`-th `operand operand` pair."""
    return _kth_from_end(_pair_ends(text, operand), k)


def token_at_offset(text: np.ndarray, offset: int) -> np.ndarray:
    """The terminal id `offset` positions before `<eot>` (offset 1 is the last token)."""
    return text[:, -offset]


@dataclass(frozen=True)
class TaskFamily:
    """One task family: its name, whether it takes an operand, and what its answer is.

    Attributes:
        name: The family's name and default task token (C, CC, I, IC, T).
        takes_operand: False for T, whose operand slot holds `NULL`.
        answer_kind: "number" (answers are number tokens) or "terminal".
        parameter: Which task-config field gives its O' (`count_window`, `index_occurrence`,
            `pair_index_occurrence`, `token_offset`).
    """

    name: str
    takes_operand: bool
    answer_kind: str
    parameter: str

    def labels(self, text: np.ndarray, operand: int | None, o_prime: int) -> np.ndarray:
        """Labels of this family for every row of `text` (terminal ids for T, else numbers)."""
        if self.name == "C":
            return count_in_window(text, operand, o_prime)
        if self.name == "CC":
            return count_pairs_in_window(text, operand, o_prime)
        if self.name == "I":
            return index_of_occurrence(text, operand, o_prime)
        if self.name == "IC":
            return index_of_pair_occurrence(text, operand, o_prime)
        if self.name == "T":
            return token_at_offset(text, o_prime)
        raise ValueError(f"unknown task family {self.name!r}")


FAMILIES: dict[str, TaskFamily] = {
    "C": TaskFamily("C", True, "number", "count_window"),
    "CC": TaskFamily("CC", True, "number", "count_window"),
    "I": TaskFamily("I", True, "number", "index_occurrence"),
    "IC": TaskFamily("IC", True, "number", "pair_index_occurrence"),
    "T": TaskFamily("T", False, "terminal", "token_offset"),
}
