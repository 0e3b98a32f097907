"""A heatmap of an activation-patching or attribution result, any model, any component.

The effect arrays of `wrapperlens.analysis.patching` and `wrapperlens.analysis.attribution` have
the axes named by `wrapperlens.components.result_axes` (layer, then position and / or head /
neuron); `plot_effect` draws any of them as one layer-by-position (or layer-by-unit) map.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from wrapperlens.analysis.figures import save_figure

__all__ = ["plot_effect"]


def plot_effect(
    values: Float[Tensor, "layer *rest"],
    axes: Sequence[str],
    str_tokens: Sequence[str],
    path: str | Path,
    title: str,
) -> Path:
    """A heatmap of a patching / attribution result, written as a PNG to `path`.

    Args:
        values: The effect, with the axes `axes` (`wrapperlens.components.result_axes`):
            `[layer]`, `[layer, pos]`, `[layer, head|neuron]` or `[layer, pos, head|neuron]`.
            A trailing head / neuron axis is folded into the rows (layer × head).
        axes: The names of the axes of `values`.
        str_tokens: Labels of the position columns (e.g. the first example's tokens).
        path: The PNG file to write.
        title: The plot's title.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = values.detach().float().cpu()
    if grid.ndim == 1:
        grid, rows, cols = grid[:, None], [f"L{l}" for l in range(len(grid))], ["all pos"]
    elif grid.ndim == 2 and axes[1] == "pos":
        rows, cols = [f"L{l}" for l in range(grid.shape[0])], list(str_tokens)
    elif grid.ndim == 2:  # [layer, head|neuron]
        rows, cols = [f"L{l}" for l in range(grid.shape[0])], [str(i) for i in range(grid.shape[1])]
    else:  # [layer, pos, unit] -> [(layer, unit), pos]
        n_layers, n_pos, n_units = grid.shape
        grid = grid.permute(0, 2, 1).reshape(n_layers * n_units, n_pos)
        tag = "H" if axes[-1] == "head" else "N"
        rows = [f"L{l}{tag}{u}" for l in range(n_layers) for u in range(n_units)]
        cols = list(str_tokens)
    bound = float(grid.abs().max()) or 1.0
    height = min(2 + 0.25 * grid.shape[0], 30)
    width = min(4 + 0.3 * grid.shape[1], 30)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(
        grid.numpy(), aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    if len(rows) <= 64:
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
    if len(cols) <= 128:
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=110)
