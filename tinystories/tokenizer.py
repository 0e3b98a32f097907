"""A BPE tokenizer for the stories: train it, save it with a run, load it, batch with it.

The paper trains its own tokenizer on TinyStories with a vocabulary of 8192 (App. F.1; the
authors' code uses SentencePiece, docs/choices.md#the-story-tokenizer). Here it is a byte-level BPE
trained with HF `tokenizers` (the GPT-2 / GPT-Neo scheme, so every string round-trips exactly,
newlines and non-ASCII included), with two special tokens:

- `<|endoftext|>`: BOS and EOS, the record separator of the TinyStories files (as in GPT-Neo's
  tokenizer, which the public TinyStories checkpoints use);
- `<|pad|>`: padding, never trained on.

A saved tokenizer is a directory that `transformers.PreTrainedTokenizerFast.from_pretrained` and
`AutoTokenizer.from_pretrained` load: `tokenizer.json`, `tokenizer_config.json` and
`special_tokens_map.json` (written here explicitly, since transformers 5 no longer writes the last
one and names a class transformers 4 lacks). `load_tokenizer` also opens any local HF tokenizer
directory, e.g. one saved beside a GPT-Neo checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence

import datasets
import torch
from jaxtyping import Bool, Int
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tinystories.instruct import EOT
from wrapperlens.checkpoints import CheckpointError, write_json

__all__ = [
    "PAD",
    "TokenizerConfig",
    "train_tokenizer",
    "save_tokenizer",
    "load_tokenizer",
    "encode_texts",
    "pad_batch",
    "pack_sequences",
    "tokenize_dataset",
]

PAD = "<|pad|>"


@dataclass(frozen=True)
class TokenizerConfig:
    """How to train the story tokenizer.

    Attributes:
        vocab_size: Vocabulary size including the 256 byte tokens and the 2 special tokens
            (the paper: 8192).
        min_frequency: A pair must occur this often to be merged.
        max_texts: Train on at most this many texts (None: all of them).
        model_max_length: Context length recorded in `tokenizer_config.json`.
    """

    vocab_size: int = 8192
    min_frequency: int = 2
    max_texts: int | None = None
    model_max_length: int = 512

    def __post_init__(self) -> None:
        if self.vocab_size < 258:
            raise ValueError(
                f"tokenizer.vocab_size must be >= 258 (256 bytes + 2 special tokens), got "
                f"{self.vocab_size}"
            )
        if self.min_frequency < 1:
            raise ValueError(f"tokenizer.min_frequency must be >= 1, got {self.min_frequency}")
        if self.max_texts is not None and self.max_texts < 1:
            raise ValueError(f"tokenizer.max_texts must be >= 1 or None, got {self.max_texts}")
        if self.model_max_length < 1:
            raise ValueError(
                f"tokenizer.model_max_length must be >= 1, got {self.model_max_length}"
            )


def _wrap(tokenizer: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=PAD,
        model_max_length=model_max_length,
    )


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (any iterable: a list, a dataset column).

    Ids 0 and 1 are `<|endoftext|>` and `<|pad|>`.
    """

    def limited() -> Iterable[str]:
        for i, text in enumerate(texts):
            if cfg.max_texts is not None and i >= cfg.max_texts:
                return
            yield text

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[EOT, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(limited(), trainer=trainer)
    return _wrap(tokenizer, cfg.model_max_length)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> Path:
    """Save `tokenizer` as a directory `PreTrainedTokenizerFast.from_pretrained` can load."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    special = {
        key: getattr(tokenizer, key)
        for key in ("bos_token", "eos_token", "pad_token", "unk_token")
        if getattr(tokenizer, key, None) is not None
    }
    write_json(directory / "special_tokens_map.json", special)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if config.get("tokenizer_class") in ("TokenizersBackend", None):
        # transformers 5's generic class name; transformers 4 and 5 both know this one.
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    write_json(config_path, {**config, **special})
    return directory


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load a local HF tokenizer directory (never the hub).

    Raises:
        CheckpointError: the directory holds no tokenizer files.
    """
    directory = Path(directory)
    if not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise CheckpointError(
            f"{directory}: no tokenizer.json (or vocab.json) here; train one with "
            "tinystories.tokenizer.train_tokenizer or pass a local HF tokenizer directory"
        )
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    add_bos: bool = True,
    add_eos: bool = False,
) -> list[list[int]]:
    """Token ids of each text, optionally framed by `<|endoftext|>` (no padding, no truncation)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if add_bos else []
    eos = [tokenizer.eos_token_id] if add_eos else []
    return [bos + list(seq) + eos for seq in ids]


def pad_batch(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    max_len: int | None = None,
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Right-pad (and truncate to `max_len`) into a tensor; the mask is True on real tokens."""
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence")
    length = max(len(s) for s in sequences)
    if max_len is not None:
        length = min(length, max_len)
    tokens = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        seq = list(seq)[:length]
        tokens[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = True
    return tokens, mask


def pack_sequences(
    sequences: Iterable[Sequence[int]], seq_len: int
) -> Int[Tensor, "n_windows seq_len"]:
    """Concatenate token sequences and cut the stream into consecutive `seq_len` windows.

    This is the pretraining layout of the paper's code (BOS-separated examples concatenated into
    shards, fixed-length windows); the incomplete last window is dropped.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    stream = [t for seq in sequences for t in seq]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).reshape(n, seq_len)


def tokenize_dataset(
    dataset: datasets.Dataset | datasets.IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str = "text",
    add_bos: bool = True,
    add_eos: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Add an `input_ids` column (map-style or streaming)."""

    def encode(batch: Mapping[str, list]) -> dict[str, list]:
        return {"input_ids": encode_texts(tokenizer, batch[text_column], add_bos, add_eos)}

    return dataset.map(encode, batched=True)
