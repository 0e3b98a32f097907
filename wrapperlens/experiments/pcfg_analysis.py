"""PCFG glue of the analysis tools: run directories in, JSON / PNG / HTML out.

Each function here opens trainer run directories (`wrapperlens.experiments.pcfg_pairs`), draws
PCFG inputs for them, calls one task-agnostic tool of `wrapperlens.analysis`, and writes its
result into an output directory. Each takes the run (and, for a pair, an optional `pretrained`
run) plus one frozen options object (`wrapperlens.experiments.pcfg_analysis_options`):

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

from torch import Tensor

from wrapperlens.checkpoints import write_json
from wrapperlens.components import result_axes
from wrapperlens.experiments.pcfg_analysis_options import (
    AttentionOptions,
    AttributeOptions,
    PatchOptions,
    ProbeOptions,
    PruneOptions,
    WrapperMapOptions,
)
from wrapperlens.experiments.pcfg_pairs import (
    LoadedRun,
    ft_answers,
    make_metric,
    open_pair,
    open_run,
    question_inputs,
    require_finetune,
)
from wrapperlens.experiments.pcfg_pairs import accuracy_evaluator

__all__ = [
    "PruneOptions",
    "ProbeOptions",
    "PatchOptions",
    "AttributeOptions",
    "AttentionOptions",
    "WrapperMapOptions",
    "prune_run",
    "probe_run",
    "patch_run",
    "attribute_run",
    "attention_run",
    "wrapper_map_run",
]


# ----------------------------------------------------------------------------------- tools
def prune_run(
    run_dir: str | Path,
    out: str | Path,
    ks: Sequence[int] = tuple(range(16)),
    eligible: str | tuple[str, ...] = "all_block_linear",
    granularity: str = "row",
    unit_axis: str = "input",
    grad_samples: int = 512,
    grad_c_te: float = 0.0,
    eval_samples: int | None = None,
) -> dict[str, Any]:
    """g·w pruning sweep of a fine-tuned run: Acc O_PT / O_FT at C_Te 0 / 1 after K units.

    The gradient is of the pretraining-task (O_PT) loss on `grad_samples` fresh prompts with
    C_Te = `grad_c_te`. Writes ``prune.json`` and ``prune.png``.
    """
    from wrapperlens.analysis.pruning import PruneConfig, answer_loss, plot_prune_sweep, prune_sweep

    loaded = open_run(run_dir)
    ft = _needs_finetune(loaded, "prune")
    config = PruneConfig(eligible, granularity, unit_axis)
    inputs = question_inputs(loaded, loaded.question(), grad_samples, grad_c_te, "analysis/prune")
    loss_fn = answer_loss(inputs.tokens, -1, inputs.answers)
    sweep = prune_sweep(loaded.model, loss_fn, ks, accuracy_evaluator(loaded, eval_samples), config)
    out = Path(out)
    result = {
        "run": str(run_dir),
        "o_pt": ft.pretrain_operand,
        "o_ft": ft.operand,
        "grad_samples": grad_samples,
        "grad_c_te": grad_c_te,
        **sweep.to_dict(),
    }
    write_json(out / "prune.json", result)
    plot_prune_sweep(
        sweep,
        out / "prune.png",
        title=f"g·w pruning of {Path(run_dir).name} ({config.granularity}s)",
    )
    return result


def probe_run(
    run_dir: str | Path,
    out: str | Path,
    pretrained: str | Path | None = None,
    prompt: str | None = None,
    label: str | None = None,
    samples: int = 2000,
    c_te: float = 0.0,
    probe_preset: str = "fast",
) -> dict[str, Any]:
    """Linear probes of count(`label`) on "count `prompt`" inputs at `<art>`, block by block.

    Models: the fine-tuned run, its pretrained model and a random-init baseline (a pretraining run
    alone is probed with the baseline only). `prompt` defaults to O_PT, `label` to `prompt`.
    Writes ``probe.json`` and ``probe.png``.
    """
    from wrapperlens.analysis.probing import (
        PROBE_PRESETS,
        plot_probe_accuracy,
        probe_accuracy_by_layer,
    )

    if probe_preset not in PROBE_PRESETS:
        raise ValueError(
            f"probe preset must be one of {sorted(PROBE_PRESETS)}, got {probe_preset!r}"
        )
    loaded = open_run(run_dir)
    models = {"pretrained": loaded.model} if loaded.run.stage == "pretrain" else {}
    if not models:
        ft, pt = open_pair(run_dir, pretrained)
        models = {"pretrained": pt.model, "fine-tuned": ft.model}
    question = loaded.question(prompt)
    target = loaded.question(label or question.operand)
    inputs = question_inputs(loaded, question, samples, c_te, "analysis/probe")
    labels = torch.from_numpy(loaded.task.labels(inputs.batch.text, target))
    offset = int(min(0, int(labels.min())))  # index families answer -1 for "no occurrence"
    report = probe_accuracy_by_layer(
        models, inputs.tokens, labels - offset, -1, PROBE_PRESETS[probe_preset]
    )
    out = Path(out)
    result = {
        "run": str(run_dir),
        "prompt": question.name,
        "label": f"{target.name} answer",
        "label_offset": offset,
        "c_te": c_te,
        **report.to_dict(),
    }
    write_json(out / "probe.json", result)
    plot_probe_accuracy(
        report,
        out / "probe.png",
        title=f"probe: {target.name} answer from '{question.name}' prompts",
    )
    return result


def _patch_models(ft: LoadedRun, pt: LoadedRun, direction: str):
    if direction == "pt-to-ft":
        return pt.model, ft.model
    if direction == "ft-to-pt":
        return ft.model, pt.model
    raise ValueError(f"direction must be 'pt-to-ft' or 'ft-to-pt', got {direction!r}")


def patch_run(
    run_dir: str | Path,
    out: str | Path,
    pretrained: str | Path | None = None,
    component: str = "resid_pre",
    per_position: bool = True,
    direction: str = "pt-to-ft",
    metric: str = "prob",
    samples: int = 64,
    c_te: float = 0.0,
    prompt: str | None = None,
) -> dict[str, Any]:
    """Cross-model activation patching on "count `prompt`" (default O_PT) inputs.

    Effect = metric(target run with the source's activation) - metric(target run); by default the
    source is the pretrained model and the target the fine-tuned one. Writes ``patch.json`` and
    ``patch.png``.
    """
    from wrapperlens.analysis.patching import ActivationPatcher, PatchingConfig

    ft, pt = open_pair(run_dir, pretrained)
    source, target = _patch_models(ft, pt, direction)
    inputs = question_inputs(ft, ft.question(prompt), samples, c_te, "analysis/patch")
    wrong = _ft_answers(ft, inputs) if metric == "logit_diff" else None
    fn = make_metric(metric, inputs, wrong)
    patcher = ActivationPatcher(target, inputs.tokens, source_model=source)
    values = patcher.sweep(fn, PatchingConfig(component=component, per_position=per_position))
    base = float(fn(patcher.target_logits))
    effect = values - base
    axes = result_axes(component, per_position)
    str_tokens = ft.task.vocab.to_str_tokens(inputs.tokens[0].tolist())
    result = {
        "run": str(run_dir),
        "pretrained": str(pt.path),
        "direction": direction,
        "component": component,
        "per_position": per_position,
        "metric": metric,
        "samples": samples,
        "c_te": c_te,
        "prompt": ft.question(prompt).name,
        "metric_target": base,
        "metric_source": float(fn(patcher.source_logits)),
        "axes": axes,
        "effect": effect.tolist(),
        "str_tokens_example": str_tokens,
    }
    out = Path(out)
    write_json(out / "patch.json", result)
    _plot_effect(
        effect,
        axes,
        str_tokens,
        out / "patch.png",
        f"activation patching {direction}, {component}: Δ {metric}",
    )
    return result


def _spearman(a: Tensor, b: Tensor) -> float:
    def ranks(x: Tensor) -> Tensor:
        return x.flatten().argsort().argsort().double()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom else float("nan")


def attribute_run(
    run_dir: str | Path,
    out: str | Path,
    pretrained: str | Path | None = None,
    components: Sequence[str] = ("resid_pre", "z", "post"),
    per_position: bool = True,
    direction: str = "pt-to-ft",
    metric: str = "prob",
    samples: int = 64,
    c_te: float = 0.0,
    prompt: str | None = None,
    compare_exact: bool = False,
) -> dict[str, Any]:
    """Attribution patching (one forward on the source, one forward + backward on the target).

    With `compare_exact`, also runs exact activation patching of each component and reports the
    Spearman rank correlation of the two. Writes ``attribute.json`` and one
    ``attribute_<component>.png`` per component.
    """
    from wrapperlens.analysis.attribution import attribution_scores
    from wrapperlens.analysis.patching import ActivationPatcher, PatchingConfig

    ft, pt = open_pair(run_dir, pretrained)
    source, target = _patch_models(ft, pt, direction)
    inputs = question_inputs(ft, ft.question(prompt), samples, c_te, "analysis/attribute")
    wrong = _ft_answers(ft, inputs) if metric == "logit_diff" else None
    fn = make_metric(metric, inputs, wrong)
    scores = attribution_scores(
        target, inputs.tokens, fn, tuple(components), per_position=per_position, source_model=source
    )
    str_tokens = ft.task.vocab.to_str_tokens(inputs.tokens[0].tolist())
    out = Path(out)
    result: dict[str, Any] = {
        "run": str(run_dir),
        "pretrained": str(pt.path),
        "direction": direction,
        "metric": metric,
        "samples": samples,
        "c_te": c_te,
        "per_position": per_position,
        "components": {},
    }
    patcher = (
        ActivationPatcher(target, inputs.tokens, source_model=source) if compare_exact else None
    )
    for component, estimate in scores.items():
        axes = result_axes(component, per_position)
        entry: dict[str, Any] = {"axes": axes, "estimate": estimate.tolist()}
        if patcher is not None:
            exact = patcher.sweep(
                fn, PatchingConfig(component=component, per_position=per_position)
            )
            exact = exact - float(fn(patcher.target_logits))
            entry["exact"] = exact.tolist()
            entry["spearman"] = _spearman(estimate, exact)
        result["components"][component] = entry
        _plot_effect(
            estimate,
            axes,
            str_tokens,
            out / f"attribute_{component}.png",
            f"attribution patching {direction}, {component}: estimated Δ {metric}",
        )
    write_json(out / "attribute.json", result)
    return result


def attention_run(
    run_dir: str | Path,
    out: str | Path,
    pretrained: str | Path | None = None,
    example: int = 0,
    c_te: float = 1.0,
    prompt: str | None = None,
    layers: Sequence[int] | None = None,
) -> Path:
    """Attention patterns of the pretrained and fine-tuned models side by side on one prompt.

    A pretraining run alone is drawn by itself. Writes ``attention.html`` (renders offline).
    """
    from wrapperlens.analysis.attention_views import write_attention_html

    loaded = open_run(run_dir)
    if loaded.run.stage == "pretrain":
        models = {"pretrained": loaded.model}
    else:
        ft, pt = open_pair(run_dir, pretrained)
        models = {"pretrained": pt.model, "fine-tuned": ft.model}
    if example < 0:
        raise ValueError(f"example must be >= 0, got {example}")
    question = loaded.question(prompt)
    inputs = question_inputs(loaded, question, example + 1, c_te, "analysis/attention")
    tokens = inputs.tokens[example]
    str_tokens = loaded.task.vocab.to_str_tokens(tokens.tolist())
    answer = loaded.task.vocab.to_str_tokens([int(inputs.answers[example])])[0]
    title = f"Attention: '{question.name}' (answer {answer}, C_Te = {c_te:g})"
    Path(out).mkdir(parents=True, exist_ok=True)
    return write_attention_html(
        Path(out) / "attention.html", models, tokens, str_tokens, layers=layers, title=title
    )


def wrapper_map_run(
    run_dir: str | Path,
    out: str | Path,
    pretrained: str | Path | None = None,
    samples: int = 128,
    c_te: float = 0.0,
    metric: str = "prob",
    patch_neurons: bool = True,
) -> dict[str, Any]:
    """Rank heads, neurons and layer parts of a pretrained / fine-tuned pair (`wrapper_map`).

    Inputs are O_PT prompts with their O_PT answers: pruning scores the pretraining loss, patching
    splices pretrained activations into the fine-tuned run and measures the O_PT metric. Writes
    ``wrapper_map.json`` and ``wrapper_map.png``.
    """
    from wrapperlens.analysis.wrapper_map import WrapperMapConfig, plot_wrapper_map, wrapper_map

    ft, pt = open_pair(run_dir, pretrained)
    _needs_finetune(ft, "wrapper-map")
    inputs = question_inputs(ft, ft.question(), samples, c_te, "analysis/wrapper-map")
    wrong = _ft_answers(ft, inputs) if metric == "logit_diff" else None
    wmap = wrapper_map(
        pt.model,
        ft.model,
        inputs.tokens,
        inputs.answers,
        -1,
        metric=make_metric(metric, inputs, wrong),
        config=WrapperMapConfig(patch_neurons=patch_neurons),
    )
    out = Path(out)
    result = {
        "run": str(run_dir),
        "pretrained": str(pt.path),
        "samples": samples,
        "c_te": c_te,
        "metric": metric,
        "table": wmap.table(),
        **wmap.to_dict(),
    }
    write_json(out / "wrapper_map.json", result)
    plot_wrapper_map(
        wmap,
        out / "wrapper_map.png",
        title=f"wrapper map: {pt.path.name} → {ft.path.name} "
        f"({metric}: {wmap.metric_pretrained:.3f} → {wmap.metric_finetuned:.3f})",
    )
    return result


# --------------------------------------------------------------------------------- plotting
def _plot_effect(
    values: Tensor, axes: list[str], str_tokens: list[str], path: Path, title: str
) -> Path:
    """A heatmap of a patching / attribution result; a trailing head / neuron axis is folded into
    the rows (layer × head), positions are columns labelled with the first example's tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = values.detach().float().cpu()
    if grid.ndim == 1:
        grid, rows, cols = grid[:, None], [f"L{l}" for l in range(len(grid))], ["all pos"]
    elif grid.ndim == 2 and axes[1] == "pos":
        rows, cols = [f"L{l}" for l in range(grid.shape[0])], str_tokens
    elif grid.ndim == 2:  # [layer, head|neuron]
        rows, cols = [f"L{l}" for l in range(grid.shape[0])], [str(i) for i in range(grid.shape[1])]
    else:  # [layer, pos, unit] -> [(layer, unit), pos]
        n_layers, n_pos, n_units = grid.shape
        grid = grid.permute(0, 2, 1).reshape(n_layers * n_units, n_pos)
        tag = "H" if axes[-1] == "head" else "N"
        rows = [f"L{l}{tag}{u}" for l in range(n_layers) for u in range(n_units)]
        cols = str_tokens
    bound = float(grid.abs().max()) or 1.0
    height = min(2 + 0.25 * grid.shape[0], 30)
    width = min(4 + 0.3 * grid.shape[1], 30)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(
        grid.numpy(), aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    if len(rows) <= 64:
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
    if len(cols) <= 128:
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
