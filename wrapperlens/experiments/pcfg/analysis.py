"""PCFG glue of the analysis tools: run directories in, JSON / PNG / HTML out.

Each function here opens trainer run directories (`wrapperlens.experiments.pcfg.pairs`), draws
PCFG inputs for them, calls one task-agnostic tool of `wrapperlens.analysis`, and writes its
result into an output directory. Each takes the run (and, for a pair, an optional `pretrained`
run) plus one frozen options object (`wrapperlens.experiments.pcfg.analysis_options`):

    prune_run("runs/ft", "out/prune", PruneOptions(ks=range(8), eligible="mlp_out"))
    patch_run("runs/ft", "out/patch", PatchOptions(component="z"), pretrained="runs/pt")

The command line (`wrapperlens prune | probe | patch | attribute | attention | wrapper-map`) is a
thin layer over them that builds the options from its flags; a notebook calls them directly.
`run_dir` is the fine-tuned (or reFT) run; the pretrained model defaults to the run it descends
from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from wrapperlens.analysis.effect_plots import plot_effect
from wrapperlens.analysis.localisation import spearman
from wrapperlens.checkpoints import write_json
from wrapperlens.components import result_axes
from wrapperlens.experiments.pcfg.analysis_options import (
    AttentionOptions,
    AttributeOptions,
    PatchOptions,
    ProbeOptions,
    PruneOptions,
    WrapperMapOptions,
)
from wrapperlens.experiments.pcfg.pairs import (
    LoadedRun,
    accuracy_evaluator,
    make_metric,
    open_pair,
    open_pretrained,
    open_run,
    question_inputs,
    require_finetune,
)

__all__ = [
    "prune_run",
    "probe_run",
    "patch_run",
    "attribute_run",
    "attention_run",
    "wrapper_map_run",
]


# ----------------------------------------------------------------------------------- tools
def prune_run(
    run_dir: str | Path, out: str | Path, options: PruneOptions | None = None
) -> dict[str, Any]:
    """g·w pruning sweep of a fine-tuned run: Acc O_PT / O_FT at C_Te 0 / 1 after K units.

    The gradient is of the pretraining-task (O_PT) loss on `options.grad_samples` fresh prompts
    with C_Te = `options.grad_c_te`. With `options.random_draws` > 0 the same sweep with randomly
    drawn units is the control, under ``"random"`` and dashed in the plot. Writes ``prune.json``
    and ``prune.png``.
    """
    from wrapperlens.analysis.pruning import answer_loss, plot_prune_sweep, prune_sweep
    from wrapperlens.analysis.pruning_control import random_prune_sweep
    from wrapperlens.analysis.pruning_units import count_units

    o = options or PruneOptions()
    loaded = open_run(run_dir)
    ft = require_finetune(loaded, "prune")
    config = o.prune_config
    question = loaded.question()
    inputs = question_inputs(loaded, question, o.grad_samples, o.grad_c_te, "analysis/prune")
    loss_fn = answer_loss(inputs.tokens, -1, inputs.answers)
    evaluate = accuracy_evaluator(loaded, o.eval_samples)
    sweep = prune_sweep(loaded.model, loss_fn, o.ks, evaluate, config)
    control = None
    if o.random_draws > 0:
        control = random_prune_sweep(
            loaded.model, o.ks, evaluate, config, draws=o.random_draws, seed=o.random_seed
        )
    out = Path(out)
    result = {
        "run": str(run_dir),
        "o_pt": ft.pretrain_operand,
        "o_ft": ft.operand,
        "grad_samples": o.grad_samples,
        "grad_c_te": o.grad_c_te,
        "n_units": count_units(loaded.model, config),
        **sweep.to_dict(),
    }
    if control is not None:
        result["random"] = control.to_dict()
    write_json(out / "prune.json", result)
    plot_prune_sweep(
        sweep,
        out / "prune.png",
        title=f"g·w pruning of {Path(run_dir).name} ({config.granularity}s)",
        control=control,
    )
    return result


def probe_run(
    run_dir: str | Path,
    out: str | Path,
    options: ProbeOptions | None = None,
    *,
    pretrained: str | Path | None = None,
) -> dict[str, Any]:
    """Linear probes of count(`label`) on "count `prompt`" inputs at `<art>`, block by block.

    Models: the fine-tuned run, its pretrained model and `options.random_inits` random-init
    baselines (a pretraining run alone is probed with the baselines only). `options.prompt` defaults to O_PT, `options.label`
    to the prompt's operand. Writes ``probe.json`` and ``probe.png``.
    """
    from wrapperlens.analysis.probing import (
        PROBE_PRESETS,
        plot_probe_accuracy,
        probe_accuracy_by_layer,
    )

    o = options or ProbeOptions()
    loaded = open_run(run_dir)
    models = _models(loaded, pretrained)
    question = loaded.question(o.prompt)
    target = loaded.question(o.label or question.operand)
    inputs = question_inputs(loaded, question, o.samples, o.c_te, "analysis/probe")
    labels = torch.from_numpy(loaded.task.labels(inputs.batch.text, target))
    offset = int(min(0, int(labels.min())))  # index families answer -1 for "no occurrence"
    report = probe_accuracy_by_layer(
        models, inputs.tokens, labels - offset, -1, PROBE_PRESETS[o.probe_preset],
        random_inits=o.random_inits,
    )
    out = Path(out)
    result = {
        "run": str(run_dir),
        "prompt": question.name,
        "label": f"{target.name} answer",
        "label_offset": offset,
        "c_te": o.c_te,
        **report.to_dict(),
    }
    write_json(out / "probe.json", result)
    plot_probe_accuracy(
        report,
        out / "probe.png",
        title=f"probe: {target.name} answer from '{question.name}' prompts",
    )
    return result


def _models(loaded: LoadedRun, pretrained: str | Path | None) -> dict[str, HookedTransformer]:
    """{"pretrained": ...} for a pretraining run, else the pair, pretrained first."""
    if loaded.run.stage == "pretrain":
        return {"pretrained": loaded.model}
    return {"pretrained": open_pretrained(loaded, pretrained).model, "fine-tuned": loaded.model}


def _patch_models(ft: LoadedRun, pt: LoadedRun, direction: str):
    """(source, target) of a patch; `direction` is one of DIRECTIONS (checked by the options)."""
    return (pt.model, ft.model) if direction == "pt-to-ft" else (ft.model, pt.model)


def patch_run(
    run_dir: str | Path,
    out: str | Path,
    options: PatchOptions | None = None,
    *,
    pretrained: str | Path | None = None,
) -> dict[str, Any]:
    """Cross-model activation patching on "count `options.prompt`" (default O_PT) inputs.

    Effect = metric(target run with the source's activation) - metric(target run); by default the
    source is the pretrained model and the target the fine-tuned one. Writes ``patch.json`` and
    ``patch.png``.
    """
    from wrapperlens.analysis.patching import ActivationPatcher, PatchingConfig

    o = options or PatchOptions()
    ft, pt = open_pair(run_dir, pretrained)
    source, target = _patch_models(ft, pt, o.direction)
    inputs = question_inputs(ft, ft.question(o.prompt), o.samples, o.c_te, "analysis/patch")
    fn = make_metric(o.metric, ft, inputs)
    patcher = ActivationPatcher(target, inputs.tokens, source_model=source)
    config = PatchingConfig(component=o.component, per_position=o.per_position)
    values = patcher.sweep(fn, config)
    base = float(fn(patcher.target_logits))
    effect = values - base
    axes = result_axes(o.component, o.per_position)
    str_tokens = ft.task.vocab.to_str_tokens(inputs.tokens[0].tolist())
    result = {
        "run": str(run_dir),
        "pretrained": str(pt.path),
        "direction": o.direction,
        "component": o.component,
        "per_position": o.per_position,
        "metric": o.metric,
        "samples": o.samples,
        "c_te": o.c_te,
        "prompt": ft.question(o.prompt).name,
        "metric_target": base,
        "metric_source": float(fn(patcher.source_logits)),
        "axes": axes,
        "effect": effect.tolist(),
        "str_tokens_example": str_tokens,
    }
    out = Path(out)
    write_json(out / "patch.json", result)
    plot_effect(
        effect,
        axes,
        str_tokens,
        out / "patch.png",
        f"activation patching {o.direction}, {o.component}: Δ {o.metric}",
    )
    return result


def attribute_run(
    run_dir: str | Path,
    out: str | Path,
    options: AttributeOptions | None = None,
    *,
    pretrained: str | Path | None = None,
) -> dict[str, Any]:
    """Attribution patching (one forward on the source, one forward + backward on the target).

    With `options.compare_exact`, also runs exact activation patching of each component and
    reports the Spearman rank correlation of the two. Writes ``attribute.json`` and one
    ``attribute_<component>.png`` per component.
    """
    from wrapperlens.analysis.attribution import attribution_scores
    from wrapperlens.analysis.patching import ActivationPatcher, PatchingConfig

    o = options or AttributeOptions()
    ft, pt = open_pair(run_dir, pretrained)
    source, target = _patch_models(ft, pt, o.direction)
    inputs = question_inputs(ft, ft.question(o.prompt), o.samples, o.c_te, "analysis/attribute")
    fn = make_metric(o.metric, ft, inputs)
    scores = attribution_scores(
        target, inputs.tokens, fn, o.components, per_position=o.per_position, source_model=source
    )
    str_tokens = ft.task.vocab.to_str_tokens(inputs.tokens[0].tolist())
    out = Path(out)
    result: dict[str, Any] = {
        "run": str(run_dir),
        "pretrained": str(pt.path),
        "direction": o.direction,
        "metric": o.metric,
        "samples": o.samples,
        "c_te": o.c_te,
        "per_position": o.per_position,
        "components": {},
    }
    patcher = (
        ActivationPatcher(target, inputs.tokens, source_model=source) if o.compare_exact else None
    )
    for component, estimate in scores.items():
        axes = result_axes(component, o.per_position)
        entry: dict[str, Any] = {"axes": axes, "estimate": estimate.tolist()}
        if patcher is not None:
            exact = patcher.sweep(
                fn, PatchingConfig(component=component, per_position=o.per_position)
            )
            exact = exact - float(fn(patcher.target_logits))
            entry["exact"] = exact.tolist()
            entry["spearman"] = spearman(estimate, exact)
        result["components"][component] = entry
        plot_effect(
            estimate,
            axes,
            str_tokens,
            out / f"attribute_{component}.png",
            f"attribution patching {o.direction}, {component}: estimated Δ {o.metric}",
        )
    write_json(out / "attribute.json", result)
    return result


def attention_run(
    run_dir: str | Path,
    out: str | Path,
    options: AttentionOptions | None = None,
    *,
    pretrained: str | Path | None = None,
) -> Path:
    """Attention patterns of the pretrained and fine-tuned models side by side on one prompt.

    A pretraining run alone is drawn by itself. Writes ``attention.html`` (renders offline).
    """
    from wrapperlens.analysis.attention_views import write_attention_html

    o = options or AttentionOptions()
    loaded = open_run(run_dir)
    models = _models(loaded, pretrained)
    question = loaded.question(o.prompt)
    inputs = question_inputs(loaded, question, o.example + 1, o.c_te, "analysis/attention")
    tokens = inputs.tokens[o.example]
    str_tokens = loaded.task.vocab.to_str_tokens(tokens.tolist())
    answer = loaded.task.vocab.to_str_tokens([int(inputs.answers[o.example])])[0]
    title = f"Attention: '{question.name}' (answer {answer}, C_Te = {o.c_te:g})"
    Path(out).mkdir(parents=True, exist_ok=True)
    return write_attention_html(
        Path(out) / "attention.html", models, tokens, str_tokens, layers=o.layers, title=title
    )


def wrapper_map_run(
    run_dir: str | Path,
    out: str | Path,
    options: WrapperMapOptions | None = None,
    *,
    pretrained: str | Path | None = None,
) -> dict[str, Any]:
    """Rank heads, neurons and layer parts of a pretrained / fine-tuned pair (`wrapper_map`).

    Inputs are O_PT prompts with their O_PT answers: pruning scores the pretraining loss, patching
    splices pretrained activations into the fine-tuned run and measures the O_PT metric. Writes
    ``wrapper_map.json`` and ``wrapper_map.png``.
    """
    from wrapperlens.analysis.wrapper_map import WrapperMapConfig, plot_wrapper_map, wrapper_map

    o = options or WrapperMapOptions()
    ft, pt = open_pair(run_dir, pretrained)
    require_finetune(ft, "wrapper-map")
    inputs = question_inputs(ft, ft.question(), o.samples, o.c_te, "analysis/wrapper-map")
    wmap = wrapper_map(
        pt.model,
        ft.model,
        inputs.tokens,
        inputs.answers,
        -1,
        metric=make_metric(o.metric, ft, inputs),
        config=WrapperMapConfig(patch_neurons=o.patch_neurons),
    )
    out = Path(out)
    result = {
        "run": str(run_dir),
        "pretrained": str(pt.path),
        "samples": o.samples,
        "c_te": o.c_te,
        "metric": o.metric,
        "table": wmap.table(),
        **wmap.to_dict(),
    }
    write_json(out / "wrapper_map.json", result)
    plot_wrapper_map(
        wmap,
        out / "wrapper_map.png",
        title=f"wrapper map: {pt.path.name} → {ft.path.name} "
        f"({o.metric}: {wmap.metric_pretrained:.3f} → {wmap.metric_finetuned:.3f})",
    )
    return result

