"""Story language models: the training batches they read, and their loss.

The models are `wrapperlens.models.ModelConfig`s: the paper's TinyStories model (App. F.1;
docs/paper-settings.md#tinystories-model) is `architecture="llama"` at 12 × 768, and
`tinystories.presets` holds the sizes the experiments use (`paper`, `cpu`, `tiny`).

**Batches.** `StoryBatcher(step)` returns the `TrainBatch` of a step and depends only on
`(seed, step)`, so a killed run resumes to the same weights. Two layouts:

- `"records"` (cpu / tiny): each row is one whole record, `<|endoftext|>` + text +
  `<|endoftext|>`, right-padded to the longest row of the batch; padding is excluded from the loss.
  Records are drawn without replacement within an epoch (a fresh permutation per epoch). A small
  model only learns to follow the instruction when the instruction and the story it governs are
  in the same sequence (the story source's learnability benchmark), which this guarantees.
- `"packed"` (paper): the records, `<|endoftext|>`-separated, concatenated into one stream, and
  random `n_ctx + 1`-token windows cut from it (the paper's code). With n_ctx 1024 and records of
  ~300 tokens most records fall whole into a window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from tinystories.tokenizer import pad_batch
from wrapperlens.training import TrainBatch

__all__ = [
    "LAYOUTS",
    "BatchConfig",
    "pad_id_of",
    "encode_records",
    "StoryBatcher",
    "sequence_loss",
]

LAYOUTS = ("records", "packed")


@dataclass(frozen=True)
class BatchConfig:
    """How training sequences are made from records (the `batches` section).

    Attributes:
        layout: "records" (one whole, padded record per row) or "packed" (random windows of the
            concatenated records; the paper's code). See the module docstring.
        shuffle_fields: Shuffle the instruction lines of every record, as the paper's code does
            (fixed per story, so the text is the same at every epoch).

    The batch order is seeded by the stage's `train.seed` (as in every experiment).
    """

    layout: str = "records"
    shuffle_fields: bool = True

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"batches.layout must be one of {LAYOUTS}, got {self.layout!r}")


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id (the `<|pad|>` token, else EOS: padded targets never count anyway)."""
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def encode_records(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_len: int,
    add_eos: bool = True,
    keep: str = "start",
) -> tuple[list[list[int]], int]:
    """Token ids of `<|endoftext|>` + text (+ `<|endoftext|>`), cut to at most `max_len` tokens.

    Args:
        keep: "start" keeps the first `max_len` tokens (training text), "end" the last ones
            (probe inputs, whose last tokens matter).

    Returns:
        The sequences and how many were cut.
    """
    if keep not in ("start", "end"):
        raise ValueError(f"keep must be 'start' or 'end', got {keep!r}")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out, n_cut = [], 0
    for seq in ids:
        seq = [bos, *seq, *([eos] if add_eos else [])]
        if len(seq) > max_len:
            n_cut += 1
            seq = seq[:max_len] if keep == "start" else seq[-max_len:]
        out.append(seq)
    return out, n_cut


class StoryBatcher:
    """`batcher(step)` -> the `TrainBatch` of that step, a function of (seed, step) only.

    Args:
        sequences: Token ids per record (from `encode_records`, each at most n_ctx + 1 long).
        batch_size: Rows per batch.
        n_ctx: The model's context; rows are at most n_ctx + 1 tokens (it reads `[:, :-1]`).
        pad_id: Padding id ("records" layout).
        layout: "records" or "packed" (see the module docstring).
        seed: Seed of the order.
    """

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        batch_size: int,
        n_ctx: int,
        pad_id: int,
        layout: str = "records",
        seed: int = 0,
    ) -> None:
        if not sequences:
            raise ValueError("StoryBatcher needs at least one sequence (is the dataset empty?)")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        too_long = max(len(s) for s in sequences)
        if layout == "records" and too_long > n_ctx + 1:
            raise ValueError(f"a sequence has {too_long} tokens, more than n_ctx + 1 = {n_ctx + 1}")
        self.sequences = [list(s) for s in sequences]
        self.batch_size, self.n_ctx, self.pad_id = batch_size, n_ctx, pad_id
        self.layout, self.seed = layout, seed
        if layout == "packed":
            self.stream = torch.tensor([t for s in self.sequences for t in s], dtype=torch.long)
            if len(self.stream) < n_ctx + 2:
                raise ValueError(
                    f"packed layout: {len(self.stream)} tokens in all, fewer than one window "
                    f"of n_ctx + 1 = {n_ctx + 1}"
                )

    def record_indices(self, step: int) -> np.ndarray:
        """Which records batch `step` holds ("records" layout): epochs of fresh permutations."""
        n = len(self.sequences)
        flat = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = flat // n, flat % n
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            perm = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
            out[epochs == epoch] = perm[offsets[epochs == epoch]]
        return out

    def __call__(self, step: int) -> TrainBatch:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.layout == "packed":
            rng = np.random.default_rng([self.seed, 1, step])
            starts = rng.integers(0, len(self.stream) - self.n_ctx - 1, self.batch_size)
            window = torch.arange(self.n_ctx + 1)
            tokens = self.stream[torch.as_tensor(starts)[:, None] + window]
            every = torch.ones(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
            return TrainBatch(tokens, every)
        tokens, real = pad_batch([self.sequences[i] for i in self.record_indices(step)], self.pad_id)
        return TrainBatch(tokens, real[:, 1:])


def sequence_loss(
    model: HookedTransformer,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 32,
) -> float:
    """Mean next-token cross-entropy over every real target of `sequences` (token-weighted)."""
    total, count = 0.0, 0
    device = model.cfg.device
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            tokens, real = pad_batch(sequences[start : start + batch_size], pad_id)
            logits: Float[Tensor, "batch pos vocab"] = model(tokens[:, :-1].to(device))
            mask = real[:, 1:].to(device)
            targets: Int[Tensor, "batch pos"] = tokens[:, 1:].to(device)
            losses = torch.nn.functional.cross_entropy(
                logits[mask].float(), targets[mask], reduction="sum"
            )
            total += losses.item()
            count += int(mask.sum())
    if count == 0:
        raise ValueError("sequence_loss: no targets (every sequence shorter than 2 tokens)")
    return total / count
