"""Story LM shapes and batches: the presets' models as before, the paper's shape, whole-record
rows, (seed, step) determinism."""

import pytest
import torch

from tinystories.experiments import StoryRun
from tinystories.lm import BatchConfig, StoryBatcher, encode_records, sequence_loss
from tinystories.presets import EXPERIMENT
from tinystories.tokenizer import TokenizerConfig, train_tokenizer
from transformer_lens import HookedTransformerConfig
from wrapperlens.checkpoints import CheckpointError
from wrapperlens.config import to_dict
from wrapperlens.models import ModelConfig, build_model, hooked_transformer
from wrapperlens.presets import get_preset


def _llama_kwargs(n_layers, d_model, n_heads, d_mlp, n_ctx, d_vocab):
    """The HookedTransformerConfig kwargs the story LMs were built from before ModelConfig had an
    architecture (tinystories.lm.LMConfig.hooked_config, written out)."""
    d_head = d_model // n_heads
    return dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp,
                n_ctx=n_ctx, d_vocab=d_vocab, attention_dir="causal", default_prepend_bos=False,
                seed=None, device="cpu", act_fn="silu", gated_mlp=True, normalization_type="RMS",
                eps=1e-5, positional_embedding_type="rotary", rotary_dim=d_head)


def _differing(ours: HookedTransformerConfig, expected: HookedTransformerConfig) -> dict:
    a, b = ours.to_dict(), expected.to_dict()
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


@pytest.mark.parametrize("name, expected", [
    ("tiny", _llama_kwargs(2, 32, 2, 96, 256, 1024)),
    ("cpu", _llama_kwargs(3, 64, 4, 176, 256, 1024)),
    ("paper", _llama_kwargs(12, 768, 12, 2048, 1024, 8192)),
])
def test_story_presets_build_the_same_models_as_before(name, expected):
    p = get_preset(name, EXPERIMENT)
    expected = HookedTransformerConfig(**expected)
    assert _differing(p.model.to_hooked_config(d_vocab=p.tokenizer.vocab_size), expected) == {}
    if name != "paper":  # 98M parameters: the config is the check
        ours = build_model(p.model, d_vocab=p.tokenizer.vocab_size).state_dict()
        before = hooked_transformer(expected, init_seed=0).state_dict()
        assert ours.keys() == before.keys()
        assert all(torch.equal(ours[k], before[k]) for k in ours)


def test_gpt_neo_architecture_is_what_the_old_gpt_shape_built():
    cfg = ModelConfig(architecture="gpt-neo", n_layers=1, d_model=16, n_heads=2, n_ctx=16)
    kwargs = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=64, n_ctx=16, d_vocab=30,
                  attention_dir="causal", default_prepend_bos=False, seed=None, device="cpu",
                  act_fn="gelu", normalization_type="LN")
    expected = HookedTransformerConfig(**kwargs)
    assert _differing(cfg.to_hooked_config(d_vocab=30), expected) == {}
    ours, before = build_model(cfg, d_vocab=30), hooked_transformer(kwargs, init_seed=0)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                 before.state_dict().values()))


def test_paper_shape_is_the_91m_llama_like_model():
    cfg = get_preset("paper", EXPERIMENT).model.to_hooked_config(d_vocab=8192)
    shape = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.n_ctx)
    assert shape == (12, 768, 12, 2048, 1024)
    # llama2.c's rule: hidden = 4 * 768 * 2 / 3 rounded up to a multiple of 64 is 2048.
    llama = ModelConfig(architecture="llama", d_model=768, n_heads=12, multiple_of=64)
    assert llama.mlp_width == 2048
    blocks = 12 * (4 * 768 * 768 + 3 * 768 * 2048)
    assert blocks + 8192 * 768 == pytest.approx(91.3e6, rel=0.01)  # tied embeddings: "91M"


def test_saved_story_model_sections_load_and_the_old_gpt_name_is_refused_by_key():
    saved = {"experiment": "tinystories", "stage": "pretrain", "preset": "tiny", "parent": None,
             "data": {"prepared": "p", "tokenizer": "t", "protocol": "all"},
             "train": to_dict(get_preset("tiny", EXPERIMENT).pretrain),
             "eval": to_dict(get_preset("tiny", EXPERIMENT).eval),
             "model": to_dict(get_preset("tiny", EXPERIMENT).model),
             "batches": to_dict(get_preset("tiny", EXPERIMENT).batches)}
    run = StoryRun.from_config(saved, "config.json")
    assert run.sections["model"] == get_preset("tiny", EXPERIMENT).model
    saved["model"]["architecture"] = "gpt"
    with pytest.raises(CheckpointError, match=r"model\.architecture .*'gpt' is now 'gpt-neo'"):
        StoryRun.from_config(saved, "config.json")


def test_batch_config_errors_name_the_field():
    with pytest.raises(ValueError, match="batches.layout"):
        BatchConfig(layout="windows")


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
    cfg = ModelConfig(architecture="llama", n_layers=1, d_model=16, n_heads=2, n_ctx=16)
    model = build_model(cfg, d_vocab=300).eval()
    seqs = sequences[:6]
    total, count = 0.0, 0
    for seq in seqs:  # one at a time, no padding at all
        tokens = torch.tensor([seq])
        logits = model(tokens[:, :-1])
        total += torch.nn.functional.cross_entropy(logits[0], tokens[0, 1:], reduction="sum").item()
        count += len(seq) - 1
    loss = sequence_loss(model, seqs, pad_id=0, batch_size=4)
    assert loss == pytest.approx(total / count, rel=1e-5)
