"""Every HookedTransformer in wrapperlens is built here.

TransformerLens 3.9 is the last release with `HookedTransformer`; it warns on every construction
that the class will be removed in 4.0. This module is the single place that constructs one, filters
exactly that warning, and is therefore the only module a later port to
`TransformerBridge.boot_native` has to touch.

It also installs a **fused attention path**. TransformerLens computes attention with an explicit
`[batch, head, query, key]` score and pattern tensor so that `hook_attn_scores` and `hook_pattern`
can read them; at sequence 257 that materialisation makes training 1.5-3x slower than
`torch.nn.functional.scaled_dot_product_attention`. `FusedAttention` uses the fused kernel whenever
nothing can observe the scores or the pattern (no hook on either, no KV cache, no padding mask) and
falls back to TransformerLens's own code otherwise, so `run_with_cache`, `hook_pattern` ablations
and attention views see exactly what they would see without it. `hook_q`, `hook_k`, `hook_v`,
`hook_z` (and `hook_rot_q/k` for rotary models) fire on both paths.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.components import Attention, LayerNorm, TransformerBlock
from transformer_lens.hook_points import HookPoint

# The shape of a model lives in its own module (this one would pass 400 lines); import it as
# `wrapperlens.models.ModelConfig`, beside the builder.
from wrapperlens.model_config import ARCHITECTURES, ModelConfig

__all__ = [
    "ARCHITECTURES",
    "ModelConfig",
    "FusedAttention",
    "build_model",
    "hooked_transformer",
    "hooked_transformer_from_pretrained",
    "set_fused_attention",
    "fused_attention_active",
]

_DEPRECATION_MESSAGE = r"HookedTransformer is deprecated and will be removed in 4\.0.*"


def _has_hooks(hook_point: HookPoint) -> bool:
    return bool(
        hook_point._forward_hooks or hook_point._forward_pre_hooks or hook_point._backward_hooks
    )


class FusedAttention(Attention):
    """TransformerLens `Attention` with a fused fast path for when the pattern is unobserved.

    Instances are ordinary `Attention` modules whose class was swapped by `build_model` /
    `hooked_transformer`; parameters, buffers and hook points are untouched, so state dicts and
    hook names are exactly TransformerLens's.
    """

    use_fused: bool = True

    def _can_fuse(self, past_kv_cache_entry, additive_attention_mask, attention_mask, position_bias):
        cfg = self.cfg
        return (
            self.use_fused
            and past_kv_cache_entry is None
            and additive_attention_mask is None
            and attention_mask is None
            and position_bias is None
            and self.attn_type == "global"
            and cfg.positional_embedding_type in ("standard", "rotary", "shortformer")
            and (self._attention_dir_override or cfg.attention_dir) == "causal"
            and not cfg.use_attn_result
            and not cfg.use_attention_sinks
            and not cfg.use_logn_attn
            and cfg.clip_qkv is None
            and cfg.attn_scores_soft_cap <= 0
            and cfg.original_architecture
            not in ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
            and not cfg.load_in_4bit
            and not _has_hooks(self.hook_attn_scores)
            and not _has_hooks(self.hook_pattern)
        )

    def forward(
        self,
        query_input,
        key_input,
        value_input,
        past_kv_cache_entry=None,
        additive_attention_mask=None,
        attention_mask=None,
        position_bias=None,
    ):
        if not self._can_fuse(
            past_kv_cache_entry, additive_attention_mask, attention_mask, position_bias
        ):
            return super().forward(
                query_input,
                key_input,
                value_input,
                past_kv_cache_entry=past_kv_cache_entry,
                additive_attention_mask=additive_attention_mask,
                attention_mask=attention_mask,
                position_bias=position_bias,
            )
        q, k, v = self.calculate_qkv_matrices(query_input, key_input, value_input)
        if self.cfg.positional_embedding_type == "rotary":
            q = self.hook_rot_q(self.apply_rotary(q, 0, None))
            k = self.hook_rot_k(self.apply_rotary(k, 0, None))
        # [batch, pos, head, d_head] -> [batch, head, pos, d_head] for the fused kernel.
        z = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            scale=1.0 / self.attn_scale,
        )
        z = self.hook_z(z.transpose(1, 2))
        batch, pos = z.shape[0], z.shape[1]
        w_o = self.W_O.reshape(self.cfg.n_heads * self.cfg.d_head, self.cfg.d_model)
        return F.linear(z.reshape(batch, pos, -1), w_o.T, self.b_O)


class FusedLayerNorm(LayerNorm):
    """TransformerLens `LayerNorm` that calls `F.layer_norm` while `hook_scale` and
    `hook_normalized` are unobserved (same function; TransformerLens spells it out in five ops)."""

    use_fused: bool = True

    def forward(self, x):
        if (
            self.use_fused
            and x.dtype == self.w.dtype
            and self.cfg.dtype in (torch.float32, torch.float64)
            and not _has_hooks(self.hook_scale)
            and not _has_hooks(self.hook_normalized)
        ):
            return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
        return super().forward(x)


class FusedBlock(TransformerBlock):
    """TransformerLens `TransformerBlock` that normalises the residual once for q, k and v.

    TransformerLens calls `ln1` three times on the same tensor (once each for the query, key and
    value inputs, so that split-input hooks can differ). When nothing hooks `ln1` and the block has
    the plain pre-norm layout, one call gives identical values; every block-level hook
    (`hook_resid_pre`, `hook_attn_out`, `hook_resid_mid`, `hook_mlp_out`, `hook_resid_post`) fires
    as before. Any other layout goes to TransformerLens's own forward.
    """

    use_fused: bool = True

    def _plain_layout(self, shortformer_pos_embed) -> bool:
        cfg = self.cfg
        return (
            self.use_fused
            and shortformer_pos_embed is None
            and not cfg.use_attn_in
            and not cfg.use_split_qkv_input
            and not cfg.use_normalization_before_and_after
            and not cfg.use_hook_mlp_in
            and not cfg.attn_only
            and not cfg.parallel_attn_mlp
            and cfg.original_architecture
            not in ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
            and isinstance(self.ln1, (FusedLayerNorm, LayerNorm))
            and not _has_hooks(self.ln1.hook_scale)
            and not _has_hooks(self.ln1.hook_normalized)
        )

    def forward(
        self,
        resid_pre,
        shortformer_pos_embed=None,
        past_kv_cache_entry=None,
        attention_mask=None,
    ):
        if not self._plain_layout(shortformer_pos_embed):
            return super().forward(
                resid_pre,
                shortformer_pos_embed=shortformer_pos_embed,
                past_kv_cache_entry=past_kv_cache_entry,
                attention_mask=attention_mask,
            )
        resid_pre = self.hook_resid_pre(resid_pre)
        normalized = self.ln1(resid_pre)
        attn_out = self.attn(
            query_input=normalized,
            key_input=normalized,
            value_input=normalized,
            past_kv_cache_entry=past_kv_cache_entry,
            attention_mask=attention_mask,
        )
        attn_out = self.hook_attn_out(attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.apply_mlp(self.ln2(resid_mid))
        return self.hook_resid_post(resid_mid + mlp_out)


def set_fused_attention(model: HookedTransformer, enabled: bool) -> None:
    """Turn the fused fast paths (attention, LayerNorm, single ln1 call) on or off for every block.

    Other module classes (grouped-query attention, RMSNorm, ...) always run TransformerLens's code.
    """
    # Swapping __class__ keeps parameters, buffers, hook points and state-dict keys untouched.
    swaps = [(Attention, FusedAttention), (LayerNorm, FusedLayerNorm), (TransformerBlock, FusedBlock)]
    for module in model.modules():
        for base, fused in swaps:
            if type(module) in (base, fused):
                module.__class__ = fused
                module.use_fused = enabled


def fused_attention_active(model: HookedTransformer) -> bool:
    """Whether at least one block would use the fused kernel on an unhooked forward."""
    return any(isinstance(b.attn, FusedAttention) and b.attn.use_fused for b in model.blocks)


def hooked_transformer(
    cfg: HookedTransformerConfig | dict[str, Any],
    *,
    fused_attention: bool = True,
    init_seed: int | None = None,
) -> HookedTransformer:
    """Construct a HookedTransformer from a TransformerLens config (the one construction site).

    Args:
        cfg: A `HookedTransformerConfig` or the keyword dict for one.
        fused_attention: Install the fused attention fast path (see module docstring).
        init_seed: If given, weights are initialised under `torch.manual_seed(init_seed)` with the
            global RNG state restored afterwards, so the same seed gives bit-identical weights.

    Returns:
        The model, in train mode, on CPU.
    """
    if isinstance(cfg, dict):
        cfg = HookedTransformerConfig(**cfg)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION_MESSAGE, category=DeprecationWarning)
        if init_seed is None:
            model = HookedTransformer(cfg)
        else:
            with torch.random.fork_rng(devices=[]):
                # Models are built on CPU; torch.manual_seed would also reseed the CUDA
                # generators, which fork_rng(devices=[]) does not restore.
                torch.random.default_generator.manual_seed(init_seed)
                model = HookedTransformer(cfg)
    set_fused_attention(model, fused_attention)
    return model


def build_model(cfg: ModelConfig, *, d_vocab: int, n_ctx: int | None = None) -> HookedTransformer:
    """Build the HookedTransformer that `cfg` describes, seeded by `cfg.init_seed`.

    Args:
        cfg: The shape.
        d_vocab: Vocabulary size (the task's or the tokenizer's).
        n_ctx: The task's context length, for configs with `n_ctx` 0 (the PCFG models); story
            LMs carry theirs in `cfg.n_ctx`.
    """
    return hooked_transformer(
        cfg.to_hooked_config(d_vocab=d_vocab, n_ctx=n_ctx),
        fused_attention=cfg.fused_attention,
        init_seed=cfg.init_seed,
    )


def hooked_transformer_from_pretrained(name: str, **kwargs: Any) -> HookedTransformer:
    """`HookedTransformer.from_pretrained` behind the same warning filter (hub path; needs network
    or a populated HF cache)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION_MESSAGE, category=DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message=r"HookedTransformer\.from_pretrained is deprecated.*",
            category=DeprecationWarning,
        )
        model = HookedTransformer.from_pretrained(name, **kwargs)
    set_fused_attention(model, True)
    return model
