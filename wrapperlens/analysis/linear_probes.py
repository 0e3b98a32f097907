"""Linear probes trained together, one per probe point, and how they are trained.

The probes of all points are one batched linear layer ``[point, d_model, out]`` trained in one
loop: each point's loss depends only on its own weights, so this equals training them one by one
(and is much faster than a loop over points). `ProbeConfig` holds the optimiser settings;
`PROBE_PRESETS` the paper's (App. D) and a fast default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["ProbeConfig", "PROBE_PRESETS", "train_probes", "standardize", "probe_split"]


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


def train_probes(
    features: Float[Tensor, "point n d_model"],
    targets: Int[Tensor, "n"] | Float[Tensor, "n n_features"],
    train: Int[Tensor, "n_train"],
    config: ProbeConfig,
    n_classes: int | None = None,
) -> tuple[Float[Tensor, "point d_model out"], Float[Tensor, "point 1 out"]]:
    """Fit one linear probe per point on the `train` rows; return (weight, bias) per point.

    Integer `targets` train a softmax probe with a bias over `n_classes`; float (0/1) targets
    of shape [n, n_features] train a bias-free multi-label probe with BCE.

    Returns:
        `weight [point, d_model, out]` and `bias [point, 1, out]` (all zeros for multi-label
        probes), with `out` = n_classes or n_features; logits are ``x @ weight + bias``.
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


def standardize(
    features: Float[Tensor, "point n d_model"], train: Int[Tensor, "n_train"]
) -> Float[Tensor, "point n d_model"]:
    """Z-score every feature of every point with the mean and std of the `train` rows."""
    mean = features[:, train].mean(1, keepdim=True)
    std = features[:, train].std(1, keepdim=True).clamp_min(1e-6)
    return (features - mean) / std


def probe_split(
    n: int, config: ProbeConfig
) -> tuple[Int[Tensor, "n_train"], Int[Tensor, "n_test"]]:
    """(train rows, test rows) of `n` samples: a permutation seeded by `config.seed`, the first
    `round(n * config.test_fraction)` of it held out."""
    n_test = round(n * config.test_fraction)
    if not 1 <= n_test < n:
        raise ValueError(
            f"{n} samples with probe.test_fraction={config.test_fraction} leave an empty split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    return perm[n_test:], perm[:n_test]
