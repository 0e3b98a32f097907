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
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.components import Attention, LayerNorm, TransformerBlock
from transformer_lens.hook_points import HookPoint

__all__ = [
    "ModelConfig",
    "FusedAttention",
    "build_model",
    "hooked_transformer",
    "set_fused_attention",
    "fused_attention_active",
]

_DEPRECATION_MESSAGE = r"HookedTransformer is deprecated and will be removed in 4\.0.*"


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a decoder-only HookedTransformer for the procedural tasks.

    `n_ctx` and `d_vocab` are not part of the shape a user picks: they follow from the task
    (sequence length and vocabulary) and are passed to `build_model`.

    Attributes:
        n_layers: Number of transformer blocks.
        d_model: Residual stream width.
        n_heads: Attention heads per block; `d_model` must be divisible by it.
        d_mlp: MLP hidden width; 0 means 4 * d_model (minGPT).
        act_fn: MLP nonlinearity (any TransformerLens activation name, e.g. "gelu", "relu").
        normalization: "LN" (minGPT's pre-LayerNorm) or "RMS"; TransformerLens names.
        positional: "standard" (learned absolute positions, minGPT) or "rotary".
        fused_attention: Use the fused attention kernel when no hook reads the pattern.
        init_seed: Seed of the weight initialisation (a torch.Generator is not threaded through
            TransformerLens's init, so the global RNG is seeded and restored around it).
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 0
    act_fn: str = "gelu"
    normalization: str = "LN"
    positional: str = "standard"
    fused_attention: bool = True
    init_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_mlp < 0:
            raise ValueError(f"model.d_mlp must be >= 0 (0 means 4*d_model), got {self.d_mlp}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}"
            )
        if self.normalization not in ("LN", "RMS"):
            raise ValueError(f"model.normalization must be 'LN' or 'RMS', got {self.normalization!r}")
        if self.positional not in ("standard", "rotary"):
            raise ValueError(
                f"model.positional must be 'standard' or 'rotary', got {self.positional!r}"
            )

    def to_hooked_config(self, n_ctx: int, d_vocab: int) -> HookedTransformerConfig:
        """The TransformerLens config for this shape at a given context and vocabulary size."""
        d_head = self.d_model // self.n_heads
        extra: dict[str, Any] = {}
        if self.positional == "rotary":
            extra["rotary_dim"] = d_head
        return HookedTransformerConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=d_head,
            d_mlp=self.d_mlp or 4 * self.d_model,
            n_ctx=n_ctx,
            d_vocab=d_vocab,
            act_fn=self.act_fn,
            normalization_type=self.normalization,
            positional_embedding_type=self.positional,
            attention_dir="causal",
            default_prepend_bos=False,
            seed=None,
            device="cpu",
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
                torch.manual_seed(init_seed)
                model = HookedTransformer(cfg)
    set_fused_attention(model, fused_attention)
    return model


def build_model(cfg: ModelConfig, *, n_ctx: int, d_vocab: int) -> HookedTransformer:
    """Build the HookedTransformer that `cfg` describes for a task's context and vocabulary."""
    return hooked_transformer(
        cfg.to_hooked_config(n_ctx=n_ctx, d_vocab=d_vocab),
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
