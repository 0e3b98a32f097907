"""Edge attribution against references written here: a hand count of the edges; exact edge
patching against one-edge-at-a-time hooks on cached activations; EAP against central
differences of those hooks, EAP-IG against backward hooks on interpolated embeddings, and both
against exact patching where the metric is linear in the edge; the all-edges / no-edges runs of
a circuit against the corrupted and clean runs."""

import copy

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from wrapperlens.analysis.edges import (
    EdgeGraph,
    EdgeScores,
    circuit,
    eap_ig_scores,
    eap_scores,
    exact_edge_patching,
    faithfulness_curve,
    top_edges,
)
from wrapperlens.analysis.logit_metrics import logit_difference

# Odd shapes, so that a mixed-up axis cannot pass unnoticed.
BASE = dict(n_layers=2, d_model=12, n_heads=3, d_head=5, d_mlp=7, n_ctx=8, d_vocab=11,
            act_fn="gelu", normalization_type=None)  # fmt: skip
BATCH, N_POS = 3, 6
METRIC = logit_difference(2, 4)


def make_model(seed: int = 0, **overrides) -> HookedTransformer:
    return HookedTransformer(HookedTransformerConfig(**{**BASE, **overrides, "seed": seed}))


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, BASE["d_vocab"], (BATCH, N_POS), generator=g)
    corrupted = torch.randint(0, BASE["d_vocab"], (BATCH, N_POS), generator=g)
    return clean, corrupted


def test_the_edge_list_matches_a_hand_count():
    # 2 layers, 3 heads. Layer 0: 9 q/k/v inputs read `input` (9); m0 reads input + 3 heads (4).
    # Layer 1: 9 q/k/v inputs read input, 3 heads, m0 (9 * 5 = 45); m1 reads those 5 + 3 heads
    # (8). logits reads all 9 upstream nodes. 9 + 4 + 45 + 8 + 9 = 75.
    assert len(EdgeGraph.of(make_model()).edges) == 75
    assert len(EdgeGraph.of(make_model(normalization_type="LN")).edges) == 75
    # Attention only: 9 * 1 + 9 * (1 + 3) + (1 + 6) = 52.
    graph = EdgeGraph.of(make_model(attn_only=True))
    assert len(graph.edges) == 52 == len(set(graph.edges))
    # 3 layers, 2 heads: heads read 1, 4, 7 upstream nodes (x 6 inputs), MLPs 3, 6, 9, logits 10.
    assert len(EdgeGraph.of(make_model(n_layers=3, n_heads=2)).edges) == 6 * 12 + 18 + 10
    names = set(EdgeGraph.of(make_model()).edges)
    assert {"input->a0.h1<q>", "a0.h2->a1.h0<k>", "a1.h2->m1", "m0->logits"} <= names
    assert not {"a1.h0->a1.h1<q>", "m1->a1.h0<v>", "a0.h0->a0.h1<k>"} & names  # not earlier


def _upstream(cache, node):
    if node == "input":
        return cache["blocks.0.hook_resid_pre"]
    if node.startswith("m"):
        return cache[f"blocks.{node[1:]}.hook_mlp_out"]
    layer, head = node[1:].split(".h")
    return cache[f"blocks.{layer}.attn.hook_result"][:, :, int(head)]


def _downstream(model, node):
    """(hook name, head or None) of a downstream node's input."""
    if node == "logits":
        return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", None
    if "<" in node:
        layer, rest = node[1:].split(".h")
        return f"blocks.{layer}.hook_{rest[-2]}_input", int(rest[:-3])
    return f"blocks.{node[1:]}.hook_mlp_in", None


def _set_hooks(on, *models):
    for m in models:
        m.set_use_split_qkv_input(on)
        m.set_use_attn_result(on)
        m.set_use_hook_mlp_in(on)


def brute_force_edge_patching(model, clean, corrupted, metric, source=None, scale=1.0):
    """Each edge alone: add `scale` * (corrupted - clean) output of u to v's input in a clean
    run; the metric's change."""
    source = model if source is None else source
    _set_hooks(True, model, source)
    _, clean_cache = model.run_with_cache(clean)
    _, corrupted_cache = source.run_with_cache(corrupted)
    baseline = metric(model(clean))
    scores = {}
    for edge in EdgeGraph.of(model).edges:
        u, v = edge.split("->")
        delta = _upstream(corrupted_cache, u) - _upstream(clean_cache, u)
        name, head = _downstream(model, v)

        def add(act, hook, delta=scale * delta, head=head):
            act = act.clone()
            if head is None:
                act += delta
            else:
                act[:, :, head] += delta
            return act

        patched = model.run_with_hooks(clean, fwd_hooks=[(name, add)])
        scores[edge] = float(metric(patched) - baseline)
    _set_hooks(False, model, source)
    return scores


def brute_force_eap_ig(model, clean, corrupted, metric, steps):
    """EAP-IG with backward hooks and the token and position embeddings interpolated."""
    _set_hooks(True, model)
    _, clean_cache = model.run_with_cache(clean)
    _, corrupted_cache = model.run_with_cache(corrupted)
    edges = EdgeGraph.of(model).edges
    grads = {}

    def keep(grad, hook):
        grads[hook.name] = grads.get(hook.name, 0) + grad / steps

    inputs = {name for name, _ in (_downstream(model, e.split("->")[1]) for e in edges)}
    for k in range(1, steps + 1):
        def mix(act, hook, a=k / steps):  # a leaf, so that block 0's inputs get gradients too
            start, end = corrupted_cache[hook.name], clean_cache[hook.name]
            return (start + a * (end - start)).requires_grad_(True)

        with model.hooks(fwd_hooks=[("hook_embed", mix), ("hook_pos_embed", mix)],
                         bwd_hooks=[(name, keep) for name in inputs]):  # fmt: skip
            metric(model(clean)).backward()
    scores = {}
    for edge in edges:
        u, v = edge.split("->")
        name, head = _downstream(model, v)
        grad = grads[name] if head is None else grads[name][:, :, head]
        delta = _upstream(corrupted_cache, u) - _upstream(clean_cache, u)
        scores[edge] = float((delta * grad).sum())
    _set_hooks(False, model)
    return scores


@pytest.mark.parametrize("norm", [None, "LN"])
@pytest.mark.parametrize("cross_model", [False, True])
def test_exact_edge_patching_matches_one_edge_at_a_time_hooks(norm, cross_model, tokens):
    clean, corrupted = tokens
    model = make_model(normalization_type=norm)
    source = make_model(seed=1, normalization_type=norm) if cross_model else None
    source_tokens = clean if cross_model else corrupted
    with torch.no_grad():
        expected = brute_force_edge_patching(model, clean, source_tokens, METRIC, source)
    # 75 edges in chunks of 7: uneven chunks, several downstream nodes per forward.
    scores = exact_edge_patching(model, clean, source_tokens, METRIC, batch_edges=7,
                                 source_model=source)  # fmt: skip
    assert scores.edges == tuple(expected)
    torch.testing.assert_close(scores.values, torch.tensor(list(expected.values())),
                               atol=1e-5, rtol=0)  # fmt: skip
    assert scores.values.abs().max() > 1e-2  # the patches do something
    assert not model.cfg.use_attn_result and not model.cfg.use_split_qkv_input  # restored


def _linear_edges(graph, attn_only):
    """Edges the logit difference is linear in without normalisation: those into the logits,
    and, attention-only, into the last layer's values (the pattern then stays the clean one)."""
    last = f"a{graph.n_layers - 1}."
    return [e for e in graph.edges if e.endswith("->logits")
            or (attn_only and e.split("->")[1].startswith(last) and e.endswith("<v>"))]


@pytest.mark.parametrize("attn_only", [False, True])
def test_eap_equals_exact_patching_where_the_metric_is_linear_in_the_edge(attn_only, tokens):
    clean, corrupted = tokens
    model = make_model(attn_only=attn_only, dtype=torch.float64)
    edges = _linear_edges(EdgeGraph.of(model), attn_only)
    exact = exact_edge_patching(model, clean, corrupted, METRIC, edges)
    assert exact.values.abs().max() > 1e-2
    torch.testing.assert_close(eap_scores(model, clean, corrupted, METRIC, edges).values,
                               exact.values, atol=1e-12, rtol=0)  # fmt: skip
    # IG's gradients are taken off the clean run, so only the logits' edges stay linear.
    into_logits = [e for e in edges if e.endswith("->logits")]
    torch.testing.assert_close(
        eap_ig_scores(model, clean, corrupted, METRIC, into_logits, steps=3).values,
        exact_edge_patching(model, clean, corrupted, METRIC, into_logits).values,
        atol=1e-12, rtol=0,
    )


def test_eap_ig_matches_backward_hooks_on_interpolated_embeddings(tokens):
    clean, corrupted = tokens
    model = make_model(normalization_type="LN", dtype=torch.float64)
    expected = brute_force_eap_ig(model, clean, corrupted, METRIC, steps=4)
    model.zero_grad(set_to_none=True)
    scores = eap_ig_scores(model, clean, corrupted, METRIC, steps=4)
    assert scores.edges == tuple(expected)
    torch.testing.assert_close(scores.values, torch.tensor(list(expected.values()),
                               dtype=torch.float64), atol=1e-10, rtol=0)  # fmt: skip
    assert scores.values.abs().max() > 1e-2
    # Not EAP: the path matters on an LN model.
    assert (scores.values - eap_scores(model, clean, corrupted, METRIC).values).abs().max() > 1e-3


def test_eap_ig_across_two_models_is_exact_into_the_logits_without_normalisation(tokens):
    """The path runs in `model`, whose logits are affine in the final residual stream."""
    clean, _ = tokens
    model = make_model(dtype=torch.float64)
    source = copy.deepcopy(model)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.3 * torch.randn_like(p))
    into_logits = [e for e in EdgeGraph.of(model).edges if e.endswith("->logits")]
    exact = exact_edge_patching(model, clean, None, METRIC, into_logits, source_model=source)
    assert exact.values.abs().max() > 1e-2
    ig = eap_ig_scores(model, clean, None, METRIC, into_logits, source_model=source)
    torch.testing.assert_close(ig.values, exact.values, atol=1e-12, rtol=0)


def _spearman(a, b):
    ranks = [x.argsort().argsort().double() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def test_eap_ig_tracks_exact_patching_at_least_as_well_as_eap_on_layernorm_models(tokens):
    """Spearman with exact patching over all 75 edges of random LN models, seeds 0-3, steps=5.

    Measured (this test's print): EAP 0.754 0.773 0.877 0.887 (mean 0.823), EAP-IG 0.829 0.786
    0.895 0.902 (mean 0.853). Seeds 4-7 gave EAP 0.936 0.723 0.781 0.758, EAP-IG 0.957 0.759
    0.780 0.869: IG is ahead on average and never far behind, not ahead on every model. This is
    a property of this shape only: random models are nearly linear, and on 3 layers of 4 heads
    (d_model 24, 262 edges) EAP-IG was behind EAP on 6 of 8 seeds (mean 0.838 vs 0.859)."""
    clean, corrupted = tokens
    eap, ig = [], []
    for seed in range(4):
        model = make_model(seed, normalization_type="LN")
        exact = exact_edge_patching(model, clean, corrupted, METRIC).values
        eap.append(_spearman(eap_scores(model, clean, corrupted, METRIC).values, exact))
        ig.append(_spearman(eap_ig_scores(model, clean, corrupted, METRIC, steps=5).values, exact))
    print("Spearman with exact edge patching: EAP", [round(x, 3) for x in eap],
          "EAP-IG", [round(x, 3) for x in ig])  # fmt: skip
    assert sum(ig) / 4 >= sum(eap) / 4 + 0.01
    assert min(ig) > 0.7 and min(eap) > 0.6


def test_eap_is_the_derivative_of_the_patch_on_a_layernorm_model(tokens):
    """d/de metric(input_v + e * (corrupted - clean) u_out) at e = 0, by central differences."""
    clean, corrupted = tokens
    model = make_model(normalization_type="LN", dtype=torch.float64)
    eps = 1e-5
    with torch.no_grad():
        up = brute_force_edge_patching(model, clean, corrupted, METRIC, scale=eps)
        down = brute_force_edge_patching(model, clean, corrupted, METRIC, scale=-eps)
    derivative = torch.tensor([(up[e] - down[e]) / (2 * eps) for e in up], dtype=torch.float64)
    eap = eap_scores(model, clean, corrupted, METRIC)
    assert eap.edges == tuple(up)
    torch.testing.assert_close(eap.values, derivative, atol=1e-7, rtol=1e-5)
    assert derivative.abs().max() > 1e-2


def test_a_circuit_of_no_edges_is_the_corrupted_run_and_of_all_edges_the_clean_run(tokens):
    clean, corrupted = tokens
    model = make_model(normalization_type="LN")
    graph = EdgeGraph.of(model)
    n = len(graph.edges)
    # Ranks every edge but those into the logits first: keeping them all and corrupting the
    # logits' edges replaces the final residual stream by the corrupted one.
    rank = torch.tensor([0.0 if e.endswith("->logits") else 1.0 for e in graph.edges])
    scores = EdgeScores(graph.edges, rank, "hand")
    n_logits = int((rank == 0).sum())
    curve = faithfulness_curve(model, clean, corrupted, METRIC, scores, [0, n - n_logits, n])
    with torch.no_grad():
        clean_value, corrupted_value = METRIC(model(clean)), METRIC(model(corrupted))
    torch.testing.assert_close(curve.clean, float(clean_value), atol=1e-5, rtol=0)
    torch.testing.assert_close(curve.corrupted, float(corrupted_value), atol=1e-5, rtol=0)
    expected = torch.stack([corrupted_value, corrupted_value, clean_value])
    torch.testing.assert_close(curve.metric, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(curve.recovered, torch.tensor([0.0, 0.0, 1.0]), atol=1e-4, rtol=0)


def test_leaves_both_models_as_they_were_and_works_on_frozen_models(tokens):
    clean, corrupted = tokens
    model, source = make_model(normalization_type="LN"), make_model(1, normalization_type="LN")
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (model, source)]
    scores = eap_ig_scores(model, clean, corrupted, METRIC, steps=3, source_model=source)
    for m, state in zip((model, source), before):
        assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
        assert all(p.grad is None and p.requires_grad for p in m.parameters())
        assert not (m.cfg.use_attn_result or m.cfg.use_split_qkv_input or m.cfg.use_hook_mlp_in)
    model.requires_grad_(False)
    frozen = eap_ig_scores(model, clean, corrupted, METRIC, steps=3, source_model=source)
    torch.testing.assert_close(frozen.values, scores.values, atol=0, rtol=0)
    assert scores.values.abs().max() > 1e-2
    assert not scores.values.requires_grad  # plain numbers: no graph through the weights


def test_top_edges_and_circuit_pick_the_largest_scores():
    scores = EdgeScores(("a", "b", "c", "d"), torch.tensor([0.1, -3.0, 2.0, 0.5]), "hand")
    assert top_edges(scores, 2) == ("b", "c")
    assert top_edges(scores, 2, absolute=False) == ("c", "d")
    assert circuit(scores, threshold=0.5) == ("b", "c", "d")
    assert circuit(scores, top_n=1) == ("b",)
    assert scores["c"] == 2.0 and scores.to_dict()["a"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="exactly one"):
        circuit(scores, threshold=1.0, top_n=2)


def test_refusals(tokens):
    clean, corrupted = tokens
    model = make_model()
    with pytest.raises(ValueError, match=r"unknown edge 'a0\.h9->logits'"):
        exact_edge_patching(model, clean, corrupted, METRIC, ["m0->logits", "a0.h9->logits"])
    with pytest.raises(ValueError, match=r"unknown edge 'a1\.h0->a0\.h0<q>'"):
        eap_scores(model, clean, corrupted, METRIC, ["a1.h0->a0.h0<q>"])
    with pytest.raises(ValueError, match=r"corrupted_tokens \(3, 5\) and clean_tokens \(3, 6\)"):
        eap_ig_scores(model, clean, corrupted[:, :5], METRIC)
    with pytest.raises(ValueError, match="cfg.d_mlp"):
        eap_scores(model, clean, None, METRIC, source_model=make_model(d_mlp=9))
    with pytest.raises(ValueError, match="cfg.parallel_attn_mlp"):
        EdgeGraph.of(make_model(parallel_attn_mlp=True))
    with pytest.raises(ValueError, match="metric must return"):
        eap_scores(model, clean, corrupted, lambda logits: logits[:, -1])
    with pytest.raises(ValueError, match="steps"):
        eap_ig_scores(model, clean, corrupted, METRIC, steps=0)
    with pytest.raises(ValueError, match="batch_edges"):
        exact_edge_patching(model, clean, corrupted, METRIC, batch_edges=0)
    assert not model.cfg.use_attn_result and not model.cfg.use_hook_mlp_in  # restored on error
    assert exact_edge_patching(model, clean, corrupted, METRIC, edges=[]).values.shape == (0,)
