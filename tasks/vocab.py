"""The token vocabulary of the PCFG tasks.

One token per special symbol, task-family token, operand, terminal and number, so that every
answer (a count, an index or a terminal) is a single token, as in the paper (App. B.2, Fig. 15;
docs/choices.md#special-tokens-and-the-answer).

Layout of a sequence (`tasks.format`):

    <sos> TASK OPERAND O' <sot> t_1 ... t_L <eot> <art> ANSWER <eos>

The paper's Fig. 15 writes these as `$ ( a 40 < ... < = 15 #`; we use distinct, readable names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "Vocabulary", "SPECIAL_TOKENS", "PAD", "SOS", "EOS", "SOT", "EOT", "ART", "NULL_OPERAND",
    "NO_ANSWER",
]

PAD, SOS, EOS, SOT, EOT, ART = "<pad>", "<sos>", "<eos>", "<sot>", "<eot>", "<art>"
SPECIAL_TOKENS = (PAD, SOS, EOS, SOT, EOT, ART)
#: The operand of operand-free families (T, "token value at an index").
NULL_OPERAND = "NULL"
#: The answer of an index question whose occurrence does not exist in the string.
NO_ANSWER = "NONE"


@dataclass(frozen=True)
class Vocabulary:
    """An ordered, duplicate-free list of string tokens with encode / decode.

    Attributes:
        tokens: Every token, in id order.
    """

    tokens: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for i, tok in enumerate(self.tokens):
            if tok in index:
                raise ValueError(f"vocabulary: token {tok!r} appears twice (ids {index[tok]} and {i})")
            index[tok] = i
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(
        cls, terminals: Sequence[str], task_tokens: Sequence[str], max_number: int
    ) -> "Vocabulary":
        """Specials, task tokens, NULL, NONE, terminals, then the numbers 0..max_number."""
        numbers = tuple(str(n) for n in range(max_number + 1))
        clash = set(terminals) & (set(SPECIAL_TOKENS) | set(task_tokens) | set(numbers))
        if clash:
            raise ValueError(f"vocabulary: terminals {sorted(clash)} clash with reserved tokens")
        return cls(
            SPECIAL_TOKENS
            + tuple(task_tokens)
            + (NULL_OPERAND, NO_ANSWER)
            + tuple(terminals)
            + numbers
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def id(self, token: str) -> int:
        """The id of one token; an unknown token raises `KeyError` naming it."""
        try:
            return self._index[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the vocabulary") from None

    def ids(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids of several tokens as an int64 array (a lookup table for vectorised encoding)."""
        return np.array([self.id(t) for t in tokens], dtype=np.int64)

    def encode(self, tokens: Iterable[str] | str) -> list[int]:
        """Token ids of a list of tokens, or of a whitespace-separated string."""
        if isinstance(tokens, str):
            tokens = tokens.split()
        return [self.id(t) for t in tokens]

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """A whitespace-joined string of the tokens (inverse of `encode` on strings)."""
        return " ".join(self.to_str_tokens(ids))

    def to_str_tokens(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """The string token of every id (the `model.to_str_tokens` of these models)."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise IndexError(f"token id {i} is outside the vocabulary (size {len(self.tokens)})")
            out.append(self.tokens[i])
        return out

    def number(self, n: int) -> int:
        """The id of the number token `n`."""
        return self.id(str(int(n)))
