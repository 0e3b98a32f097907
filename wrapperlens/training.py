"""One training loop for pretraining, fine-tuning and reverse fine-tuning, nanoGPT style.

The loop is task-agnostic: it takes a HookedTransformer, a `batch_fn(step)` returning token ids
and a mask of the target positions that count in the loss, and an optional `evaluate(model)`
returning named metrics. The stages differ only in their data, learning rate and schedule, which
`wrapperlens.experiments` wires up.

Run directory (written here):

- `model.json`, `model.safetensors`: the latest weights (any analysis can open them);
- `trainer_state.safetensors`: weights, AdamW moments and the RNG state in ONE file, with the
  step and optimizer scalars in its metadata, so a checkpoint is never half from one step and half
  from another; written atomically every `checkpoint_every` steps;
- `metrics.jsonl`: one JSON line per logged step (loss, lr, evaluation metrics).

Resuming loads `trainer_state.safetensors`, drops `metrics.jsonl` lines past its step and
continues. Because batch t depends only on (seed, t) and the learning rate only on t, a run killed
at any moment and resumed ends with exactly the weights of an uninterrupted run (on CPU).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from safetensors import safe_open
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from wrapperlens.checkpoints import (
    CheckpointError,
    atomic_write,
    load_state_dict_checked,
    load_tensors,
    save_hooked_model,
    save_tensors,
)

__all__ = ["TrainConfig", "TrainBatch", "train", "lr_at", "masked_loss", "METRICS_FILE", "STATE_FILE"]

METRICS_FILE = "metrics.jsonl"
STATE_FILE = "trainer_state.safetensors"


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
        weight_decay: AdamW decoupled weight decay, applied to `W_*` matrices only.
        beta1, beta2: AdamW betas (minGPT: 0.9, 0.95).
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
    grad_clip: float = 1.0
    loss: str = "next_token"
    eval_every: int = 250
    log_spaced_eval: bool = False
    eval_samples: int = 1000
    checkpoint_every: int = 250
    deterministic: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_samples", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
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
    logits: torch.Tensor, tokens: Int[Tensor, "batch seq"], loss_mask: Bool[Tensor, "batch seq_minus_1"]
) -> Tensor:
    """Mean cross-entropy of the next-token targets selected by `loss_mask`."""
    targets = tokens[:, 1:]
    return F.cross_entropy(logits[loss_mask], targets[loss_mask])


def _make_optimizer(model: HookedTransformer, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if n.split(".")[-1].startswith("W_")]
    no_decay = [p for n, p in model.named_parameters() if not n.split(".")[-1].startswith("W_")]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _save_state(run_dir: Path, model: HookedTransformer, opt: torch.optim.AdamW, step: int) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    scalars: dict[str, float] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p)
            if not state:
                continue
            name = names[id(p)]
            tensors[f"optim.{name}.exp_avg"] = state["exp_avg"]
            tensors[f"optim.{name}.exp_avg_sq"] = state["exp_avg_sq"]
            scalars[name] = float(state["step"])
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"step": str(step), "optimizer_steps": json.dumps(scalars)}
    save_tensors(run_dir / STATE_FILE, tensors, metadata=meta)
    save_hooked_model(run_dir, model)


def _load_state(run_dir: Path, model: HookedTransformer, opt: torch.optim.AdamW) -> int:
    path = run_dir / STATE_FILE
    tensors = load_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "step" not in meta or "optimizer_steps" not in meta:
        raise CheckpointError(f"{path}: metadata lacks the step / optimizer state")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_dict_checked(model, model_state, source=str(path))
    scalars = json.loads(meta["optimizer_steps"])
    for name, p in model.named_parameters():
        if name in scalars:
            try:
                opt.state[p] = {
                    "step": torch.tensor(scalars[name]),
                    "exp_avg": tensors[f"optim.{name}.exp_avg"].to(p.device),
                    "exp_avg_sq": tensors[f"optim.{name}.exp_avg_sq"].to(p.device),
                }
            except KeyError as e:
                raise CheckpointError(f"{path}: missing optimizer tensor {e}") from e
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"])


def _truncate_metrics(path: Path, after_step: int) -> None:
    """Keep only the metric lines up to `after_step` (a resumed run re-logs the rest)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= after_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            break  # a torn last line from a kill mid-write
    text = "".join(line + "\n" for line in kept)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def train(
    model: HookedTransformer,
    cfg: TrainConfig,
    batch_fn: Callable[[int], TrainBatch],
    run_dir: str | Path,
    evaluate: Callable[[HookedTransformer], dict[str, float]] | None = None,
    resume: bool = False,
    progress: bool = True,
    description: str = "train",
    stop_after: int | None = None,
) -> list[dict]:
    """Train `model` in place for `cfg.steps` steps, checkpointing into `run_dir`.

    Args:
        model: The model to train (weights of a previous stage already loaded).
        cfg: Optimisation settings.
        batch_fn: `batch_fn(step)` gives the batch of that step; it must depend on `step` only.
        run_dir: Where checkpoints and metrics go.
        evaluate: `evaluate(model)` returns metrics; called in eval mode under `no_grad`.
        resume: Continue from `run_dir/trainer_state.safetensors`.
        progress: Show a tqdm bar with loss and the first metric.
        description: Label of the progress bar.
        stop_after: Stop (without a final checkpoint) after this many steps; used by tests to
            simulate a crash.

    Returns:
        The metric records written to `metrics.jsonl` by this call.
    """
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(model, cfg, batch_fn, Path(run_dir), evaluate, resume, progress,
                      description, stop_after)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _train(model, cfg, batch_fn, run_dir, evaluate, resume, progress, description, stop_after):
    run_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    opt = _make_optimizer(model, cfg)
    start = 0
    if resume:
        start = _load_state(run_dir, model, opt)
        _truncate_metrics(run_dir / METRICS_FILE, start)
    elif (run_dir / METRICS_FILE).exists():
        (run_dir / METRICS_FILE).unlink()
    eval_steps = cfg.eval_steps()
    records: list[dict] = []

    def log(record: dict) -> None:
        records.append(record)
        with open(run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def run_eval(step: int, extra: dict) -> dict:
        metrics = {}
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                metrics = evaluate(model)
            model.train()
        log({"step": step, **extra, **metrics})
        return metrics

    if start == 0 and 0 in eval_steps:
        run_eval(0, {})
    model.train()
    bar = tqdm(range(start, cfg.steps), desc=description, disable=not progress, initial=start, total=cfg.steps)
    t0 = time.perf_counter()
    for step in bar:
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = batch_fn(step)
        tokens, loss_mask = batch.tokens.to(device), batch.loss_mask.to(device)
        logits = model(tokens[:, :-1])
        loss = masked_loss(logits, tokens, loss_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        done = step + 1
        if done in eval_steps:
            metrics = run_eval(done, {"loss": loss.item(), "lr": lr, "seconds": time.perf_counter() - t0})
            first = next(iter(metrics.items()), None)
            bar.set_postfix(loss=f"{loss.item():.3f}", **({first[0]: f"{first[1]:.3f}"} if first else {}))
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save_state(run_dir, model, opt, done)
        if stop_after is not None and done >= stop_after:
            break
    bar.close()
    if start >= cfg.steps:
        save_hooked_model(run_dir, model)
    return records
