"""GPT-Neo import/export against HF transformers' own GPT-Neo (built locally, random weights)."""

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformer_lens.loading_from_pretrained import convert_hf_model_config
from transformers import AutoTokenizer, GPTNeoConfig, GPTNeoForCausalLM

from tinystories.gpt_neo import (
    export_gpt_neo,
    freeze_absent_parameters,
    gpt_neo_hooked_config,
    hooked_from_hf_gpt_neo,
    load_gpt_neo,
)
from tinystories.hub import HubUnavailableError
from tinystories.story_source import StorySourceConfig, generate_records
from tinystories.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer
from wrapperlens.checkpoints import CheckpointError
from wrapperlens.runs import load_hooked_model, save_hooked_model
from wrapperlens.models import fused_attention_active

VOCAB, WINDOW, SEQ = 61, 8, 40  # sequences five windows long


def _random_gpt_neo(
    seed: int = 0, vocab: int = VOCAB, n_positions: int = 64, **overrides
) -> GPTNeoForCausalLM:
    config = GPTNeoConfig(
        vocab_size=vocab,
        max_position_embeddings=n_positions,
        hidden_size=32,
        num_layers=3,
        attention_types=[[["global", "local"], 1], [["local"], 1]],
        num_heads=4,
        window_size=WINDOW,
        bos_token_id=0,
        eos_token_id=0,
        **overrides,
    )
    torch.manual_seed(seed)
    model = GPTNeoForCausalLM(config)
    # HF initialises biases to 0 and LayerNorm weights to 1; randomise every tensor so that a
    # mix-up of any two of them changes the logits.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.2) + (p.ndim == 1) * 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt_neo")
    _random_gpt_neo().save_pretrained(directory)
    return directory


def _hf_logits(model: GPTNeoForCausalLM, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def test_config_mapping_agrees_with_transformer_lens(hf_dir):
    ours = gpt_neo_hooked_config(GPTNeoConfig.from_pretrained(hf_dir))
    theirs = convert_hf_model_config(str(hf_dir))  # TL's own mapping, local-directory branch
    for key in ("d_model", "d_head", "n_heads", "d_mlp", "n_layers", "n_ctx", "eps", "d_vocab",
                "act_fn", "use_attn_scale", "window_size", "normalization_type"):
        assert getattr(ours, key) == theirs[key], key
    assert ours.attn_types == list(theirs["attn_types"]) == ["global", "local", "local"]


def test_local_import_matches_hf_logits_on_sequences_longer_than_the_window(hf_dir):
    hf_model = GPTNeoForCausalLM.from_pretrained(hf_dir).eval()
    model = load_gpt_neo(hf_dir)
    assert model.cfg.n_ctx == 64 and model.cfg.attn_types == ["global", "local", "local"]
    assert fused_attention_active(model)  # the global layer takes the fused path
    tokens = torch.randint(0, VOCAB, (3, SEQ), generator=torch.Generator().manual_seed(1))
    expected = _hf_logits(hf_model, tokens)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), expected, atol=1e-4, rtol=1e-4)
        # The same through TransformerLens's unfused path (a pattern hook forces it).
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    pattern = cache["blocks.1.attn.hook_pattern"]  # a local layer: nothing beyond the window
    offsets = torch.arange(SEQ)[:, None] - torch.arange(SEQ)[None, :]
    assert torch.all(pattern[..., offsets >= WINDOW] == 0)
    assert torch.all(pattern[..., (offsets >= 0) & (offsets < WINDOW)] > 0)


def test_window_matters_so_the_logit_check_can_fail(hf_dir):
    # Guard against a vacuous comparison: importing with every layer global changes the logits.
    hf_model = GPTNeoForCausalLM.from_pretrained(hf_dir).eval()
    model = hooked_from_hf_gpt_neo(hf_model)
    model.cfg.attn_types = ["global"] * 3
    for block in model.blocks:
        block.attn.attn_type = "global"
    tokens = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model(tokens) - _hf_logits(hf_model, tokens)).abs().max() > 1e-2


def test_fine_tuned_model_exports_to_hf_with_matching_logits(hf_dir, tmp_path):
    model = load_gpt_neo(hf_dir)
    tokens = torch.randint(0, VOCAB, (4, SEQ), generator=torch.Generator().manual_seed(3))
    before = model(tokens).detach()
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        loss = model(tokens, return_type="loss")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(tokens)
        assert (after - before).abs().max() > 1e-3  # it really changed
        assert torch.all(model.blocks[0].attn.b_Q == 0) and torch.all(model.unembed.b_U == 0)
        # A non-zero key and value bias are exported exactly (dropped / folded into b_O).
        model.blocks[1].attn.b_K.add_(0.3)
        model.blocks[2].attn.b_V.add_(0.2)
        after = model(tokens)
    out = export_gpt_neo(model, tmp_path / "exported")
    reloaded = GPTNeoForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.tie_word_embeddings is False  # TL trained W_E and W_U separately
    torch.testing.assert_close(_hf_logits(reloaded, tokens), after, atol=1e-4, rtol=1e-4)
    # And back again: the exported directory imports to the same logits.
    with torch.no_grad():
        torch.testing.assert_close(load_gpt_neo(out)(tokens), after, atol=1e-4, rtol=1e-4)


def test_unmodified_export_stays_tied_and_round_trips_through_wrapperlens_checkpoints(
    hf_dir, tmp_path
):
    model = load_gpt_neo(hf_dir)
    save_hooked_model(tmp_path / "hooked", model)
    restored = load_hooked_model(tmp_path / "hooked")
    assert restored.blocks[0].attn.b_Q.requires_grad  # load_hooked_model does not know GPT-Neo
    freeze_absent_parameters(restored)
    assert not restored.blocks[0].attn.b_Q.requires_grad
    out = export_gpt_neo(restored, tmp_path / "hf")
    reloaded = GPTNeoForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.tie_word_embeddings is True
    tokens = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(4))
    hf_model = GPTNeoForCausalLM.from_pretrained(hf_dir).eval()
    torch.testing.assert_close(
        _hf_logits(reloaded, tokens), _hf_logits(hf_model, tokens), atol=1e-4, rtol=1e-4
    )


def test_export_refuses_a_query_bias_and_a_non_gpt_neo_model(hf_dir, tmp_path):
    model = load_gpt_neo(hf_dir)
    with torch.no_grad():
        model.blocks[0].attn.b_Q.add_(0.1)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.b_Q is non-zero"):
        export_gpt_neo(model, tmp_path / "x")
    model = load_gpt_neo(hf_dir)
    model.cfg.use_attn_scale = True
    with pytest.raises(ValueError, match="not of GPT-Neo architecture"):
        export_gpt_neo(model, tmp_path / "y")


def test_export_writes_the_tokenizer_and_import_attaches_it(hf_dir, tmp_path):
    texts = [r["story"] for r in generate_records(StorySourceConfig(n_stories=30, seed=0))]
    tokenizer = train_tokenizer(texts, TokenizerConfig(vocab_size=VOCAB + 250))
    hf_model = GPTNeoForCausalLM.from_pretrained(hf_dir)
    hf_model.resize_token_embeddings(len(tokenizer))
    model = hooked_from_hf_gpt_neo(hf_model.eval(), tokenizer=tokenizer)
    out = export_gpt_neo(model, tmp_path / "with_tok", tokenizer=tokenizer)
    assert (out / "tokenizer.json").is_file() and (out / "special_tokens_map.json").is_file()
    exported = AutoTokenizer.from_pretrained(out)
    text = "Once upon a time, Lily found a ball."
    assert exported(text)["input_ids"] == tokenizer(text)["input_ids"]  # no BOS added on the way
    assert GPTNeoForCausalLM.from_pretrained(out).config.eos_token_id == tokenizer.eos_token_id
    again = load_gpt_neo(out)
    assert again.tokenizer is not None
    assert again.to_string(again.to_tokens(text, prepend_bos=False)[0]) == text


def test_hub_name_offline_fails_fast_with_a_local_directory_hint():
    # tests/conftest.py sets HF_HUB_OFFLINE=1.
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="local HF model directory"):
        load_gpt_neo("roneneldan/TinyStories-1M")
    assert time.perf_counter() - start < 5.0


def test_unreachable_hub_fails_fast_without_offline_mode(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="unreachable"):
        load_gpt_neo("roneneldan/TinyStories-33M", hub_timeout_s=2.0)
    assert time.perf_counter() - start < 5.0


# ---------------------------------------------------------------------------------------------
# Inexact checkpoints: from_pretrained alone fills a missing weight at random, drops an extra one.


def _edited_copy(src: Path, dst: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """A copy of HF directory `src` whose model.safetensors went through `edit` (in place)."""
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_save_pretrained_of_a_tied_model_writes_no_lm_head_and_it_still_loads(hf_dir):
    # The one tensor legitimately absent: lm_head is tied to wte, and HF writes wte only.
    assert GPTNeoConfig.from_pretrained(hf_dir).tie_word_embeddings
    assert "lm_head.weight" not in load_file(hf_dir / "model.safetensors")
    model = load_gpt_neo(hf_dir)
    torch.testing.assert_close(model.W_U.T, model.W_E)


def test_checkpoint_missing_a_tensor_is_refused_naming_the_file_and_the_tensor(hf_dir, tmp_path):
    bad = _edited_copy(hf_dir, tmp_path / "missing",
                       lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
    name = r"'transformer\.h\.1\.mlp\.c_fc\.weight'"
    with pytest.raises(CheckpointError, match="missing.*" + name) as e:
        load_gpt_neo(bad)
    assert str(bad / "model.safetensors") in str(e.value)


def test_untied_checkpoint_without_lm_head_is_refused(tmp_path):
    # With tie_word_embeddings=False lm_head is a weight of its own: absent means missing.
    _random_gpt_neo(tie_word_embeddings=False).save_pretrained(tmp_path / "untied")
    assert "lm_head.weight" in load_file(tmp_path / "untied" / "model.safetensors")
    bad = _edited_copy(tmp_path / "untied", tmp_path / "no_head", lambda t: t.pop("lm_head.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors \['lm_head\.weight'\]"):
        load_gpt_neo(bad)


def test_checkpoint_with_an_unexpected_tensor_is_refused(hf_dir, tmp_path):
    bad = _edited_copy(hf_dir, tmp_path / "extra",
                       lambda t: t.__setitem__("transformer.h.1.mlp.c_gate.weight", torch.ones(4)))
    name = r"'transformer\.h\.1\.mlp\.c_gate\.weight'"
    with pytest.raises(CheckpointError, match="unexpected.*" + name):
        load_gpt_neo(bad)


def test_checkpoint_with_a_mis_shaped_tensor_is_refused_with_both_shapes(hf_dir, tmp_path):
    def narrow(t: dict[str, torch.Tensor]) -> None:
        t["transformer.h.2.attn.attention.q_proj.weight"] = torch.zeros(32, 31)

    bad = _edited_copy(hf_dir, tmp_path / "shape", narrow)
    with pytest.raises(CheckpointError, match=r"'transformer\.h\.2\.attn\.attention\.q_proj"
                       r"\.weight' is \(32, 31\), expected \(32, 32\)"):
        load_gpt_neo(bad)


def test_old_style_causal_mask_buffers_are_ignored_and_the_logits_still_match(hf_dir, tmp_path):
    # Checkpoints from older transformers versions store each layer's causal mask; both HF and
    # TransformerLens rebuild it from the config, so it is the one kind of unused tensor allowed.
    def add_masks(t: dict[str, torch.Tensor]) -> None:
        for layer in range(3):
            t[f"transformer.h.{layer}.attn.attention.bias"] = torch.ones(1, 1, 64, 64).tril()
            t[f"transformer.h.{layer}.attn.attention.masked_bias"] = torch.tensor(-1e9)

    old = _edited_copy(hf_dir, tmp_path / "old", add_masks)
    tokens = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(5))
    expected = _hf_logits(GPTNeoForCausalLM.from_pretrained(hf_dir).eval(), tokens)
    with torch.no_grad():
        torch.testing.assert_close(load_gpt_neo(old)(tokens), expected, atol=1e-4, rtol=1e-4)


def _fake_hub_cache(cache: Path, repo: str, model: GPTNeoForCausalLM, tokenizer) -> Path:
    """Lay out `model` and `tokenizer` as the HF cache holds a downloaded `repo`; the snapshot."""
    commit = "0" * 40
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    model.save_pretrained(snapshot)
    save_tokenizer(tokenizer, snapshot)
    return snapshot


def test_hub_path_checks_the_checkpoint_too(tmp_path, monkeypatch):
    # An offline hub load served by a populated cache (tests/conftest.py sets HF_HUB_OFFLINE=1).
    texts = [r["story"] for r in generate_records(StorySourceConfig(n_stories=30, seed=0))]
    tokenizer = train_tokenizer(texts, TokenizerConfig(vocab_size=VOCAB + 250))
    hf_model = _random_gpt_neo(vocab=len(tokenizer), n_positions=512)
    snapshot = _fake_hub_cache(tmp_path, "roneneldan/TinyStories-1M", hf_model, tokenizer)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    tokens = torch.randint(0, len(tokenizer), (2, SEQ), generator=torch.Generator().manual_seed(6))
    model = load_gpt_neo("tiny-stories-1M")  # TransformerLens's alias of the hub name
    assert model.cfg.n_ctx == 512  # TransformerLens's TinyStories context, not the config's
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), _hf_logits(hf_model, tokens), atol=1e-4,
                                   rtol=1e-4)
    tensors = load_file(snapshot / "model.safetensors")
    del tensors["transformer.h.0.ln_2.bias"]
    save_file(tensors, snapshot / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"TinyStories-1M.*missing.*transformer\.h\.0\.ln_2"):
        load_gpt_neo("roneneldan/TinyStories-1M")
