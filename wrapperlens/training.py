"""One training loop for pretraining, fine-tuning and reverse fine-tuning, nanoGPT style.

The loop is task-agnostic: it takes a HookedTransformer, a `batch_fn(step)` returning token ids
and a mask of the target positions that count in the loss, and an optional `evaluate(model, step)`
returning named metrics. The stages differ only in their data, learning rate and schedule, which
the stage specs of `wrapperlens.stages` wire up.

One step, in order: (1) the learning rate of the step from `lr_at`; (2) the batch of the step
(on `W` data-parallel ranks, this rank's rows of it, see `wrapperlens.distributed`); (3) forward,
loss, backward; (4) gradients summed over ranks; (5) clip, optimizer step (AdamW, or SGD
with momentum for the compiled models); (6) at an evaluation step,
`evaluate(model, step)` and a `metrics.jsonl` record; (7) at a checkpoint step, the trainer state.

Files (their names and layout belong to `wrapperlens.runs.RunDir`; only rank 0 writes):

- `model.json`, `model.safetensors`: the latest weights (any analysis can open them);
- `trainer_state.safetensors`: weights, the optimizer's state tensors (AdamW moments, SGD
  momentum buffers) and the RNG state in ONE file, with the step and optimizer scalars in its
  metadata, so a checkpoint is never half from one step and half
  from another; written atomically every `checkpoint_every` steps;
- `metrics.jsonl`: one JSON line per logged step (loss, lr, evaluation metrics).

Resuming loads `trainer_state.safetensors`, drops `metrics.jsonl` lines past its step and
continues. Because batch t depends only on (seed, t) and the learning rate only on t, a run killed
at any moment and resumed ends with exactly the weights of an uninterrupted run (on CPU).

Torch's global generator (dropout, any sampler that uses it) is seeded from `train.seed` at the
start of a run and restored from the checkpoint on resume, inside `torch.random.fork_rng`, so the
caller's generator is left as it was and two runs of one seed draw the same numbers.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from wrapperlens import distributed
from wrapperlens.runs import RunDir
from wrapperlens.trainer_state import load_trainer_state, save_trainer_state

__all__ = ["TrainConfig", "TrainBatch", "Evaluate", "train", "lr_at", "masked_loss"]

Evaluate = Callable[[HookedTransformer, int], dict[str, float]]
"""`evaluate(model, step)`: named metrics of the model after `step` updates (eval mode, no grad)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one stage (pretrain, finetune or reft).

    Attributes:
        steps: Optimizer steps (iterations).
        batch_size: Sequences per step.
        lr: Peak learning rate.
        schedule: "cosine" (linear warmup, then cosine to lr * min_lr_frac; the paper's) or
            "constant" (TinyStories deletion / reFT).
        warmup_frac: Fraction of the steps spent in linear warmup (paper: 0.2).
        min_lr_frac: Final learning rate as a fraction of `lr` (paper: 1/100).
        weight_decay: Weight decay (AdamW: decoupled; SGD: L2), applied as minGPT does to the weight
            matrices of linear maps only (attention W_Q / W_K / W_V / W_O, MLP W_in / W_gate /
            W_out, the unembedding W_U; `DECAYED_WEIGHTS`), never to the embeddings W_E and
            W_pos, biases or LayerNorm weights (docs/choices.md#which-parameters-weight-decay-applies-to).
        beta1, beta2: AdamW betas (minGPT: 0.9, 0.95).
        optimizer: "adamw" (the PCFG and TinyStories stages) or "sgd" (SGD with `momentum`, the
            paper's optimizer for the compiled models, App. C.1).
        momentum: SGD momentum (not stated by the paper; 0.9, docs/choices.md#tracr-sgd-momentum). Unused by
            AdamW.
        grad_clip: Max global gradient norm (0 disables clipping).
        loss: "next_token" (every position of the sequence, the paper's pretraining) or
            "answer" (only the answer token, the paper's fine-tuning).
        eval_every: Evaluate every this many steps (and at step 0 and at the end).
        log_spaced_eval: Also evaluate at 1, 2, 5, 10, 20, 50, ... steps (reFT curves).
        eval_samples: Samples per evaluation set.
        checkpoint_every: Write a resumable checkpoint every this many steps (and at the end).
        deterministic: Train under `torch.use_deterministic_algorithms` (restored afterwards).
            On CPU the embedding backward (`W_E[tokens]`) otherwise accumulates in a
            thread-dependent order and two runs of one seed differ in the last bits.
        seed: The stage's seed: torch's global generator during training (dropout or any other
            draw from it), and the experiment's data order where it reads it (PCFG stages draw
            batch t from (task.seed, stage, train.seed, t); docs/choices.md#seeds-per-stage).
    """

    steps: int = 1000
    batch_size: int = 96
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_frac: float = 0.2
    min_lr_frac: float = 0.01
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    optimizer: str = "adamw"
    momentum: float = 0.9
    grad_clip: float = 1.0
    loss: str = "next_token"
    eval_every: int = 250
    log_spaced_eval: bool = False
    eval_samples: int = 1000
    checkpoint_every: int = 250
    deterministic: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_samples", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"train.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"train.momentum must be in [0, 1), got {self.momentum}")
        if self.loss not in ("next_token", "answer"):
            raise ValueError(f"train.loss must be 'next_token' or 'answer', got {self.loss!r}")
        for name in ("warmup_frac", "min_lr_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"train.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("train.weight_decay and train.grad_clip must be >= 0")

    def eval_steps(self) -> set[int]:
        steps = set(range(0, self.steps, self.eval_every)) | {self.steps}
        if self.log_spaced_eval:
            k = 1
            while k < self.steps:
                steps |= {k, 2 * k, 5 * k}
                k *= 10
            steps = {s for s in steps if s <= self.steps}
        return steps


@dataclass
class TrainBatch:
    """Inputs of one step: full sequences and which next-token targets count in the loss.

    Attributes:
        tokens: `[batch, seq]` token ids; the model reads `tokens[:, :-1]`.
        loss_mask: `[batch, seq-1]` True where the target `tokens[:, 1:]` is trained on.
    """

    tokens: Int[Tensor, "batch seq"]
    loss_mask: Bool[Tensor, "batch seq_minus_1"]


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of update `step` (0-based): linear warmup, then cosine, or constant."""
    if cfg.schedule == "constant":
        return cfg.lr
    warmup = int(cfg.warmup_frac * cfg.steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    floor = cfg.lr * cfg.min_lr_frac
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def masked_loss(
    logits: Float[Tensor, "batch seq_minus_1 d_vocab"],
    tokens: Int[Tensor, "batch seq"],
    loss_mask: Bool[Tensor, "batch seq_minus_1"],
    n_targets: int | None = None,
) -> Float[Tensor, ""]:
    """Cross-entropy of the next-token targets selected by `loss_mask`, summed and divided by
    `n_targets` (default: their number, i.e. the mean; data-parallel ranks pass the global count
    so that the summed gradients are those of the global mean)."""
    targets = tokens[:, 1:]
    total = F.cross_entropy(logits[loss_mask], targets[loss_mask], reduction="sum")
    return total / (int(loss_mask.sum()) if n_targets is None else n_targets)


#: HookedTransformer parameters that `train.weight_decay` applies to: the weights of its linear
#: maps, as minGPT (`configure_optimizers`: decay `nn.Linear` weights, never `nn.Embedding`,
#: biases or LayerNorm). Grouped-query attention stores K and V as `_W_K`, `_W_V`.
DECAYED_WEIGHTS = frozenset({"W_Q", "W_K", "W_V", "W_O", "W_in", "W_gate", "W_out", "W_U"})


def _is_decayed(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lstrip("_") in DECAYED_WEIGHTS


def _make_optimizer(model: HookedTransformer, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with two groups: the linear maps' weights decayed, every other parameter not."""
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if _is_decayed(n)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named if not _is_decayed(n)], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def train(
    model: HookedTransformer,
    cfg: TrainConfig,
    batch_fn: Callable[[int], TrainBatch],
    run_dir: str | os.PathLike | RunDir,
    evaluate: Evaluate | None = None,
    resume: bool = False,
    progress: bool = True,
    description: str = "train",
    stop_after: int | None = None,
) -> list[dict]:
    """Train `model` in place for `cfg.steps` steps, checkpointing into `run_dir`.

    Under `torchrun` (see `wrapperlens.distributed`) every rank calls this with the same
    arguments; the global batch `batch_fn(step)` is split across ranks and rank 0 writes.

    Args:
        model: The model to train (weights of a previous stage already loaded).
        cfg: Optimisation settings.
        batch_fn: `batch_fn(step)` gives the (global) batch of that step; it must depend on
            `step` only.
        run_dir: Where checkpoints and metrics go.
        evaluate: `evaluate(model, step)` returns metrics; called in eval mode under `no_grad`,
            on rank 0 only.
        resume: Continue from the run directory's trainer state.
        progress: Show a tqdm bar with loss and the first metric (rank 0).
        description: Label of the progress bar.
        stop_after: Stop (without a final checkpoint) after this many steps; used by tests to
            simulate a crash.

    Returns:
        The metric records written to `metrics.jsonl` by this call (empty on ranks > 0).
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # Seed only the generators fork_rng restores: torch.manual_seed would also reseed
            # every CUDA / MPS generator (lazily, at their first use) and leave them changed
            # for the caller. A resumed run then restores the saved CPU state.
            torch.random.default_generator.manual_seed(cfg.seed)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(cfg.seed)
            return _train(model, cfg, batch_fn, run, evaluate, resume, progress, description,
                          stop_after)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _rows_of_this_rank(batch: TrainBatch) -> TrainBatch:
    world, rank = distributed.world_size(), distributed.rank()
    if world == 1:
        return batch
    if batch.tokens.shape[0] < world:
        raise ValueError(f"train.batch_size={batch.tokens.shape[0]} is smaller than the "
                         f"{world} data-parallel processes")
    return TrainBatch(batch.tokens[rank::world], batch.loss_mask[rank::world])


def _train(model, cfg, batch_fn, run, evaluate, resume, progress, description, stop_after):
    main = distributed.is_main()
    device = next(model.parameters()).device
    opt = _make_optimizer(model, cfg)
    start = 0
    if resume:
        start = load_trainer_state(run, model, opt, cfg.optimizer, cfg.steps)
    if main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.truncate_metrics(start if resume else None)
    eval_steps = cfg.eval_steps()
    records: list[dict] = []

    def run_eval(step: int, extra: dict) -> dict:
        if not main:
            return {}
        metrics = {}
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                metrics = evaluate(model, step)
            model.train()
        record = {"step": step, **extra, **metrics}
        records.append(record)
        run.append_metrics(record)
        return metrics

    if start == 0 and 0 in eval_steps:
        run_eval(0, {})
    model.train()
    bar = tqdm(range(start, cfg.steps), desc=description, disable=not (progress and main),
               initial=start, total=cfg.steps)
    t0 = time.perf_counter()
    for step in bar:
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = batch_fn(step)
        n_targets = int(batch.loss_mask.sum())  # of the global batch: every rank knows it
        mine = _rows_of_this_rank(batch)
        tokens, loss_mask = mine.tokens.to(device), mine.loss_mask.to(device)
        logits = model(tokens[:, :-1])
        loss = masked_loss(logits, tokens, loss_mask, n_targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.all_reduce_gradients(model)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        done = step + 1
        if done in eval_steps:
            global_loss = distributed.all_reduce_sum(loss.detach().clone()).item()
            metrics = run_eval(done, {"loss": global_loss, "lr": lr,
                                      "seconds": time.perf_counter() - t0})
            first = next(iter(metrics.items()), None)
            bar.set_postfix(loss=f"{global_loss:.3f}",
                            **({first[0]: f"{first[1]:.3f}"} if first else {}))
        if main and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            save_trainer_state(run, model, opt, done)
        if stop_after is not None and done >= stop_after:
            break
    bar.close()
    if main and start >= cfg.steps:
        run.save_model(model)
    distributed.barrier()  # no rank leaves before rank 0's last checkpoint is on disk
    return records
