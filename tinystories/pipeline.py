"""The whole TinyStories experiment in one call: data to deletion, revival, probes and a summary.

    run_pipeline("runs/tinystories-cpu", preset="cpu")

writes

    OUT/prepared/                 protocol datasets (+ twist_classifier/)
    OUT/tokenizer/
    OUT/pretrain/                 "Present in PT": pretrained on every story
    OUT/control/                  "Not in PT": pretrained on the stories without Twist
    OUT/delete/{F,F+R,F+MM}-{M,S}/   deletion fine-tuning of OUT/pretrain
    OUT/reft/{...}-{M,S}/, OUT/reft/control/   reFT on Twist stories
    OUT/probe/                    feature probes of every model (report.json, probe_*.png)
    OUT/compare/                  OUT/pretrain against each deleted model and the control
    OUT/summary.json, OUT/summary.txt

The training stages are independent within a phase (pretrain ∥ control; the six deletions ∥ the
control's reFT; the six reFTs), so with `workers=2` they run in two processes with one torch
thread each. Small models use two cores far better that way than with two threads in one
process. Every run is deterministic, so the results do not depend on `workers`.

The summary holds, per run, the twist loss (Twist stories, `reft.test`), the other loss and the
twist generation score (classifier and oracle) at every evaluation; the probe accuracy per
feature and layer of every model; the comparison's per-layer numbers; the classifier's held-out
accuracy; and the wall time of each phase.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from tinystories.compare import compare_checkpoints, comparison_inputs, plot_comparison
from tinystories.evaluation import CLASSIFIER_DIR, ensure_story_classifier
from tinystories.experiments import load_story_model, resolve_story_run
from tinystories.prepare import build_run_tokenizer, prepare_stories, prepared_info
from tinystories.presets import EXPERIMENT
from tinystories.story_probes import probe_story_features, story_probe_inputs
from tinystories.tokenizer import load_tokenizer
from wrapperlens.analysis.probing import plot_probe_accuracy
from wrapperlens.checkpoints import write_json
from wrapperlens.config import ConfigError
from wrapperlens.presets import Preset, get_preset
from wrapperlens.runs import RunDir
from wrapperlens.stages import train_or_reuse

__all__ = ["PROTOCOLS", "ETAS", "preset_with_overrides", "run_pipeline", "format_summary"]

PROTOCOLS = ("F", "F+R", "F+MM")
ETAS = ("M", "S")


def preset_with_overrides(preset: str | Preset, overrides: Mapping[str, Any]) -> Preset:
    """A TinyStories preset with `section.key` overrides (`Preset.with_overrides`).

    Sections are the preset's (`pretrain.steps`, `eval.n_generations`, ...), and `eta.M`,
    `eta.S` set the deletion learning rates; the deletion LR is always an η, so `delete.lr` is
    refused.
    """
    p = get_preset(preset, EXPERIMENT) if isinstance(preset, str) else preset
    return p.with_overrides(overrides)


def _stage_overrides(p: Preset, stage: str) -> dict[str, Any]:
    """The preset's sections as the `section.key` overrides `resolve_story_run` takes."""
    sections = {"batches": p.batches, "eval": p.eval, "train": getattr(p, stage)}
    if stage == "pretrain":
        sections["model"] = p.model
    out = {}
    for name, cfg in sections.items():
        for f in fields(cfg):
            if name == "train" and stage == "delete" and f.name == "lr":
                continue  # η decides
            out[f"{name}.{f.name}"] = getattr(cfg, f.name)
    return out


def _stage_job(job: dict[str, Any]) -> float:
    """One training stage (runs in a worker process, or in this one for workers=1)."""
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    start = time.perf_counter()
    p: Preset = job["preset"]
    run = resolve_story_run(
        job["stage"], p, parent=job.get("parent"), prepared=job.get("prepared"),
        tokenizer=job.get("tokenizer"), protocol=job.get("protocol"), eta=job.get("eta"),
        overrides=_stage_overrides(p, job["stage"]),
    )
    train_or_reuse(run.spec(job["out"]), job["out"], progress=job.get("progress", False))
    return time.perf_counter() - start


def _run_jobs(jobs: list[dict], pool: ProcessPoolExecutor | None) -> list[float]:
    if pool is None:
        return [_stage_job(job) for job in jobs]
    return list(pool.map(_stage_job, jobs))


def _curves(run_dir: Path) -> dict[str, Any]:
    rows = RunDir(run_dir).metrics()
    out: dict[str, Any] = {}
    for key in ("twist_loss", "other_loss", "test_loss", "twist_score", "twist_oracle", "loss"):
        points = [[r["step"], r[key]] for r in rows if key in r]
        if points:
            out[key] = points
    return out


def run_pipeline(
    out: str | Path,
    preset: str | Preset = "cpu",
    overrides: Mapping[str, Any] | None = None,
    protocols: Sequence[str] = PROTOCOLS,
    etas: Sequence[str] = ETAS,
    workers: int = 2,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every stage of the experiment into `out` and write `summary.json` (layout above).

    Args:
        out: Output directory.
        preset: "cpu", "tiny", "paper" or a TinyStories `Preset`.
        overrides: `section.key` values over the preset (sections: the preset's; see `preset_with_overrides`).
        protocols: Deletion protocols to run.
        etas: Deletion learning rates to run ("M", "S").
        workers: Training processes in parallel (1: everything in this process).
        progress: Progress bars (workers=1 only).
        log: Receives one line per finished phase.

    Returns:
        The summary (also written to `out/summary.json`).
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    p = preset_with_overrides(preset, overrides or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def phase(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 2)
        log(f"[{timings[name]:7.1f} s] {name}")

    prepared, tokenizer_dir = out / "prepared", out / "tokenizer"
    prepared_summary = prepare_stories(p.prepare, prepared)
    prepared_info(prepared).require("filter")  # the pipeline deletes: it needs Feature labels
    _, classifier_info = ensure_story_classifier(prepared, p.classifier)
    build_run_tokenizer(prepared, tokenizer_dir, p.tokenizer)
    phase("prepare, classifier, tokenizer")

    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    common = {"preset": p, "threads": threads, "progress": progress and workers == 1}
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    deleted = {f"{proto}-{eta}": (proto, eta) for proto in protocols for eta in etas}
    try:
        _run_jobs([
            {**common, "stage": "pretrain", "out": out / "pretrain", "prepared": prepared,
             "tokenizer": tokenizer_dir, "protocol": "all"},
            {**common, "stage": "pretrain", "out": out / "control", "prepared": prepared,
             "tokenizer": tokenizer_dir, "protocol": "filter"},
        ], pool)
        phase("pretrain + control")
        _run_jobs(
            [{**common, "stage": "delete", "out": out / "delete" / name, "parent": out / "pretrain",
              "protocol": proto, "eta": eta} for name, (proto, eta) in deleted.items()]
            + [{**common, "stage": "reft", "out": out / "reft" / "control",
                "parent": out / "control"}],
            pool,
        )
        phase("deletion (+ control reFT)")
        _run_jobs([{**common, "stage": "reft", "out": out / "reft" / name,
                    "parent": out / "delete" / name} for name in deleted], pool)
        phase("reFT")
    finally:
        if pool is not None:
            pool.shutdown()

    tokenizer = load_tokenizer(tokenizer_dir)
    models = {"pretrained": load_story_model(out / "pretrain"),
              "control": load_story_model(out / "control")}
    models.update({f"deleted {n}": load_story_model(out / "delete" / n) for n in deleted})
    models.update({f"revived {n}": load_story_model(out / "reft" / n) for n in deleted})
    models["control reFT"] = load_story_model(out / "reft" / "control")
    n_ctx = models["pretrained"].cfg.n_ctx
    inputs = story_probe_inputs(prepared, tokenizer, n_ctx, p.probe_data)
    probes = probe_story_features(models, inputs, p.probe, p.probe_data.last_k)
    (out / "probe").mkdir(exist_ok=True)
    write_json(out / "probe" / "report.json", probes.to_dict())
    plot_probe_accuracy(probes, out / "probe" / "probe_accuracy.png", title="story-feature probes")
    phase("probes")

    compared = {"pretrained": models["pretrained"],
                **{k: v for k, v in models.items() if k.startswith("deleted")},
                "control": models["control"]}
    tokens, lengths = comparison_inputs(prepared, tokenizer, n_ctx)
    comparison = compare_checkpoints(
        compared, tokens, lengths, inputs.tokens, inputs.labels, inputs.lengths,
        inputs.feature_names, p.probe, p.probe_data.last_k,
    )
    write_json(out / "compare" / "report.json", comparison)
    plot_comparison(comparison, out / "compare")
    phase("compare")

    runs = {"pretrain": out / "pretrain", "control": out / "control"}
    runs.update({f"delete {n}": out / "delete" / n for n in deleted})
    runs.update({f"reft {n}": out / "reft" / n for n in deleted})
    runs["reft control"] = out / "reft" / "control"
    twist = inputs.feature_names.index("Twist") if "Twist" in inputs.feature_names else 0
    summary = {
        "preset": p.name,
        "out": str(out.resolve()),
        "classifier": {"held_out": classifier_info.get("held_out"),
                       "n_train_balanced": classifier_info.get("n_train_balanced"),
                       "path": str(prepared / CLASSIFIER_DIR)},
        "runs": {name: _curves(path) for name, path in runs.items()},
        "probes": {
            "points": probes.point_names,
            "features": probes.feature_names,
            "twist_accuracy": {m: [a[twist] for a in accs] for m, accs in probes.accuracy.items()},
            "accuracy": probes.accuracy,
            "majority_rate": probes.majority_rate,
        },
        "compare": {k: comparison[k] for k in ("reference", "points", "cosine", "relative_norm",
                                               "cka")},
        "prepare": prepared_summary["records"],
        "timings_s": timings,
        "total_s": round(time.perf_counter() - t0, 2),
    }
    write_json(out / "summary.json", summary)
    (out / "summary.txt").write_text(format_summary(summary))
    log(format_summary(summary))
    return summary


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
