"""Re-running a HookedTransformer from a patched activation, recomputing only what can change.

Activation patching runs the target model again with one activation replaced. Most of that
forward is wasted work: everything *upstream* of the patch is exactly the target run, and under
causal attention so is every position *before* the patched one. This module recomputes only the
rest:

- It starts inside the patched block, at the patched activation (a patch of `z` only reruns
  the output projection onwards; a patch of `resid_pre` reruns the whole block), with the
  residual stream that the patch point adds to taken from the cached target run.
- It runs positions `p0:` only, where `p0` is the first patched position. Their queries attend to
  the keys and values of positions `< p0`, which come from the cached target run (the same idea as
  a KV cache in generation).
- The logits of positions `< p0` are the cached target logits.

Several patches can share one forward ("rows" of an expanded batch, `batch` rows per patch).
Patches that start in a later layer join the running batch when the forward reaches their layer,
so a group of patches never recomputes a layer before the earliest patch in it.

The block code here is written for the standard pre-norm decoder that wrapperlens builds
(LayerNorm / RMSNorm / none; learned absolute or rotary positions; plain MLP with any elementwise
activation; causal global attention). `suffix_unsupported_reason` names what it cannot handle;
callers then fall back to TransformerLens's own forward from the patched layer with hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.components import MLP, Attention, TransformerBlock
from transformer_lens.utilities.addmm import batch_addmm

from wrapperlens.components import COMPONENTS, hook_name

__all__ = ["ENTRY_POINTS", "RowEdit", "SuffixForward", "suffix_unsupported_reason"]

# The activations a block can be entered at (`wrapperlens.components` names), in the order the
# block computes them; `_block`'s stage numbers are indices into it (the components tests check
# that order against a real forward).
ENTRY_POINTS = COMPONENTS
_STAGE = {name: i for i, name in enumerate(ENTRY_POINTS)}


@dataclass(frozen=True)
class RowEdit:
    """Overwrite part of an activation on some rows with the source run's activation.

    Attributes:
        layer: Block index of the activation.
        component: Its component name, one of `ENTRY_POINTS`.
        position: Absolute position to overwrite, or None for every position.
        index: Head (for `z`) or neuron (for `post`), or None for the whole feature vector.
    """

    layer: int
    component: str
    position: int | None = None
    index: int | None = None

    @property
    def first_position(self) -> int:
        """The first position this edit can change (everything before it is the target run)."""
        return 0 if self.position is None else self.position

    def apply(self, act: Tensor, rows: slice, source: Tensor, offset: int) -> None:
        """Write `source` (a full `[batch, pos, ...]` activation) into `act[rows]` in place.

        `act` holds positions `offset : offset + act.shape[1]`; an edit outside them is skipped.
        """
        window = act.shape[1]
        if self.position is None:
            dst_pos, src_pos = slice(None), slice(offset, offset + window)
        elif offset <= self.position < offset + window:
            dst_pos, src_pos = self.position - offset, self.position
        else:
            return
        if self.index is None:
            act[rows, dst_pos] = source[:, src_pos]
        else:
            act[rows, dst_pos, self.index] = source[:, src_pos, self.index]


def suffix_unsupported_reason(model: HookedTransformer) -> str | None:
    """Why the suffix forward cannot run this model, or None if it can."""
    cfg = model.cfg
    flags = {
        "parallel_attn_mlp": cfg.parallel_attn_mlp,
        "use_attn_in": cfg.use_attn_in,
        "use_split_qkv_input": cfg.use_split_qkv_input,
        "use_normalization_before_and_after": cfg.use_normalization_before_and_after,
        "gated_mlp": cfg.gated_mlp,
        "use_qk_norm": getattr(cfg, "use_qk_norm", False),
        "use_attention_sinks": getattr(cfg, "use_attention_sinks", False),
        "use_logn_attn": getattr(cfg, "use_logn_attn", False),
        "use_dynamic_ntk_rope": getattr(cfg, "use_dynamic_ntk_rope", False),
        "load_in_4bit": cfg.load_in_4bit,
        "clip_qkv": getattr(cfg, "clip_qkv", None) is not None,
        "num_experts": bool(cfg.num_experts),
        "attn_scores_soft_cap": cfg.attn_scores_soft_cap > 0,
        "output_logits_soft_cap": cfg.output_logits_soft_cap > 0,
        "n_key_value_heads": cfg.n_key_value_heads not in (None, cfg.n_heads),
        "layer-norm activation (SoLU-LN)": cfg.is_layer_norm_activation(),
    }
    for name, is_set in flags.items():
        if is_set:
            return f"cfg.{name} is set"
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        return f"positional_embedding_type={cfg.positional_embedding_type!r}"
    if cfg.attention_dir != "causal":
        return f"attention_dir={cfg.attention_dir!r} (earlier positions can change)"
    if cfg.attn_types is not None and any(t != "global" for t in cfg.attn_types):
        return "local attention layers"
    for block in model.blocks:
        if not isinstance(block, TransformerBlock) or not isinstance(block.attn, Attention):
            return f"block or attention class {type(block).__name__}/{type(block.attn).__name__}"
        if not cfg.attn_only and type(block.mlp) is not MLP:
            return f"MLP class {type(block.mlp).__name__}"
    return None


class SuffixForward:
    """Patched forwards of one target run that recompute only what a patch can change.

    Args:
        model: The target model (the one whose forward is rerun). Its weights are read once, here:
            build a new `SuffixForward` after changing them.
        target_acts: Cached activations of the unpatched target run, by hook name: for every
            layer the entry points in `ENTRY_POINTS` that will be used, plus the keys `k`
            (`rot_k` for rotary models) and values `v` (see `needed_target_components`).
        target_logits: Logits of the unpatched target run.
    """

    def __init__(
        self,
        model: HookedTransformer,
        target_acts: dict[str, Tensor],
        target_logits: Float[Tensor, "batch pos d_vocab"],
    ):
        reason = suffix_unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the suffix forward does not support this model: {reason}")
        self.model = model
        self.acts = target_acts
        self.logits = target_logits
        self.rotary = model.cfg.positional_embedding_type == "rotary"
        self.key_component = self.needed_target_components(model)[0]
        # One matmul for q, k and v, and a flat output projection, per block.
        with torch.no_grad():
            self.w_qkv, self.b_qkv, self.w_out = [], [], []
            for block in model.blocks:
                attn = block.attn
                weights = [w.transpose(1, 2).flatten(0, 1) for w in (attn.W_Q, attn.W_K, attn.W_V)]
                self.w_qkv.append(torch.cat(weights))  # [3 * n_heads * d_head, d_model]
                biases = [b.flatten() for b in (attn.b_Q, attn.b_K, attn.b_V)]
                self.b_qkv.append(torch.cat(biases))
                self.w_out.append(attn.W_O.flatten(0, 1).T)  # [d_model, n_heads * d_head]

    @staticmethod
    def needed_target_components(model: HookedTransformer) -> list[str]:
        """Components the target cache must hold (every layer) besides the entry points."""
        rotary = model.cfg.positional_embedding_type == "rotary"
        return ["rot_k" if rotary else "k", "v"]

    def run(
        self,
        edits: Sequence[RowEdit],
        sources: Sequence[Tensor],
        read_positions: Sequence[int] | None = None,
    ) -> Float[Tensor, "rows pos d_vocab"]:
        """Logits of `len(edits)` patched runs, stacked (rows `i*batch:(i+1)*batch` for edit i).

        Args:
            edits: One edit per patch, sorted by layer and, within a layer, by entry point.
            sources: The source activation each edit copies from (`[batch, pos, ...]`).
            read_positions: Sorted absolute positions whose logits will be read, or None for all.
                When given, positions after the last one are never computed, the last block runs
                only at these positions, and the logits at every other position from the first
                patched one on are NaN (so that a metric reading them anyway shows it).
        """
        keys = [(e.layer, _STAGE[e.component]) for e in edits]
        if keys != sorted(keys):
            raise ValueError("edits must be sorted by layer and entry point")
        batch, n_pos, _ = self.logits.shape
        p0 = min(e.first_position for e in edits)
        end = n_pos if read_positions is None else read_positions[-1] + 1
        logits = self.logits.repeat(len(edits), 1, 1)
        if read_positions is not None:
            logits[:, p0:] = float("nan")
            if p0 >= end:  # every read position comes before the patch: nothing changes
                return logits
        # Rows the last block outputs (relative to p0): all, or the read positions.
        keep = None
        if read_positions is not None:
            keep = torch.tensor([p - p0 for p in read_positions if p >= p0], device=logits.device)
        resid: Tensor | None = None
        n_layers = self.model.cfg.n_layers
        for layer in range(edits[0].layer, n_layers):
            last_keep = keep if layer == n_layers - 1 else None
            if resid is not None:
                values = {"resid_pre": resid}
                resid = self._block(layer, "resid_pre", values, p0, last_keep)
            for entry in ENTRY_POINTS:
                group = [
                    i for i, e in enumerate(edits) if e.layer == layer and e.component == entry
                ]
                if not group:
                    continue
                values = self._entry_values(layer, entry, len(group), p0, end)
                for row, i in enumerate(group):
                    rows = slice(row * batch, (row + 1) * batch)
                    edits[i].apply(values[entry], rows, sources[i], p0)
                joined = self._block(layer, entry, values, p0, last_keep)
                resid = joined if resid is None else torch.cat([resid, joined])
        assert resid is not None
        if self.model.cfg.normalization_type is not None:
            resid = self.model.ln_final(resid)
        if keep is None:
            logits[:, p0:] = self.model.unembed(resid)
        else:
            logits[:, p0 + keep] = self.model.unembed(resid)
        return logits

    def _entry_values(
        self, layer: int, entry: str, copies: int, p0: int, end: int
    ) -> dict[str, Tensor]:
        """Target activations a block entered at `entry` starts from, positions `p0:end`."""
        # An entry inside attention (MLP) also needs the residual stream its output adds to.
        needs = [entry]
        if entry in ("z", "attn_out"):
            needs.append("resid_pre")
        if entry in ("post", "mlp_out"):
            needs.append("resid_mid")
        values = {}
        for name in needs:
            act = self.acts[hook_name(name, layer)][:, p0:end]
            values[name] = act.repeat(copies, *([1] * (act.ndim - 1)))
        return values

    def _block(
        self,
        layer: int,
        entry: str,
        values: dict[str, Tensor],
        p0: int,
        keep: Tensor | None,
    ) -> Float[Tensor, "rows out_pos d_model"]:
        """`resid_post` of block `layer` entered at `entry` with `values` (positions `p0:`).

        Everything after attention acts on each position alone, so when only the rows `keep`
        are wanted the block computes keys and values for all positions and the rest for those
        rows only.
        """
        block = self.model.blocks[layer]
        stage = _STAGE[entry]
        if stage == 0:
            z = self._attention(layer, values["resid_pre"], p0, keep)
        if keep is not None:
            values = {name: act[:, keep] for name, act in values.items()}
        # Fall through the block from the entry point; earlier stages are the target run's.
        resid_pre = values.get("resid_pre")
        if stage <= 1:
            z = values["z"] if stage == 1 else z
            z = z.reshape(z.shape[0], z.shape[1], -1)
            attn_out = F.linear(z, self.w_out[layer], block.attn.b_O)
        if stage <= 2:
            attn_out = values["attn_out"] if stage == 2 else attn_out
            if self.model.cfg.attn_only:
                return resid_pre + attn_out
            resid_mid = resid_pre + attn_out
        if stage <= 3:
            resid_mid = values["resid_mid"] if stage == 3 else resid_mid
            pre = batch_addmm(block.mlp.b_in, block.mlp.W_in, block.ln2(resid_mid))
            post = block.mlp.act_fn(pre)
        if stage <= 4:
            post = values["post"] if stage == 4 else post
            mlp_out = batch_addmm(block.mlp.b_out, block.mlp.W_out, post)
        if stage <= 5:
            mlp_out = values["mlp_out"] if stage == 5 else mlp_out
            resid_mid = values["resid_mid"] if stage >= 4 else resid_mid
            return resid_mid + mlp_out
        return values["resid_post"]

    def _attention(
        self, layer: int, resid_pre: Tensor, p0: int, keep: Tensor | None
    ) -> Float[Tensor, "rows out_pos head_index d_head"]:
        """`z` at positions `p0:` (or rows `keep` of them), attending to the cached keys and
        values of the target run before `p0`."""
        attn = self.model.blocks[layer].attn
        rows, n_suffix, _ = resid_pre.shape
        normalized = self.model.blocks[layer].ln1(resid_pre)
        qkv = F.linear(normalized, self.w_qkv[layer], self.b_qkv[layer])
        q, k, v = qkv.view(rows, n_suffix, 3, attn.cfg.n_heads, attn.cfg.d_head).unbind(2)
        if self.rotary:
            q = attn.apply_rotary(q, p0)
            k = attn.apply_rotary(k, p0)
        query_pos = torch.arange(p0, p0 + n_suffix, device=q.device)
        if keep is not None:
            q, query_pos = q[:, keep], query_pos[keep]
        if p0 > 0:
            copies = rows // self.logits.shape[0]
            k_prefix = self.acts[hook_name(self.key_component, layer)][:, :p0]
            v_prefix = self.acts[hook_name("v", layer)][:, :p0]
            if copies > 1:
                k_prefix = k_prefix.repeat(copies, 1, 1, 1)
                v_prefix = v_prefix.repeat(copies, 1, 1, 1)
            k, v = torch.cat([k_prefix, k], dim=1), torch.cat([v_prefix, v], dim=1)
        # Causal: a query at absolute position i sees keys 0..i.
        allowed = torch.arange(k.shape[1], device=q.device)[None, :] <= query_pos[:, None]
        z = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=allowed,
            scale=1.0 / attn.attn_scale,
        )
        return z.transpose(1, 2)
