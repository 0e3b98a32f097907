"""Story language models: their shape, and the training batches they read.

The paper's TinyStories model (App. F.1; docs/paper-settings.md §3.2) is a 91M-parameter
LLaMA-2-like decoder: 12 layers, d_model 768, 12 heads, RMSNorm, rotary positions, a gated SiLU ("SwiGLU") MLP of width
2048, vocabulary 8192, trained on 1024-token windows. `LMConfig` describes that family at any size
(`architecture="llama"`), or the GPT-2/GPT-Neo-like one (`"gpt"`: LayerNorm, learned positions,
GELU MLP). `LM_SHAPES` holds the three named sizes:

| shape | layers × d_model (heads) | d_mlp | n_ctx | parameters |
|---|---|---|---|---|
| `paper` | 12 × 768 (12) | 2048 | 1024 | 97.6M at vocab 8192 (91.3M tied: the paper's 91M) |
| `cpu`   | 3 × 64 (4)     | 176  | 256  | 0.28M at vocab 1024 |
| `tiny`  | 2 × 32 (2)     | 96   | 256  | 0.09M at vocab 1024 |

Two differences from the paper's code remain: TransformerLens keeps separate input and output
embeddings (the code ties them), and its blocks have biases (zero at initialisation, then
trained; the code has none).

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
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerBase

from wrapperlens.models import hooked_transformer
from wrapperlens.training import TrainBatch

__all__ = [
    "ARCHITECTURES",
    "LAYOUTS",
    "LMConfig",
    "LM_SHAPES",
    "BatchConfig",
    "build_lm",
    "pad_id_of",
    "encode_records",
    "StoryBatcher",
    "sequence_loss",
]

ARCHITECTURES = ("llama", "gpt")
LAYOUTS = ("records", "packed")


@dataclass(frozen=True)
class LMConfig:
    """Shape of a story language model (the `model` section of a pretraining run).

    Attributes:
        n_layers: Transformer blocks.
        d_model: Residual stream width.
        n_heads: Attention heads; `d_model` must be divisible by it.
        d_mlp: MLP hidden width; 0 = the architecture's rule (llama: 8/3 · d_model rounded up to
            a multiple of `multiple_of`, as llama2.c; gpt: 4 · d_model).
        n_ctx: Context length (tokens the model reads).
        architecture: "llama" (RMSNorm, rotary, gated SiLU MLP; the paper's) or "gpt"
            (LayerNorm, learned positions, GELU MLP).
        multiple_of: Rounding of the llama MLP width (llama2.c: 64 at 768; 16 suits small sizes).
        init_seed: Seed of the weight initialisation.
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 0
    n_ctx: int = 256
    architecture: str = "llama"
    multiple_of: int = 16
    init_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_ctx", "multiple_of"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_mlp < 0:
            raise ValueError(
                f"model.d_mlp must be >= 0 (0: the architecture's rule), got {self.d_mlp}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}"
            )
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"model.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        if self.architecture == "llama" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"model: rotary positions need an even head size, got d_model/n_heads = "
                f"{self.d_model}/{self.n_heads}"
            )

    @property
    def mlp_width(self) -> int:
        if self.d_mlp:
            return self.d_mlp
        if self.architecture == "gpt":
            return 4 * self.d_model
        hidden = int(2 * 4 * self.d_model / 3)
        return self.multiple_of * -(-hidden // self.multiple_of)

    def hooked_config(self, d_vocab: int) -> HookedTransformerConfig:
        """The TransformerLens config of this shape for a vocabulary of `d_vocab` tokens."""
        if d_vocab < 2:
            raise ValueError(f"d_vocab must be >= 2, got {d_vocab}")
        d_head = self.d_model // self.n_heads
        common = dict(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=d_head,
            d_mlp=self.mlp_width,
            n_ctx=self.n_ctx,
            d_vocab=d_vocab,
            attention_dir="causal",
            default_prepend_bos=False,
            seed=None,
            device="cpu",
        )
        if self.architecture == "gpt":
            return HookedTransformerConfig(**common, act_fn="gelu", normalization_type="LN")
        return HookedTransformerConfig(
            **common,
            act_fn="silu",
            gated_mlp=True,
            normalization_type="RMS",
            eps=1e-5,
            positional_embedding_type="rotary",
            rotary_dim=d_head,
        )


LM_SHAPES: dict[str, LMConfig] = {
    "paper": LMConfig(n_layers=12, d_model=768, n_heads=12, d_mlp=2048, n_ctx=1024, multiple_of=64),
    "cpu": LMConfig(n_layers=3, d_model=64, n_heads=4, n_ctx=256),
    "tiny": LMConfig(n_layers=2, d_model=32, n_heads=2, n_ctx=256),
}


def build_lm(cfg: LMConfig, d_vocab: int) -> HookedTransformer:
    """A freshly initialised story LM (seeded by `cfg.init_seed`), in train mode, on CPU."""
    return hooked_transformer(cfg.hooked_config(d_vocab), init_seed=cfg.init_seed)


@dataclass(frozen=True)
class BatchConfig:
    """How training sequences are made from records (the `batches` section).

    Attributes:
        layout: "records" (one whole, padded record per row) or "packed" (random windows of the
            concatenated records; the paper's code). See the module docstring.
        shuffle_fields: Shuffle the instruction lines of every record, as the paper's code does
            (fixed per story, so the text is the same at every epoch).
        seed: Seed of the batch order; batch t depends only on (seed, t).
    """

    layout: str = "records"
    shuffle_fields: bool = True
    seed: int = 0

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


def _pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    length = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    real = torch.zeros((len(sequences), length), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        tokens[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        real[i, : len(seq)] = True
    return tokens, real


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
        tokens, real = _pad([self.sequences[i] for i in self.record_indices(step)], self.pad_id)
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
            tokens, real = _pad(sequences[start : start + batch_size], pad_id)
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
