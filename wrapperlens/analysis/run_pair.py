"""The two runs of a patch: checks that a source run can be spliced into a target run.

Activation patching (`patching.py`), attribution patching (`attribution.py`) and the wrapper map
copy activations of a *source* run into a *target* run. That is only meaningful if both models
have every activation at the same shape (the same architecture; the weights may differ, as for a
pretrained model and its fine-tuned copy) and both inputs have the same `[batch, pos]` shape.
`resolve_source` applies these checks once, with errors that name the field or tensor at fault.
"""

from __future__ import annotations

from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

__all__ = ["ARCHITECTURE_FIELDS", "check_same_architecture", "check_tokens", "resolve_source"]

# Config fields that decide which activations exist and what shape they have.
ARCHITECTURE_FIELDS = (
    "n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "d_vocab_out",
    "act_fn", "normalization_type", "positional_embedding_type", "rotary_dim", "attn_only",
    "parallel_attn_mlp", "gated_mlp", "n_key_value_heads", "attention_dir", "num_experts", "dtype",
)  # fmt: skip


def check_same_architecture(source: HookedTransformer, target: HookedTransformer) -> None:
    """Raise ValueError naming the first architecture field where the two models differ."""
    for name in ARCHITECTURE_FIELDS:
        a, b = getattr(source.cfg, name, None), getattr(target.cfg, name, None)
        if a != b:
            raise ValueError(
                f"source and target models differ in cfg.{name}: {a!r} vs {b!r}; "
                "activations can only be patched between models of the same architecture"
            )


def check_tokens(tokens: Tensor, name: str, model: HookedTransformer) -> None:
    """Raise ValueError unless `tokens` is a `[batch, pos]` id tensor that `model` can run."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype.is_floating_point:
        raise ValueError(f"{name} must be an integer tensor [batch, pos], got {tokens!r}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"{name} has {tokens.shape[1]} positions > n_ctx={model.cfg.n_ctx}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab):
        raise ValueError(f"{name} holds ids outside the vocabulary of size {model.cfg.d_vocab}")


def resolve_source(
    target_model: HookedTransformer,
    target_tokens: Tensor,
    source_model: HookedTransformer | None,
    source_tokens: Tensor | None,
) -> tuple[HookedTransformer, Int[Tensor, "batch pos"]]:
    """The source run of a patch (default: the target's own model / tokens), checked against the
    target: same architecture, valid token ids, same token shape.

    The inputs are plain tensors so that a wrong one gets the messages below rather than a
    shape-checker's.

    Returns:
        (source model, source tokens `[batch, pos]`, the target's shape).
    """
    source_model = target_model if source_model is None else source_model
    source_tokens = target_tokens if source_tokens is None else source_tokens
    check_same_architecture(source_model, target_model)
    check_tokens(target_tokens, "target_tokens", target_model)
    check_tokens(source_tokens, "source_tokens", source_model)
    if source_tokens.shape != target_tokens.shape:
        raise ValueError(
            f"source_tokens {tuple(source_tokens.shape)} and target_tokens "
            f"{tuple(target_tokens.shape)} must have the same shape"
        )
    return source_model, source_tokens
