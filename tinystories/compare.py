"""Compare checkpoints layer by layer: what did fine-tuning change, and where?

For two or more HookedTransformers of one shape run on the same inputs, at every residual point
(B0 = `blocks.0.hook_resid_pre`, B1..BL = `blocks.{l}.hook_resid_post`), each model against a
reference (the first one, e.g. the pretrained model):

- **cosine similarity**: mean over real tokens of cos(x_t, y_t) of the two residual vectors;
- **relative norm of the difference**: ||X - Y||_F / ||X||_F over all real tokens (0: identical);
- **linear CKA** (Kornblith et al. 2019): with column-centred X, Y ([tokens, d_model]),
  ||Yᵀ X||_F² / (||Xᵀ X||_F ||Yᵀ Y||_F). 1 means the two representations differ by a rotation
  and an isotropic scaling, so CKA near 1 with a large relative norm says "the same features,
  moved";
- **weight change** per component (`embed`, `blocks.{l}.attn`, `blocks.{l}.mlp`,
  `blocks.{l}.ln1`, `unembed`, ...): ||W - W_ref||_F / ||W_ref||_F over the component's
  parameters (the absolute norm too, and None where the reference norm is 0);
- **probe transfer**: feature probes trained on one model's residual stream (bias-free, BCE,
  mean of the last k tokens, as `wrapperlens.analysis.probing.probe_features_by_layer`),
  evaluated on every model's residual stream of the same held-out inputs. If a probe trained on
  the pretrained model still reads Twist off the fine-tuned model, fine-tuning left that
  direction in place.

`comparison_inputs` gives the text every comparison runs on (the pipeline and
`wrapperlens tinystories compare` both use it, so they compare checkpoints on the same stories);
`compare_checkpoints` returns a JSON-ready dict; `plot_comparison` writes PNGs. Activations of
all real tokens are kept in memory per model: points × tokens × d_model floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from wrapperlens.analysis.probing import (
    ProbeConfig,
    residual_hook_names,
    residual_mean_last,
    train_probes,
)

__all__ = [
    "comparison_inputs",
    "residual_activations",
    "cosine_similarity_by_point",
    "relative_difference_norm",
    "linear_cka",
    "weight_change",
    "probe_transfer",
    "compare_checkpoints",
    "plot_comparison",
]


def comparison_inputs(
    prepared: str | Path, tokenizer: PreTrainedTokenizerBase, n_ctx: int, n_stories: int = 64
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Right-padded tokens and lengths of the first `n_stories` held-out stories (`all.test`),
    as the models were trained on them (`tinystories.prepare.training_texts`), cut to `n_ctx`."""
    from tinystories.lm import encode_records, pad_id_of
    from tinystories.prepare import training_texts
    from tinystories.tokenizer import pad_batch

    texts = training_texts(prepared, "all", "test", limit=n_stories)
    if not texts:
        raise ValueError(f"{prepared}: no held-out stories to compare on (all.test is empty)")
    sequences, _ = encode_records(tokenizer, texts, n_ctx)
    tokens, real = pad_batch(sequences, pad_id_of(tokenizer))
    return tokens, real.sum(-1)


def _real_mask(tokens: Tensor, lengths: Tensor | None) -> Bool[Tensor, "batch pos"]:
    if lengths is None:
        return torch.ones(tokens.shape, dtype=torch.bool)
    return torch.arange(tokens.shape[1])[None, :] < lengths.cpu()[:, None]


def residual_activations(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, "batch"] | None = None,
    chunk: int = 64,
) -> Float[Tensor, "point n_tokens d_model"]:
    """The residual stream at every real token (row-major), at the L + 1 points B0..BL."""
    names = residual_hook_names(model.cfg.n_layers)
    real = _real_mask(tokens, lengths)
    out = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], chunk):
            rows = slice(start, start + chunk)
            _, cache = model.run_with_cache(tokens[rows].to(model.cfg.device),
                                            names_filter=lambda n: n in names)
            mask = real[rows]
            out.append(torch.stack([cache[n].float().cpu()[mask] for n in names]))
    return torch.cat(out, dim=1)


def cosine_similarity_by_point(
    x: Float[Tensor, "point n d_model"], y: Float[Tensor, "point n d_model"]
) -> list[float]:
    """Mean over tokens of the cosine similarity of x_t and y_t, per point."""
    return torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1).mean(1).tolist()


def relative_difference_norm(
    x: Float[Tensor, "point n d_model"], y: Float[Tensor, "point n d_model"]
) -> list[float]:
    """||x - y||_F / ||x||_F per point (x is the reference)."""
    x, y = x.double(), y.double()
    return ((x - y).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).tolist()


def linear_cka(x: Float[Tensor, "n d1"], y: Float[Tensor, "n d2"]) -> float:
    """Linear CKA of two representations of the same n inputs (feature-space formula)."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(
            f"linear_cka needs the same n >= 2 rows, got {x.shape[0]} and {y.shape[0]}"
        )
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = (y.T @ x).norm() ** 2
    denom = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / denom) if denom > 0 else float("nan")


def _component(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:3]) if parts[0] == "blocks" else parts[0]


def weight_change(
    reference: HookedTransformer, other: HookedTransformer
) -> dict[str, dict[str, float | None]]:
    """Per component: {"relative": ||ΔW||/||W_ref|| (None if ||W_ref|| = 0), "absolute": ||ΔW||}.

    Parameters only (not buffers such as attention masks); the norms are over all parameters of
    a component together. A "total" entry covers every parameter.
    """
    ref_params = dict(reference.named_parameters())
    other_params = dict(other.named_parameters())
    if ref_params.keys() != other_params.keys():
        raise ValueError("weight_change: the two models have different parameters")
    sums: dict[str, list[float]] = {}
    for name, w_ref in ref_params.items():
        w_other = other_params[name]
        if w_ref.shape != w_other.shape:
            raise ValueError(f"weight_change: {name} has shapes {tuple(w_ref.shape)} and "
                             f"{tuple(w_other.shape)}")
        diff = float(((w_other.detach().double() - w_ref.detach().double()) ** 2).sum())
        ref = float((w_ref.detach().double() ** 2).sum())
        for key in (_component(name), "total"):
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += diff
            acc[1] += ref
    return {
        key: {"relative": math.sqrt(d) / math.sqrt(r) if r > 0 else None, "absolute": math.sqrt(d)}
        for key, (d, r) in sums.items()
    }


def _probe_split(n: int, config: ProbeConfig) -> tuple[Tensor, Tensor]:
    # The split of wrapperlens.analysis.probing (same seed, same permutation), so a probe
    # transferred to its own model scores what probe_features_by_layer reports.
    n_test = round(n * config.test_fraction)
    if not 1 <= n_test < n:
        raise ValueError(f"{n} samples with probe.test_fraction={config.test_fraction} leave an "
                         "empty split")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    return perm[n_test:], perm[:n_test]


def probe_transfer(
    models: dict[str, HookedTransformer],
    tokens: Int[Tensor, "batch pos"],
    labels: Float[Tensor, "batch n_features"],
    lengths: Int[Tensor, "batch"] | None = None,
    last_k: int = 10,
    config: ProbeConfig = ProbeConfig(),
) -> dict[str, dict[str, list[list[float]]]]:
    """Held-out accuracy of probes trained on model A and applied to model B.

    With `config.standardize`, A's train-split mean and std standardise B's activations too (the
    standardisation is part of A's probe).

    Returns:
        `out[A][B][point]` = accuracy per feature of A's probe on B's residual stream.
    """
    labels = labels.float().cpu()
    train, test = _probe_split(labels.shape[0], config)
    features = {
        name: residual_mean_last(m, tokens, last_k, lengths, None, config.activation_batch_size)
        for name, m in models.items()
    }
    out: dict[str, dict[str, list[list[float]]]] = {}
    for source, x in features.items():
        mean = x[:, train].mean(1, keepdim=True) if config.standardize else 0.0
        std = x[:, train].std(1, keepdim=True).clamp_min(1e-6) if config.standardize else 1.0
        weight, _ = train_probes((x - mean) / std, labels, train, config)
        out[source] = {}
        for target, y in features.items():
            if y.shape != x.shape:
                raise ValueError(f"probe_transfer: {source} and {target} have different shapes")
            pred = (torch.bmm((y - mean) / std, weight) > 0).float()
            out[source][target] = (pred[:, test] == labels[test]).float().mean(1).tolist()
    return out


def compare_checkpoints(
    models: dict[str, HookedTransformer],
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, "batch"] | None = None,
    probe_tokens: Int[Tensor, "batch2 pos2"] | None = None,
    probe_labels: Float[Tensor, "batch2 n_features"] | None = None,
    probe_lengths: Int[Tensor, "batch2"] | None = None,
    feature_names: Sequence[str] | None = None,
    probe_config: ProbeConfig = ProbeConfig(),
    last_k: int = 10,
) -> dict[str, Any]:
    """Every comparison of the module docstring, each model against the first (the reference).

    Args:
        models: {name: model}, two or more, same architecture; the first is the reference.
        tokens, lengths: Inputs of the activation comparisons (right-padded; lengths optional).
        probe_tokens, probe_labels, probe_lengths: Inputs and 0/1 labels of the probe transfer
            (skipped when None).
        feature_names: Names of the label columns.

    Returns:
        {"reference", "models", "points", "cosine", "relative_norm", "cka", "weight_change"
        [, "probe_transfer", "feature_names"]}; per-point lists follow "points".
    """
    if len(models) < 2:
        raise ValueError(f"compare_checkpoints needs two or more models, got {len(models)}")
    names = list(models)
    reference = names[0]
    n_layers = {m.cfg.n_layers for m in models.values()}
    if len(n_layers) != 1:
        raise ValueError(f"the models have different numbers of layers: {sorted(n_layers)}")
    points = [f"B{p}" for p in range(n_layers.pop() + 1)]
    ref_acts = residual_activations(models[reference], tokens, lengths)
    report: dict[str, Any] = {"reference": reference, "models": names, "points": points,
                              "cosine": {}, "relative_norm": {}, "cka": {}, "weight_change": {}}
    for name in names[1:]:
        acts = residual_activations(models[name], tokens, lengths)
        report["cosine"][name] = cosine_similarity_by_point(ref_acts, acts)
        report["relative_norm"][name] = relative_difference_norm(ref_acts, acts)
        report["cka"][name] = [linear_cka(ref_acts[p], acts[p]) for p in range(len(points))]
        report["weight_change"][name] = weight_change(models[reference], models[name])
    if probe_tokens is not None and probe_labels is not None:
        report["probe_transfer"] = probe_transfer(models, probe_tokens, probe_labels,
                                                  probe_lengths, last_k, probe_config)
        report["feature_names"] = list(feature_names or
                                       [f"feature {i}" for i in range(probe_labels.shape[1])])
    return report


def plot_comparison(report: dict[str, Any], out_dir: str | Path, feature: int = 0) -> list[Path]:
    """PNG plots of a `compare_checkpoints` report; returns the written paths.

    - `residual_similarity.png`: cosine, relative norm and CKA against the point;
    - `weight_change.png`: relative weight change per component, one bar group per model;
    - `probe_transfer.png` (if probed): accuracy of feature `feature`, trained on rows, applied
      to columns, one heatmap per point.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    x = range(len(report["points"]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, key, label in zip(axes, ("cosine", "relative_norm", "cka"),
                              ("cosine similarity", "||X - Y|| / ||X||", "linear CKA")):
        for name, values in report[key].items():
            ax.plot(x, values, marker="o", label=name)
        ax.set(xticks=list(x), xticklabels=report["points"], xlabel="residual stream after block",
               ylabel=label, title=f"{label} vs {report['reference']}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "residual_similarity.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    components = [c for c in next(iter(report["weight_change"].values())) if c != "total"]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(components) + 2), 4))
    n_models = len(report["weight_change"])
    for i, (name, changes) in enumerate(report["weight_change"].items()):
        values = [changes[c]["relative"] or 0.0 for c in components]
        ax.bar([j + i / (n_models + 1) for j in range(len(components))], values,
               width=1 / (n_models + 1), label=name)
    ax.set(xticks=list(range(len(components))), ylabel="||W - W_ref|| / ||W_ref||",
           title=f"weight change vs {report['reference']}")
    ax.set_xticklabels(components, rotation=60, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "weight_change.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    if "probe_transfer" in report:
        transfer = report["probe_transfer"]
        names = list(transfer)
        n_points = len(report["points"])
        fig, axes = plt.subplots(1, n_points, figsize=(2.2 * n_points + 2, 2.6 + 0.25 * len(names)),
                                 squeeze=False)
        for p, ax in enumerate(axes[0]):
            grid = [[transfer[a][b][p][feature] for b in names] for a in names]
            image = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis")
            ax.set_title(report["points"][p], fontsize=9)
            ax.set_xticks(range(len(names)))
            ax.set_yticks(range(len(names)))
            ax.set_xticklabels(names if p == 0 else [""] * len(names), rotation=90, fontsize=7)
            ax.set_yticklabels(names if p == 0 else [""] * len(names), fontsize=7)
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
        fig.suptitle(f"probe transfer ({report['feature_names'][feature]}): trained on row, "
                     "applied to column")
        written.append(out_dir / "probe_transfer.png")
        fig.savefig(written[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return written
