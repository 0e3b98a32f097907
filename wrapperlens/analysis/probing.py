"""Linear probes on the residual stream after every block (Jain et al. 2024, §5.1, App. D).

A probe asks whether a quantity (the count of `a`, a story feature) is *linearly decodable* from
the residual stream, block by block: B0 is the embedding output, B1..BL the outputs of the L
blocks, so a model has L + 1 probe points (`residual_points`). If the fine-tuned model still
decodes count(a) mid-network while its output says count(b), the capability is there and only
its read-out changed.

Two read-outs are supported:

- `probe_accuracy_by_layer`: integer class labels at one position per sample (default: the last
  position; pass the answer-request token's index), softmax cross-entropy, with a bias. The paper
  probes the residual "corresponding to the answer token" with output size = vocabulary; here the
  number of classes is `labels.max() + 1` unless given.
- `probe_features_by_layer`: multi-label binary features (TinyStories story features), a
  bias-free linear map with one logit per feature on the mean of the last k positions, BCE loss,
  accuracy at logit > 0 (as the paper's TinyStories code).

The residual vectors come from `residual_points` and the probes of all points are trained
together by `linear_probes`; this module draws the train/test split, adds the baselines and
reports. Every report also probes a **randomly initialised model of the same shape** (random
features decode a surprising amount at small scale) and gives the majority-class rate of the test
split.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.figures import save_figure
from wrapperlens.analysis.linear_probes import (
    PROBE_PRESETS,
    ProbeConfig,
    probe_split,
    standardize,
    train_probes,
)
from wrapperlens.analysis.positions import Positions
from wrapperlens.analysis.residual_points import (
    check_points,
    residual_at_positions,
    residual_hook_names,
    residual_mean_last,
)
from wrapperlens.models import hooked_transformer

__all__ = [
    "ProbeConfig",
    "PROBE_PRESETS",
    "ProbeReport",
    "residual_hook_names",
    "residual_at_positions",
    "residual_mean_last",
    "train_probes",
    "probe_accuracy_by_layer",
    "probe_features_by_layer",
    "plot_probe_accuracy",
]


def _with_random_baselines(
    models: dict[str, HookedTransformer], seed: int, inits: int = 1
) -> tuple[dict[str, HookedTransformer], list[str]]:
    """Add `inits` randomly initialised models (init seeds seed, seed + 1, ...) per distinct
    shape among `models`: "random init", then "random init #2", ... (with "(name)" after
    "random init" when the models have several shapes)."""
    if not models:
        raise ValueError("models is empty: pass at least one {name: HookedTransformer}")
    if inits < 1:
        raise ValueError(f"random_inits={inits}: at least one random-init baseline is needed")
    shapes: dict[tuple, str] = {}
    for name, model in models.items():
        shape = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
        shapes.setdefault(shape, name)
    out, baselines = dict(models), []
    for shape, name in shapes.items():
        for i in range(inits):
            label = "random init" if len(shapes) == 1 else f"random init ({name})"
            label += f" #{i + 1}" if i else ""
            if label in out:
                raise ValueError(f"model name {label!r} is reserved for the random baseline")
            out[label] = hooked_transformer(copy.deepcopy(models[name].cfg),
                                            init_seed=seed + i).eval()
            baselines.append(label)
    return out, baselines


@dataclass
class ProbeReport:
    """Held-out probe accuracy per point for several models (random-init baselines included).

    For feature probes `accuracy[model][point]` is a list (one entry per feature) and
    `majority_rate` one rate per feature.
    """

    point_names: list[str]
    accuracy: dict[str, list]
    train_accuracy: dict[str, list]
    majority_rate: float | list[float]
    baselines: list[str]
    n_train: int
    n_test: int
    config: ProbeConfig
    feature_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "config": asdict(self.config)}

    def table(self) -> str:
        """A plain-text table: one row per model, one column per point (mean over features)."""
        def mean(v):
            return sum(v) / len(v) if isinstance(v, list) else v
        width = max(len(m) for m in self.accuracy) + 2
        lines = ["model".ljust(width) + "".join(p.rjust(7) for p in self.point_names)]
        for name, accs in self.accuracy.items():
            lines.append(name.ljust(width) + "".join(f"{mean(a):7.3f}" for a in accs))
        majority = mean(self.majority_rate)
        lines.append(f"majority rate: {majority:.3f}; n_train={self.n_train}, n_test={self.n_test}")
        return "\n".join(lines)


def probe_accuracy_by_layer(
    models: dict[str, HookedTransformer],
    tokens: Int[Tensor, "batch pos"],
    labels: Int[Tensor, "batch"] | Callable[[Tensor], Tensor],
    positions: Positions = -1,
    config: ProbeConfig = ProbeConfig(),
    n_classes: int | None = None,
    points: Sequence[int] | None = None,
    baseline_seed: int = 12345,
    random_inits: int = 1,
) -> ProbeReport:
    """Train class-label probes at every residual point of every model; report test accuracy.

    Args:
        models: {name: model}, e.g. {"pretrained": pt, "fine-tuned": ft}; a random-init model of
            each distinct shape is added as a baseline.
        tokens: Probe inputs, shared by every model.
        labels: One integer class per sample, or ``labels(tokens) -> [batch]``.
        positions: Where to read the residual (int or per-sample index; default last token).
        n_classes: Probe output size; default labels.max() + 1 (the paper uses the vocab size).
        points: Subset of probe points 0..L (default all); must exist in every model.
        baseline_seed: Init seed of the (first) random-init baseline.
        random_inits: Random-init baselines per model shape (init seeds `baseline_seed`,
            `baseline_seed + 1`, ...): several show how much a random init's probe varies.

    Returns:
        A `ProbeReport`: `accuracy[model][i]` is the test accuracy at point `point_names[i]`.
    """
    labels = labels(tokens) if callable(labels) else labels
    labels = labels.long().cpu()
    if labels.shape != (tokens.shape[0],) or int(labels.min()) < 0:
        raise ValueError(f"labels must be non-negative with shape [{tokens.shape[0]}], "
                         f"got shape {tuple(labels.shape)}")
    n_classes = n_classes or int(labels.max()) + 1
    if int(labels.max()) >= n_classes:
        raise ValueError(f"label {int(labels.max())} does not fit n_classes={n_classes}")
    train, test = probe_split(len(labels), config)
    majority = torch.bincount(labels[train], minlength=n_classes).argmax()
    models, baselines = _with_random_baselines(models, baseline_seed, random_inits)
    acc, train_acc, names = {}, {}, None
    for name, model in models.items():
        chosen = check_points(model, points)
        names = names or [f"B{p}" for p in chosen]
        x = residual_at_positions(model, tokens, positions, chosen, config.activation_batch_size)
        x = standardize(x, train) if config.standardize else x
        weight, bias = train_probes(x, labels, train, config, n_classes)
        pred = torch.baddbmm(bias, x, weight).argmax(-1)  # [point, n]
        acc[name] = (pred[:, test] == labels[test]).float().mean(1).tolist()
        train_acc[name] = (pred[:, train] == labels[train]).float().mean(1).tolist()
    return ProbeReport(names, acc, train_acc, (labels[test] == majority).float().mean().item(),
                       baselines, len(train), len(test), config)


def probe_features_by_layer(
    models: dict[str, HookedTransformer],
    tokens: Int[Tensor, "batch pos"],
    features: Float[Tensor, "batch n_features"],
    feature_names: Sequence[str] | None = None,
    last_k: int = 10,
    lengths: Int[Tensor, "batch"] | None = None,
    config: ProbeConfig = ProbeConfig(),
    points: Sequence[int] | None = None,
    baseline_seed: int = 12345,
) -> ProbeReport:
    """Multi-label bias-free probes (one logit per feature) on the mean of the last k tokens.

    Args:
        features: 0/1 per sample and feature (e.g. Twist, Foreshadowing, ... of a story).
        lengths: Unpadded lengths for right-padded batches; None = every row is full length.

    Returns:
        A `ProbeReport` whose `accuracy[model][i][f]` is the test accuracy of feature f at
        point `point_names[i]`.
    """
    features = features.float().cpu()
    if not bool(((features == 0) | (features == 1)).all()):
        raise ValueError("features must be 0/1 (one binary label per sample and feature)")
    n_features = features.shape[1]
    feature_names = list(feature_names or [f"feature {i}" for i in range(n_features)])
    if len(feature_names) != n_features:
        raise ValueError(f"{len(feature_names)} feature_names for {n_features} features")
    train, test = probe_split(features.shape[0], config)
    majority = (features[train].mean(0) >= 0.5).float()
    models, baselines = _with_random_baselines(models, baseline_seed)
    acc, train_acc, names = {}, {}, None
    for name, model in models.items():
        chosen = check_points(model, points)
        names = names or [f"B{p}" for p in chosen]
        x = residual_mean_last(model, tokens, last_k, lengths, chosen, config.activation_batch_size)
        x = standardize(x, train) if config.standardize else x
        weight, _ = train_probes(x, features, train, config)
        pred = (torch.bmm(x, weight) > 0).float()  # [point, n, feature]
        acc[name] = (pred[:, test] == features[test]).float().mean(1).tolist()
        train_acc[name] = (pred[:, train] == features[train]).float().mean(1).tolist()
    majority_rate = (features[test] == majority).float().mean(0).tolist()
    return ProbeReport(names, acc, train_acc, majority_rate, baselines, len(train), len(test),
                       config, feature_names)


def plot_probe_accuracy(report: ProbeReport, path: str | Path, title: str | None = None) -> Path:
    """Accuracy against probe point, one line per model (baselines dotted), majority dashed.

    Feature reports get one panel per feature.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = report.feature_names or [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    x = range(len(report.point_names))
    for i, (ax, feature) in enumerate(zip(axes[0], panels)):
        for name, accs in report.accuracy.items():
            ys = [a[i] for a in accs] if feature else accs
            style = ":" if name in report.baselines else "-"
            ax.plot(x, ys, style, marker="o", label=name)
        majority = report.majority_rate[i] if feature else report.majority_rate
        ax.axhline(majority, color="gray", linestyle="--", label="majority class")
        ax.set(xticks=list(x), xticklabels=report.point_names, ylim=(0, 1.02),
               xlabel="residual stream after block", ylabel="probe accuracy (test)")
        ax.set_title(feature or title or "linear probe accuracy by layer")
    axes[0][0].legend(fontsize=8)
    if title and report.feature_names:
        fig.suptitle(title)
    return save_figure(fig, path)
