"""GPT-Neo checkpoints (the public TinyStories models) as HookedTransformers, and back to HF.

The TinyStories models on the hub (`roneneldan/TinyStories-1M` ... `-33M`) are GPT-Neo: learned
absolute positions, pre-LayerNorm, GELU ("gelu_new") MLPs, no attention scaling, no q/k/v biases,
tied input/output embeddings, and layers alternating between global attention and local
(sliding-window) attention. This module

- imports them: `load_gpt_neo(name_or_dir)` takes a hub name (through TransformerLens, needs the
  hub or an HF cache; without them it fails in seconds, saying how to pass a local directory) or
  any local HF directory (offline: `GPTNeoForCausalLM.from_pretrained(dir)`, the config mapped
  as TransformerLens maps it, the weights converted with TransformerLens's own
  `convert_neo_weights`);
- refuses, on both paths, a checkpoint with a missing, unexpected or mis-shaped tensor, naming
  the file and the tensor (`wrapperlens.hf_loading.from_pretrained_checked`; `from_pretrained`
  alone would fill a missing weight with random values and only log it);
- exports a (fine-tuned) HookedTransformer of this architecture back to an HF directory
  (`export_gpt_neo`), with the inverse conversion and the tokenizer.

Weights are kept **unprocessed** (no LayerNorm folding, no centering): `HookedTransformer.
from_pretrained` folds and centers by default, which changes the weights (not the log-probs) and
would make export impossible, so the hub path turns that off too. Logits equal HF's to float
precision (the tests check 1e-4).

Three differences a user fine-tuning such a model should know:

- TransformerLens gives every head a query, key and value bias and the unembedding a bias, which
  GPT-Neo lacks. They are imported as zeros and frozen (`requires_grad=False`;
  `freeze_absent_parameters` re-applies that after `load_hooked_model`). On export a changed key
  bias is dropped (it shifts every score of a query equally, which softmax ignores) and a changed
  value bias is folded into the output bias (attention weights sum to one), both exact; a
  non-zero query or unembedding bias has no GPT-Neo counterpart and export refuses it.
- TransformerLens keeps `W_E` and `W_U` as separate parameters, so fine-tuning unties them;
  export then writes `tie_word_embeddings=False`.
- TinyStories checkpoints were trained with a 512-token context although their config says 2048
  (TransformerLens issue #492); `n_ctx` defaults to 512 for them and the positional table is
  trimmed to it. Export writes `max_position_embeddings = n_ctx`.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import einops
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.loading_from_pretrained import get_official_model_name
from transformer_lens.pretrained.weight_conversions.neo import convert_neo_weights
from transformer_lens.supported_models import OFFICIAL_MODEL_NAMES
from transformers import AutoConfig, GPTNeoConfig, GPTNeoForCausalLM, PreTrainedTokenizerBase
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME

from tinystories.gpt_neo_check import check_gpt_neo_dir
from tinystories.hub import check_hub_reachable, hub_offline_mode, hub_unavailable
from tinystories.tokenizer import load_tokenizer, save_tokenizer
from wrapperlens.checkpoints import load_state_dict_checked
from wrapperlens.hf_loading import from_pretrained_checked
from wrapperlens.models import hooked_transformer, hooked_transformer_from_pretrained

__all__ = [
    "GPT_NEO_ARCHITECTURE",
    "TINYSTORIES_N_CTX",
    "TINYSTORIES_MODELS",
    "gpt_neo_hooked_config",
    "hooked_from_hf_gpt_neo",
    "load_gpt_neo",
    "freeze_absent_parameters",
    "hf_gpt_neo_config",
    "hf_gpt_neo_state_dict",
    "export_gpt_neo",
]

GPT_NEO_ARCHITECTURE = "GPTNeoForCausalLM"
TINYSTORIES_N_CTX = 512
TINYSTORIES_MODELS = tuple(
    name for name in OFFICIAL_MODEL_NAMES if name.startswith("roneneldan/TinyStories")
)
"""The TinyStories checkpoints TransformerLens knows by name (all GPT-Neo)."""
_LOCAL_HINT = (
    f"Pass a local HF model directory instead ({CONFIG_NAME} + {SAFE_WEIGHTS_NAME} or "
    f"{WEIGHTS_NAME}, e.g. a downloaded copy of the checkpoint): "
    "load_gpt_neo('path/to/TinyStories-33M')."
)
_ABSENT = ("b_Q", "b_K", "b_V")
# Checkpoints written by older transformers versions carry each layer's causal-mask buffers
# (`attn.attention.bias`, `attn.attention.masked_bias`); today's GPT-Neo (and TransformerLens)
# compute them from the config, so they may go unused. Any other unused tensor is refused.
_DERIVED_BUFFERS = r"(?:^|\.)h\.\d+\.attn\.attention\.(?:bias|masked_bias)$"


def gpt_neo_hooked_config(
    hf_config: GPTNeoConfig, n_ctx: int | None = None
) -> HookedTransformerConfig:
    """The TransformerLens config of a GPT-Neo model (as TransformerLens's own
    `convert_hf_model_config` maps it, plus `intermediate_size` when set, which TL ignores).

    Args:
        hf_config: The HF `GPTNeoConfig`.
        n_ctx: Context length; None: 512 for TinyStories checkpoints (by name), else
            `max_position_embeddings`.
    """
    if getattr(hf_config, "model_type", None) != "gpt_neo":
        raise ValueError(
            f"expected a GPT-Neo config (model_type 'gpt_neo'), got "
            f"{getattr(hf_config, 'model_type', None)!r}"
        )
    if n_ctx is None:
        n_ctx = hf_config.max_position_embeddings
        if "tinystories" in str(getattr(hf_config, "_name_or_path", "")).lower():
            n_ctx = min(n_ctx, TINYSTORIES_N_CTX)
    if not 1 <= n_ctx <= hf_config.max_position_embeddings:
        raise ValueError(
            f"n_ctx={n_ctx} must be in [1, max_position_embeddings="
            f"{hf_config.max_position_embeddings}]"
        )
    d_model = hf_config.hidden_size
    return HookedTransformerConfig(
        d_model=d_model,
        d_head=d_model // hf_config.num_heads,
        n_heads=hf_config.num_heads,
        d_mlp=hf_config.intermediate_size or 4 * d_model,
        n_layers=hf_config.num_layers,
        n_ctx=n_ctx,
        eps=hf_config.layer_norm_epsilon,
        d_vocab=hf_config.vocab_size,
        attn_types=list(hf_config.attention_layers),
        act_fn=hf_config.activation_function,
        use_attn_scale=False,
        use_local_attn=True,
        window_size=hf_config.window_size,
        scale_attn_by_inverse_layer_idx=False,
        normalization_type="LN",
        positional_embedding_type="standard",
        original_architecture=GPT_NEO_ARCHITECTURE,
        default_prepend_bos=False,
        init_weights=False,
        seed=None,
        device="cpu",
    )


def freeze_absent_parameters(model: HookedTransformer) -> None:
    """Freeze the q/k/v biases and the unembedding bias, which GPT-Neo does not have."""
    for block in model.blocks:
        for name in _ABSENT:
            getattr(block.attn, name).requires_grad_(False)
    model.unembed.b_U.requires_grad_(False)


def hooked_from_hf_gpt_neo(
    hf_model: GPTNeoForCausalLM,
    n_ctx: int | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    fused_attention: bool = True,
) -> HookedTransformer:
    """Convert an HF GPT-Neo model (in memory) to an unprocessed HookedTransformer.

    Args:
        hf_model: The HF model (any dtype; converted to float32).
        n_ctx: See `gpt_neo_hooked_config`.
        tokenizer: Attached with `set_tokenizer` if given, so `model.to_tokens` works.
        fused_attention: Install wrapperlens's fused path (global layers only; local layers
            always run TransformerLens's masked attention).

    Returns:
        The model in eval mode, absent biases frozen.
    """
    cfg = gpt_neo_hooked_config(hf_model.config, n_ctx)
    model = hooked_transformer(cfg, fused_attention=fused_attention)
    state = convert_neo_weights(hf_model, cfg)
    state = {k: v.detach().to(torch.float32) for k, v in state.items()}
    # Buffers (attention masks) are computed from the config, not converted.
    parameters = dict(model.named_parameters())
    state.update({k: v for k, v in model.state_dict().items() if k not in parameters})
    load_state_dict_checked(model, state, f"GPT-Neo weights of {hf_model.name_or_path or 'model'}")
    if tokenizer is not None:
        _attach_tokenizer(model, tokenizer)
    freeze_absent_parameters(model)
    return model.eval()


def _attach_tokenizer(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase) -> None:
    # TransformerLens's set_tokenizer reloads the tokenizer from `init_kwargs["name_or_path"]`
    # (to get a BOS-prepending copy); a tokenizer built in memory has no such path, so it goes
    # through a temporary directory.
    if tokenizer.init_kwargs.get("name_or_path"):
        model.set_tokenizer(tokenizer, default_padding_side="right")
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_tokenizer(tokenizer, tmp)
        model.set_tokenizer(load_tokenizer(tmp), default_padding_side="right")


def _looks_like_hub_name(name: str) -> bool:
    # "owner/model", or a TransformerLens alias such as "tiny-stories-33M".
    return name.count("/") <= 1 and not Path(name).exists() and not name.startswith((".", "/", "~"))


def load_gpt_neo(
    name_or_dir: str | Path,
    n_ctx: int | None = None,
    with_tokenizer: bool = True,
    hub_timeout_s: float = 3.0,
) -> HookedTransformer:
    """A GPT-Neo checkpoint as an unprocessed HookedTransformer, from a local dir or the hub.

    Args:
        name_or_dir: A local HF directory (read offline) or a hub name such as
            `roneneldan/TinyStories-33M` (read through TransformerLens).
        n_ctx: See `gpt_neo_hooked_config` (hub TinyStories names: TransformerLens's 512).
        with_tokenizer: Attach the directory's tokenizer if it has one.
        hub_timeout_s: How long to wait for a connection to the hub.

    Raises:
        HubUnavailableError: a hub name without hub or cache, within about `hub_timeout_s`.
        FileNotFoundError: neither a directory with `config.json` nor a hub name.
        CheckpointError: the weights lack a tensor of the config's architecture (tied output
            embeddings excepted), have one it does not, or have one of another shape.
        ValueError: a hub model that is not GPT-Neo.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; not an HF model directory")
        check_gpt_neo_dir(path)
        hf_model = from_pretrained_checked(
            GPTNeoForCausalLM, path, allowed_unexpected=_DERIVED_BUFFERS,
            local_files_only=True,
        )
        tokenizer = None
        if with_tokenizer and any((path / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            tokenizer = load_tokenizer(path)
        return hooked_from_hf_gpt_neo(hf_model.eval(), n_ctx=n_ctx, tokenizer=tokenizer)
    name = str(name_or_dir)
    if not _looks_like_hub_name(name):
        raise FileNotFoundError(f"{name!r} is not a local directory and not a hub model name")
    check_hub_reachable(name, "model", _LOCAL_HINT, hub_timeout_s)
    kwargs: dict[str, Any] = dict(
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        default_prepend_bos=False,
        device="cpu",
    )
    if n_ctx is not None:
        kwargs["n_ctx"] = n_ctx
    official = get_official_model_name(name)  # ValueError for a name TransformerLens lacks
    try:
        # The HF model is loaded (and checked) here and handed to TransformerLens, which would
        # otherwise call the lenient `from_pretrained` itself.
        hf_config = AutoConfig.from_pretrained(official)
        if hf_config.model_type != "gpt_neo":
            architecture = (getattr(hf_config, "architectures", None) or [hf_config.model_type])[0]
            raise ValueError(f"{name} is a {architecture}, not GPT-Neo")
        hf_model = from_pretrained_checked(
            GPTNeoForCausalLM, official, config=hf_config, allowed_unexpected=_DERIVED_BUFFERS,
            dtype=torch.float32,
        )
        model = hooked_transformer_from_pretrained(official, hf_model=hf_model.eval(), **kwargs)
    except (ConnectionError, OSError) as e:
        if isinstance(e, ConnectionError) or hub_offline_mode():
            raise hub_unavailable(name, "model", _LOCAL_HINT, e) from e
        raise
    freeze_absent_parameters(model)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Export.


def _check_exportable(cfg: HookedTransformerConfig) -> None:
    wanted = {
        "normalization_type": "LN",
        "positional_embedding_type": "standard",
        "use_attn_scale": False,
        "gated_mlp": False,
        "attn_only": False,
        "parallel_attn_mlp": False,
        "n_key_value_heads": None,
        "final_rms": False,
    }
    wrong = {k: getattr(cfg, k) for k, v in wanted.items() if getattr(cfg, k) != v}
    if cfg.d_head * cfg.n_heads != cfg.d_model:
        wrong["d_head * n_heads"] = cfg.d_head * cfg.n_heads
    if wrong:
        raise ValueError(
            f"the model is not of GPT-Neo architecture (fields {wrong}; GPT-Neo needs "
            f"{ {k: wanted.get(k, cfg.d_model) for k in wrong} }); it cannot be exported as one"
        )


def _attention_types(cfg: HookedTransformerConfig) -> list[list[Any]]:
    types = list(cfg.attn_types) if cfg.attn_types is not None else ["global"] * cfg.n_layers
    runs: list[list[Any]] = []
    for t in types:
        if runs and runs[-1][0] == [t]:
            runs[-1][1] += 1
        else:
            runs.append([[t], 1])
    return runs


def _tied(model: HookedTransformer) -> bool:
    return torch.equal(model.W_U.detach().T, model.W_E.detach())


def hf_gpt_neo_config(
    model: HookedTransformer, tokenizer: PreTrainedTokenizerBase | None = None
) -> GPTNeoConfig:
    """The `GPTNeoConfig` of a HookedTransformer of GPT-Neo architecture (dropout off)."""
    cfg = model.cfg
    _check_exportable(cfg)
    special: dict[str, Any] = {"bos_token_id": None, "eos_token_id": None}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        if tokenizer.pad_token_id is not None:
            special["pad_token_id"] = tokenizer.pad_token_id
    return GPTNeoConfig(
        vocab_size=cfg.d_vocab,
        max_position_embeddings=cfg.n_ctx,
        hidden_size=cfg.d_model,
        num_layers=cfg.n_layers,
        attention_types=_attention_types(cfg),
        num_heads=cfg.n_heads,
        intermediate_size=cfg.d_mlp,
        window_size=cfg.window_size if cfg.window_size is not None else 256,
        activation_function=cfg.act_fn,
        resid_dropout=0.0,
        embed_dropout=0.0,
        attention_dropout=0.0,
        classifier_dropout=0.0,
        layer_norm_epsilon=cfg.eps,
        tie_word_embeddings=_tied(model),
        **special,
    )


def hf_gpt_neo_state_dict(model: HookedTransformer) -> dict[str, torch.Tensor]:
    """The inverse of `convert_neo_weights`: HF GPT-Neo weights of a HookedTransformer.

    Raises:
        ValueError: a query bias or the unembedding bias is non-zero (no GPT-Neo counterpart).
    """
    _check_exportable(model.cfg)
    if torch.any(model.unembed.b_U != 0):
        raise ValueError(
            "unembed.b_U is non-zero, but GPT-Neo's lm_head has no bias; freeze it "
            "(tinystories.gpt_neo.freeze_absent_parameters) before fine-tuning"
        )
    sd: dict[str, torch.Tensor] = {
        "transformer.wte.weight": model.W_E,
        "transformer.wpe.weight": model.W_pos,
        "transformer.ln_f.weight": model.ln_final.w,
        "transformer.ln_f.bias": model.ln_final.b,
        "lm_head.weight": model.W_U.T,
    }
    for l, block in enumerate(model.blocks):
        attn = block.attn
        if torch.any(attn.b_Q != 0):
            raise ValueError(
                f"blocks.{l}.attn.b_Q is non-zero, but GPT-Neo has no query bias; freeze it "
                "(tinystories.gpt_neo.freeze_absent_parameters) before fine-tuning"
            )
        p = f"transformer.h.{l}."
        for proj, w in (("q", attn.W_Q), ("k", attn.W_K), ("v", attn.W_V)):
            sd[f"{p}attn.attention.{proj}_proj.weight"] = einops.rearrange(w, "i m h -> (i h) m")
        sd[f"{p}attn.attention.out_proj.weight"] = einops.rearrange(attn.W_O, "i h m -> m (i h)")
        # b_K only shifts all of a query's scores equally (softmax ignores it): dropped.
        # b_V reaches the output as sum_h b_V[h] @ W_O[h], since each pattern row sums to 1.
        value_bias_out = einops.einsum(attn.b_V, attn.W_O, "i h, i h m -> m")
        sd[f"{p}attn.attention.out_proj.bias"] = attn.b_O + value_bias_out
        sd[f"{p}ln_1.weight"], sd[f"{p}ln_1.bias"] = block.ln1.w, block.ln1.b
        sd[f"{p}ln_2.weight"], sd[f"{p}ln_2.bias"] = block.ln2.w, block.ln2.b
        sd[f"{p}mlp.c_fc.weight"], sd[f"{p}mlp.c_fc.bias"] = block.mlp.W_in.T, block.mlp.b_in
        sd[f"{p}mlp.c_proj.weight"], sd[f"{p}mlp.c_proj.bias"] = block.mlp.W_out.T, block.mlp.b_out
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in sd.items()}


def export_gpt_neo(
    model: HookedTransformer,
    directory: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Write `model` as an HF GPT-Neo directory that `GPTNeoForCausalLM.from_pretrained` loads.

    Args:
        model: A HookedTransformer of GPT-Neo architecture (e.g. from `load_gpt_neo`, fine-tuned).
        directory: Output directory (config.json, model.safetensors, generation_config.json).
        tokenizer: Saved beside the weights if given. Pass the original tokenizer, not
            `model.tokenizer`: TransformerLens replaces that with a copy that prepends BOS.

    Returns:
        The directory.
    """
    config = hf_gpt_neo_config(model, tokenizer)
    state = hf_gpt_neo_state_dict(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model = GPTNeoForCausalLM(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GPT-Neo export: missing {missing}, unexpected {unexpected}")
    directory = Path(directory)
    hf_model.eval().save_pretrained(str(directory))
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory)
    return directory
