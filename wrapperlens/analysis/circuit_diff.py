"""The circuits of a pretrained and a fine-tuned model, edge by edge: kept, gained, lost, reweighted.

Score the same edges of both models with the same clean / corrupted prompts and metric
(`wrapperlens.analysis.edges`: EAP-IG, EAP or exact edge patching), take each model's circuit
(its top-n edges by |score|, or those above a threshold), and compare:

- **kept**: in both circuits, same sign, |after| within a factor `ratio` of |before|;
- **reweighted**: in both circuits, but the sign flipped or |after| / |before| is beyond
  `ratio` either way;
- **gained**: in the fine-tuned circuit only (fine-tuning added or strengthened the connection);
- **lost**: in the pretrained circuit only (fine-tuning cut or weakened it).

    before = eap_ig_scores(pretrained, count_a, count_b, metric)
    after = eap_ig_scores(finetuned, count_a, count_b, metric)
    diff = diff_circuits(before, after, top_n=20)
    print(diff.markdown())            # one row per edge of either circuit
    plot_circuit_diff(diff)           # the graph: nodes by layer, edges coloured by status

A wrapper learnt by fine-tuning shows as a few gained edges around a kept core; a capability
that was removed shows as lost edges with no gained ones reading the same nodes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from wrapperlens.analysis.edges import EdgeScores, circuit

__all__ = ["EdgeChange", "CircuitDiff", "diff_circuits", "plot_circuit_diff", "EDGE_STATUSES"]

EDGE_STATUSES = ("kept", "reweighted", "gained", "lost")
_COLOURS = {"kept": "#7f7f7f", "reweighted": "#ff7f0e", "gained": "#2ca02c", "lost": "#d62728"}


@dataclass(frozen=True)
class EdgeChange:
    """One edge of either circuit: its score in each model and what fine-tuning did to it."""

    edge: str
    before: float
    after: float
    status: str


@dataclass(frozen=True)
class CircuitDiff:
    """The edges of two circuits side by side (`diff_circuits`), largest |score| first."""

    changes: tuple[EdgeChange, ...]
    method: str
    ratio: float

    def of(self, status: str) -> tuple[str, ...]:
        """The edges with `status` (one of `EDGE_STATUSES`)."""
        if status not in EDGE_STATUSES:
            raise ValueError(f"status must be one of {EDGE_STATUSES}, got {status!r}")
        return tuple(c.edge for c in self.changes if c.status == status)

    def counts(self) -> dict[str, int]:
        return {s: len(self.of(s)) for s in EDGE_STATUSES}

    def rows(self) -> list[dict[str, object]]:
        """One JSON-ready record per edge (results.json, the report's table)."""
        return [{"edge": c.edge, "before": c.before, "after": c.after, "status": c.status}
                for c in self.changes]

    def markdown(self) -> str:
        """The diff as a Markdown table, with the counts of each status under it."""
        lines = ["| edge | pretrained | fine-tuned | status |", "|---|---|---|---|"]
        lines += [f"| `{c.edge}` | {c.before:+.4f} | {c.after:+.4f} | {c.status} |"
                  for c in self.changes]
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        return "\n".join(lines + ["", f"{self.method} scores; {counts} (reweighted: sign flip "
                                      f"or a factor beyond {self.ratio:g})."])


def diff_circuits(before: EdgeScores, after: EdgeScores, *, top_n: int | None = None,
                 threshold: float | None = None, ratio: float = 2.0) -> CircuitDiff:
    """Compare the circuits of `before` (pretrained) and `after` (fine-tuned) edge scores.

    Args:
        before, after: Scores of the same edges (same names, same order), by the same method.
        top_n, threshold: How each circuit is taken (`edges.circuit`): exactly one of the two.
        ratio: An edge in both circuits is "kept" while |after| / |before| stays within
            [1 / ratio, ratio] with the same sign, else "reweighted".

    Raises:
        ValueError: the scores cover other edges, or `ratio` is not above 1.
    """
    if before.edges != after.edges:
        extra = sorted(set(before.edges) ^ set(after.edges))[:3]
        raise ValueError("the two scores must cover the same edges in the same order"
                         + (f" (differ at {extra})" if extra else " (same edges, other order)"))
    if not ratio > 1.0 or math.isinf(ratio):
        raise ValueError(f"ratio must be a finite number above 1, got {ratio!r}")
    a = set(circuit(before, threshold=threshold, top_n=top_n))
    b = set(circuit(after, threshold=threshold, top_n=top_n))
    changes = []
    for edge in a | b:
        x, y = before[edge], after[edge]
        if edge in a and edge in b:
            same = x * y > 0 and 1 / ratio <= abs(y) / abs(x) <= ratio
            status = "kept" if same else "reweighted"
        else:
            status = "lost" if edge in a else "gained"
        changes.append(EdgeChange(edge, x, y, status))
    changes.sort(key=lambda c: (-max(abs(c.before), abs(c.after)), c.edge))
    return CircuitDiff(tuple(changes), f"{before.method} / {after.method}"
                       if before.method != after.method else before.method, ratio)


# ------------------------------------------------------------------------------------- plot
_NODE = re.compile(r"^(?:a(?P<layer>\d+)\.h(?P<head>\d+)|m(?P<mlp>\d+)|input|logits)")


def _position(node: str, n_heads: int, top: float) -> tuple[float, float]:
    """(x, y) of a node: the input at the bottom, then per layer its heads and then its MLP, the
    logits at the top (`top`, above the last layer drawn); the heads of a layer side by side."""
    m = _NODE.match(node)
    if node.startswith("input"):
        return (n_heads - 1) / 2, 0.0
    if node.startswith("logits"):
        return (n_heads - 1) / 2, top
    if m.group("mlp") is not None:
        return (n_heads - 1) / 2, 2.0 + 2 * int(m.group("mlp"))
    return float(m.group("head")), 1.0 + 2 * int(m.group("layer"))


def plot_circuit_diff(diff: CircuitDiff, ax=None, title: str | None = None):
    """Draw the diff as a graph: nodes by layer (input at the bottom, logits at the top), one
    arrow per edge of either circuit, coloured by status, its width by max |score|.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    ends = [c.edge.split("->") for c in diff.changes]
    nodes = {re.sub(r"<[qkv]>$", "", n) for pair in ends for n in pair}
    heads = [int(m.group("head")) for n in nodes if (m := _NODE.match(n)) and m.group("head")]
    layers = [int(m.group("layer") or m.group("mlp")) for n in nodes if (m := _NODE.match(n))
              and (m.group("layer") or m.group("mlp"))]
    n_heads = max(heads, default=0) + 1
    top = 3.0 + 2 * max(layers, default=0)
    fig = ax.figure if ax is not None else plt.figure(figsize=(1.2 * n_heads + 3, 0.7 * top + 2))
    ax = ax or fig.add_subplot()

    def where(node: str) -> tuple[float, float]:
        return _position(re.sub(r"<[qkv]>$", "", node), n_heads, top)

    widest = max((max(abs(c.before), abs(c.after)) for c in diff.changes), default=1.0) or 1.0
    for c in diff.changes:
        (x0, y0), (x1, y1) = (where(n) for n in c.edge.split("->"))
        width = 0.5 + 3.5 * max(abs(c.before), abs(c.after)) / widest
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(
            arrowstyle="-|>", color=_COLOURS[c.status], lw=width, alpha=0.8,
            connectionstyle="arc3,rad=0.15", shrinkA=8, shrinkB=8))
    for node in sorted(nodes):
        x, y = where(node)
        ax.text(x, y, node, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", fc="white", ec="#444444"))
    for status in EDGE_STATUSES:
        ax.plot([], [], color=_COLOURS[status], lw=2, label=f"{status} ({len(diff.of(status))})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_xlim(-1, n_heads)
    ax.set_ylim(-0.7, top + 0.7)
    ax.axis("off")
    ax.set_title(title or f"circuit diff ({diff.method}): pretrained -> fine-tuned")
    fig.tight_layout()
    return fig
