"""Figures for reports: series reduced over seeds, panels, and PNG data URIs.

A report figure (the PCFG Figs 5-9 in `wrapperlens.experiments.pcfg.report_plots`, or any
experiment's) is a `Figure`: a list of `Panel`s, each a list of `Series` already reduced over
seeds (mean, min, max, n). A figure with nothing to draw has no panels and a `note` saying what
is missing; the report shows the note instead of the plot. `render_png` draws a figure with
matplotlib's Agg backend and returns a ``data:image/png;base64,...`` URI, so the page embeds the
image and opens offline.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Series", "Panel", "Figure", "spread", "series", "render_png", "SPREAD_WORDS",
           "COLOURS"]

SPREAD_WORDS = "mean over seeds; bars / bands span min-max over seeds"


@dataclass(frozen=True)
class Series:
    """One line: per x, the mean, min and max over seeds and how many seeds had a value."""

    label: str
    x: list[float]
    mean: list[float]
    lo: list[float]
    hi: list[float]
    n: list[int]
    linestyle: str = "-"
    band: bool = False  # a shaded min-max band (curves) instead of error bars (points)
    color: str | None = None


@dataclass(frozen=True)
class Panel:
    """One subplot: its series, axis labels, and an optional dashed chance-floor line."""

    title: str
    series: list[Series]
    xlabel: str
    ylabel: str = "accuracy"
    floor: tuple[list[float], list[float]] | None = None  # (x, chance floor), drawn dashed
    xlog: bool = False
    xticklabels: list[str] | None = None


@dataclass(frozen=True)
class Figure:
    """One of the paper's figures: its panels, or none and a note saying what is missing."""

    title: str
    caption: str
    panels: list[Panel] = field(default_factory=list)
    note: str = ""  # why nothing is drawn, when panels is empty


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def spread(values: Iterable) -> tuple[float, float, float, int] | None:
    """(mean, min, max, n) of the finite numbers in `values`; None when there are none."""
    kept = [v for v in map(_number, values) if v is not None]
    if not kept:
        return None
    return sum(kept) / len(kept), min(kept), max(kept), len(kept)


def series(label: str, points: Mapping[float, list], **style) -> Series | None:
    """A Series from {x: values over seeds}, x sorted; None when no x has a finite value."""
    rows = [(x, s) for x in sorted(points) if (s := spread(points[x])) is not None]
    if not rows:
        return None
    return Series(label, [x for x, _ in rows], [s[0] for _, s in rows], [s[1] for _, s in rows],
                  [s[2] for _, s in rows], [s[3] for _, s in rows], **style)



#: Line colours, in the order series are drawn.
COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def _draw(ax, panel: Panel) -> None:
    for s in panel.series:
        if s.band:
            ax.plot(s.x, s.mean, linestyle=s.linestyle, color=s.color, label=s.label, lw=1.2)
            ax.fill_between(s.x, s.lo, s.hi, alpha=0.2, color=ax.lines[-1].get_color(), lw=0)
        else:
            err = [[m - l for m, l in zip(s.mean, s.lo)], [h - m for m, h in zip(s.mean, s.hi)]]
            ax.errorbar(s.x, s.mean, yerr=err, linestyle=s.linestyle, color=s.color,
                        marker="o", markersize=3, capsize=3, label=s.label, lw=1.2)
    if panel.floor is not None:
        ax.plot(*panel.floor, "k--", lw=1, label="chance floor")
    if panel.xlog:
        ax.set_xscale("symlog", linthresh=1.0)
    if panel.xticklabels is not None:
        ax.set_xticks(range(len(panel.xticklabels)), panel.xticklabels, rotation=45, ha="right",
                      fontsize=7)
    ax.set_title(panel.title, fontsize=8)
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, ylim=(-0.03, 1.03))
    ax.legend(fontsize=6)


def render_png(figure: Figure, columns: int = 4, dpi: int = 80) -> str:
    """Draw `figure`'s panels in a grid and return the PNG as a base64 data URI."""
    if not figure.panels:
        raise ValueError(f"render_png: {figure.title!r} has no panels ({figure.note})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(columns, len(figure.panels))
    rows = math.ceil(len(figure.panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, figure.panels):
        _draw(ax, panel)
    for ax in list(axes.flat)[len(figure.panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
