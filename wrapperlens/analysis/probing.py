"""Linear probes on the residual stream after every block (Jain et al. 2024, §5.1, App. D).

A probe asks whether a quantity (the count of `a`, a story feature) is *linearly decodable* from
the residual stream, block by block: B0 is the embedding output (``blocks.0.hook_resid_pre``),
B1..BL the outputs of the L blocks (``blocks.{l}.hook_resid_post``), so a model has L + 1 probe
points. If the fine-tuned model still decodes count(a) mid-network while its output says count(b),
the capability is there and only its read-out changed.

Two read-outs are supported:

- `probe_accuracy_by_layer`: integer class labels at one position per sample (default: the last
  position; pass the answer-request token's index), softmax cross-entropy, with a bias. The paper
  probes the residual "corresponding to the answer token" with output size = vocabulary; here the
  number of classes is `labels.max() + 1` unless given.
- `probe_features_by_layer`: multi-label binary features (TinyStories story features), a
  bias-free linear map with one logit per feature on the mean of the last k positions, BCE loss,
  accuracy at logit > 0 (as the paper's TinyStories code).

Activations are cached with `run_with_cache(names_filter=...)` for the probe points only, and the
forward stops after the last needed block (`stop_at_layer`). The probes of all points are one
batched linear layer ``[point, d_model, out]`` trained together in one loop (each point's loss
depends only on its own weights, so this equals training them one by one). Every report also
probes a **randomly initialised model of the same shape** (random features decode a surprising
amount at small scale) and gives the majority-class rate of the test split.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.positions import Positions, gather_positions, resolve_positions
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


@dataclass(frozen=True)
class ProbeConfig:
    """How the probes are trained.

    Attributes:
        steps: Optimiser steps (all probe points train together).
        lr: AdamW learning rate (the maximum when `lr_milestones` decay it).
        lr_milestones: Steps at which the LR is multiplied by `lr_gamma`.
        lr_gamma: LR decay factor at each milestone.
        weight_decay: AdamW weight decay.
        batch_size: Samples per step; 0 = full batch.
        test_fraction: Held-out fraction the reported accuracy is measured on.
        standardize: Z-score each feature with train-split statistics first. This is an affine
            map of the input, so the probe stays linear; it only makes optimisation insensitive to
            the residual stream's scale (tiny at TransformerLens's initialisation).
        seed: Seed of the train/test split and minibatch order.
        activation_batch_size: Samples per forward pass when caching activations.
        train_threads: torch CPU threads while the probes train (restored afterwards); 0 keeps
            torch's setting. The probes' matmuls are tiny, and on a busy 2-core machine one
            thread ran a probe step ~10x faster than two.
    """

    steps: int = 300
    lr: float = 1e-2
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 0
    test_fraction: float = 0.25
    standardize: bool = True
    seed: int = 0
    activation_batch_size: int = 256
    train_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "activation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"probe.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"probe.lr must be > 0, got {self.lr}")
        if self.train_threads < 0:
            raise ValueError(f"probe.train_threads must be >= 0, got {self.train_threads}")
        if self.batch_size < 0:
            raise ValueError(
                f"probe.batch_size must be >= 0 (0 = full batch), got {self.batch_size}"
            )
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"probe.test_fraction must be in (0, 1), got {self.test_fraction}")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"probe.lr_milestones must be increasing, got {self.lr_milestones}")


PROBE_PRESETS: dict[str, ProbeConfig] = {
    # Paper App. D: 4K iterations, AdamW, max LR 1e-3, x0.1 at 2K, 3K and 3.5K. Batch size and
    # weight decay are not stated: 96 (the fine-tuning batch) and AdamW's default 0.01.
    "paper": ProbeConfig(
        steps=4000, lr=1e-3, lr_milestones=(2000, 3000, 3500), batch_size=96, standardize=False
    ),
    "fast": ProbeConfig(),
}


def residual_hook_names(n_layers: int) -> list[str]:
    """The L + 1 probe points: B0 = embedding output, then every block's output."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(n_layers)]


def _residual_points(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    reduce: Callable[[Tensor, slice], Tensor],
    points: Sequence[int],
    chunk: int,
) -> Float[Tensor, "point batch d_model"]:
    names = [residual_hook_names(model.cfg.n_layers)[p] for p in points]
    wanted = set(names)
    stop = max(points)  # B_p is the output of block p - 1: the forward can stop after it
    out = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], chunk):
            rows = slice(start, start + chunk)
            _, cache = model.run_with_cache(
                tokens[rows].to(model.cfg.device),
                names_filter=lambda n: n in wanted,
                stop_at_layer=max(stop, 1),
            )
            out.append(torch.stack([reduce(cache[n], rows) for n in names]).float().cpu())
    return torch.cat(out, dim=1)


def _check_points(model: HookedTransformer, points: Sequence[int] | None) -> list[int]:
    n_points = model.cfg.n_layers + 1
    points = list(range(n_points)) if points is None else list(points)
    if not points or any(not 0 <= p < n_points for p in points):
        raise ValueError(f"points must be non-empty and in [0, {n_points - 1}], got {points}")
    return points


def residual_at_positions(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    positions: Positions = -1,
    points: Sequence[int] | None = None,
    chunk: int = 256,
) -> Float[Tensor, "point batch d_model"]:
    """The residual stream at one position per sample, at every probe point (or `points`)."""
    index = resolve_positions(positions, tokens.shape[0], tokens.shape[1])
    return _residual_points(
        model, tokens, lambda act, rows: gather_positions(act, index[rows]),
        _check_points(model, points), chunk,
    )


def residual_mean_last(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    last_k: int = 10,
    lengths: Int[Tensor, "batch"] | None = None,
    points: Sequence[int] | None = None,
    chunk: int = 256,
) -> Float[Tensor, "point batch d_model"]:
    """Mean of the residual stream over each sample's last `last_k` tokens.

    Args:
        lengths: Real (unpadded) length of each right-padded sample; None = all full length.
    """
    batch, seq_len = tokens.shape
    lengths = torch.full((batch,), seq_len) if lengths is None else lengths.long().cpu()
    if not 1 <= last_k <= int(lengths.min()) or int(lengths.max()) > seq_len:
        raise ValueError(f"need 1 <= last_k={last_k} <= every length <= {seq_len}; "
                         f"lengths range [{int(lengths.min())}, {int(lengths.max())}]")
    idx = torch.arange(seq_len)
    mask = ((idx >= lengths[:, None] - last_k) & (idx < lengths[:, None])).float() / last_k

    def reduce(act: Tensor, rows: slice) -> Tensor:
        return torch.einsum("bpd,bp->bd", act, mask[rows].to(act.device, act.dtype))

    return _residual_points(model, tokens, reduce, _check_points(model, points), chunk)


def train_probes(
    features: Float[Tensor, "point n d_model"],
    targets: Int[Tensor, "n"] | Float[Tensor, "n n_features"],
    train: Int[Tensor, "n_train"],
    config: ProbeConfig,
    n_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Fit one linear probe per point on the `train` rows; return (weight, bias) per point.

    Integer `targets` train a softmax probe with a bias over `n_classes`; float (0/1) targets
    of shape [n, n_features] train a bias-free multi-label probe with BCE.
    """
    multilabel = targets.is_floating_point()
    n_points, _, d_model = features.shape
    n_out = targets.shape[1] if multilabel else (n_classes or int(targets.max()) + 1)
    x, y = features[:, train], targets[train]
    weight = torch.zeros(n_points, d_model, n_out, requires_grad=True)
    bias = torch.zeros(n_points, 1, n_out, requires_grad=not multilabel)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.train_threads or threads)
    try:
        _optimise(x, y, weight, bias, multilabel, config)
    finally:
        torch.set_num_threads(threads)
    return weight.detach(), bias.detach()


def _optimise(x, y, weight, bias, multilabel: bool, config: ProbeConfig) -> None:
    n_points, n_train, n_out = x.shape[0], x.shape[1], weight.shape[2]
    params = [weight, bias] if not multilabel else [weight]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(config.lr_milestones), config.lr_gamma)
    gen = torch.Generator().manual_seed(config.seed)
    for _ in range(config.steps):
        rows = slice(None)
        if 0 < config.batch_size < n_train:
            rows = torch.randperm(n_train, generator=gen)[: config.batch_size]
        logits = torch.baddbmm(bias, x[:, rows], weight)  # [point, batch, out]
        # Every point has the same number of rows, so n_points * (mean over all rows) is the
        # sum of the points' own mean losses. (A [point, class, batch] layout is ~8x slower.)
        if multilabel:
            target = y[rows].expand(n_points, -1, -1)
            loss = n_points * F.binary_cross_entropy_with_logits(logits, target)
        else:
            target = y[rows].repeat(n_points)
            loss = n_points * F.cross_entropy(logits.reshape(-1, n_out), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def _standardize(features: Tensor, train: Tensor) -> Tensor:
    mean = features[:, train].mean(1, keepdim=True)
    std = features[:, train].std(1, keepdim=True).clamp_min(1e-6)
    return (features - mean) / std


def _split(n: int, config: ProbeConfig) -> tuple[Tensor, Tensor]:
    n_test = round(n * config.test_fraction)
    if not 1 <= n_test < n:
        raise ValueError(
            f"{n} samples with probe.test_fraction={config.test_fraction} leave an empty split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    return perm[n_test:], perm[:n_test]


def _with_random_baselines(
    models: dict[str, HookedTransformer], seed: int
) -> tuple[dict[str, HookedTransformer], list[str]]:
    """Add one randomly initialised model per distinct shape among `models`."""
    if not models:
        raise ValueError("models is empty: pass at least one {name: HookedTransformer}")
    shapes: dict[tuple, str] = {}
    for name, model in models.items():
        shape = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
        shapes.setdefault(shape, name)
    out, baselines = dict(models), []
    for shape, name in shapes.items():
        label = "random init" if len(shapes) == 1 else f"random init ({name})"
        if label in out:
            raise ValueError(f"model name {label!r} is reserved for the random baseline")
        out[label] = hooked_transformer(copy.deepcopy(models[name].cfg), init_seed=seed).eval()
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
    """
    labels = labels(tokens) if callable(labels) else labels
    labels = labels.long().cpu()
    if labels.shape != (tokens.shape[0],) or int(labels.min()) < 0:
        raise ValueError(f"labels must be non-negative with shape [{tokens.shape[0]}], "
                         f"got shape {tuple(labels.shape)}")
    n_classes = n_classes or int(labels.max()) + 1
    if int(labels.max()) >= n_classes:
        raise ValueError(f"label {int(labels.max())} does not fit n_classes={n_classes}")
    train, test = _split(len(labels), config)
    majority = torch.bincount(labels[train], minlength=n_classes).argmax()
    models, baselines = _with_random_baselines(models, baseline_seed)
    acc, train_acc, names = {}, {}, None
    for name, model in models.items():
        chosen = _check_points(model, points)
        names = names or [f"B{p}" for p in chosen]
        x = residual_at_positions(model, tokens, positions, chosen, config.activation_batch_size)
        x = _standardize(x, train) if config.standardize else x
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
        A `ProbeReport` whose accuracies are per point a list over features.
    """
    features = features.float().cpu()
    if not bool(((features == 0) | (features == 1)).all()):
        raise ValueError("features must be 0/1 (one binary label per sample and feature)")
    n_features = features.shape[1]
    feature_names = list(feature_names or [f"feature {i}" for i in range(n_features)])
    if len(feature_names) != n_features:
        raise ValueError(f"{len(feature_names)} feature_names for {n_features} features")
    train, test = _split(features.shape[0], config)
    majority = (features[train].mean(0) >= 0.5).float()
    models, baselines = _with_random_baselines(models, baseline_seed)
    acc, train_acc, names = {}, {}, None
    for name, model in models.items():
        chosen = _check_points(model, points)
        names = names or [f"B{p}" for p in chosen]
        x = residual_mean_last(model, tokens, last_k, lengths, chosen, config.activation_batch_size)
        x = _standardize(x, train) if config.standardize else x
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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
