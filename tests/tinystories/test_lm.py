"""Story LM shapes and batches: the paper's shape, whole-record rows, (seed, step) determinism."""

import pytest
import torch

from tinystories.lm import (
    LM_SHAPES,
    BatchConfig,
    LMConfig,
    StoryBatcher,
    build_lm,
    encode_records,
    sequence_loss,
)
from tinystories.tokenizer import TokenizerConfig, train_tokenizer


def test_paper_shape_is_the_91m_llama_like_model():
    cfg = LM_SHAPES["paper"].hooked_config(d_vocab=8192)
    shape = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.n_ctx)
    assert shape == (12, 768, 12, 2048, 1024)
    assert cfg.normalization_type == "RMS" and cfg.positional_embedding_type == "rotary"
    assert cfg.gated_mlp and cfg.act_fn == "silu" and cfg.rotary_dim == 64
    # llama2.c's rule: hidden = 4 * 768 * 2 / 3 rounded up to a multiple of 64 is 2048.
    assert LMConfig(d_model=768, n_heads=12, multiple_of=64).mlp_width == 2048
    blocks = 12 * (4 * 768 * 768 + 3 * 768 * 2048)
    assert blocks + 8192 * 768 == pytest.approx(91.3e6, rel=0.01)  # tied embeddings: "91M"


def test_lm_config_errors_name_the_field():
    with pytest.raises(ValueError, match="model.architecture"):
        LMConfig(architecture="mamba")
    with pytest.raises(ValueError, match="model.d_model=30 is not divisible"):
        LMConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="batches.layout"):
        BatchConfig(layout="windows")


def test_built_models_are_seeded_and_gpt_shape_is_standard():
    a = build_lm(LMConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=16), d_vocab=30)
    b = build_lm(LMConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=16), d_vocab=30)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    gpt = build_lm(LMConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=16, architecture="gpt"), 30)
    assert gpt.cfg.normalization_type == "LN" and gpt.cfg.d_mlp == 64


@pytest.fixture(scope="module")
def sequences():
    texts = [f"Features: Twist\nStory: story number {i} " + "la " * (i % 7) for i in range(23)]
    tokenizer = train_tokenizer(iter(texts), TokenizerConfig(vocab_size=300))
    seqs, n_cut = encode_records(tokenizer, texts, max_len=17)
    assert n_cut == sum(len(tokenizer(t)["input_ids"]) + 2 > 17 for t in texts)
    return seqs


def test_records_rows_are_whole_padded_records_with_padding_masked(sequences):
    batcher = StoryBatcher(sequences, batch_size=5, n_ctx=16, pad_id=-1)
    batch = batcher(3)
    chosen = batcher.record_indices(3)
    for row, index in enumerate(chosen):
        seq = sequences[index]
        assert batch.tokens[row, : len(seq)].tolist() == seq
        assert (batch.tokens[row, len(seq):] == -1).all()
        # Target j is tokens[j + 1]: real exactly for j + 1 < len(seq).
        targets = range(batch.tokens.shape[1] - 1)
        assert batch.loss_mask[row].tolist() == [j + 1 < len(seq) for j in targets]


def test_batches_depend_only_on_seed_and_step_and_cover_each_epoch(sequences):
    a = StoryBatcher(sequences, batch_size=5, n_ctx=16, pad_id=0, seed=1)
    b = StoryBatcher(sequences, batch_size=5, n_ctx=16, pad_id=0, seed=1)
    for step in (7, 0, 3):  # any order
        assert torch.equal(a(step).tokens, b(step).tokens)
    assert not torch.equal(a(2).tokens, StoryBatcher(sequences, 5, 16, 0, seed=2)(2).tokens)
    n = len(sequences)
    drawn = [i for step in range(n) for i in a.record_indices(step)]  # 5 full epochs
    for epoch in range(5):
        assert sorted(drawn[epoch * n : (epoch + 1) * n]) == list(range(n))


def test_packed_layout_cuts_windows_of_the_record_stream(sequences):
    batcher = StoryBatcher(sequences, batch_size=4, n_ctx=8, pad_id=0, layout="packed", seed=0)
    stream = [t for s in sequences for t in s]
    batch = batcher(5)
    assert batch.tokens.shape == (4, 9) and batch.loss_mask.all()
    text = " " + " ".join(map(str, stream)) + " "
    for row in batch.tokens.tolist():
        assert " " + " ".join(map(str, row)) + " " in text


def test_sequence_loss_is_the_token_weighted_mean_over_real_targets(sequences):
    model = build_lm(LMConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=16), d_vocab=300).eval()
    seqs = sequences[:6]
    total, count = 0.0, 0
    for seq in seqs:  # one at a time, no padding at all
        tokens = torch.tensor([seq])
        logits = model(tokens[:, :-1])
        total += torch.nn.functional.cross_entropy(logits[0], tokens[0, 1:], reduction="sum").item()
        count += len(seq) - 1
    loss = sequence_loss(model, seqs, pad_id=0, batch_size=4)
    assert loss == pytest.approx(total / count, rel=1e-5)
