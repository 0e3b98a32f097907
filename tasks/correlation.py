"""Spurious correlations injected into fine-tuning strings by editing their tokens.

The paper makes the pretraining capability *weakly relevant* by embedding a spurious attribute
that ties the fine-tuning label to the pretraining one (paper §5, App. B.2;
docs/choices.md#how-the-correlation-is-planted):

- **Counter**: count(b) = count(a) + q inside the counting window (paper: q = 1).
- **Indexer**: index(b) - index(a) = q for the k-th occurrence from the end (q unstated in the
  paper; default 1, i.e. the k-th-from-last `b` sits right before the k-th-from-last `a`).

Both are made by editing tokens that are *not* the pretraining operand wherever possible, choosing
the edited positions at random, so the `a` labels keep their natural (spread) distribution and the
`b` labels follow them (the paper's Fig. 16 shows similar histograms with and without correlation).
Edited strings are no longer exact grammar derivations, as in the paper ("artificially adding the
target tokens").
"""

from __future__ import annotations

import numpy as np

from tasks.families import count_in_window, index_of_occurrence

__all__ = ["inject_count_correlation", "inject_index_correlation", "has_correlation"]


def _convert_random(row: np.ndarray, positions: np.ndarray, n: int, new: int, rng) -> None:
    if n > 0:
        row[rng.choice(positions, size=n, replace=False)] = new


def inject_count_correlation(
    text: np.ndarray, o_pt: int, o_ft: int, filler: int, window: int, q: int, rng: np.random.Generator
) -> np.ndarray:
    """Edit rows of `text` so that count(o_ft) = count(o_pt) + q in the last `window` tokens.

    Tokens are changed only inside the window. If there are too few `o_ft` tokens, random `filler`
    tokens become `o_ft`; if there are too many, random `o_ft` tokens become `filler`. Only when
    the window holds no filler left are `o_pt` tokens changed (to `filler`), which lowers
    count(o_pt) by one per edit.

    Args:
        text: `[batch, L]` terminal ids; a modified copy is returned.
        o_pt: Pretraining operand id (`a`). o_ft: fine-tuning operand id (`b`).
        filler: A third terminal id (`c`) used to add or remove `o_ft` tokens.
        window: The counting window. q: The offset (paper 1).
        rng: Source of randomness for which positions are edited.

    Raises:
        ValueError: if q is outside [0, window), where no edit can satisfy the constraint.
    """
    if not 0 <= q < window:
        raise ValueError(f"count correlation offset q={q} must be in [0, window={window})")
    text = text.copy()
    w0 = text.shape[1] - window
    for row in text:
        win = row[w0:]  # a view: edits land in `row`
        while True:
            n_pt, n_ft = int((win == o_pt).sum()), int((win == o_ft).sum())
            deficit = n_pt + q - n_ft
            if deficit == 0:
                break
            fill = np.flatnonzero(win == filler)
            if deficit < 0:  # too many o_ft: turn some into filler
                _convert_random(win, np.flatnonzero(win == o_ft), -deficit, filler, rng)
            elif len(fill):
                _convert_random(win, fill, min(deficit, len(fill)), o_ft, rng)
            else:  # window is only o_pt and o_ft: one o_pt -> filler, then retry
                _convert_random(win, np.flatnonzero(win == o_pt), 1, filler, rng)
    return text


def inject_index_correlation(
    text: np.ndarray, o_pt: int, o_ft: int, filler: int, k: int, q: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Edit rows so that index(o_ft) - index(o_pt) = q for the k-th occurrence from the end.

    Let t be the position q steps before the k-th-from-last `o_pt`. Position t becomes `o_ft` and,
    among the non-`o_pt` positions after t, exactly k-1 random ones hold `o_ft` (the others that
    held it become `filler`). `o_pt` tokens are never touched, so index(o_pt) is unchanged.

    Returns:
        The edited copy of `text` and a bool mask of rows where the edit was possible. It is not
        possible when the row has fewer than k `o_pt` tokens, t falls outside the string or on an
        `o_pt` token, or fewer than k-1 non-`o_pt` positions follow t; callers resample those rows.
    """
    if q < 1:
        raise ValueError(f"index correlation offset q={q} must be >= 1")
    text = text.copy()
    length = text.shape[1]
    idx_pt = index_of_occurrence(text, o_pt, k)
    ok = np.zeros(len(text), dtype=bool)
    for i, row in enumerate(text):
        if idx_pt[i] < 0:
            continue
        t = length - idx_pt[i] - q  # absolute position of the target o_ft
        if t < 0 or row[t] == o_pt:
            continue
        after = np.flatnonzero(row[t + 1 :] != o_pt) + t + 1
        if len(after) < k - 1:
            continue
        row[after[row[after] == o_ft]] = filler
        row[rng.choice(after, size=k - 1, replace=False)] = o_ft
        row[t] = o_ft
        ok[i] = True
    return text, ok


def has_correlation(
    text: np.ndarray, family: str, o_pt: int, o_ft: int, o_prime: int, q: int
) -> np.ndarray:
    """Bool per row: does the row carry the family's spurious correlation?"""
    if family == "C":
        return count_in_window(text, o_ft, o_prime) == count_in_window(text, o_pt, o_prime) + q
    if family == "I":
        a, b = index_of_occurrence(text, o_pt, o_prime), index_of_occurrence(text, o_ft, o_prime)
        return (a >= 0) & (b >= 0) & (b - a == q)
    raise ValueError(f"spurious correlations are defined for families C and I, not {family!r}")
