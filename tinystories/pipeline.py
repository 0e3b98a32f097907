"""The whole TinyStories experiment in one call: data to deletion, revival, probes and a summary.

    run_pipeline("runs/tinystories-cpu", preset="cpu")

runs the TinyStories setting (`tinystories.grid`) through the one reproduction loop
(`wrapperlens.reproduction.reproduce`: every run under its run id in OUT/runs, a finished run
never recomputed, a killed pipeline resumed, a failed run recorded while the rest go on, local
processes or Ray), then writes

    OUT/results.json, OUT/report.html   the loop's results and report
    OUT/prepared, OUT/tokenizer         links to the protocol datasets and the tokenizer
    OUT/pretrain, OUT/control           links to the runs: "Present in PT" and "Not in PT"
    OUT/delete/{F,F+R,F+MM}-{M,S}, OUT/reft/{...}-{M,S}, OUT/reft/control
    OUT/probe, OUT/compare              links to the feature probes and the comparison
    OUT/summary.json, OUT/summary.txt

With `workers=2` the independent runs train in two processes with one torch thread each; every
run is deterministic, so the results do not depend on `workers`.

The summary holds, per run, the twist loss (Twist stories, `reft.test`), the other loss and the
twist generation score (classifier and oracle) at every evaluation; the probe accuracy per
feature and layer of every model; the comparison's per-layer numbers; the classifier's held-out
accuracy; and the seconds each kind of job took (seed 0's runs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tinystories.evaluation import CLASSIFIER_DIR
from tinystories.grid import DATA_DIR, SETTING, preset_with_overrides
from tinystories.presets import ETAS, PROTOCOLS
from wrapperlens.checkpoints import write_json
from wrapperlens.config import ConfigError

__all__ = ["PROTOCOLS", "ETAS", "preset_with_overrides", "run_pipeline", "format_summary"]

_CURVES = ("twist_loss", "other_loss", "test_loss", "twist_score", "twist_oracle", "loss")


def run_pipeline(
    out: str | Path,
    preset: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    protocols: Sequence[str] | None = None,
    etas: Sequence[str] | None = None,
    workers: int = 2,
    progress: bool = True,
    log: Callable[[str], None] = print,
    executor: str | None = None,
) -> dict[str, Any]:
    """Run every stage of the experiment into `out` and write `summary.json` (layout above).

    Args:
        out: Output directory (an interrupted pipeline there is continued).
        preset: "cpu", "tiny" or "paper".
        overrides: `section.key` values over the preset (`preset_with_overrides`).
        protocols: Deletion protocols to run (default: the preset's `grid.protocols`, all
            three unless overridden); the same as `overrides["grid.protocols"]`.
        etas: Deletion learning rates to run ("M", "S"; default: the preset's `grid.etas`).
        workers: Runs in parallel (1: everything in this process).
        progress: A progress bar over jobs.
        log: Receives the summary's text.
        executor: "local", "ray" or "inline" (default: inline for one worker, else local).

    Returns:
        The summary (also written to `out/summary.json`).
    """
    from wrapperlens.reproduction import reproduce

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if not isinstance(preset, str):
        raise ConfigError("run_pipeline takes a preset name; give changes as overrides")
    over = dict(overrides or {})
    for key, given in (("grid.protocols", protocols), ("grid.etas", etas)):
        if given is None:
            continue
        if key in over and list(over[key]) != list(given):
            raise ConfigError(f"{key} is given twice: {list(given)} and {over[key]!r} (in the "
                              "overrides); give it once")
        over[key] = list(given)
    out = Path(out)
    results = reproduce([SETTING], preset, out, overrides=over,
                        executor=executor or ("inline" if workers == 1 else "local"),
                        workers=workers, progress=progress)
    runs = {r["key"]: r for r in results["runs"]}
    _link_named_runs(out, runs)
    for name in ("prepared", "tokenizer"):  # where the stage commands look for them
        _link(out / name, out / DATA_DIR / name)
    if runs["pretrain/seed=0"]["run_id"]:  # the analyses of seed 0, named as the runs are
        for kind in ("probe", "compare"):
            _link(out / kind, out / "analyses" / f"{kind}-{runs['pretrain/seed=0']['run_id']}")
    summary = _summary(out, preset, results, runs)
    write_json(out / "summary.json", summary)
    (out / "summary.txt").write_text(format_summary(summary))
    log(format_summary(summary))
    return summary


def _named(key: str) -> str | None:
    """The pipeline's name of seed 0's run `key` ("delete/F-M/seed=0" -> "delete F-M")."""
    name, _, seed = key.rpartition("/")
    return name.replace("/", " ") if seed == "seed=0" else None


def _link_named_runs(out: Path, runs: Mapping[str, Mapping[str, Any]]) -> None:
    """OUT/pretrain, OUT/delete/F-M, ... as relative links to seed 0's runs under OUT/runs."""
    for key, run in runs.items():
        name = _named(key)
        if name is None or run["status"] != "finished":
            continue
        _link(out / Path(*name.split(" ")), out / run["dir"])


def _link(link: Path, directory: Path) -> None:
    """`link` -> `directory`, relative; an existing link is replaced, anything else refused."""
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(directory, link.parent)
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise ConfigError(f"{link} exists and is not a link to a run; choose another --out")
    link.symlink_to(target, target_is_directory=True)


def _curves(run: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _CURVES:
        points = [[r["step"], r[name]] for r in run["curve"] if name in r]
        if points:
            out[name] = points
    return out


def _summary(out: Path, preset: str, results: Mapping[str, Any],
             runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    analyses = {a["key"]: a for a in results["analyses"]}
    unfinished = [k for k, a in {**runs, **analyses}.items() if a["status"] != "finished"]
    if unfinished:
        errors = "; ".join(f"{k}: {((runs.get(k) or analyses[k])['error'] or '').splitlines()[0]}"
                           for k in unfinished[:3])
        raise ConfigError(f"{len(unfinished)} job(s) of the pipeline did not finish ({errors}); "
                          f"see {out / 'results.json'}")
    data, probes = analyses["data"]["result"], analyses["probe/seed=0"]["result"]
    seconds: dict[str, float] = {}
    for r in [*runs.values(), *analyses.values()]:
        kind = r.get("stage") or r.get("kind")
        seconds[kind] = round(seconds.get(kind, 0.0) + r.get("seconds", 0.0), 2)
    return {
        "preset": preset,
        "out": str(out.resolve()),
        "classifier": {**data["classifier"],
                       "path": str(out / DATA_DIR / "prepared" / CLASSIFIER_DIR)},
        "runs": {_named(k): _curves(r) for k, r in runs.items() if _named(k)},
        "probes": {k: probes[k] for k in ("points", "features", "twist_accuracy", "accuracy",
                                          "majority_rate")},
        "compare": analyses["compare/seed=0"]["result"],
        "prepare": data["records"],
        "timings_s": seconds,
        "total_s": round(results["wall_seconds"], 2),
    }


def _at(points: list | None, step: int) -> float | None:
    for s, v in points or []:
        if s == step:
            return v
    return None


def format_summary(summary: dict[str, Any]) -> str:
    """Plain-text tables of a pipeline summary: twist loss/score per run, Twist probes."""
    lines = [f"TinyStories pipeline, preset {summary['preset']} "
             f"({summary['total_s']:.0f} s); twist classifier held-out: "
             f"{summary['classifier']['held_out']}"]
    lines.append("")
    lines.append(f"{'run':18s} {'twist loss: start':>18s} {'end':>7s} {'other loss end':>15s}  "
                 "twist score (classifier / oracle) at generation steps")
    for name, curves in summary["runs"].items():
        loss = curves.get("twist_loss", [])
        other = curves.get("other_loss", [])
        scores = " ".join(
            f"{s}:{v:.2f}/{_at(curves.get('twist_oracle'), s) or 0:.2f}"
            for s, v in curves.get("twist_score", [])
        )
        lines.append(f"{name:18s} {loss[0][1] if loss else float('nan'):18.3f} "
                     f"{loss[-1][1] if loss else float('nan'):7.3f} "
                     f"{other[-1][1] if other else float('nan'):15.3f}  {scores}")
    probes = summary["probes"]
    lines.append("")
    lines.append("Twist probe accuracy per point: " + " ".join(probes["points"]))
    for model, accs in probes["twist_accuracy"].items():
        lines.append(f"  {model:22s} " + " ".join(f"{a:.3f}" for a in accs))
    lines.append("")
    lines.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()))
    return "\n".join(lines) + "\n"
