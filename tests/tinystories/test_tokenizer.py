"""The story tokenizer: trains, saves as an HF directory, reloads, round-trips text; batching."""

import json

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tinystories.instruct import EOT
from tinystories.protocols import with_text
from tinystories.story_source import StorySourceConfig, story_source_dataset
from tinystories.tokenizer import (
    PAD,
    TokenizerConfig,
    encode_texts,
    load_tokenizer,
    pack_sequences,
    pad_batch,
    save_tokenizer,
    tokenize_dataset,
    train_tokenizer,
)
from wrapperlens.checkpoints import CheckpointError

VOCAB = 400


@pytest.fixture(scope="module")
def texts():
    return with_text(story_source_dataset(StorySourceConfig(n_stories=200, seed=1)))["text"]


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(iter(texts), TokenizerConfig(vocab_size=VOCAB))


def test_training_gives_the_vocabulary_size_and_special_ids(tokenizer, texts):
    assert len(tokenizer) == VOCAB
    assert tokenizer.convert_tokens_to_ids([EOT, PAD]) == [0, 1]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (EOT, EOT, PAD)
    ids = tokenizer(list(texts[:50]), add_special_tokens=False)["input_ids"]
    chars = sum(len(t) for t in texts[:50])
    assert sum(map(len, ids)) < 0.6 * chars  # merges learned: well under one token per byte
    again = train_tokenizer(iter(texts), TokenizerConfig(vocab_size=VOCAB))
    assert again.get_vocab() == tokenizer.get_vocab()  # deterministic


def test_save_reload_round_trip(tokenizer, texts, tmp_path):
    directory = save_tokenizer(tokenizer, tmp_path / "tok")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (directory / name).is_file()
    assert json.loads((directory / "special_tokens_map.json").read_text())["pad_token"] == PAD
    sample = list(texts[:20]) + ["Ünïcödé, tabs\tand\n\nnewlines — and " + EOT + " inside."]
    expected = tokenizer(sample, add_special_tokens=False)["input_ids"]
    for loaded in (
        PreTrainedTokenizerFast.from_pretrained(directory),
        AutoTokenizer.from_pretrained(directory),
        load_tokenizer(directory),
    ):
        ids = loaded(sample, add_special_tokens=False)["input_ids"]
        assert ids == expected
        assert [loaded.decode(i) for i in ids] == sample  # byte-level BPE loses nothing
        assert loaded.pad_token_id == 1 and loaded.bos_token_id == loaded.eos_token_id == 0
    assert expected[-1].count(0) == 1  # <|endoftext|> in text is one special token
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_encode_pad_and_pack(tokenizer):
    seqs = encode_texts(tokenizer, ["a cat", "the dog ran"], add_bos=True, add_eos=True)
    assert all(s[0] == 0 and s[-1] == 0 for s in seqs)
    tokens, mask = pad_batch(seqs, pad_id=tokenizer.pad_token_id)
    assert tokens.shape == mask.shape == (2, max(map(len, seqs)))
    assert mask.sum(1).tolist() == [len(s) for s in seqs]
    assert torch.all(tokens[~mask] == 1)
    short, short_mask = pad_batch(seqs, pad_id=1, max_len=3)
    assert short.shape == (2, 3) and short_mask.all()
    packed = pack_sequences([[1, 2, 3], [4, 5], [6, 7, 8, 9]], seq_len=4)
    assert packed.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_tokenize_dataset_map_and_streaming_agree(tokenizer):
    ds = with_text(story_source_dataset(StorySourceConfig(n_stories=10, seed=2)))
    a = tokenize_dataset(ds, tokenizer)["input_ids"]
    b = [r["input_ids"] for r in tokenize_dataset(ds.to_iterable_dataset(), tokenizer)]
    assert a == b == encode_texts(tokenizer, ds["text"])


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="tokenizer.vocab_size"):
        TokenizerConfig(vocab_size=100)
    with pytest.raises(ValueError, match="tokenizer.min_frequency"):
        TokenizerConfig(min_frequency=0)
