"""`CompiledProgram`: the plain description a compiled RASP program is handed over as.

It holds no torch: a TransformerLens config dict, every parameter as a float32 array named by its
TransformerLens state-dict key, one label per residual dimension, and the input encoding
(`encode`: BOS then the tokens' embedding rows) and output decoding (`decode`: unembedding logits
to the program's values). `wrapperlens.compiled` builds the HookedTransformer from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

from tasks.rasp.expr import NUMERICAL

__all__ = ["CompiledProgram"]


@dataclass(frozen=True)
class CompiledProgram:
    """The plain description of a compiled program (no torch; see `wrapperlens.compiled`).

    Attributes:
        config: Keyword arguments of a TransformerLens `HookedTransformerConfig`.
        weights: Float32 arrays named by TransformerLens state-dict keys (every parameter).
        residual_labels: The meaning of each residual dimension, e.g. `tokens:a`, `count:3`.
        token_ids: Input token (and BOS) -> embedding row.
        bos: The BOS token, prepended at position 0.
        output_name: The program's name; its dimensions are `output_dims`.
        output_encoding: `categorical` or `numerical`.
        output_values: The value of each unembedding row (numerical: the values it can take).
        output_dims: Residual indices that the unembedding reads.
    """

    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    residual_labels: tuple[str, ...]
    token_ids: dict[Any, int]
    bos: str
    output_name: str
    output_encoding: str
    output_values: tuple[Any, ...]
    output_dims: tuple[int, ...]

    def encode(self, tokens: list) -> list[int]:
        """Token ids of BOS followed by `tokens`; unknown tokens and too-long inputs raise."""
        if len(tokens) + 1 > self.config["n_ctx"]:
            raise ValueError(f"input of length {len(tokens)} exceeds max_seq_len "
                             f"{self.config['n_ctx'] - 1}")
        unknown = [t for t in tokens if t not in self.token_ids or t == self.bos]
        if unknown:
            raise ValueError(f"tokens {unknown[:5]} are not in the compiled vocabulary")
        return [self.token_ids[self.bos]] + [self.token_ids[t] for t in tokens]

    def decode(self, logits: Float[np.ndarray, "pos d_vocab_out"]) -> list:
        """The program's output at each input position from `logits` [pos, d_vocab_out] (with
        BOS at row 0, which is dropped)."""
        logits = np.asarray(logits, dtype=np.float64)[1:]
        if self.output_encoding == NUMERICAL:
            values = np.asarray(self.output_values, dtype=np.float64)
            nearest = np.abs(logits[:, :1] - values[None, :]).argmin(axis=1)
            return [self.output_values[i] for i in nearest]
        best = logits.argmax(axis=1)
        return [self.output_values[i] if logits[p, i] >= 0.5 else None
                for p, i in enumerate(best)]
