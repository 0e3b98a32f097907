"""Verdicts on held-out seeds: one claims table from two reproduction directories.

A rule is chosen while looking at some seeds' runs (0-2, the presets' default); its verdict
counts only if seeds no rule was chosen on agree. `wrapperlens reproduce --first-seed 3` runs
seeds 3-5 into another directory; `combine` joins the two tables claim by claim:

- **reproduced** / **not reproduced**: both halves say so;
- **inconclusive**: the halves disagree, or either is inconclusive;
- **undefined**: both halves ran it and its quantity is undefined on every seed of both;
- **not covered**: either half has no runs for it (its note says which).

    python -m wrapperlens claims runs/cpu runs/cpu-seeds-3-5 --markdown
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["combine", "combined_status", "markdown_table"]


def combined_status(chosen: str, held_out: str) -> str:
    """The verdict of a claim whose rule gave `chosen` on the seeds it was chosen on and
    `held_out` on the others (see the module docstring)."""
    if "not covered" in (chosen, held_out):
        return "not covered"
    return chosen if chosen == held_out else "inconclusive"


def _seeds(results: Mapping[str, Any], setting: str) -> str:
    used = sorted({r["params"]["seed"] for r in results["runs"]
                   if r.get("setting") == setting and "seed" in r["params"]})
    return f"{used[0]}-{used[-1]}" if len(used) > 1 else str(used[0]) if used else "-"


def combine(chosen: Mapping[str, Any], held_out: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per claim of `chosen` (a results.json): both halves' records and the verdict.

    Raises:
        ValueError: the two results are of different presets or settings, or share a seed.
    """
    for key in ("preset", "settings"):
        if chosen[key] != held_out[key]:
            raise ValueError(f"the two results differ in {key!r}: {chosen[key]!r} vs "
                             f"{held_out[key]!r}; run the same command with --first-seed")
    for setting in chosen["settings"]:
        a = {r["params"].get("seed") for r in chosen["runs"] if r.get("setting") == setting}
        b = {r["params"].get("seed") for r in held_out["runs"] if r.get("setting") == setting}
        if (a & b) - {None}:
            raise ValueError(f"setting {setting!r}: both results ran seeds {sorted(a & b)}; the "
                             "held-out run needs other seeds (--first-seed)")
    other = {c["id"]: c for c in held_out["claims"]}
    rows = []
    for c in chosen["claims"]:
        h = other.get(c["id"])
        status = combined_status(c["status"], h["status"] if h else "not covered")
        rows.append({"id": c["id"], "title": c["title"], "setting": c.get("setting", ""),
                     "floor": c["floor"], "chosen": c, "held_out": h,
                     "status": status,
                     "seeds": (_seeds(chosen, c.get("setting", "")),
                               _seeds(held_out, c.get("setting", "")))})
    return rows


def _cell(c: Mapping[str, Any] | None) -> str:
    if c is None or c["mean"] is None:
        return "-"
    return (f"{c['mean']:.3f} [{c['spread'][0]:.3f}, {c['spread'][1]:.3f}] (n = "
            f"{len(c['values'])}): {c['status']}")


def markdown_table(rows: Sequence[Mapping[str, Any]], walls: Sequence[float] = ()) -> str:
    """The combined claims as a Markdown table (rule, both halves, floor, verdict), with the
    two runs' wall times under it when given."""
    lines = ["| claim | rule: reproduced if, for every value, | seeds chosen on | held-out seeds "
             "| floor | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        c = r["chosen"]
        floor = "-" if r["floor"] is None else f"{r['floor']:.3f}"
        rule = f"{c['quantity']} > {c['threshold']:g}" if c["quantity"] else "-"
        why = "" if c["mean"] is not None else f" ({c['note']})"
        lines.append(f"| {r['id']} {r['title']} | {rule} | {r['seeds'][0]}: "
                     f"{_cell(r['chosen'])} | {r['seeds'][1]}: {_cell(r['held_out'])} | "
                     f"{floor} | {r['status']}{why} |")
    if walls:
        lines.append("\nWall time: " + ", ".join(f"{w / 60:.1f} min" for w in walls) + ".")
    return "\n".join(lines)
