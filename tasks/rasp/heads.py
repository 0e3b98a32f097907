"""Attention heads for `Select` + `Aggregate` and for `SelectorWidth`.

A head is built from the selector's truth table `table[q][k] = predicate(key_k, query_q)` over
the (categorical) query and key values:

- the query side `W_Q` copies the query's one-hot value into head dimensions 0..|Q|-1, and `b_Q`
  puts a constant 1 in head dimension |Q|;
- the key side `W_K` maps key value `k` to `scale * table[.][k]` in those dimensions and
  `tokens:BOS` to `bos_logit` in dimension |Q|.

So the logit of query q at key k is `scale` if selected and 0 if not, and at BOS `bos_logit`.
A selector that ignores its query (every row of the table the same, and a query SOp that always
has a value) gets no query dimensions: its selected keys write `scale` into the constant
dimension, which BOS shares, so noise on the query side moves the selected keys' and BOS's logits
together (`q_dims` empty, `table` one row); BOS's own query reads a second dimension in which
only BOS's key is, so that BOS still attends to BOS alone.
`Aggregate` uses `bos_logit = scale / 2`: BOS wins only when nothing is selected, and with the
default `scale = 1000` every non-maximal key gets weight exp(-500), which is exactly 0 in float32
and float64. `SelectorWidth` uses `bos_logit = scale`, so BOS gets exactly weight 1 / (w + 1).
The value side copies the aggregated SOp's dimensions (one-hot or scalar), or for
`SelectorWidth` the `tokens:BOS` dimension, into the output dimensions through `W_V` and `W_O`.
Heads need `use_attn_scale=False` and `attention_dir="bidirectional"` (RASP selectors see all
positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float


@dataclass
class Head:
    """One head as sparse entries: `entries[param] = [(row, col, value)]` (`b_Q`: row 0)."""

    width: int
    entries: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)

    def add(self, param: str, row: int, col: int, value: float) -> None:
        self.entries.setdefault(param, []).append((row, col, value))


def _qk(q_dims: list[int], k_dims: list[int], table: list[list[bool]], bos_dim: int,
        bos_logit: float, scale: float, width: int) -> Head:
    head = Head(width)
    for j, qd in enumerate(q_dims):
        head.add("W_Q", qd, j, 1.0)
        for i, kd in enumerate(k_dims):
            if table[j][i]:
                head.add("W_K", kd, j, scale)
    if not q_dims:  # a selector that ignores the query: one row, on the constant dimension
        for i, kd in enumerate(k_dims):
            if table[0][i]:
                head.add("W_K", kd, 0, scale)
        # BOS's query: 0 in the constant dimension, 1 in dimension 1, where only BOS's key is
        # (so BOS still attends to BOS alone).
        head.add("W_Q", bos_dim, 0, -1.0)
        head.add("W_Q", bos_dim, 1, 1.0)
        head.add("W_K", bos_dim, 1, bos_logit)
    head.add("b_Q", 0, len(q_dims), 1.0)
    head.add("W_K", bos_dim, len(q_dims), bos_logit)
    return head


def _qk_width(q_dims: list[int]) -> int:
    return len(q_dims) + 1 if q_dims else 2


def aggregate_head(q_dims: list[int], k_dims: list[int], table: list[list[bool]], bos_dim: int,
                   value_pairs: list[tuple[int, int]], scale: float) -> Head:
    """Head averaging the selected keys' values; `value_pairs` = (source dim, output dim)."""
    width = max(_qk_width(q_dims), len(value_pairs), 1)
    head = _qk(q_dims, k_dims, table, bos_dim, scale / 2, scale, width)
    for j, (src, dst) in enumerate(value_pairs):
        head.add("W_V", src, j, 1.0)
        head.add("W_O", j, dst, 1.0)
    return head


def width_head(q_dims: list[int], k_dims: list[int], table: list[list[bool]], bos_dim: int,
               out_dim: int, scale: float) -> Head:
    """Head writing 1 / (width + 1), BOS's attention weight, into `out_dim`."""
    head = _qk(q_dims, k_dims, table, bos_dim, scale, scale, _qk_width(q_dims))
    head.add("W_V", bos_dim, 0, 1.0)
    head.add("W_O", 0, out_dim, 1.0)
    return head


def attention_weights(heads: list[Head], layer: int, n_heads: int, d_model: int,
                      d_head: int) -> dict[str, Float[np.ndarray, "..."]]:
    """TransformerLens attention parameters of block `layer` (unused heads are zero)."""
    shapes = {"W_Q": (n_heads, d_model, d_head), "W_K": (n_heads, d_model, d_head),
              "W_V": (n_heads, d_model, d_head), "W_O": (n_heads, d_head, d_model),
              "b_Q": (n_heads, 1, d_head), "b_K": (n_heads, d_head), "b_V": (n_heads, d_head),
              "b_O": (d_model,)}
    w = {name: np.zeros(shape) for name, shape in shapes.items()}
    for h, head in enumerate(heads):
        for param, entries in head.entries.items():
            for row, col, value in entries:
                w[param][h, row, col] += value
    w["b_Q"] = w["b_Q"][:, 0, :]
    return {f"blocks.{layer}.attn.{name}": value for name, value in w.items()}
