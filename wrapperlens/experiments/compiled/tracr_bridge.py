"""An optional bridge to Tracr, DeepMind's RASP compiler, used to cross-check `tasks.rasp`.

The paper compiled its Counter and Max-identifier with Tracr (§4, App. B.1); wrapperlens compiles
them with its own compiler (docs/compiled.md). This module lets the same program run through both,
so that each side can check the other:

- `to_tracr(program)`: one of our `tasks.rasp` programs as the equivalent `tracr.rasp` program
  (same DAG, names and encodings), for `tracr.rasp.evaluate` next to `tasks.rasp.evaluate`;
- `compile_with_tracr(program, vocab, max_seq_len)`: Tracr's compiled model of it (an
  `AssembledTransformerModel`, a JAX/Haiku model), with Tracr's defaults (`mlp_exactness=100`);
- `hooked_from_tracr(assembled)`: that model as a HookedTransformer, built through the one
  construction site (`wrapperlens.models.hooked_transformer`) with every parameter checked;
- `run_tracr_hooked(model, assembled, inputs)`: its outputs, decoded as Tracr decodes them;
  `tracr_forward(assembled, tokens)`: Tracr's own JAX forward pass and its logits, to compare.

**Optional.** Tracr is frozen and needs JAX and Haiku (a large install); nothing else in the project
imports them, and this module imports them only inside its functions. Install them with
`pip install wrapperlens[tracr]` (from a checkout: `pip install -c constraints.txt -e ".[tracr]"`);
without them every function here raises `TracrMissingError`, saying so.

**What differs** from `tasks.rasp`
(docs/compiled.md#where-the-semantics-differ-from-tracrs-evaluator,
docs/compiled.md#how-each-part-is-compiled). Tracr's evaluator raises on a `None` key or query of a
`Comparison`, gives `None` (ours: 0) for a numerical `Map` of `None`, gives an `Aggregate`'s default
where nothing is selected (`to_tracr` sets 0 for a numerical one, as ours; Tracr's own default is
`None`), and averages several selected numbers in a categorical `Aggregate` (ours raises). Tracr's
compiled model divides attention logits by sqrt(d_head), approximates the `SelectorWidth` and
numerical MLPs with a precision set by `mlp_exactness` (so its Counter is wrong from 10 `a`s on,
where ours is exact), puts a constant `one` dimension in every token embedding, and decodes a
categorical output by argmax alone (never "no value": where our evaluator says `None`, it names some
value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from tasks.rasp.expr import (
    NUMERICAL, Aggregate, Comparison, Indices, Map, Select, SelectorWidth, SequenceMap, SOp,
    Tokens,
)
from wrapperlens.checkpoints import CheckpointError, load_state_dict_checked
from wrapperlens.models import hooked_transformer

__all__ = ["INSTALL_HINT", "TracrMissingError", "compile_with_tracr", "hooked_from_tracr",
           "run_tracr_hooked", "to_tracr", "tracr_forward", "tracr_token_ids"]

INSTALL_HINT = "pip install wrapperlens[tracr]"


class TracrMissingError(ImportError):
    """Tracr, JAX or Haiku is not installed (they come with the `tracr` extra)."""


def _tracr() -> tuple[Any, Any]:
    """The `tracr.rasp.rasp` and `tracr.compiler.compiling` modules, imported on first use."""
    try:
        from tracr.compiler import compiling
        from tracr.rasp import rasp
    except ImportError as err:
        raise TracrMissingError(
            f"the Tracr bridge needs tracr, jax and dm-haiku, which are optional ({err}); "
            f"install them with `{INSTALL_HINT}`") from err
    return rasp, compiling


def _jax() -> tuple[Any, Any, Any]:
    """`jax`, `jax.numpy` and `haiku`, imported on first use."""
    _tracr()  # the clearer error first
    import haiku as hk
    import jax
    import jax.numpy as jnp
    return jax, jnp, hk


def to_tracr(program: Any) -> Any:
    """`program` (a `tasks.rasp` SOp or Select) as the equivalent `tracr.rasp` expression.

    The DAG is kept (a shared sub-expression becomes one shared Tracr expression), each `Map` is
    built with `simplify=False` (Tracr would otherwise fuse `Map(f, Map(g, x))` into one, which
    changes where `None` stops the chain), names are kept, and every SOp is annotated with its
    encoding. A `Comparison` becomes Tracr's; any other predicate is passed as it is. A numerical
    `Aggregate` gets `default=0` and a categorical one `None`, the only defaults Tracr's
    compiler accepts (so Tracr's evaluator, too, gives 0 where a mean selects nothing).

    Raises:
        TracrMissingError: Tracr is not installed.
        TypeError: `program` is not an expression of the `tasks.rasp` subset.
    """
    rasp, _ = _tracr()
    done: dict[int, Any] = {}  # id of our expression -> its Tracr expression

    def convert(expr: Any) -> Any:
        if id(expr) in done:
            return done[id(expr)]
        if isinstance(expr, Tokens):
            out = rasp.tokens
        elif isinstance(expr, Indices):
            out = rasp.indices
        elif isinstance(expr, Map):
            out = rasp.Map(expr.f, convert(expr.inner), simplify=False)
        elif isinstance(expr, SequenceMap):
            out = rasp.SequenceMap(expr.f, convert(expr.fst), convert(expr.snd))
        elif isinstance(expr, Select):
            predicate = expr.predicate
            if isinstance(predicate, Comparison):
                predicate = rasp.Comparison[predicate.name]
            out = rasp.Select(convert(expr.keys), convert(expr.queries), predicate)
        elif isinstance(expr, Aggregate):
            # Tracr's compiler takes default 0 for a numerical Aggregate (our semantics when
            # nothing is selected) and only None for a categorical one.
            default = 0 if expr.encoding == NUMERICAL else None
            out = rasp.Aggregate(convert(expr.selector), convert(expr.sop), default=default)
        elif isinstance(expr, SelectorWidth):
            out = rasp.SelectorWidth(convert(expr.selector))
        else:
            raise TypeError(f"not an expression of the tasks.rasp subset: {expr!r}")
        if not isinstance(expr, (Tokens, Indices)):
            if isinstance(expr, SOp):
                out = (rasp.numerical(out) if expr.encoding == NUMERICAL
                       else rasp.categorical(out))
            if expr.name is not None:  # Tracr's label appends a unique id, so names may repeat
                out = out.named(expr.name)
        done[id(expr)] = out
        return out

    return convert(program)


def compile_with_tracr(program: Any, vocab: list | set, max_seq_len: int, *, bos: str = "BOS",
                       mlp_exactness: int = 100, causal: bool = False) -> Any:
    """Tracr's compiled model of `program` (ours, translated by `to_tracr`, or a Tracr SOp).

    Args:
        program: The output SOp.
        vocab: The input tokens.
        max_seq_len: Longest input, BOS not counted (as in `tasks.rasp.compile_program`).
        bos: Tracr's `compiler_bos`; the default is our compiler's BOS.
        mlp_exactness: Tracr's MLP approximation parameter (its default, 100).
        causal: Tracr's causal masking (off, as in our compiler).

    Returns:
        Tracr's `AssembledTransformerModel`; its `apply([bos, *tokens])` runs the JAX model.

    Raises:
        TracrMissingError: Tracr is not installed.
        NotImplementedError: Tracr cannot compile the program (Tracr's own error).
    """
    rasp, compiling = _tracr()
    if not isinstance(program, rasp.RASPExpr):
        program = to_tracr(program)
    return compiling.compile_rasp_to_model(program, vocab=set(vocab), max_seq_len=max_seq_len,
                                           causal=causal, compiler_bos=bos,
                                           mlp_exactness=mlp_exactness)


def _unembedding(assembled: Any) -> Float[np.ndarray, "d_model d_vocab_out"]:
    """Tracr's unembedding matrix, read off its own unembed module applied to the identity.

    It is not among Tracr's parameters (a fixed projection onto the output space, built when the
    Haiku model is), so it is asked for rather than rebuilt from residual labels.
    """
    _, jnp, hk = _jax()
    d_model = len(assembled.residual_labels)

    def unembed(x: Any) -> Any:
        return assembled.get_compiled_model().unembed(x, use_unembed_argmax=False)

    out = hk.without_apply_rng(hk.transform(unembed)).apply(assembled.params, jnp.eye(d_model))
    return np.array(out, dtype=np.float32).reshape(d_model, -1)  # numerical: one column


def hooked_from_tracr(assembled: Any, *, dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """Tracr's compiled model as a HookedTransformer in eval mode, computing the same function.

    The mapping: Tracr's token and position embeddings are `W_E` and `W_pos`; each layer's Haiku
    `query`/`key`/`value` weights `[d_model, n_heads * d_head]` are split by head into
    `W_Q`/`W_K`/`W_V` `[n_heads, d_model, d_head]` and `linear` `[n_heads * d_head, d_model]`
    into `W_O`; `mlp/linear_1` and `mlp/linear_2` are `W_in` and `W_out`; `W_U` is Tracr's
    projection onto the output space. Tracr divides attention logits by sqrt(key_size), which is
    TransformerLens's default `use_attn_scale` with `d_head = key_size`. There is no LayerNorm.

    Raises:
        TracrMissingError: Tracr is not installed.
        CheckpointError: The Tracr model uses LayerNorm or a non-ReLU MLP, or a weight does not
            fit the config.
    """
    jax, _, _ = _jax()
    tracr_cfg = assembled.model_config
    if tracr_cfg.layer_norm or tracr_cfg.activation_function is not jax.nn.relu:
        raise CheckpointError("Tracr model: only LayerNorm-free ReLU models convert, got "
                              f"layer_norm={tracr_cfg.layer_norm}, "
                              f"activation={tracr_cfg.activation_function!r}")
    # Writable float32 copies (torch refuses to share JAX's read-only buffers).
    params = {module: {name: np.array(value, dtype=np.float32) for name, value in p.items()}
              for module, p in assembled.params.items()}
    w_e, w_pos = params["token_embed"]["embeddings"], params["pos_embed"]["embeddings"]
    w_u = _unembedding(assembled)
    d_model, n_heads, d_head = w_e.shape[1], tracr_cfg.num_heads, tracr_cfg.key_size
    weights = {"embed.W_E": w_e, "pos_embed.W_pos": w_pos, "unembed.W_U": w_u,
               "unembed.b_U": np.zeros(w_u.shape[1], dtype=np.float32)}
    for layer in range(tracr_cfg.num_layers):
        attn, mlp = f"transformer/layer_{layer}/attn/", f"transformer/layer_{layer}/mlp/"
        ours = f"blocks.{layer}."
        for side, module in (("Q", "query"), ("K", "key"), ("V", "value")):
            w = params[attn + module]["w"]  # [d_model, n_heads * d_head], head-major columns
            weights[f"{ours}attn.W_{side}"] = w.reshape(d_model, n_heads, d_head).transpose(1, 0, 2)
            weights[f"{ours}attn.b_{side}"] = params[attn + module]["b"].reshape(n_heads, d_head)
        weights[ours + "attn.W_O"] = params[attn + "linear"]["w"].reshape(n_heads, d_head, d_model)
        weights[ours + "attn.b_O"] = params[attn + "linear"]["b"]
        weights[ours + "mlp.W_in"] = params[mlp + "linear_1"]["w"]
        weights[ours + "mlp.b_in"] = params[mlp + "linear_1"]["b"]
        weights[ours + "mlp.W_out"] = params[mlp + "linear_2"]["w"]
        weights[ours + "mlp.b_out"] = params[mlp + "linear_2"]["b"]
    cfg = dict(n_layers=tracr_cfg.num_layers, d_model=d_model, n_ctx=w_pos.shape[0],
               d_head=d_head, n_heads=n_heads, d_mlp=tracr_cfg.mlp_hidden_size,
               d_vocab=w_e.shape[0], d_vocab_out=w_u.shape[1], act_fn="relu",
               normalization_type=None, use_attn_scale=True, positional_embedding_type="standard",
               attention_dir="causal" if tracr_cfg.causal else "bidirectional", dtype=dtype)
    model = hooked_transformer(cfg, fused_attention=False, init_seed=0)
    trained = dict(model.named_parameters())
    # The attention-mask buffers are the model's own; every parameter comes from Tracr.
    state = {key: value for key, value in model.state_dict().items() if key not in trained}
    state.update({key: torch.as_tensor(value, dtype=dtype) for key, value in weights.items()})
    load_state_dict_checked(model, state, source="Tracr model")
    return model.eval()


def tracr_token_ids(assembled: Any, tokens: list) -> list[int]:
    """Tracr's input encoding of BOS followed by `tokens` (its errors name unknown tokens)."""
    return assembled.input_encoder.encode([assembled.input_encoder.bos_token, *tokens])


def tracr_forward(assembled: Any,
                  tokens: list) -> tuple[Any, Float[np.ndarray, "pos d_vocab_out"]]:
    """Tracr's own JAX forward pass on BOS + `tokens`, and its logits.

    Returns:
        `assembled.apply`'s output (residuals after every sublayer, the argmax `unembedded`,
        `decoded`) and the logits `[pos, d_vocab_out]` (BOS is row 0): the final residual through
        Tracr's unembedding, before the argmax that `apply` takes.
    """
    output = assembled.apply([assembled.input_encoder.bos_token, *tokens])
    residual = np.asarray(output.transformer_output[0], dtype=np.float32)
    return output, residual @ _unembedding(assembled)


def run_tracr_hooked(model: HookedTransformer, assembled: Any, inputs: list[list]) -> list[list]:
    """The output at each input position of `model` (from `hooked_from_tracr(assembled)`),
    decoded with Tracr's output encoder: argmax for a categorical output, the logit itself for a
    numerical one. Inputs of different lengths run in separate batches (no padding)."""
    _tracr()  # a clear error without Tracr
    by_length: dict[int, list[int]] = {}
    for i, tokens in enumerate(inputs):
        by_length.setdefault(len(tokens), []).append(i)
    outputs: list[list] = [[] for _ in inputs]
    categorical = hasattr(assembled.output_encoder, "encoding_map")
    with torch.no_grad():
        for rows in by_length.values():
            ids = torch.tensor([tracr_token_ids(assembled, inputs[i]) for i in rows])
            logits: Float[torch.Tensor, "batch pos d_vocab_out"] = model(ids)
            for i, row in zip(rows, logits[:, 1:].double()):
                if categorical:
                    outputs[i] = assembled.output_encoder.decode(row.argmax(-1).tolist())
                else:
                    outputs[i] = row[:, 0].tolist()
    return outputs
