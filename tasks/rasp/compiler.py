"""Compile a RASP program to the weights of a LayerNorm-free transformer, exactly.

`compile_program(program, vocab, max_seq_len)` returns a `CompiledProgram`: a TransformerLens
config dict, the weights named by TransformerLens state-dict keys, one label per residual
dimension, and the input encoding and output decoding. How each part is compiled:

- **Input.** Position 0 holds BOS. The residual has `tokens:BOS`, one-hot `tokens:<v>` for each
  vocabulary token (the token embedding) and one-hot `indices:<i>` for input positions
  0..max_seq_len-1 (the position embedding; row 0, BOS, is zero).
- **SOps.** A categorical SOp gets one residual dimension per value it can take (`name:value`,
  one-hot, all zero for "no value"); a numerical SOp gets one scalar dimension (`name`). Every SOp
  dimension is exactly 0 at BOS.
- **Map / SequenceMap** are MLPs built from exact ReLU gates (`tasks.rasp.mlp`).
- **Select + Aggregate** is one attention head with the query's one-hot value as query and
  `scale * predicate(key, value)` as key, so selected keys get logit `scale`, unselected 0, and BOS
  `scale / 2` (through `b_Q`). With `scale = 1000` every unselected key and BOS get softmax weight
  exp(-500) = 0 in float32, so the head averages exactly the selected keys' values, or reads BOS
  (all zero: the default) when none is selected.
- **Gains.** `scale` and `mlp_slope` set the attention logit and the staircases' slope cap;
  the defaults are exact on every input. Tracr-like gains (logit 15, cap 100) are exact where
  docs/compiled.md#gains says. A selector that ignores its query shares BOS's constant query
  dimension (`tasks.rasp.heads`).
- **SelectorWidth** is the BOS trick: the same head with BOS at logit `scale`, reading the
  `tokens:BOS` value, writes `1 / (w + 1)` for width `w` into `name:bos_weight`; the MLP of the
  same layer maps it to the one-hot `name:w` by a staircase over the N + 1 possible values.
- **Layers** by dependency depth: each node takes the first attention (or MLP) sublayer after all
  its inputs are written; SelectorWidth takes an attention and the MLP after it.
- **Output.** The unembedding copies the program's dimensions: one logit per value (categorical:
  argmax, "no value" when all are below 0.5) or the scalar itself (numerical).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from tasks.rasp.description import CompiledProgram
from tasks.rasp.expr import (
    CATEGORICAL,
    NUMERICAL,
    Aggregate,
    Indices,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    SOp,
    Tokens,
    indices,
    tokens,
)
from tasks.rasp.heads import Head, aggregate_head, attention_weights, width_head
from tasks.rasp.mlp import Gate, gate_weights

__all__ = ["RASPCompileError", "compile_program"]

MAX_VALUES = 5000  # largest value set of one SOp the compiler accepts
MIN_RELATIVE_GAP = 1e-5  # closest two inputs of a staircase MLP, relative to their magnitude


class RASPCompileError(ValueError):
    """A program, or a value in it, that the compiler cannot compile; names the expression."""


def _sorted(values: set) -> list:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)


def _toposort(program: SOp) -> list[Any]:
    order: list[Any] = []
    seen: set[int] = set()

    def visit(expr: Any) -> None:
        if id(expr) in seen:
            return
        if not isinstance(expr, (Tokens, Indices, Map, SequenceMap, Select, Aggregate,
                                 SelectorWidth)):
            raise RASPCompileError(f"unsupported expression {expr!r}: the compiler handles "
                                   f"tokens, indices, Map, SequenceMap, Select, Aggregate, "
                                   f"SelectorWidth")
        seen.add(id(expr))
        for child in expr.children():
            visit(child)
        order.append(expr)

    visit(program)
    return order


class _Compiler:
    def __init__(self, vocab: list, max_seq_len: int, bos: str, scale: float,
                 mlp_slope: float | None = None):
        self.vocab, self.n, self.bos, self.scale = vocab, max_seq_len, bos, scale
        self.mlp_slope = mlp_slope
        self.names: dict[int, str] = {}
        self.values: dict[int, list] = {}   # categorical: sorted values; numerical: sorted floats
        self.nullable: dict[int, bool] = {}
        self.labels: list[str] = [f"tokens:{bos}"]
        self.dims: dict[int, dict[Any, int]] = {}  # SOp -> value -> residual index (numerical: None)
        self.width_dim: dict[int, int] = {}

    def name(self, expr: Any) -> str:
        return self.names.get(id(expr)) or repr(expr)

    def fail(self, expr: Any, why: str) -> RASPCompileError:
        return RASPCompileError(f"{type(expr).__name__} {self.name(expr)!r}: {why}")

    def assign_names(self, order: list[Any]) -> None:
        counts: dict[str, int] = {}
        taken: dict[str, int] = {}
        for expr in order:
            kind = type(expr).__name__.lower()
            counts[kind] = counts.get(kind, 0) + 1
            name = expr.name or f"{kind}_{counts[kind]}"
            if name in taken and isinstance(expr, SOp):
                raise RASPCompileError(f"two different SOps are named {name!r}")
            if isinstance(expr, SOp):
                taken[name] = id(expr)
            self.names[id(expr)] = name

    def infer(self, expr: Any) -> None:
        """Value set, nullability and residual dimensions of one SOp (children done)."""
        try:
            self._infer(expr)
        except TypeError as err:  # e.g. an unhashable or unorderable value
            raise self.fail(expr, f"its values cannot be tabulated: {err}") from err

    def _infer(self, expr: Any) -> None:
        if isinstance(expr, Select):
            for sop in (expr.keys, expr.queries):
                if sop.encoding != CATEGORICAL:
                    raise self.fail(expr, f"keys and queries must be categorical; "
                                          f"{self.name(sop)!r} is numerical")
            return
        null = False
        if isinstance(expr, Tokens):
            values = set(self.vocab)
        elif isinstance(expr, Indices):
            values = set(range(self.n))
        elif isinstance(expr, Map):
            inner = expr.inner
            values = {self.call(expr, expr.f, v) for v in self.values[id(inner)]}
            null = self.nullable[id(inner)] and expr.encoding == CATEGORICAL
            if self.nullable[id(inner)] and expr.encoding == NUMERICAL:
                values.add(0)
        elif isinstance(expr, SequenceMap):
            for sop in (expr.fst, expr.snd):
                if sop.encoding != CATEGORICAL:
                    raise self.fail(expr, f"inputs must be categorical; {self.name(sop)!r} "
                                          f"is numerical")
            if expr.fst is expr.snd:  # one SOp on both sides: only the pairs (x, x) occur
                values = {self.call(expr, expr.f, x, x) for x in self.values[id(expr.fst)]}
            else:
                values = {self.call(expr, expr.f, x, y) for x in self.values[id(expr.fst)]
                          for y in self.values[id(expr.snd)]}
            null = self.nullable[id(expr.fst)] or self.nullable[id(expr.snd)]
        elif isinstance(expr, SelectorWidth):
            values = set(range(self.n + 1))
        else:  # Aggregate
            values, null = self.aggregate_values(expr)
        values.discard(None)
        if expr.encoding == NUMERICAL:
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))]
            if bad:
                raise self.fail(expr, f"numerical values must be numbers, got {bad[:3]}")
        if len(values) > MAX_VALUES:
            raise self.fail(expr, f"{len(values)} possible values (at most {MAX_VALUES})")
        self.values[id(expr)] = _sorted(values)
        self.nullable[id(expr)] = null
        name = self.name(expr)
        if expr.encoding == NUMERICAL:
            self.dims[id(expr)] = {None: self.add_label(name)}
        else:
            self.dims[id(expr)] = {v: self.add_label(f"{name}:{v}") for v in self.values[id(expr)]}
        if isinstance(expr, SelectorWidth):
            self.width_dim[id(expr)] = self.add_label(f"{name}:bos_weight")

    def aggregate_values(self, expr: Aggregate) -> tuple[set, bool]:
        sop = expr.sop
        if expr.encoding != sop.encoding:
            raise self.fail(expr, f"a {expr.encoding} Aggregate needs a {expr.encoding} SOp; "
                                  f"{self.name(sop)!r} is {sop.encoding}")
        if expr.encoding == CATEGORICAL:
            return set(self.values[id(sop)]), True
        base = self.values[id(sop)]
        if any(v != int(v) for v in base):
            raise self.fail(expr, "a numerical mean is compiled only over integer values")
        base_set = {int(v) for v in base}
        sums, means = set(base_set), {0}
        for count in range(1, self.n + 1):
            means.update(float(Fraction(s, count)) if s % count else s // count for s in sums)
            if len(means) > MAX_VALUES:
                raise self.fail(expr, f"more than {MAX_VALUES} possible means")
            sums = {s + v for s in sums for v in base_set}
        return means, False

    def call(self, expr: Any, f: Any, *args: Any) -> Any:
        try:
            return f(*args)
        except Exception as err:  # noqa: BLE001 -- any failure of user code names the expression
            raise self.fail(expr, f"f{args!r} raised {err!r}") from err

    def add_label(self, label: str) -> int:
        if label in self.labels:
            raise RASPCompileError(f"residual label {label!r} is used twice")
        self.labels.append(label)
        return len(self.labels) - 1

    def encode_out(self, expr: SOp, value: Any) -> dict[int, float]:
        """The residual vector (sparse) of `value` in `expr`'s dimensions."""
        if expr.encoding == NUMERICAL:
            return {self.dims[id(expr)][None]: float(value)} if value else {}
        return {} if value is None else {self.dims[id(expr)][value]: 1.0}

    def gates(self, expr: Any) -> list[Gate]:
        """The MLP gates of a Map, SequenceMap or SelectorWidth."""
        if isinstance(expr, SelectorWidth):
            x = self.width_dim[id(expr)]
            # Width w <-> x = 1/(w+1); staircase over widths ascending, i.e. x descending from
            # x = 1 (width 0), which is also x at BOS: every step gate is off there unprompted.
            widths = list(range(self.n + 1))
            return self.staircase(expr, x, [1.0 / (w + 1) for w in widths],
                                  [self.encode_out(expr, w) for w in widths])
        if isinstance(expr, SequenceMap):
            fx, fy = self.dims[id(expr.fst)], self.dims[id(expr.snd)]
            if expr.fst is expr.snd:
                # The pair gate's weights {fx[u]: 2, fy[u]: 2} are one dict entry, so z = 2 x_u - 3
                # <= -1 and no gate would ever fire: a lookup on the one SOp instead, as a
                # categorical Map (only the pairs (u, u) occur).
                return [Gate({fx[u]: 2.0}, -1.0, self.encode_out(expr, expr.f(u, u)))
                        for u in self.values[id(expr.fst)]]
            return [Gate({fx[u]: 2.0, fy[v]: 2.0}, -3.0, self.encode_out(expr, expr.f(u, v)))
                    for u in self.values[id(expr.fst)] for v in self.values[id(expr.snd)]]
        inner = expr.inner
        if inner.encoding == CATEGORICAL:
            return [Gate({self.dims[id(inner)][v]: 2.0}, -1.0, self.encode_out(expr, expr.f(v)))
                    for v in self.values[id(inner)]]
        values = self.values[id(inner)]
        return self.staircase(expr, self.dims[id(inner)][None], [float(v) for v in values],
                              [self.encode_out(expr, expr.f(v)) for v in values])

    def staircase(self, expr: Any, x: int, points: list[float],
                  outs: list[dict[int, float]]) -> list[Gate]:
        """Gates writing `outs[i]` when residual `x` equals `points[i]` (ascending or descending).

        Refused when the closest two points are nearer than `MIN_RELATIVE_GAP` times the largest
        magnitude: float32 rounding of the input and of `L * x` would then eat the margin.

        Exact gains (`mlp_slope` None): every step has slope `L = 2 / min_gap`. With `mlp_slope`
        S, step i (between points `gap_i` apart) has slope `min(2 / gap_i, S)`: its gate is still
        exactly 0 or 1 at every point where `S >= 1 / gap_i` (|z| >= 0.5), and in between
        elsewhere (Tracr's `mlp_exactness`, whose staircase has one slope for all steps).
        """
        sign = -1.0 if len(points) > 1 and points[1] < points[0] else 1.0
        gap = min((sign * (b - a) for a, b in zip(points, points[1:])), default=1.0)
        if gap < MIN_RELATIVE_GAP * max(1.0, *(abs(p) for p in points)):
            raise self.fail(expr, f"input values {gap:.3g} apart are too close to separate in "
                                  f"float32 (max_seq_len or the value range is too large)")
        scale = 2.0 / gap  # L = 2 / min_gap: one gate per gap goes from 0 to 1 in between
        gates = [Gate({}, 1.0, dict(outs[0]))]
        for i in range(1, len(points)):
            step = {k: outs[i].get(k, 0.0) - outs[i - 1].get(k, 0.0)
                    for k in set(outs[i]) | set(outs[i - 1])}
            step = {k: v for k, v in step.items() if v != 0.0}
            if step:
                t = (points[i - 1] + points[i]) / 2
                slope = scale if self.mlp_slope is None else \
                    min(2.0 / (sign * (points[i] - points[i - 1])), self.mlp_slope)
                gates.append(Gate({x: sign * slope}, -sign * slope * t, step))
        return gates

    def head(self, expr: Any) -> Head:
        sel = expr.selector
        q_vals, k_vals = self.values[id(sel.queries)], self.values[id(sel.keys)]
        table = [[bool(self.call(sel, sel.predicate, k, q)) for k in k_vals] for q in q_vals]
        q_dims = [self.dims[id(sel.queries)][q] for q in q_vals]
        k_dims = [self.dims[id(sel.keys)][k] for k in k_vals]
        if table and all(row == table[0] for row in table) and not self.nullable[id(sel.queries)]:
            q_dims, table = [], table[:1]  # the query does not matter (tasks.rasp.heads)
        if isinstance(expr, SelectorWidth):
            return width_head(q_dims, k_dims, table, 0, self.width_dim[id(expr)], self.scale)
        src = self.dims[id(expr.sop)]
        dst = self.dims[id(expr)]
        pairs = [(src[v], dst[v]) for v in src]
        return aggregate_head(q_dims, k_dims, table, 0, pairs, self.scale)


def compile_program(program: Any, vocab: list, max_seq_len: int, *, bos: str = "BOS",
                    scale: float = 1000.0, mlp_slope: float | None = None) -> CompiledProgram:
    """Compile `program` for inputs over `vocab` of length 1..`max_seq_len`.

    Args:
        program: The output SOp.
        vocab: The input tokens (hashable, distinct; not `bos`).
        max_seq_len: Longest input (BOS not counted); the model's `n_ctx` is one more.
        bos: The BOS token.
        scale: Attention logit of a selected key (BOS gets half); >= 250 keeps unselected
            softmax weights exactly 0 in float32. Tracr's compiled heads have logits of about 30
            (docs/compiled.md#gains).
        mlp_slope: None: the exact staircase (slope `2 / min_gap` on every step, exact for every
            input). A number S: each step's slope is `min(2 / gap, S)`, exact on the inputs whose
            neighbouring gaps are >= 1 / S (Tracr's default `mlp_exactness` is 100).

    Raises:
        RASPCompileError: naming the expression that cannot be compiled.
    """
    vocab = list(vocab)
    if len(set(vocab)) != len(vocab) or bos in vocab or not vocab:
        raise RASPCompileError(f"vocab must be non-empty, distinct and exclude BOS {bos!r}")
    if max_seq_len < 1:
        raise RASPCompileError(f"max_seq_len must be >= 1, got {max_seq_len}")
    if not isinstance(program, SOp):
        raise RASPCompileError(f"the program must be a SOp, got {program!r}")
    if scale <= 0 or (mlp_slope is not None and mlp_slope <= 0):
        raise RASPCompileError(f"scale={scale} and mlp_slope={mlp_slope} must be > 0")
    c = _Compiler(vocab, max_seq_len, bos, scale, mlp_slope)
    order = _toposort(program)
    # The input dimensions exist even when the program does not read them.
    for kind, default in ((Indices, indices), (Tokens, tokens)):
        found = [e for e in order if isinstance(e, kind)]
        if len(found) > 1:
            raise RASPCompileError(f"the program uses {len(found)} different {kind.__name__} "
                                   f"objects; use the one `tasks.rasp.{default!r}`")
        if not found:
            order.insert(0, default)
    c.tokens = next(e for e in order if isinstance(e, Tokens))
    c.indices = next(e for e in order if isinstance(e, Indices))
    c.assign_names(order)
    for expr in order:
        c.infer(expr)
    done: dict[int, int] = {}  # SOp -> last sublayer that writes it (2l: attention, 2l+1: MLP)
    attn: dict[int, list[Head]] = {}
    mlp: dict[int, list[Gate]] = {}
    for expr in order:
        if isinstance(expr, (Tokens, Indices)):
            done[id(expr)] = -1
        elif isinstance(expr, Select):
            done[id(expr)] = max(done[id(expr.keys)], done[id(expr.queries)])
        else:
            ready = max(done[id(ch)] for ch in expr.children())
            if isinstance(expr, (Map, SequenceMap)):
                sub = ready + 1 if ready % 2 == 0 else ready + 2
                mlp.setdefault(sub // 2, []).extend(c.gates(expr))
            else:
                sub = ready + 1 if ready % 2 == 1 else ready + 2
                attn.setdefault(sub // 2, []).append(c.head(expr))
                if isinstance(expr, SelectorWidth):
                    sub += 1
                    mlp.setdefault(sub // 2, []).extend(c.gates(expr))
            done[id(expr)] = sub
    n_layers = max(1, (done[id(program)] // 2) + 1)
    return _assemble(c, program, n_layers, attn, mlp)


def _assemble(c: _Compiler, program: SOp, n_layers: int, attn: dict[int, list[Head]],
              mlp: dict[int, list[Gate]]) -> CompiledProgram:
    d_model = len(c.labels)
    n_heads = max([len(h) for h in attn.values()] + [1])
    d_head = max([h.width for hs in attn.values() for h in hs] + [1])
    d_mlp = max([2 * len(g) for g in mlp.values()] + [2])
    ids = {c.bos: 0, **{t: i + 1 for i, t in enumerate(c.vocab)}}
    w: dict[str, np.ndarray] = {}
    w["embed.W_E"] = np.zeros((len(ids), d_model))
    w["embed.W_E"][0, 0] = 1.0
    for t in c.vocab:
        w["embed.W_E"][ids[t], c.dims[id(c.tokens)][t]] = 1.0
    # The residual at BOS, the same after every layer: tokens:BOS and every SelectorWidth's
    # bos_weight (BOS's query selects BOS alone) are 1, every SOp dimension 0.
    bos_resid = {0: 1.0, **{dim: 1.0 for dim in c.width_dim.values()}}
    w["pos_embed.W_pos"] = np.zeros((c.n + 1, d_model))
    for i in range(c.n):
        w["pos_embed.W_pos"][i + 1, c.dims[id(c.indices)][i]] = 1.0
    for layer in range(n_layers):
        w.update(attention_weights(attn.get(layer, []), layer, n_heads, d_model, d_head))
        w_in, b_in, w_out = gate_weights(mlp.get(layer, []), d_model, d_mlp, bos_dim=0,
                                         bos_resid=bos_resid)
        prefix = f"blocks.{layer}.mlp."
        w[prefix + "W_in"], w[prefix + "b_in"], w[prefix + "W_out"] = w_in, b_in, w_out
        w[prefix + "b_out"] = np.zeros(d_model)
    out = c.dims[id(program)]
    out_dims = tuple(out.values())
    w["unembed.W_U"] = np.zeros((d_model, len(out_dims)))
    for j, dim in enumerate(out_dims):
        w["unembed.W_U"][dim, j] = 1.0
    w["unembed.b_U"] = np.zeros(len(out_dims))
    config = dict(n_layers=n_layers, d_model=d_model, n_ctx=c.n + 1, d_head=d_head,
                  n_heads=n_heads, d_mlp=d_mlp, d_vocab=len(ids), d_vocab_out=len(out_dims),
                  act_fn="relu", normalization_type=None, attention_dir="bidirectional",
                  use_attn_scale=False, positional_embedding_type="standard")
    values = tuple(c.values[id(program)])
    return CompiledProgram(config, {k: v.astype(np.float32) for k, v in w.items()},
                           tuple(c.labels), ids, c.bos, c.name(program), program.encoding,
                           values, out_dims)

