"""Claims decided by rules: a quantity measured per seed, a threshold, and a status.

Every experiment's claims (`wrapperlens.experiments.*.claims`) are `Claim`s whose `measure`
reads that experiment's part of results.json and returns `Measured` values, one per seed (per
seed and setting where a claim pools settings). The status follows from where those values lie
against the threshold (`decide`):

- **reproduced**: every value is above the threshold;
- **not reproduced**: none is;
- **inconclusive**: the values straddle it (the spread across seeds decides nothing);
- **undefined**: the runs are there, but the quantity is undefined on every one of them (e.g. a
  ratio whose denominator, a gap the claim needs, is absent); the note says why;
- **not covered**: the grid has none of the runs the claim needs (the note says which).

Rules are written before the runs they judge (docs/reproduction.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Measured", "Claim", "decide", "claim_record", "mean"]

Results = Mapping[str, Any]


@dataclass(frozen=True)
class Measured:
    """A claim's values (one per seed, or seed × setting), chance floor and a note."""

    values: list[float]
    floor: float | None = None
    note: str = ""
    seeds_vary: str = ""


@dataclass(frozen=True)
class Claim:
    """One claim and its rule: "reproduced when `quantity` > `threshold` for every seed"."""

    id: int
    title: str
    paper: str
    quantity: str
    threshold: float
    measure: Callable[[Results], Measured]

    @property
    def rule(self) -> str:
        return (f"reproduced if {self.quantity} > {self.threshold:g} for every seed, not "
                "reproduced if for none, else inconclusive")


def decide(values: Sequence[float], threshold: float) -> str:
    """The status of a claim whose values are `values` (see the module docstring)."""
    if not values:
        return "not covered"
    above = [v > threshold for v in values]
    return "reproduced" if all(above) else "not reproduced" if not any(above) else "inconclusive"


def mean(values: Sequence[float]) -> float | None:
    """The mean of `values`, None when there are none."""
    return sum(values) / len(values) if values else None


def claim_record(claim: Claim, m: Measured) -> dict[str, Any]:
    """One claim's entry of results.json: its rule, values (NaNs left out), spread and status."""
    values = [v for v in m.values if not math.isnan(v)]
    status = "undefined" if m.values and not values else decide(values, claim.threshold)
    return {
        "id": claim.id, "title": claim.title, "paper": claim.paper,
        "rule": claim.rule if claim.quantity else "", "quantity": claim.quantity,
        "threshold": claim.threshold if claim.quantity else None,
        "values": values, "mean": mean(values),
        "spread": [min(values), max(values)] if values else None, "floor": m.floor,
        "status": status, "seeds_vary": m.seeds_vary,
        "note": m.note if len(values) == len(m.values) else
        f"{m.note} ({len(m.values) - len(values)} undefined values left out)",
    }
