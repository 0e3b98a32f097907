"""Reverse fine-tuning curves: accuracy against iterations, and iterations-to-threshold.

Reverse fine-tuning (reFT, Jain et al. 2024 §5, App. D) trains a fine-tuned model on the
pretraining task again. If the pretraining accuracy comes back in a few steps, fine-tuning left the
capability in place (a *wrapper*); the yardstick is a model that never had it, e.g. one pretrained
with the operands' roles swapped and then fine-tuned on the same task (Scr.+FT). Both are read the
same way: the accuracy a training run logged at each evaluated step.

A *record list* is what the trainer writes to `metrics.jsonl`: one dict per logged step with an
integer "step" and any number of named metrics ("acc/O_PT/cte0", "loss", ...). Records that lack
the metric (e.g. a loss-only line) are skipped. Because the paper plots these curves on a log
iteration axis (10^2..10^4) and the trainer evaluates at log-spaced steps (1, 2, 5, 10, ...) as
well as step 0, the plot uses a symmetric-log x axis: linear on [0, 1], logarithmic beyond, so the
untrained point at step 0 stays on the plot.

*Iterations to threshold* is the first **logged** step whose metric is >= the threshold (None if it
never is). It is only as fine as the evaluation schedule: the true crossing lies between the
previous logged step and the reported one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wrapperlens.analysis.figures import save_figure
from wrapperlens.runs import read_metrics  # re-exported: curves are read from run directories

__all__ = [
    "ReftCurve",
    "read_metrics",
    "accuracy_curve",
    "iterations_to_threshold",
    "curves_to_threshold",
    "plot_reft_curves",
]


@dataclass(frozen=True)
class ReftCurve:
    """One metric against training iterations, sorted by step.

    Attributes:
        name: Legend label, e.g. "reFT (eta_S)" or "Scr.+FT".
        metric: The record key the values came from.
        steps: Logged steps, increasing.
        values: The metric at each step.
    """

    name: str
    metric: str
    steps: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.values):
            raise ValueError(
                f"curve {self.name!r}: {len(self.steps)} steps, {len(self.values)} values"
            )
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"curve {self.name!r}: steps must be strictly increasing")

    def iterations_to(self, threshold: float) -> int | None:
        """First logged step whose value is >= `threshold`; None if no logged value reaches it."""
        return next((s for s, v in zip(self.steps, self.values) if v >= threshold), None)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "metric": self.metric,
            "steps": list(self.steps),
            "values": list(self.values),
        }


def accuracy_curve(records: Sequence[Mapping], metric: str, name: str | None = None) -> ReftCurve:
    """The curve of `metric` in `records` (records without it are skipped).

    If a step is logged twice (a resumed run), the later record wins.

    Raises:
        ValueError: If no record holds `metric` (the message lists the keys that exist).
    """
    by_step: dict[int, float] = {}
    for record in records:
        if metric in record and record[metric] is not None:
            by_step[int(record["step"])] = float(record[metric])
    if not by_step:
        keys = sorted({k for r in records for k in r if k != "step"})
        raise ValueError(f"no record holds metric {metric!r}; metrics present: {keys}")
    steps = sorted(by_step)
    return ReftCurve(name or metric, metric, tuple(steps), tuple(by_step[s] for s in steps))


def iterations_to_threshold(
    records: Sequence[Mapping], metric: str, threshold: float
) -> int | None:
    """First logged step where `metric` >= `threshold`, or None if it never is.

    Example::

        records = read_metrics("runs/reft")
        iterations_to_threshold(records, "acc/O_PT/cte0", 0.9)   # e.g. 50
    """
    return accuracy_curve(records, metric).iterations_to(threshold)


def curves_to_threshold(curves: Sequence[ReftCurve], threshold: float) -> dict[str, int | None]:
    """{curve name: iterations to threshold} for several curves (names must be distinct)."""
    names = [c.name for c in curves]
    if len(set(names)) != len(names):
        raise ValueError(f"curve names must be distinct, got {names}")
    return {c.name: c.iterations_to(threshold) for c in curves}


def plot_reft_curves(
    curves: Sequence[ReftCurve],
    path: str | Path,
    threshold: float | None = None,
    title: str | None = None,
    ylabel: str = "accuracy",
) -> Path:
    """Plot accuracy against iterations (symmetric-log x), one line per curve, into a PNG.

    Args:
        curves: The curves, e.g. reFT runs at two learning rates and the Scr.+FT baseline.
        path: Output PNG.
        threshold: Drawn as a dashed horizontal line; each curve's iterations-to-threshold is
            added to its legend entry.
        title: Figure title.
        ylabel: Y-axis label.
    """
    if not curves:
        raise ValueError("plot_reft_curves: no curves to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for curve in curves:
        label = curve.name
        if threshold is not None:
            reached = curve.iterations_to(threshold)
            label += f" (≥{threshold:g} at {reached if reached is not None else 'never'})"
        ax.plot(curve.steps, curve.values, marker="o", markersize=3, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label="threshold")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set(xlabel="iterations (symmetric log scale)", ylabel=ylabel, ylim=(-0.02, 1.02))
    ax.set_title(title or "reverse fine-tuning")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
