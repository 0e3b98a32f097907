"""Writing matplotlib figures: every plot of the analysis modules ends here."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["save_figure"]


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Lay out `fig`, write it to `path` (parent directories made), close it; returns the path.

    Closing matters in long sessions: pyplot keeps every open figure alive.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
