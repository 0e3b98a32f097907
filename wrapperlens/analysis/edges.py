"""Edge attribution on a HookedTransformer: exact edge patching, EAP and EAP-IG.

Node patching (`patching.py`, `attribution.py`) asks which activation matters; edge patching asks
which *connection* matters. The residual stream makes every node's input a sum of the outputs
of the nodes before it, so the model is a graph (Elhage et al., 2021) with

- upstream nodes, whose outputs are the terms of that sum: `input` (the embeddings, i.e. the
  residual stream entering block 0), each head's output `a{L}.h{H}` (its term of the attention
  output, before the bias `b_O`) and each MLP's output `m{L}`;
- downstream nodes, which read the sum: each head's query, key and value inputs
  `a{L}.h{H}<q>` / `<k>` / `<v>`, each MLP's input `m{L}`, and `logits` (the final residual
  stream, before the final normalisation and the unembedding);
- an edge from every upstream node to every downstream node computed after it: heads of layer L
  read `input` and layers < L; the MLP of layer L reads those and the heads of layer L; `logits`
  reads everything. Edges are named as in EAP-IG: `input->a0.h1<q>`, `a0.h3->a1.h0<k>`,
  `a1.h2->m1`, `m0->logits`.

**Patching an edge** u->v (the semantics of EAP-IG's `evaluate_graph`, Hanna et al., 2024):
run the model on the clean tokens, and when v's input is formed, replace u's term in it by u's
output in the corrupted run,

    input_v := input_v - u_out(this run) + u_out(corrupted run),

while every other node, v's own output included, is computed normally from its (possibly
changed) inputs, so the change spreads downstream of v only through v. The score of the edge is
metric(patched) - metric(clean). Corrupting a *set* of edges applies the same replacement for
each of them, with u_out(this run) read in the patched run itself; corrupting every edge gives
the corrupted run, corrupting every edge into `logits` gives its final residual stream (the
outputs add up to it, biases aside, which both runs share).

The corrupted run is `model` on `corrupted_tokens`, or, across a pretrained / fine-tuned pair,
`source_model` (same architecture) on `corrupted_tokens` (default: the clean tokens): its node
outputs are spliced into `model`'s clean run, as in `run_pair.resolve_source`.

A metric returning one value per example is averaged over the batch: every score is a change of
the batch-mean metric. The estimates sum over positions and examples (of the batch-mean
metric's gradient, so the batch is averaged), as EAP-IG's code does (hannamw/EAP-IG,
`src/eap/utils.py`, `make_hooks_and_matrices`):

- `eap_scores` (Syed et al., 2023): (u_out(corrupted) - u_out(clean)) . d metric / d input_v at
  the clean run; exact where the metric is linear in v's input;
- `eap_ig_scores` (Hanna et al., 2024, "Have Faith in Faithfulness", the "inputs" variant of
  `get_scores_eap_ig` in `src/eap/attribute.py`): the same difference dotted with the gradient
  averaged over `steps` runs whose embeddings lie on the straight line from the corrupted to the
  clean embeddings, at alpha = k / steps for k = 0..steps-1. Across two models the line also
  runs through the weights (source + alpha * (model - source)), so that it joins the two runs;
  EAP-IG itself defines only the one-model path.

The graph is read through TransformerLens hooks that exist only with `use_split_qkv_input`,
`use_attn_result` and `use_hook_mlp_in`; `edge_hooks` sets them for the duration of a call and
restores them.
"""

from __future__ import annotations

import copy
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

_FLAGS = ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in")
_RESULT, _INPUT, _MLP_IN = "blocks.{}.attn.hook_result", "blocks.{}.hook_{}_input", "blocks.{}.hook_mlp_in"


@dataclass(frozen=True)
class EdgeGraph:
    """The nodes and edges of a model (see the module docstring), indexed as EAP-IG indexes them.

    Upstream nodes are numbered in the order the model computes them (`input`, then per layer
    its heads and its MLP); downstream node j reads a prefix of them, `upstream[:reads[j]]`.
    """

    n_layers: int
    n_heads: int
    has_mlp: bool

    @classmethod
    def of(cls, model: HookedTransformer) -> EdgeGraph:
        """The graph of `model`; ValueError naming the config field of an unsupported model."""
        cfg = model.cfg
        unsupported = {"parallel_attn_mlp": bool(cfg.parallel_attn_mlp),
                       "n_key_value_heads": cfg.n_key_value_heads is not None,
                       "use_normalization_before_and_after": cfg.use_normalization_before_and_after,
                       "num_experts": bool(cfg.num_experts)}  # fmt: skip
        for field, bad in unsupported.items():
            if bad:
                raise ValueError(f"edge attribution does not cover models with cfg.{field}="
                                 f"{getattr(cfg, field)!r}")  # fmt: skip
        return cls(cfg.n_layers, cfg.n_heads, not cfg.attn_only)

    def _block(self, layer: int) -> int:
        """Index of the first upstream node of `layer`."""
        return 1 + layer * (self.n_heads + self.has_mlp)

    @cached_property
    def upstream(self) -> tuple[str, ...]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)]
            names += [f"m{layer}"] if self.has_mlp else []
        return tuple(names)

    @cached_property
    def _downstream(self) -> tuple[tuple[str, int], ...]:
        """(name, number of upstream nodes it reads) per downstream node."""
        nodes = []
        for layer in range(self.n_layers):
            nodes += [(f"a{layer}.h{h}<{x}>", self._block(layer)) for x in "qkv"
                      for h in range(self.n_heads)]  # fmt: skip
            if self.has_mlp:
                nodes.append((f"m{layer}", self._block(layer) + self.n_heads))
        return tuple(nodes + [("logits", len(self.upstream))])

    @property
    def downstream(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._downstream)

    @property
    def reads(self) -> tuple[int, ...]:
        return tuple(n for _, n in self._downstream)

    @cached_property
    def edges(self) -> tuple[str, ...]:
        """Every edge name, by downstream node, then upstream node."""
        return tuple(f"{self.upstream[i]}->{v}" for v, n in self._downstream for i in range(n))

    @cached_property
    def _index(self) -> dict[str, tuple[int, int]]:
        return {f"{self.upstream[i]}->{v}": (i, j)
                for j, (v, n) in enumerate(self._downstream) for i in range(n)}  # fmt: skip

    def index(self, edges: Sequence[str]) -> tuple[Int[Tensor, "edge"], Int[Tensor, "edge"]]:
        """(upstream index, downstream index) of each edge; ValueError naming an unknown one."""
        for edge in edges:
            if edge not in self._index:
                raise ValueError(f"unknown edge {edge!r}: edges are named like "
                                 f"{self.edges[0]!r} or {self.edges[-1]!r} (see EdgeGraph.edges)")
        pairs = torch.tensor([self._index[e] for e in edges], dtype=torch.long).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    def upstream_hooks(self) -> list[tuple[str, slice]]:
        """(hook name, upstream indices it writes), in forward order."""
        hooks = [(hook_name("resid_pre", 0), slice(0, 1))]
        for layer in range(self.n_layers):
            start = self._block(layer)
            hooks.append((_RESULT.format(layer), slice(start, start + self.n_heads)))
            if self.has_mlp:
                mlp = start + self.n_heads
                hooks.append((hook_name("mlp_out", layer), slice(mlp, mlp + 1)))
        return hooks

    def downstream_hooks(self) -> list[tuple[str, slice, int]]:
        """(hook name, downstream indices it holds, upstream nodes they read), in forward order.
        A q/k/v hook holds one node per head (axis -2 of its activation); the others one."""
        hooks, j, h = [], 0, self.n_heads
        for layer in range(self.n_layers):
            for x in "qkv":
                hooks.append((_INPUT.format(layer, x), slice(j, j + h), self._block(layer)))
                j += h
            if self.has_mlp:
                hooks.append((_MLP_IN.format(layer), slice(j, j + 1), self._block(layer) + h))
                j += 1
        hooks.append((hook_name("resid_post", self.n_layers - 1), slice(j, j + 1),
                      len(self.upstream)))  # fmt: skip
        return hooks


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
    """Metric with only the top-k edges clean (all others corrupted), for each k in `ks`.

    `recovered` = (metric_k - corrupted) / (clean - corrupted): 0 at the corrupted run, 1 at the
    clean one (MIB's normalised faithfulness)."""

    ks: tuple[int, ...]
    metric: Float[Tensor, "k"]
    recovered: Float[Tensor, "k"]
    clean: float
    corrupted: float


@contextmanager
def edge_hooks(*models: HookedTransformer) -> Iterator[None]:
    """Turn on the split q/k/v inputs, per-head results and MLP-input hooks, then restore."""
    saved = [(m.cfg, {f: getattr(m.cfg, f) for f in _FLAGS}) for m in models]
    try:
        for m in models:
            m.cfg.use_split_qkv_input = m.cfg.use_attn_result = True
            m.cfg.use_hook_mlp_in = not m.cfg.attn_only
        yield
    finally:
        for cfg, flags in saved:
            for f, value in flags.items():
                setattr(cfg, f, value)


def _mean_metric(metric: Metric, logits: Tensor) -> Tensor:
    value = metric(logits)
    batch = logits.shape[0]
    if not isinstance(value, Tensor) or value.shape not in ((), (batch,)):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"metric must return a 0-d tensor or shape ({batch},), got {shape}")
    return value.mean()


def _prepare(model, clean_tokens, corrupted_tokens, source_model):
    """Checked (graph, source model, device tokens for both runs)."""
    corrupted_tokens = clean_tokens if corrupted_tokens is None else corrupted_tokens
    for name, t in (("clean_tokens", clean_tokens), ("corrupted_tokens", corrupted_tokens)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be an integer tensor [batch, pos], got {t!r}")
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(f"corrupted_tokens {tuple(corrupted_tokens.shape)} and clean_tokens "
                         f"{tuple(clean_tokens.shape)} must have the same shape")  # fmt: skip
    source, corrupted_tokens = resolve_source(model, clean_tokens, source_model, corrupted_tokens)
    device = next(model.parameters()).device
    return EdgeGraph.of(model), source, clean_tokens.to(device), corrupted_tokens.to(device)


def _upstream_outputs(
    model: HookedTransformer, graph: EdgeGraph, tokens: Tensor, inputs: Tensor | None = None
) -> Float[Tensor, "batch pos upstream d_model"]:
    """Every upstream node's output on `tokens` (or with block 0's input replaced by `inputs`)."""
    out = torch.zeros(*tokens.shape, len(graph.upstream), model.cfg.d_model,
                      dtype=model.cfg.dtype, device=tokens.device)  # fmt: skip

    def record(act, hook, where):
        out[:, :, where] = act.unsqueeze(2) if act.ndim == 3 else act

    hooks = [(name, lambda a, hook, w=w: record(a, hook, w)) for name, w in graph.upstream_hooks()]
    if inputs is not None:
        hooks.insert(0, (hook_name("resid_pre", 0), lambda act, hook: inputs))
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(tokens)
    return out


def _masked_metric(model, graph, tokens, corrupt_up, masks, metric) -> Float[Tensor, "k"]:
    """The metric of the clean run with edges corrupted, for each mask `masks[k]` of shape
    [upstream, downstream] (1 = corrupted), the K runs stacked along the batch axis."""
    k, batch = masks.shape[0], tokens.shape[0]
    diff = torch.zeros(k, *corrupt_up.shape, dtype=corrupt_up.dtype, device=corrupt_up.device)

    def record(act, hook, where):
        act = act.reshape(k, batch, *act.shape[1:])
        diff[:, :, :, where] = (act.unsqueeze(3) if act.ndim == 4 else act) - corrupt_up[:, :, where]

    def patch(act, hook, where, reads):
        mask = masks[:, :reads, where].to(diff.dtype)  # [k, reads, nodes]
        if not bool(mask.any()):
            return act
        change = torch.einsum("kbpfd,kfn->kbpnd", diff[:, :, :, :reads], mask)
        change = change.reshape(k * batch, *change.shape[2:])
        return act - (change if act.ndim == 4 else change.squeeze(2))

    hooks = [(n, lambda a, hook, w=w: record(a, hook, w)) for n, w in graph.upstream_hooks()]
    hooks += [(n, lambda a, hook, w=w, r=r: patch(a, hook, w, r))
              for n, w, r in graph.downstream_hooks()]  # fmt: skip
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens.repeat(k, 1))
    return torch.stack([_mean_metric(metric, part) for part in logits.split(batch)])


def _run_masks(model, graph, tokens, corrupt_up, masks, metric, chunk) -> Float[Tensor, "k"]:
    if chunk < 1:
        raise ValueError(f"batch_edges must be >= 1, got {chunk!r}")
    parts = [_masked_metric(model, graph, tokens, corrupt_up, m, metric) for m in masks.split(chunk)]
    return torch.cat(parts)


def _edge_masks(graph: EdgeGraph, up: Tensor, down: Tensor, device) -> Tensor:
    """One mask per edge (that edge corrupted), [edge, upstream, downstream]."""
    masks = torch.zeros(len(up), len(graph.upstream), len(graph.downstream), dtype=torch.bool)
    masks[torch.arange(len(up)), up, down] = True
    return masks.to(device)


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
    """Patch each edge alone (module docstring): metric(patched) - metric(clean), batch mean.

    `batch_edges` patched runs share one forward (stacked along the batch axis), which holds
    about batch_edges * batch * pos * (upstream nodes) * d_model floats.

    Returns:
        `EdgeScores` over `edges` (default: every edge of `EdgeGraph.of(model)`).
    """
    graph, source, clean, corrupted = _prepare(model, clean_tokens, corrupted_tokens, source_model)
    edges = graph.edges if edges is None else tuple(edges)
    up, down = graph.index(edges)
    with edge_hooks(model, source):
        corrupt_up = _upstream_outputs(source, graph, corrupted)
        with torch.no_grad():
            baseline = _mean_metric(metric, model(clean))
        masks = _edge_masks(graph, up, down, clean.device)
        values = _run_masks(model, graph, clean, corrupt_up, masks, metric, batch_edges)
    return EdgeScores(edges, (values - baseline).cpu(), "exact")


def _input_gradients(model, graph, tokens, metric, inputs=None) -> Tensor:
    """d (batch-mean metric) / d every downstream node's input, [batch, pos, downstream, d_model],
    on `tokens` (with block 0's input replaced by `inputs` if given)."""
    held: list[Tensor] = []

    def start(act, hook):  # a leaf from the embeddings on: frozen models need a graph too
        return (act if inputs is None else inputs).detach().requires_grad_(True)

    def keep(act, hook):
        held.append(act)
        return act

    hooks = [(hook_name("resid_pre", 0), start)] + [(n, keep) for n, _, _ in
                                                    graph.downstream_hooks()]  # fmt: skip
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        value = _mean_metric(metric, model(tokens))
        grads = torch.autograd.grad(value, held, allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(held, grads)]
    return torch.cat([g if g.ndim == 4 else g.unsqueeze(2) for g in grads], dim=2).detach()


def _scores(graph, edges, delta, grads, method) -> EdgeScores:
    up, down = graph.index(edges)
    matrix = torch.einsum("bpfd,bpnd->fn", delta, grads)  # [upstream, downstream]
    return EdgeScores(edges, matrix[up, down].cpu(), method)


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
    positions and examples (of the batch-mean metric); one clean forward and backward and one
    corrupted forward. Estimates `exact_edge_patching` (same arguments)."""
    graph, source, clean, corrupted = _prepare(model, clean_tokens, corrupted_tokens, source_model)
    edges = graph.edges if edges is None else tuple(edges)
    graph.index(edges)
    with edge_hooks(model, source):
        delta = _upstream_outputs(source, graph, corrupted) - _upstream_outputs(model, graph, clean)
        grads = _input_gradients(model, graph, clean, metric)
    return _scores(graph, edges, delta, grads, "eap")


@contextmanager
def _weight_path(model: HookedTransformer, source: HookedTransformer) -> Iterator:
    """A function alpha -> a model with weights source + alpha * (model - source)."""
    if source is model:
        yield lambda alpha: model
        return
    between = copy.deepcopy(model)
    start, end = dict(source.named_parameters()), dict(model.named_parameters())

    def at(alpha: float) -> HookedTransformer:
        with torch.no_grad():
            for name, p in between.named_parameters():
                p.copy_(start[name] + alpha * (end[name] - start[name]))
        return between

    yield at


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
    input is corrupted + k / steps * (clean - corrupted), k = 0..steps-1 (and, across two models,
    whose weights move likewise from `source_model`'s to `model`'s); see the module docstring.
    `steps + 2` forwards and `steps` backwards."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    graph, source, clean, corrupted = _prepare(model, clean_tokens, corrupted_tokens, source_model)
    edges = graph.edges if edges is None else tuple(edges)
    graph.index(edges)
    with edge_hooks(model, source), _weight_path(model, source) as path:
        corrupt_up = _upstream_outputs(source, graph, corrupted)
        clean_up = _upstream_outputs(model, graph, clean)
        start, end = corrupt_up[:, :, 0], clean_up[:, :, 0]
        grads = sum(_input_gradients(path(k / steps), graph, clean, metric,
                                     start + (k / steps) * (end - start))
                    for k in range(steps)) / steps  # fmt: skip
    return _scores(graph, edges, corrupt_up - clean_up, grads, "eap-ig")


def top_edges(scores: EdgeScores, n: int, *, absolute: bool = True) -> tuple[str, ...]:
    """The `n` edges of largest |score| (or score, `absolute=False`), largest first."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(scores.edges):
        raise ValueError(f"n must be an int in 0..{len(scores.edges)}, got {n!r}")
    key = scores.values.abs() if absolute else scores.values
    order = torch.argsort(key, descending=True, stable=True)[:n]
    return tuple(scores.edges[i] for i in order.tolist())


def circuit(
    scores: EdgeScores, threshold: float | None = None, top_n: int | None = None
) -> tuple[str, ...]:
    """The edges with |score| >= `threshold`, or the `top_n` largest (exactly one of the two),
    largest first."""
    if (threshold is None) == (top_n is None):
        raise ValueError("give exactly one of threshold and top_n")
    if top_n is not None:
        return top_edges(scores, top_n)
    kept = int((scores.values.abs() >= threshold).sum())
    return top_edges(scores, kept)


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
    graph, source, clean, corrupted = _prepare(model, clean_tokens, corrupted_tokens, source_model)
    ks = tuple(ks)
    all_up, all_down = graph.index(graph.edges)
    full = _edge_masks(graph, all_up, all_down, "cpu").any(0)
    masks = [torch.zeros_like(full), full]  # clean, corrupted
    for k in ks:
        up, down = graph.index(top_edges(scores, k))
        mask = full.clone()
        mask[up, down] = False
        masks.append(mask)
    with edge_hooks(model, source):
        corrupt_up = _upstream_outputs(source, graph, corrupted)
        values = _run_masks(model, graph, clean, corrupt_up, torch.stack(masks).to(clean.device),
                            metric, batch_edges).cpu()  # fmt: skip
    clean_value, corrupted_value, curve = values[0], values[1], values[2:]
    recovered = (curve - corrupted_value) / (clean_value - corrupted_value)
    return FaithfulnessCurve(ks, curve, recovered, float(clean_value), float(corrupted_value))
