"""HookedTransformers from compiled RASP programs (the paper's compiled models, §4, App. B.1).

A compiler (e.g. `tasks.rasp.compile_program`) emits a plain description: a TransformerLens config
dict, every parameter as an array named by its state-dict key, the residual labels, and the input
encoding and output decoding (`encode`, `decode`). This module builds the model through the one
construction site, `wrapperlens.models.hooked_transformer`, and loads the weights with every
parameter checked (`wrapperlens.checkpoints.load_state_dict_checked`). It does not import `tasks`:
any object with those attributes works.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from wrapperlens.checkpoints import CheckpointError, load_state_dict_checked
from wrapperlens.components import hook_name
from wrapperlens.models import hooked_transformer

__all__ = ["CompiledDescription", "compiled_model", "read_residual", "run_compiled"]


@runtime_checkable
class CompiledDescription(Protocol):
    """What a compiler hands over (see `tasks.rasp.CompiledProgram`)."""

    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    residual_labels: tuple[str, ...]

    def encode(self, tokens: list) -> list[int]: ...

    def decode(self, logits: np.ndarray) -> list: ...


def compiled_model(description: CompiledDescription, *,
                   dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """The HookedTransformer of a compiled program, in eval mode.

    Args:
        description: The compiler's output.
        dtype: Parameter dtype (the compiled programs are exact in float32).

    Raises:
        CheckpointError: A parameter is missing, unexpected or of the wrong shape.
    """
    cfg = dict(description.config)
    if cfg.get("normalization_type") is not None:
        raise CheckpointError(f"compiled model: normalization_type must be None, got "
                              f"{cfg['normalization_type']!r}")
    if len(description.residual_labels) != cfg["d_model"]:
        raise CheckpointError(f"compiled model: {len(description.residual_labels)} residual "
                              f"labels for d_model {cfg['d_model']}")
    model = hooked_transformer({**cfg, "dtype": dtype}, fused_attention=False, init_seed=0)
    params = dict(model.named_parameters())
    # Buffers (the attention masks) are the model's own; every parameter must come from the
    # description.
    state = {key: value for key, value in model.state_dict().items() if key not in params}
    state.update({key: torch.as_tensor(np.asarray(value), dtype=dtype)
                  for key, value in description.weights.items()})
    load_state_dict_checked(model, state, source="compiled model")
    return model.eval()


def run_compiled(model: HookedTransformer, description: CompiledDescription,
                 inputs: list[list]) -> list[list]:
    """The program's output on each input, decoded from the model's logits.

    Inputs of different lengths run in separate batches (the compiled models take no padding).
    """
    by_length: dict[int, list[int]] = {}
    for i, tokens in enumerate(inputs):
        by_length.setdefault(len(tokens), []).append(i)
    outputs: list[list] = [[] for _ in inputs]
    with torch.no_grad():
        for rows in by_length.values():
            ids = torch.tensor([description.encode(inputs[i]) for i in rows])
            logits: Float[torch.Tensor, "batch pos d_vocab_out"] = model(ids)
            for i, row in zip(rows, logits.double().numpy()):
                outputs[i] = description.decode(row)
    return outputs


def read_residual(model: HookedTransformer, description: CompiledDescription, tokens: list,
                  layer: int | None = None) -> dict[str, np.ndarray]:
    """The residual stream after block `layer` (default: the last), by residual label.

    Returns:
        Label -> its value at every position (position 0 is BOS), e.g. `out["count:3"]`.
    """
    layer = model.cfg.n_layers - 1 if layer is None else layer
    name = hook_name("resid_post", layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([description.encode(tokens)]),
                                        names_filter=name)
    resid: Float[np.ndarray, "pos d_model"] = cache[name][0].double().numpy()
    return {label: resid[:, i] for i, label in enumerate(description.residual_labels)}
