"""The fused fast paths in wrapperlens.models against TransformerLens's own code."""

import torch

from wrapperlens.models import ModelConfig, build_model, fused_attention_active, set_fused_attention


def _pair(**overrides):
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, **overrides)
    return build_model(cfg, n_ctx=24, d_vocab=20)


def test_same_seed_gives_identical_weights_and_different_seed_does_not():
    a, b = _pair(init_seed=3), _pair(init_seed=3)
    c = _pair(init_seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.W_E, c.W_E)


def test_fused_path_matches_transformer_lens_path_for_logits_and_gradients():
    for positional in ("standard", "rotary"):
        model = _pair(positional=positional)
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
