"""Edge attribution on a HookedTransformer: exact edge patching, EAP and EAP-IG.

Node patching (`patching.py`, `attribution.py`) asks which activation matters; edge patching asks
which *connection* matters. Every node reads the residual stream, a sum of the outputs of the
nodes before it, so the model is a graph (Elhage et al., 2021) with

- upstream nodes, the terms of that sum: `input` (the residual stream entering block 0: the
  embeddings), each head's output `a{L}.h{H}` (before the bias `b_O`), each MLP's output `m{L}`;
- downstream nodes, which read the sum: each head's query, key and value inputs
  `a{L}.h{H}<q>` / `<k>` / `<v>`, each MLP's input `m{L}`, and `logits` (the final residual
  stream, before the final normalisation and the unembedding);
- an edge from each upstream node to each downstream node computed after it: heads of layer L
  read `input` and layers < L, the MLP of layer L those and the heads of layer L, `logits` all.
  Edges are named as in EAP-IG: `input->a0.h1<q>`, `a0.h3->a1.h0<k>`, `a1.h2->m1`, `m0->logits`.

**Patching an edge** u->v (EAP-IG's `evaluate_graph`, Hanna et al., 2024): run the model on the
clean tokens and, when v's input is formed, replace u's term in it by u's corrupted output,

    input_v := input_v - u_out(this run) + u_out(corrupted run),

every other node (v's own output included) being computed normally from its inputs, so the
change reaches the rest of the model only through v. The edge's score is metric(patched) -
metric(clean). Corrupting a *set* of edges replaces each of them so, u_out(this run) being read
in the patched run itself: corrupting every edge gives the corrupted run; every edge into
`logits`, the corrupted final residual stream (the outputs sum to it; the biases are shared;
across two models, both read through `model`'s biases, final normalisation and unembedding).

The corrupted run is `model` on `corrupted_tokens`, or, across a pretrained / fine-tuned pair,
`source_model` (same architecture) on `corrupted_tokens` (default: the clean tokens), whose node
outputs are spliced into `model`'s clean run, as in `run_pair.resolve_source`. A metric with
one value per example is averaged over the batch: every score is a change of the batch-mean
metric. The estimates sum over positions and examples (the batch-mean metric's gradient
carries the 1 / batch), as EAP-IG's code does (github.com/hannamw/EAP-IG, `src/eap/utils.py`):

- `eap_scores` (Syed et al., 2023): (u_out(corrupted) - u_out(clean)) . d metric / d input_v at
  the clean run; exact where the metric is linear in v's input;
- `eap_ig_scores` (Hanna et al., 2024, "Have Faith in Faithfulness"; `get_scores_eap_ig` in
  `src/eap/attribute.py`, the "inputs" variant): the same difference dotted with the gradient
  averaged over `steps` runs whose embeddings are corrupted + alpha * (clean - corrupted),
  alpha = k / steps for k = 1..steps (the current code; early versions took k = 0..steps-1), so
  `steps=1` is EAP. Across two models the runs are `model`'s, the corrupted embeddings the
  source's (so with the same embeddings and tokens every step is the clean run: EAP), because
  exact patching changes an input of `model`; a path through the weights as well tracked it
  worse on random pairs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.analysis.logit_metrics import Metric
from wrapperlens.analysis.run_pair import resolve_source
from wrapperlens.components import hook_name

__all__ = [
    "EdgeGraph", "EdgeScores", "FaithfulnessCurve", "edge_hooks", "exact_edge_patching",
    "eap_scores", "eap_ig_scores", "top_edges", "circuit", "faithfulness_curve",
]  # fmt: skip

_FLAGS = ("use_split_qkv_input", "use_hook_mlp_in")
_INPUT = "blocks.{}.hook_{}_input"
_MLP_IN = "blocks.{}.hook_mlp_in"
_UNSUPPORTED = ("parallel_attn_mlp", "n_key_value_heads", "use_normalization_before_and_after",
                "num_experts")  # fmt: skip


@dataclass(frozen=True)
class EdgeGraph:
    """The nodes and edges of a model (module docstring), indexed as EAP-IG indexes them:
    upstream nodes in the order the model computes them, each downstream node reading a prefix."""

    n_layers: int
    n_heads: int
    has_mlp: bool

    @classmethod
    def of(cls, model: HookedTransformer) -> EdgeGraph:
        """The graph of `model`; ValueError naming the config field of an unsupported model."""
        for field in _UNSUPPORTED:
            if getattr(model.cfg, field, None) not in (None, False, 0):
                raise ValueError(f"edge attribution does not cover models with cfg.{field}="
                                 f"{getattr(model.cfg, field)!r}")  # fmt: skip
        return cls(model.cfg.n_layers, model.cfg.n_heads, not model.cfg.attn_only)

    def _block(self, layer: int) -> int:
        """Index of the first upstream node of `layer`."""
        return 1 + layer * (self.n_heads + self.has_mlp)

    @cached_property
    def upstream(self) -> tuple[str, ...]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"] * self.has_mlp
        return tuple(names)

    def upstream_hooks(self) -> list[tuple[str, slice, int | None]]:
        """(hook name, its nodes, the layer whose W_O makes z their outputs), in forward order:
        heads are read at ``z`` (`hook_result` costs a [b, p, head, d_head, d_model] product)."""
        hooks = [(hook_name("resid_pre", 0), slice(0, 1), None)]
        for layer in range(self.n_layers):
            start, mlp = self._block(layer), self._block(layer) + self.n_heads
            hooks.append((hook_name("z", layer), slice(start, mlp), layer))
            hooks += [(hook_name("mlp_out", layer), slice(mlp, mlp + 1), None)] * self.has_mlp
        return hooks

    @cached_property
    def _downstream(self) -> tuple[tuple[str, tuple[str, ...], int], ...]:
        """(hook name, the downstream nodes it holds, how many upstream nodes they read)."""
        hooks, heads = [], range(self.n_heads)
        for layer in range(self.n_layers):
            reads = self._block(layer)
            hooks += [(_INPUT.format(layer, x), tuple(f"a{layer}.h{h}<{x}>" for h in heads), reads)
                      for x in "qkv"]  # fmt: skip
            hooks += [(_MLP_IN.format(layer), (f"m{layer}",), reads + self.n_heads)] * self.has_mlp
        logits = hook_name("resid_post", self.n_layers - 1)
        return tuple(hooks + [(logits, ("logits",), len(self.upstream))])

    def downstream_hooks(self) -> list[tuple[str, slice, int]]:
        """(hook name, its downstream nodes' indices, how many upstream nodes they read), in
        forward order. A q/k/v hook holds one node per head (axis -2 of its activation)."""
        ends = torch.tensor([len(nodes) for _, nodes, _ in self._downstream]).cumsum(0).tolist()
        return [(name, slice(end - len(nodes), end), reads)
                for (name, nodes, reads), end in zip(self._downstream, ends)]  # fmt: skip

    @cached_property
    def downstream(self) -> tuple[str, ...]:
        return tuple(node for _, nodes, _ in self._downstream for node in nodes)

    @cached_property
    def _index(self) -> dict[str, tuple[int, int]]:
        """Edge name -> (upstream index, downstream index), by downstream, then upstream node."""
        pairs = [(v, reads) for _, nodes, reads in self._downstream for v in nodes]
        return {f"{self.upstream[i]}->{v}": (i, j)
                for j, (v, reads) in enumerate(pairs) for i in range(reads)}  # fmt: skip

    @property
    def edges(self) -> tuple[str, ...]:
        return tuple(self._index)

    def index(self, edges: Sequence[str]) -> tuple[Int[Tensor, "edge"], Int[Tensor, "edge"]]:
        """(upstream index, downstream index) of each edge; ValueError naming an unknown one."""
        for edge in edges:
            if edge not in self._index:
                raise ValueError(f"unknown edge {edge!r}: edges are named like "
                                 f"{self.edges[0]!r} or {self.edges[-1]!r} (see EdgeGraph.edges)")
        pairs = torch.tensor([self._index[e] for e in edges], dtype=torch.long).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]


@dataclass(frozen=True)
class EdgeScores:
    """One score per edge: `scores["a0.h3->a1.h0<k>"]`, or `values` in the order of `edges`."""

    edges: tuple[str, ...]
    values: Float[Tensor, "edge"]
    method: str

    def __getitem__(self, edge: str) -> float:
        if edge not in self.edges:
            raise ValueError(f"unknown edge {edge!r} in these {self.method} scores")
        return float(self.values[self.edges.index(edge)])

    def to_dict(self) -> dict[str, float]:
        return dict(zip(self.edges, self.values.tolist()))


@dataclass(frozen=True)
class FaithfulnessCurve:
    """The metric with only the top-k edges clean (the others corrupted), for each k in `ks`, and
    `recovered` = (metric_k - corrupted) / (clean - corrupted), MIB's normalised faithfulness."""

    ks: tuple[int, ...]
    metric: Float[Tensor, "k"]
    recovered: Float[Tensor, "k"]
    clean: float
    corrupted: float


@contextmanager
def edge_hooks(*models: HookedTransformer) -> Iterator[None]:
    """Turn on the hooks the graph is read at (`use_split_qkv_input`, `use_hook_mlp_in`:
    TransformerLens leaves them off), and restore the flags afterwards."""
    saved = [(m.cfg, {f: getattr(m.cfg, f) for f in _FLAGS}) for m in models]
    for m in models:
        m.cfg.use_split_qkv_input = True
        m.cfg.use_hook_mlp_in = not m.cfg.attn_only
    try:
        yield
    finally:
        for cfg, flags in saved:
            cfg.__dict__.update(flags)


def _mean_metric(metric: Metric, logits: Tensor) -> Tensor:
    value, batch = metric(logits), logits.shape[0]
    if not isinstance(value, Tensor) or value.shape not in ((), (batch,)):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"metric must return a 0-d tensor or shape ({batch},), got {shape}")
    return value.mean()


def _prepare(model, clean_tokens, corrupted_tokens, source_model, edges):
    """Checked (graph, source model, clean and corrupted tokens on the device, edge names)."""
    corrupted_tokens = clean_tokens if corrupted_tokens is None else corrupted_tokens
    tensors = isinstance(clean_tokens, Tensor) and isinstance(corrupted_tokens, Tensor)
    if tensors and clean_tokens.shape != corrupted_tokens.shape:  # else resolve_source refuses
        raise ValueError(f"corrupted_tokens {tuple(corrupted_tokens.shape)} and clean_tokens "
                         f"{tuple(clean_tokens.shape)} must have the same shape")  # fmt: skip
    source, corrupted_tokens = resolve_source(model, clean_tokens, source_model, corrupted_tokens)
    graph, device = EdgeGraph.of(model), next(model.parameters()).device
    edges = graph.edges if edges is None else tuple(edges)
    graph.index(edges)
    return graph, source, clean_tokens.to(device), corrupted_tokens.to(device), edges


def _node_outputs(model: HookedTransformer, act: Tensor, layer: int | None) -> Tensor:
    """An upstream hook's nodes' outputs [batch, pos, nodes, d_model]; heads: z_h @ W_O[h]."""
    if layer is not None:
        act = torch.einsum("bphd,hdm->bphm", act, model.blocks[layer].attn.W_O)
    return act.reshape(act.shape[0], act.shape[1], -1, act.shape[-1])


def _upstream_outputs(model, graph: EdgeGraph, tokens) -> Float[Tensor, "batch pos up d_model"]:
    """Every upstream node's output on `tokens`."""
    hooks = graph.upstream_hooks()
    with torch.no_grad():  # the W_O products too: no graph through the weights
        _, cache = model.run_with_cache(tokens, names_filter=[name for name, *_ in hooks])
        return torch.cat([_node_outputs(model, cache[name], layer) for name, _, layer in hooks], 2)


def _masked_metric(model, graph, tokens, corrupt_up, masks, metric, chunk) -> Float[Tensor, "k"]:
    """The metric of the clean run with edges corrupted, for each mask `masks[k]` of shape
    [upstream, downstream] (True = corrupted); `chunk` runs stacked along the batch axis."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"batch_edges must be an int >= 1, got {chunk!r}")
    batch, values = tokens.shape[0], []
    # One buffer for all chunks, not zeroed: `record` writes every slot a patch reads first.
    buffer = torch.empty(min(chunk, len(masks)), *corrupt_up.shape, dtype=corrupt_up.dtype,
                         device=tokens.device)
    for part in masks.split(chunk) if len(masks) else ():
        k, diff = part.shape[0], buffer[:part.shape[0]]

        def record(act, hook, where, layer, k=k, diff=diff):
            out = _node_outputs(model, act, layer)
            diff[:, :, :, where] = out.reshape(k, batch, *out.shape[1:]) - corrupt_up[:, :, where]

        def patch(act, hook, where, reads, k=k, diff=diff, part=part):
            mask = part[:, :reads, where]  # [k, reads, nodes]
            runs = mask.flatten(1).any(1).nonzero().flatten()  # the runs that patch here
            if not len(runs):
                return act
            # sum over f of diff[r, b, p, f, d] * mask[r, f, n], as a matmul
            change = torch.matmul(diff[runs, :, :, :reads].transpose(-1, -2),
                                  mask[runs, None, None].to(diff.dtype)).transpose(-1, -2)
            out = act.reshape(k, batch, act.shape[1], -1, act.shape[-1]).clone()
            out[runs] -= change
            return out.reshape(act.shape)

        hooks = [(n, lambda a, hook, w=w, l=l: record(a, hook, w, l))
                 for n, w, l in graph.upstream_hooks()]
        hooks += [(n, lambda a, hook, w=w, r=r: patch(a, hook, w, r))
                  for n, w, r in graph.downstream_hooks()]  # fmt: skip
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            logits = model(tokens.repeat(k, 1))
        values += [_mean_metric(metric, run) for run in logits.split(batch)]
    return torch.stack(values) if values else torch.zeros(0, device=tokens.device)


def _edge_masks(graph: EdgeGraph, edges: Sequence[str]) -> Tensor:
    """One mask per edge (that edge corrupted), [edge, upstream, downstream]."""
    masks = torch.zeros(len(edges), len(graph.upstream), len(graph.downstream), dtype=torch.bool)
    masks[(torch.arange(len(edges)), *graph.index(edges))] = True
    return masks


def exact_edge_patching(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Tensor | None,  # [batch, pos]; plain, so a wrong shape gets our message
    metric: Metric,
    edges: Sequence[str] | None = None,
    batch_edges: int = 16,
    *,
    source_model: HookedTransformer | None = None,
) -> EdgeScores:
    """Patch each edge alone (module docstring): `EdgeScores` of metric(patched) - metric(clean)
    (batch mean) over `edges` (default: all of `EdgeGraph.of(model)`). `batch_edges` patched
    runs share a forward (stacked along the batch axis), which holds about
    batch_edges * batch * pos * (upstream nodes) * d_model floats."""
    graph, source, clean, corrupted, edges = _prepare(model, clean_tokens, corrupted_tokens,
                                                      source_model, edges)  # fmt: skip
    with edge_hooks(model, source):
        corrupt_up = _upstream_outputs(source, graph, corrupted)
        with torch.no_grad():
            baseline = _mean_metric(metric, model(clean))
        masks = _edge_masks(graph, edges).to(clean.device)
        values = _masked_metric(model, graph, clean, corrupt_up, masks, metric, batch_edges)
    return EdgeScores(edges, (values - baseline).cpu(), "exact")


def _input_gradients(model, graph, tokens, metric, inputs) -> Tensor:
    """d (batch-mean metric) / d every downstream node's input, [batch, pos, downstream, d_model],
    on `tokens` with block 0's input replaced by `inputs`."""
    held: list[Tensor] = []

    def start(act, hook):  # a leaf from the embeddings on: frozen models need a graph too
        return inputs.detach().requires_grad_(True)

    def keep(act, hook):
        held.append(act)
        return act

    hooks = [(hook_name("resid_pre", 0), start)]
    hooks += [(name, keep) for name, _, _ in graph.downstream_hooks()]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        value = _mean_metric(metric, model(tokens))
        grads = torch.autograd.grad(value, held, allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(held, grads)]
    return torch.cat([g.reshape(*tokens.shape, -1, g.shape[-1]) for g in grads], 2).detach()


def eap_scores(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Tensor | None,  # [batch, pos]; plain, so a wrong shape gets our message
    metric: Metric,
    edges: Sequence[str] | None = None,
    *,
    source_model: HookedTransformer | None = None,
) -> EdgeScores:
    """EAP: (u_out(corrupted) - u_out(clean)) . d metric / d input_v at the clean run, summed over
    positions and examples (of the batch-mean metric); one clean forward and backward and two
    forwards. Estimates `exact_edge_patching` (same arguments). It is EAP-IG's one step."""
    scores = eap_ig_scores(model, clean_tokens, corrupted_tokens, metric, edges, steps=1,
                           source_model=source_model)  # fmt: skip
    return EdgeScores(scores.edges, scores.values, "eap")


def eap_ig_scores(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Tensor | None,  # [batch, pos]; plain, so a wrong shape gets our message
    metric: Metric,
    edges: Sequence[str] | None = None,
    steps: int = 5,
    *,
    source_model: HookedTransformer | None = None,
) -> EdgeScores:
    """EAP-IG (inputs variant): EAP with the gradient averaged over `steps` runs whose block-0
    input is corrupted + k / steps * (clean - corrupted), k = 1..steps, all in `model` (also
    across two models); see the module docstring. `steps + 2` forwards and `steps` backwards."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    graph, source, clean, corrupted, edges = _prepare(model, clean_tokens, corrupted_tokens,
                                                      source_model, edges)  # fmt: skip
    with edge_hooks(model, source):
        corrupt_up = _upstream_outputs(source, graph, corrupted)
        clean_up = _upstream_outputs(model, graph, clean)
        start, end = corrupt_up[:, :, 0], clean_up[:, :, 0]
        alphas = [k / steps for k in range(1, steps + 1)]
        grads = sum(_input_gradients(model, graph, clean, metric, start + a * (end - start))
                    for a in alphas) / steps  # fmt: skip
    matrix = torch.einsum("bpfd,bpnd->fn", corrupt_up - clean_up, grads)  # [upstream, downstream]
    return EdgeScores(edges, matrix[graph.index(edges)].cpu(), "eap-ig")


def top_edges(scores: EdgeScores, n: int, *, absolute: bool = True) -> tuple[str, ...]:
    """The `n` edges of largest |score| (or score, `absolute=False`), largest first."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(scores.edges):
        raise ValueError(f"n must be an int in 0..{len(scores.edges)}, got {n!r}")
    key = scores.values.abs() if absolute else scores.values
    order = torch.argsort(key, descending=True, stable=True)[:n]
    return tuple(scores.edges[i] for i in order.tolist())


def circuit(scores: EdgeScores, threshold: float | None = None, top_n: int | None = None):
    """The edges with |score| >= `threshold`, or the `top_n` largest (exactly one of the two),
    largest first."""
    if (threshold is None) == (top_n is None):
        raise ValueError("give exactly one of threshold and top_n")
    n = top_n if top_n is not None else int((scores.values.abs() >= threshold).sum())
    return top_edges(scores, n)


def faithfulness_curve(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Tensor | None,  # [batch, pos]; plain, so a wrong shape gets our message
    metric: Metric,
    scores: EdgeScores,
    ks: Sequence[int],
    *,
    source_model: HookedTransformer | None = None,
    batch_edges: int = 16,
) -> FaithfulnessCurve:
    """For each k, the metric with the top-k edges of `scores` (by |score|) clean and every other
    edge of the graph corrupted (module docstring), and its normalised recovery."""
    graph, source, clean, corrupted, _ = _prepare(model, clean_tokens, corrupted_tokens,
                                                  source_model, None)  # fmt: skip
    ks = tuple(ks)
    full = _edge_masks(graph, graph.edges).any(0)
    masks = [torch.zeros_like(full), full]  # clean, corrupted
    for k in ks:
        up, down = graph.index(top_edges(scores, k))
        masks.append(full.clone().index_put_((up, down), torch.tensor(False)))
    with edge_hooks(model, source):
        corrupt_up = _upstream_outputs(source, graph, corrupted)
        masks = torch.stack(masks).to(clean.device)
        values = _masked_metric(model, graph, clean, corrupt_up, masks, metric, batch_edges).cpu()
    clean_value, corrupted_value, curve = values[0], values[1], values[2:]
    recovered = (curve - corrupted_value) / (clean_value - corrupted_value)
    return FaithfulnessCurve(ks, curve, recovered, float(clean_value), float(corrupted_value))
