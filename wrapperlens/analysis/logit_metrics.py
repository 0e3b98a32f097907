"""Metrics of a model's logits for patching and attribution: logit difference, answer probability.

A metric maps logits `[batch, pos, d_vocab]` to one number per example (`reduce="none"`) or their
mean (`reduce="mean"`, a 0-d tensor, which is what `transformer_lens.patching` expects). The
answer is read at one position per example (`positions.Positions`: one int for all, negative
counting from the end, or one index per example); the default, -1, is the last position.

A metric may carry a `positions` attribute: the tuple of positions whose logits it reads
(negative ones count from the end). Activation patching then skips the work that cannot reach
them (positions after the last one, and all other positions in the last block). The metrics made
here set it; a plain function works too and gets every position computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from wrapperlens.analysis.positions import Positions, gather_positions, resolve_positions

#: logits `[batch, pos, d_vocab]` -> a 0-d tensor (`reduce="mean"`) or `[batch]` (`"none"`).
Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""] | Float[Tensor, "batch"]]
TokenIds = int | Sequence[int] | Int[Tensor, "batch"]

__all__ = ["Metric", "TokenIds", "logit_difference", "answer_probability"]


def _token_ids(value: TokenIds, name: str, batch: int, d_vocab: int) -> Int[Tensor, "batch"]:
    ids = torch.as_tensor(value)
    if ids.dtype.is_floating_point or ids.ndim > 1 or (ids.ndim == 1 and ids.shape[0] != batch):
        raise ValueError(f"{name} must be an int or {batch} ints (one per example), got {value!r}")
    if bool(((ids < 0) | (ids >= d_vocab)).any()):
        raise ValueError(f"{name} {value!r} is outside the vocabulary of size {d_vocab}")
    return ids.long().expand(batch)


def _answer_logits(
    logits: Float[Tensor, "batch pos d_vocab"], position: Positions
) -> Float[Tensor, "batch d_vocab"]:
    index = resolve_positions(position, logits.shape[0], logits.shape[1])
    return gather_positions(logits, index)


def _check_reduce(reduce: str) -> None:
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}")


def _with_positions(metric: Metric, position: Positions) -> Metric:
    values = [position] if isinstance(position, int) else position.flatten().tolist()
    metric.positions = tuple(sorted(set(values)))
    return metric


def logit_difference(
    correct: TokenIds, wrong: TokenIds, *, position: Positions = -1, reduce: str = "mean"
) -> Metric:
    """Metric: logit of `correct` minus logit of `wrong` at `position`.

    Args:
        correct: The answer token id, one for all examples or one per example.
        wrong: The competing token id, likewise.
        position: Where the answer is predicted, one for all or one per example.
        reduce: "mean" over the batch (a 0-d tensor) or "none" (one value per example).

    Returns:
        A `Metric`: logits `[batch, pos, d_vocab]` -> a 0-d tensor, or `[batch]` with "none".
    """
    _check_reduce(reduce)

    def metric(
        logits: Float[Tensor, "batch pos d_vocab"],
    ) -> Float[Tensor, ""] | Float[Tensor, "batch"]:
        batch, _, d_vocab = logits.shape
        answer = _answer_logits(logits, position)
        rows = torch.arange(batch, device=logits.device)
        right = answer[rows, _token_ids(correct, "correct", batch, d_vocab).to(logits.device)]
        other = answer[rows, _token_ids(wrong, "wrong", batch, d_vocab).to(logits.device)]
        difference = right - other
        return difference.mean() if reduce == "mean" else difference

    return _with_positions(metric, position)


def answer_probability(
    answer: TokenIds, *, position: Positions = -1, reduce: str = "mean"
) -> Metric:
    """Metric: softmax probability of `answer` at `position` (as in `logit_difference`)."""
    _check_reduce(reduce)

    def metric(
        logits: Float[Tensor, "batch pos d_vocab"],
    ) -> Float[Tensor, ""] | Float[Tensor, "batch"]:
        batch, _, d_vocab = logits.shape
        probs = _answer_logits(logits, position).softmax(dim=-1)
        ids = _token_ids(answer, "answer", batch, d_vocab).to(logits.device)
        p = probs[torch.arange(batch, device=logits.device), ids]
        return p.mean() if reduce == "mean" else p

    return _with_positions(metric, position)
