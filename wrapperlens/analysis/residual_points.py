"""The residual stream at the probe points B0..BL, one vector per sample.

A model of L blocks has L + 1 probe points: B0 is the embedding output (component `resid_pre` of
block 0, `wrapperlens.components`), B1..BL the outputs of the blocks (`resid_post` of block
l - 1). A probe reads one vector per sample and point: the residual at one position
(`residual_at_positions`, e.g. the answer-request token) or its mean over the last k real tokens
(`residual_mean_last`, for right-padded text).

Activations are cached with `run_with_cache(names_filter=...)` for the wanted points only, in
chunks of samples, and the forward stops after the last needed block (`stop_at_layer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.positions import Positions, gather_positions, resolve_positions
from wrapperlens.components import hook_name

__all__ = ["residual_hook_names", "residual_at_positions", "residual_mean_last", "check_points"]


def residual_hook_names(n_layers: int) -> list[str]:
    """The L + 1 probe points: B0 = embedding output, then every block's output."""
    return [hook_name("resid_pre", 0)] + [hook_name("resid_post", l) for l in range(n_layers)]


def _residual_points(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    reduce: Callable[[Tensor, slice], Tensor],
    points: Sequence[int],
    chunk: int,
) -> Float[Tensor, "point batch d_model"]:
    names = [residual_hook_names(model.cfg.n_layers)[p] for p in points]
    wanted = set(names)
    stop = max(points)  # B_p is the output of block p - 1: the forward can stop after it
    out = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], chunk):
            rows = slice(start, start + chunk)
            _, cache = model.run_with_cache(
                tokens[rows].to(model.cfg.device),
                names_filter=lambda n: n in wanted,
                stop_at_layer=max(stop, 1),
            )
            out.append(torch.stack([reduce(cache[n], rows) for n in names]).float().cpu())
    return torch.cat(out, dim=1)


def check_points(model: HookedTransformer, points: Sequence[int] | None) -> list[int]:
    """`points` (default all, 0..L) as a list; ValueError if one is out of range."""
    n_points = model.cfg.n_layers + 1
    points = list(range(n_points)) if points is None else list(points)
    if not points or any(not 0 <= p < n_points for p in points):
        raise ValueError(f"points must be non-empty and in [0, {n_points - 1}], got {points}")
    return points


def residual_at_positions(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    positions: Positions = -1,
    points: Sequence[int] | None = None,
    chunk: int = 256,
) -> Float[Tensor, "point batch d_model"]:
    """The residual stream at one position per sample, at every probe point (or `points`).

    Returns:
        `[point, batch, d_model]`: point i is `points[i]` (default B0..BL), float32 on the CPU.
    """
    index = resolve_positions(positions, tokens.shape[0], tokens.shape[1])
    return _residual_points(
        model, tokens, lambda act, rows: gather_positions(act, index[rows]),
        check_points(model, points), chunk,
    )


def residual_mean_last(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    last_k: int = 10,
    lengths: Int[Tensor, "batch"] | None = None,
    points: Sequence[int] | None = None,
    chunk: int = 256,
) -> Float[Tensor, "point batch d_model"]:
    """Mean of the residual stream over each sample's last `last_k` tokens.

    Args:
        lengths: Real (unpadded) length of each right-padded sample; None = all full length.

    Returns:
        `[point, batch, d_model]`: point i is `points[i]` (default B0..BL), float32 on the CPU.
    """
    batch, seq_len = tokens.shape
    lengths = torch.full((batch,), seq_len) if lengths is None else lengths.long().cpu()
    if not 1 <= last_k <= int(lengths.min()) or int(lengths.max()) > seq_len:
        raise ValueError(f"need 1 <= last_k={last_k} <= every length <= {seq_len}; "
                         f"lengths range [{int(lengths.min())}, {int(lengths.max())}]")
    idx = torch.arange(seq_len)
    mask = ((idx >= lengths[:, None] - last_k) & (idx < lengths[:, None])).float() / last_k

    def reduce(act: Tensor, rows: slice) -> Tensor:
        return torch.einsum("bpd,bp->bd", act, mask[rows].to(act.device, act.dtype))

    return _residual_points(model, tokens, reduce, check_points(model, points), chunk)
