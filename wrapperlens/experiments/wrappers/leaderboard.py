"""The benchmark's leaderboard: how well each method finds the known wrappers, and how often it
reports one where there is none.

`leaderboard_tables(view)` reads the finished `localise` analyses of a reproduction (the
wrappers setting's part of results.json) and returns two tables for results.json's `tables`:

- `wrappers_leaderboard`, one row per method: precision at the wrapper's size and AUROC over
  every (seed, known wrapper) pair; the revival (Acc O_PT after removing the method's top k
  minus after k random units) and the pairs where it exceeds the margin (the wrapper is
  *found*) over the pairs whose wrapper *hides* the capability (fine-tuning lowered Acc O_PT by
  more than the margin: elsewhere there is nothing to revive); over every (seed, k) of the
  negative controls, the removals whose revival exceeds the margin (*false positives*). The
  chance levels are the `random` method's row (a random ranking) and, for precision, k / n; the
  oracle row removes the known units;
- `wrappers_by_wrapper`: precision per method and known wrapper (mean over seeds).

`leaderboard_markdown(results)` prints both as markdown (`wrapperlens leaderboard DIR`);
`joined_markdown(results, held_out)` puts two runs of the benchmark side by side, e.g. seeds 0-2
and the held-out seeds 3-5 (`wrapperlens leaderboard DIR HELD_OUT`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["COLUMNS", "hides", "leaderboard_tables", "leaderboard_markdown", "joined_markdown"]

#: The leaderboard's columns: (key, heading).
COLUMNS = (("method", "method"), ("precision", "precision@k"), ("auroc", "AUROC"),
           ("revival", "revival"), ("found", "wrappers found"),
           ("false_positives", "false positives (controls)"))


def _spread(values: Sequence[float]) -> dict[str, Any] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "n": len(values)}


def _rate(flags: Sequence[bool]) -> dict[str, Any] | None:
    if not flags:
        return None
    return {"rate": sum(flags) / len(flags), "count": sum(flags), "n": len(flags)}


Entry = tuple[dict, dict, dict]  # (params, the analysis's result, one spec of it)


def _entries(view: Mapping[str, Any]) -> tuple[list[Entry], list[Entry]]:
    """(params, result, spec) of every finished localise analysis: known wrappers, controls."""
    wrapped, controls = [], []
    for a in view["analyses"]:
        if a.get("kind") != "localise" or a.get("status") != "finished" or not a.get("result"):
            continue
        for spec in a["result"]["specs"].values():
            (controls if a["params"].get("family") == "control" else wrapped).append(
                (a["params"], a["result"], spec))
    return wrapped, controls


def hides(result: Mapping[str, Any]) -> bool:
    """Whether the pair's fine-tuning lowered Acc O_PT by more than the revival margin (only
    then can a removal revive it)."""
    acc = result["acc"]
    return acc["pretrained"] - acc["finetuned"] > result["revival_margin"]


def leaderboard_tables(view: Mapping[str, Any]) -> dict[str, Any]:
    """The two tables of the module docstring (empty rows when no analysis finished)."""
    wrapped, controls = _entries(view)
    hiding = [(p, r, s) for p, r, s in wrapped if hides(r)]
    methods = list(dict.fromkeys(m for *_, spec in wrapped + controls for m in spec["methods"]))
    margins = {a["result"]["revival_margin"] for a in view["analyses"]
               if a.get("kind") == "localise" and a.get("result")}
    rows = []
    for method in methods:
        mine = [s["methods"][method] for *_, s in wrapped if method in s["methods"]]
        revived = [s["methods"][method] for *_, s in hiding if method in s["methods"]]
        ctrl = [s["methods"][method] for *_, s in controls if method in s["methods"]]
        rows.append({
            "method": method,
            "precision": _spread([m["precision"] for m in mine]),
            "auroc": _spread([m["auroc"] for m in mine]),
            "revival": _spread([m["revival"] for m in revived]),
            "found": _rate([m["reports"] for m in revived]),
            "false_positives": _rate([m["reports"] for m in ctrl]),
        })
    if wrapped:
        rows.append({
            "method": "oracle (the known units)", "precision": None, "auroc": None,
            "revival": _spread([s["oracle_acc"] - s["random_acc"] for *_, s in hiding]),
            "found": _rate([s["oracle_acc"] - s["random_acc"] > r["revival_margin"]
                            for _, r, s in hiding]),
            "false_positives": None})
    families = list(dict.fromkeys(p["family"] for p, *_ in wrapped))
    by_wrapper = []
    for family in families:
        pairs = [(r, s) for p, r, s in wrapped if p["family"] == family]
        specs = [s for _, s in pairs]
        row: dict[str, Any] = {"wrapper": family, "seeds": len(specs),
                               "chance": _spread([s["chance_precision"] for s in specs])}
        for method in methods:
            row[method] = _spread([s["methods"][method]["precision"] for s in specs
                                   if method in s["methods"]])
        for model in ("pretrained", "finetuned"):  # Acc O_PT on the evaluation half
            row[f"acc_{model}"] = _spread([r["acc"][model] for r, _ in pairs])
        by_wrapper.append(row)
    margin = next(iter(margins)) if len(margins) == 1 else None
    note = (f"Mean (min–max). Precision and AUROC over {len(wrapped)} (seed, known wrapper) "
            f"pairs; revival and found over the {len(hiding)} of them whose fine-tuning hides "
            f"Acc O_PT (lowers it by more than {margin}): found where removing the method's top "
            f"k units revives Acc O_PT by more than {margin} over k random units; false "
            f"positives: the same on {len(controls)} (seed, k) removals from negative controls, "
            "which never had the capability. The random row is the chance level "
            "(docs/wrappers.md).")
    return {"wrappers_leaderboard": {
        "title": "Known-wrapper benchmark: which method finds the wrapper", "note": note,
        "columns": [list(c) for c in COLUMNS], "rows": rows,
        "chance_precision": _spread([s["chance_precision"] for *_, s in wrapped]),
        "revival_margin": margin,
        "pairs": len(wrapped), "hiding": len(hiding), "controls": len(controls)},
        "wrappers_by_wrapper": by_wrapper}


def _cell(value: Any, digits: int = 3) -> str:
    """A spread as "mean [min, max]", a rate as "count/n", None as "-"."""
    if value is None:
        return "-"
    if "rate" in value:
        return f"{value['count']}/{value['n']}"
    return f"{value['mean']:.{digits}f} [{value['min']:.{digits}f}, {value['max']:.{digits}f}]"


def leaderboard_markdown(results: Mapping[str, Any]) -> str:
    """The leaderboard and the per-wrapper precision of `results` as markdown tables."""
    tables = results.get("tables", {})
    try:
        board = _board(results, "these results")
    except ValueError:
        return "No finished localise analyses in these results (run the wrappers setting)."
    chance = board["chance_precision"]
    lines = [f"| {' | '.join(h for _, h in board['columns'])} |",
             "|" + "---|" * len(board["columns"])]
    for row in board["rows"]:
        lines.append("| " + " | ".join(row["method"] if k == "method" else _cell(row[k])
                                       for k, _ in board["columns"]) + " |")
    lines.append(f"\nPrecision and AUROC over {board['pairs']} (seed, wrapper) pairs (chance "
                 f"precision k / n: {_cell(chance)}); revival and found over the "
                 f"{board['hiding']} whose fine-tuning hides Acc O_PT; false positives over "
                 f"{board['controls']} (seed, k) removals from negative controls; a wrapper is "
                 f"found (or falsely reported) where the revival exceeds "
                 f"{board['revival_margin']}.")
    by = tables.get("wrappers_by_wrapper") or []
    if by:
        methods = [r["method"] for r in board["rows"] if not r["method"].startswith("oracle")]
        lines += ["", "Precision at k per known wrapper, and Acc O_PT of the pair (evaluation "
                  "half):", "", "| wrapper | seeds | Acc O_PT pretrained | fine-tuned | chance | "
                  + " | ".join(methods) + " |", "|" + "---|" * (5 + len(methods))]
        for row in by:
            cells = [row["wrapper"], str(row["seeds"]), _cell(row["acc_pretrained"]),
                     _cell(row["acc_finetuned"]), _cell(row["chance"])]
            cells += [_cell(row.get(m)) for m in methods]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _board(results: Mapping[str, Any], name: str) -> dict[str, Any]:
    board = results.get("tables", {}).get("wrappers_leaderboard")
    if not board or not board["rows"]:
        raise ValueError(f"{name} holds no finished localise analyses (run the wrappers setting)")
    return board


def joined_markdown(results: Mapping[str, Any], held_out: Mapping[str, Any]) -> str:
    """The leaderboards of two runs (e.g. seeds 0-2 and 3-5) in one table, "first / second" in
    every cell, with the seeds each covers.

    Raises:
        ValueError: either run has no leaderboard, or the two differ in preset or methods.
    """
    if results.get("preset") != held_out.get("preset"):
        raise ValueError(f"presets differ ({results.get('preset')!r} and "
                         f"{held_out.get('preset')!r}): join runs of the same command")
    first, second = _board(results, "the first directory"), _board(held_out, "the second")
    if [r["method"] for r in first["rows"]] != [r["method"] for r in second["rows"]]:
        raise ValueError("the two runs score different methods")

    def short(value: Any) -> str:
        return _cell(value, digits=2)

    seeds = [sorted({r["params"]["seed"] for r in res["runs"]
                     if r.get("setting") == "wrappers" and "seed" in r["params"]})
             for res in (results, held_out)]
    span = " / ".join("no seeds" if not s else f"seed {s[0]}" if len(s) == 1
                      else f"seeds {s[0]}-{s[-1]}" for s in seeds)
    heads = [h for _, h in first["columns"]]
    lines = [f"| {' | '.join(heads)} |", "|" + "---|" * len(heads)]
    for a, b in zip(first["rows"], second["rows"]):
        cells = [f"{short(a[k])} / {short(b[k])}" for k, _ in first["columns"][1:]]
        lines.append(f"| {a['method']} | " + " | ".join(cells) + " |")
    lines.append(f"\nEach cell: {span}, mean [min, max]. "
                 f"Pairs: {first['pairs']} / {second['pairs']} ({first['hiding']} / "
                 f"{second['hiding']} hide Acc O_PT); control removals: {first['controls']} / "
                 f"{second['controls']}; chance precision (k / n): "
                 f"{short(first['chance_precision'])}; revival margin "
                 f"{first['revival_margin']}.")
    return "\n".join(lines)
