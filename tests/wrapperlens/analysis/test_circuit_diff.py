"""The circuit diff against hand-made scores (each status by construction) and a known-answer
pair: a "fine-tuned" copy of a model with one head's output zeroed by hand loses every edge
out of that head."""

import copy

import matplotlib
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from wrapperlens.analysis.circuit_diff import diff_circuits, plot_circuit_diff
from wrapperlens.analysis.edges import EdgeGraph, EdgeScores, exact_edge_patching
from wrapperlens.analysis.logit_metrics import logit_difference

matplotlib.use("Agg")

EDGES = ("input->a0.h0<q>", "input->a0.h1<k>", "a0.h0->m0", "a0.h1->m0", "m0->logits",
         "a0.h0->logits")


def scores(*values: float, method: str = "eap-ig") -> EdgeScores:
    return EdgeScores(EDGES, torch.tensor(values), method)


def test_each_status_is_given_where_it_is_built():
    before = scores(1.0, -0.8, 0.6, 0.5, 0.01, 0.02)
    after = scores(0.9, 0.7, 0.05, 2.0, 1.5, 0.0)
    # top 4 before: q (1.0), k (0.8), a0.h0->m0 (0.6), a0.h1->m0 (0.5);
    # top 4 after:  a0.h1->m0 (2.0), m0->logits (1.5), q (0.9), k (0.7).
    diff = diff_circuits(before, after, top_n=4)
    assert diff.of("kept") == ("input->a0.h0<q>",)  # 1.0 -> 0.9: same sign, within 2x
    assert set(diff.of("reweighted")) == {"input->a0.h1<k>",  # sign flip
                                          "a0.h1->m0"}        # 0.5 -> 2.0: a factor of 4
    assert diff.of("gained") == ("m0->logits",) and diff.of("lost") == ("a0.h0->m0",)
    assert diff.counts() == {"kept": 1, "reweighted": 2, "gained": 1, "lost": 1}
    assert [c.edge for c in diff.changes][:2] == ["a0.h1->m0", "m0->logits"]  # largest first
    row = next(r for r in diff.rows() if r["edge"] == "a0.h0->m0")
    assert row == {"edge": "a0.h0->m0", "before": pytest.approx(0.6),
                   "after": pytest.approx(0.05), "status": "lost"}
    table = diff.markdown()
    assert "| `a0.h0->m0` | +0.6000 | +0.0500 | lost |" in table
    assert "1 kept, 2 reweighted, 1 gained, 1 lost" in table


def test_a_wider_ratio_keeps_what_a_narrow_one_reweights():
    before, after = scores(1.0, 0, 0, 0, 0, 0), scores(2.5, 0, 0, 0, 0, 0)
    assert diff_circuits(before, after, top_n=1, ratio=2.0).of("reweighted") == (EDGES[0],)
    assert diff_circuits(before, after, top_n=1, ratio=3.0).of("kept") == (EDGES[0],)


def test_identical_scores_keep_every_edge_by_threshold():
    s = scores(1.0, -0.8, 0.6, 0.5, 0.01, 0.02)
    diff = diff_circuits(s, s, threshold=0.1)
    assert diff.counts() == {"kept": 4, "reweighted": 0, "gained": 0, "lost": 0}


def test_refusals():
    other = EdgeScores(EDGES[::-1], torch.zeros(6), "eap-ig")
    with pytest.raises(ValueError, match="same edges in the same order"):
        diff_circuits(scores(*[0.0] * 6), other, top_n=2)
    with pytest.raises(ValueError, match="ratio must be a finite number above 1"):
        diff_circuits(scores(*[0.0] * 6), scores(*[0.0] * 6), top_n=2, ratio=1.0)
    with pytest.raises(ValueError, match="exactly one of threshold and top_n"):
        diff_circuits(scores(*[0.0] * 6), scores(*[0.0] * 6))
    with pytest.raises(ValueError, match="status must be one of"):
        diff_circuits(scores(*[1.0] * 6), scores(*[1.0] * 6), top_n=2).of("added")


def test_a_zeroed_head_loses_every_edge_out_of_it():
    """Known answer: the copy's head a0.h1 outputs nothing (W_O zeroed by hand), so patching an
    edge out of it changes nothing there (0 up to float rounding); with a threshold below every
    such edge's pretrained score (half the weakest), the diff must list them all as lost."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=12, n_heads=3, d_head=5, d_mlp=7, n_ctx=8,
                                  d_vocab=11, act_fn="gelu", normalization_type=None, seed=3)
    pretrained = HookedTransformer(cfg)
    finetuned = copy.deepcopy(pretrained)
    with torch.no_grad():
        finetuned.blocks[0].attn.W_O[1] = 0.0
    g = torch.Generator().manual_seed(0)
    clean, corrupted = (torch.randint(0, 11, (3, 6), generator=g) for _ in range(2))
    metric = logit_difference(2, 4)
    before = exact_edge_patching(pretrained, clean, corrupted, metric)
    after = exact_edge_patching(finetuned, clean, corrupted, metric)
    out_of_head = {e for e in EdgeGraph.of(pretrained).edges if e.startswith("a0.h1->")}
    assert all(abs(after[e]) < 1e-6 for e in out_of_head)
    weakest = min(abs(before[e]) for e in out_of_head)
    assert weakest > 1e-5  # every such edge matters in the pretrained model, well above rounding
    diff = diff_circuits(before, after, threshold=weakest / 2)
    assert set(diff.of("lost")) >= out_of_head


def test_the_plot_draws_one_arrow_per_edge_and_a_legend_of_counts():
    diff = diff_circuits(scores(1.0, -0.8, 0.6, 0.5, 0.01, 0.02),
                        scores(0.9, 0.7, 0.05, 2.0, 1.5, 0.0), top_n=4)
    fig = plot_circuit_diff(diff, title="toy")
    ax = fig.axes[0]
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    labels = {t.get_text() for t in ax.texts} - {""}
    assert len(arrows) == len(diff.changes) == 5
    assert labels == {"input", "a0.h0", "a0.h1", "m0", "logits"}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "kept (1)", "reweighted (2)", "gained (1)", "lost (1)"]
    assert ax.get_title() == "toy"
