"""The TinyStories experiment (paper App. F) as the reproduction loop's setting.

`plan(preset, overrides)` lists the sweep jobs (`wrapperlens.reproduction`), per seed s:

- `data`: the stories prepared into protocol datasets, the twist classifier and the tokenizer
  (`OUT/tinystories/data/{prepared,tokenizer}`; shared by every seed);
- `pretrain` ("Present in PT") and `control` ("Not in PT": pretrained without Twist stories);
- `delete/<protocol>-<η>` of the pretrained model (F, F+R, F+MM at η_M, η_S), the reFT of each,
  and the control's reFT;
- `probe`: feature probes of every model; `compare`: the pretrained model against each deleted
  model and the control, layer by layer.

Preset-level overrides (`pretrain.steps`, `eval.n_generations`, `eta.M`, ...) become each stage's
configs; `grid.seeds`, `grid.protocols` and `grid.etas` choose the runs. The setting decides
claims 17-20 (`tinystories.claims`). `tinystories.pipeline.run_pipeline` runs it and writes the
pipeline's summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from tinystories.claims import evaluate_story_claims
from tinystories.experiments import StoryRun
from tinystories.presets import EXPERIMENT
from wrapperlens.presets import Preset, get_preset
from wrapperlens.planning import GridJob, Planner, Setting

__all__ = ["plan", "preset_with_overrides", "SETTING", "DATA_DIR", "data_job", "probe_job",
           "compare_job", "model_names"]

_HERE = "tinystories.grid"
DATA_DIR = "tinystories/data"
SEED_ROLES = {"pretrain": "seed s: train.seed = s (batch order) and model.init_seed = s",
              "delete": "train.seed = s (batch order), from the pretraining of seed s",
              "reft": "train.seed = s (batch order), from the run it revives"}


def preset_with_overrides(preset: str | Preset, overrides: Mapping[str, Any]) -> Preset:
    """A TinyStories preset with `section.key` overrides (`Preset.with_overrides`): sections
    are the preset's (`pretrain.steps`, `eval.n_generations`, `grid.etas`, ...); `eta.M`,
    `eta.S` set the deletion learning rates (so `delete.lr` is refused)."""
    p = get_preset(preset, EXPERIMENT) if isinstance(preset, str) else preset
    return p.with_overrides(overrides)


def _stage_overrides(p: Preset, stage: str, eta: str | None = None) -> dict[str, Any]:
    """The (overridden) preset's sections as the `section.key` overrides of one stage."""
    sections = {"batches": p.batches, "eval": p.eval, "train": getattr(p, stage)}
    if stage == "pretrain":
        sections["model"] = p.model
    out = {f"{name}.{f.name}": getattr(cfg, f.name)
           for name, cfg in sections.items() for f in fields(cfg)}
    if eta is not None:  # the deletion LR is the (overridden) η
        out["train.lr"] = p.etas[eta]
    return out


def model_names(protocols, etas) -> list[str]:
    """The deleted models' names, "<protocol>-<η>"."""
    return [f"{proto}-{eta}" for proto in protocols for eta in etas]


def plan(preset: str, overrides: Mapping[str, Any] | None = None) -> list[GridJob]:
    """Every job of the pipeline (see the module docstring)."""
    overrides = dict(overrides or {})
    p = preset_with_overrides(preset, overrides)
    grid = p.grid
    jobs = Planner(StoryRun, preset)
    data = jobs.analysis("data", "data", None, f"{_HERE}:data_job",
                         {"preset": preset, "overrides": overrides})
    for seed in grid.seed_range:
        s = f"seed={seed}"
        pt_seed = {"train.seed": seed, "model.init_seed": seed}

        def train(key: str, stage: str, parent: str | None = None, **kw: Any) -> str:
            over = {**_stage_overrides(p, stage, kw.get("eta")), "train.seed": seed,
                    **(pt_seed if stage == "pretrain" else {})}
            return jobs.train(f"{key}/{s}", stage, parent=parent, eta=kw.get("eta"),
                              overrides=over, label=key.split("/")[0],
                              inputs={"data": data},
                              extra={"protocol": kw["protocol"]} if "protocol" in kw else None,
                              params={"seed": seed, **kw})

        runs = {"pretrained": train("pretrain", "pretrain", protocol="all"),
                "control": train("control", "pretrain", protocol="filter")}
        for name in model_names(grid.protocols, grid.etas):
            proto, eta = name.rsplit("-", 1)
            runs[f"deleted {name}"] = train(f"delete/{name}", "delete", runs["pretrained"],
                                            protocol=proto, eta=eta)
            runs[f"revived {name}"] = train(f"reft/{name}", "reft", runs[f"deleted {name}"],
                                            revives=name)
        runs["control reFT"] = train("reft/control", "reft", runs["control"], revives="control")
        args = {"preset": preset, "overrides": overrides}
        jobs.analysis(f"probe/{s}", "probe", runs, f"{_HERE}:probe_job", args, {"seed": seed})
        compared = {k: v for k, v in runs.items() if k == "pretrained" or
                    k.startswith("deleted") or k == "control"}
        jobs.analysis(f"compare/{s}", "compare", compared, f"{_HERE}:compare_job", args,
                      {"seed": seed})
    return jobs.ordered()


# ------------------------------------------------------------------------- job functions
def data_job(out: str, preset: str, overrides: Mapping[str, Any],
             device: str = "cpu") -> dict[str, Any]:
    """Prepare the stories, train the twist classifier and the tokenizer into
    `out/tinystories/data`; returns its directory, the record counts and the classifier's
    held-out accuracy."""
    from tinystories.evaluation import ensure_story_classifier
    from tinystories.prepare import build_run_tokenizer, prepare_stories, prepared_info

    p = preset_with_overrides(preset, overrides)
    data = Path(out) / DATA_DIR
    summary = prepare_stories(p.prepare, data / "prepared")
    prepared_info(data / "prepared").require("filter")  # deletion needs Feature labels
    _, classifier = ensure_story_classifier(data / "prepared", p.classifier)
    build_run_tokenizer(data / "prepared", data / "tokenizer", p.tokenizer)
    return {"dir": DATA_DIR, "records": summary["records"], "source": p.prepare.source,
            "classifier": {"held_out": classifier.get("held_out"),
                           "n_train_balanced": classifier.get("n_train_balanced")}}


def _models(out: str, runs: Mapping[str, Mapping[str, Any]]):
    from tinystories.experiments import load_story_model

    return {name: load_story_model(Path(out) / run["dir"]) for name, run in runs.items()}


def _analysis_dir(out: str, kind: str, runs: Mapping[str, Mapping[str, Any]]) -> Path:
    return Path(out) / "analyses" / f"{kind}-{runs['pretrained']['run_id']}"


def probe_job(out: str, runs: Mapping[str, Mapping[str, Any]], preset: str,
              overrides: Mapping[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Feature probes (last tokens of each story) of every model; writes report.json and
    probe_accuracy.png; returns the points, features, accuracies and majority rates."""
    from tinystories.story_probes import probe_story_features, story_probe_inputs
    from tinystories.tokenizer import load_tokenizer
    from wrapperlens.analysis.probing import plot_probe_accuracy
    from wrapperlens.checkpoints import write_json

    p = preset_with_overrides(preset, overrides)
    data = Path(out) / DATA_DIR
    models = _models(out, runs)
    inputs = story_probe_inputs(data / "prepared", load_tokenizer(data / "tokenizer"),
                                models["pretrained"].cfg.n_ctx, p.probe_data)
    probes = probe_story_features(models, inputs, p.probe, p.probe_data.last_k)
    where = _analysis_dir(out, "probe", runs)
    write_json(where / "report.json", probes.to_dict())
    plot_probe_accuracy(probes, where / "probe_accuracy.png", title="story-feature probes")
    twist = probes.feature_names.index("Twist") if "Twist" in probes.feature_names else 0
    return {"points": probes.point_names, "features": probes.feature_names,
            "twist_accuracy": {m: [a[twist] for a in accs] for m, accs in probes.accuracy.items()},
            "accuracy": probes.accuracy, "majority_rate": probes.majority_rate}


def compare_job(out: str, runs: Mapping[str, Mapping[str, Any]], preset: str,
                overrides: Mapping[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The pretrained model against each deleted model and the control (cosine, relative norm,
    CKA per layer; weight change, probe transfer); writes report.json and its plots."""
    from tinystories.compare import compare_checkpoints, comparison_inputs, plot_comparison
    from tinystories.story_probes import story_probe_inputs
    from tinystories.tokenizer import load_tokenizer
    from wrapperlens.checkpoints import write_json

    p = preset_with_overrides(preset, overrides)
    data = Path(out) / DATA_DIR
    tokenizer = load_tokenizer(data / "tokenizer")
    models = _models(out, runs)
    n_ctx = models["pretrained"].cfg.n_ctx
    inputs = story_probe_inputs(data / "prepared", tokenizer, n_ctx, p.probe_data)
    tokens, lengths = comparison_inputs(data / "prepared", tokenizer, n_ctx)
    comparison = compare_checkpoints(models, tokens, lengths, inputs.tokens, inputs.labels,
                                     inputs.lengths, inputs.feature_names, p.probe,
                                     p.probe_data.last_k)
    where = _analysis_dir(out, "compare", runs)
    write_json(where / "report.json", comparison)
    plot_comparison(comparison, where)
    return {k: comparison[k] for k in ("reference", "points", "cosine", "relative_norm", "cka")}


#: The TinyStories pipeline for the reproduction loop (`wrapperlens.reproduction.reproduce`).
SETTING = Setting(EXPERIMENT, plan, claims=evaluate_story_claims,
                  seeds=lambda preset, over: preset_with_overrides(preset, over).grid.seeds,
                  seed_roles=SEED_ROLES,
                  metrics=("twist_", "other_loss", "test_loss", "gen_tokens"))
