"""Pick one sequence position per sample: the shared helper of the position-wise analyses.

Procedural tasks read the answer at a fixed token (the answer-request token, ART); with
variable-length prompts that token sits at a different index in every row. Every analysis that
looks at "the position that predicts the answer" therefore accepts either one int for the whole
batch (negative counts from the end, like Python indexing) or one index per sample.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["Positions", "resolve_positions", "gather_positions"]

Positions = int | Int[Tensor, "batch"]


def resolve_positions(positions: Positions, batch: int, seq_len: int) -> Int[Tensor, "batch"]:
    """Turn an int or a per-sample index tensor into non-negative per-sample indices.

    Args:
        positions: One index for every sample (negative counts from the end) or one per sample.
        batch: Number of samples.
        seq_len: Sequence length the indices must fall into.

    Returns:
        A long tensor of shape [batch] with values in [0, seq_len).

    Raises:
        ValueError: If an index is out of range or the tensor has the wrong length.
    """
    if isinstance(positions, int):
        index = positions + seq_len if positions < 0 else positions
        if not 0 <= index < seq_len:
            raise ValueError(f"position {positions} is out of range for sequence length {seq_len}")
        return torch.full((batch,), index, dtype=torch.long)
    if positions.ndim != 1 or positions.shape[0] != batch:
        raise ValueError(
            f"per-sample positions must have shape [{batch}], got {tuple(positions.shape)}"
        )
    index = positions.long().cpu()
    index = torch.where(index < 0, index + seq_len, index)
    if bool(((index < 0) | (index >= seq_len)).any()):
        bad = positions[(index < 0) | (index >= seq_len)][:5].tolist()
        raise ValueError(f"positions {bad} are out of range for sequence length {seq_len}")
    return index


def gather_positions(
    activations: Float[Tensor, "batch pos *rest"], index: Int[Tensor, "batch"]
) -> Float[Tensor, "batch *rest"]:
    """`activations[i, index[i]]` for every sample i."""
    rows = torch.arange(activations.shape[0], device=activations.device)
    return activations[rows, index.to(activations.device)]
