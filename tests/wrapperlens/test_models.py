"""Model shapes (the architecture presets, as built before) and the fused fast paths in
wrapperlens.models against TransformerLens's own code."""

import pytest
import torch
from transformer_lens import HookedTransformerConfig

from tasks.data import PCFGTask
from wrapperlens.config import ConfigError, from_dict
from wrapperlens.models import (
    ModelConfig,
    build_model,
    fused_attention_active,
    hooked_transformer,
    set_fused_attention,
)
from wrapperlens.presets import get_preset


def _pair(**overrides):
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, **overrides)
    return build_model(cfg, n_ctx=24, d_vocab=20)


def _mingpt_kwargs(n_layers, d_model, n_heads, n_ctx, d_vocab, positional="standard"):
    """The HookedTransformerConfig kwargs the PCFG models were built from before ModelConfig had
    an architecture (its to_hooked_config, written out)."""
    d_head = d_model // n_heads
    extra = {"rotary_dim": d_head} if positional == "rotary" else {}
    return dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_head,
                d_mlp=4 * d_model, n_ctx=n_ctx, d_vocab=d_vocab, act_fn="gelu",
                normalization_type="LN", positional_embedding_type=positional,
                attention_dir="causal", default_prepend_bos=False, seed=None, device="cpu", **extra)


def _differing(ours: HookedTransformerConfig, expected: HookedTransformerConfig) -> dict:
    a, b = ours.to_dict(), expected.to_dict()
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


@pytest.mark.parametrize("name, shape", [("tiny", (1, 32, 2)), ("cpu", (2, 64, 4)),
                                         ("paper", (6, 192, 6))])
def test_pcfg_presets_build_the_same_models_as_before(name, shape):
    p = get_preset(name, "pcfg")
    task = PCFGTask(p.task)
    n_ctx, d_vocab = task.n_ctx, len(task.vocab)
    kwargs = _mingpt_kwargs(*shape, n_ctx, d_vocab)
    expected = HookedTransformerConfig(**kwargs)
    assert _differing(p.model.to_hooked_config(n_ctx=n_ctx, d_vocab=d_vocab), expected) == {}
    ours = build_model(p.model, n_ctx=n_ctx, d_vocab=d_vocab).state_dict()
    before = hooked_transformer(kwargs, init_seed=0).state_dict()
    assert ours.keys() == before.keys()
    assert all(torch.equal(ours[k], before[k]) for k in ours)


def test_a_saved_pcfg_model_section_with_rotary_positions_builds_as_before():
    # config.json of a PCFG run from before: the architecture's choices written out.
    saved = {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_mlp": 0, "act_fn": "gelu",
             "normalization": "LN", "positional": "rotary", "fused_attention": True,
             "init_seed": 3}
    cfg = from_dict(ModelConfig, saved, "model")
    kwargs = _mingpt_kwargs(2, 32, 4, 24, 20, positional="rotary")
    assert _differing(cfg.to_hooked_config(n_ctx=24, d_vocab=20),
                      HookedTransformerConfig(**kwargs)) == {}
    ours, before = build_model(cfg, n_ctx=24, d_vocab=20), hooked_transformer(kwargs, init_seed=3)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                 before.state_dict().values()))


def test_architecture_choices_can_be_overridden_one_at_a_time():
    llama = ModelConfig(architecture="llama", n_layers=1, d_model=48, n_heads=2, n_ctx=8)
    hooked = llama.to_hooked_config(d_vocab=10)
    assert (hooked.normalization_type, hooked.positional_embedding_type, hooked.act_fn,
            hooked.gated_mlp, hooked.d_mlp) == ("RMS", "rotary", "silu", True, 128)
    changed = ModelConfig(architecture="llama", n_layers=1, d_model=48, n_heads=2, n_ctx=8,
                          normalization="LN", gated_mlp=False, d_mlp=100)
    changed = changed.to_hooked_config(d_vocab=10)
    assert (changed.normalization_type, changed.positional_embedding_type, changed.gated_mlp,
            changed.d_mlp) == ("LN", "rotary", False, 100)
    relu = ModelConfig(act_fn="relu", positional="rotary").to_hooked_config(n_ctx=8, d_vocab=10)
    assert (relu.act_fn, relu.normalization_type, relu.rotary_dim) == ("relu", "LN", 16)


def test_n_ctx_comes_from_the_config_or_the_task_and_a_conflict_names_the_key():
    assert build_model(ModelConfig(n_ctx=12), d_vocab=10).cfg.n_ctx == 12
    assert build_model(ModelConfig(), n_ctx=9, d_vocab=10).cfg.n_ctx == 9
    assert build_model(ModelConfig(n_ctx=9), n_ctx=9, d_vocab=10).cfg.n_ctx == 9
    with pytest.raises(ConfigError, match="model.n_ctx is 0"):
        build_model(ModelConfig(), d_vocab=10)
    with pytest.raises(ConfigError, match="model.n_ctx=12, but the task's sequences need n_ctx=9"):
        build_model(ModelConfig(n_ctx=12), n_ctx=9, d_vocab=10)


@pytest.mark.parametrize("kwargs, message", [
    ({"architecture": "mamba"}, "model.architecture must be one of"),
    ({"architecture": "gpt"}, "'gpt' is now 'gpt-neo'"),
    ({"d_model": 30, "n_heads": 4}, "model.d_model=30 is not divisible"),
    ({"normalization": "BN"}, "model.normalization"),
    ({"positional": "alibi"}, "model.positional"),
    ({"architecture": "llama", "d_model": 6, "n_heads": 2}, "rotary positions need an even"),
    ({"n_ctx": -1}, "model.n_ctx must be >= 0"),
])
def test_model_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_same_seed_gives_identical_weights_and_different_seed_does_not():
    a, b = _pair(init_seed=3), _pair(init_seed=3)
    c = _pair(init_seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.W_E, c.W_E)


@pytest.mark.parametrize("shape", [{"positional": "standard"}, {"positional": "rotary"},
                                   {"architecture": "llama"}])
def test_fused_path_matches_transformer_lens_path_for_logits_and_gradients(shape):
    # Story LMs (llama: RMSNorm, rotary, gated MLP) are built with the fused attention too.
    model = _pair(**shape)
    tokens = torch.randint(0, 20, (3, 24))
    assert fused_attention_active(model)
    fused = model(tokens)
    fused.sum().backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    set_fused_attention(model, False)
    assert not fused_attention_active(model)
    plain = model(tokens)
    plain.sum().backward()
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    for g_fused, p in zip(fused_grads, model.parameters()):
        torch.testing.assert_close(g_fused, p.grad, atol=1e-4, rtol=1e-4)


def test_hooks_fire_on_fused_path_and_pattern_hooks_take_the_full_path():
    model = _pair()
    tokens = torch.randint(0, 20, (2, 24))
    seen: list[str] = []

    def record(tensor, hook):
        seen.append(hook.name)

    wanted = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_resid_mid", "hook_mlp_out", "hook_post")
    model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n.endswith(wanted), record)])
    assert {n.split(".")[-1] for n in seen} >= {w for w in wanted}
    assert all(f"blocks.{layer}.attn.hook_z" in seen for layer in range(2))

    # A hook that edits the pattern must take effect, so the fused kernel must step aside.
    def uniform(pattern, hook):
        mask = torch.tril(torch.ones_like(pattern))
        return mask / mask.sum(-1, keepdim=True)

    base = model(tokens)
    edited = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
    assert not torch.allclose(base, edited)
    set_fused_attention(model, False)
    reference = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
    torch.testing.assert_close(edited, reference, atol=1e-5, rtol=1e-5)


def test_run_with_cache_returns_patterns_equal_to_a_manual_softmax():
    model = _pair()
    tokens = torch.randint(0, 20, (2, 24))
    _, cache = model.run_with_cache(tokens)
    q, k = cache["blocks.1.attn.hook_q"], cache["blocks.1.attn.hook_k"]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~torch.tril(torch.ones(24, 24, dtype=torch.bool)), float("-inf"))
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], scores.softmax(-1), atol=1e-5, rtol=1e-5)
