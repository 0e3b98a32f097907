"""Localisation methods as unit scores, and the ranking metrics, against brute force and a pair
whose only change is known by hand."""

import copy
import itertools

import pytest
import torch

from wrapperlens.analysis.localisation import (LOCALISATION_METHODS, auroc, precision_at_k,
                                               spearman, top_units, unit_scores)
from wrapperlens.models import hooked_transformer

CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=24, n_ctx=8, d_vocab=12,
           act_fn="gelu", normalization_type="LN", default_prepend_bos=False)  # fmt: skip


# ------------------------------------------------------------------------ ranking metrics
def brute_precision(scores: list[float], members: list[bool], k: int) -> float:
    """Mean precision at k over every order of the units (ties broken by that order)."""
    n, total, count = len(scores), 0.0, 0
    for order in itertools.permutations(range(n)):
        ranked = sorted(range(n), key=lambda i: (-scores[i], order.index(i)))
        total += sum(members[i] for i in ranked[:k]) / k
        count += 1
    return total / count


def roc_area(scores: list[float], members: list[bool]) -> float:
    """The trapezoid area under the ROC curve swept over every threshold."""
    pos, neg = sum(members), len(members) - sum(members)
    points = [(0.0, 0.0)]
    for t in sorted(set(scores), reverse=True):
        tp = sum(m for s, m in zip(scores, members) if s >= t)
        fp = sum(not m for s, m in zip(scores, members) if s >= t)
        points.append((fp / neg, tp / pos))
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))


CASES = [
    ([3.0, 1.0, 2.0, 2.0, 2.0, 0.0], [False, True, True, False, True, False]),
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [True, False, False, True, False, False]),
    ([0.5, 0.4, 0.3, 0.2, 0.1, 0.0], [True, True, False, False, False, False]),
    ([0.0, 2.0, 2.0, 1.0, 1.0, 3.0], [True, False, True, True, False, False]),
]


@pytest.mark.parametrize("scores,members", CASES)
def test_precision_and_auroc_match_brute_force(scores, members):
    s, m = torch.tensor(scores), torch.tensor(members)
    for k in range(1, len(scores) + 1):
        assert precision_at_k(s, m, k) == pytest.approx(brute_precision(scores, members, k))
    assert auroc(s, m) == pytest.approx(roc_area(scores, members))


def test_constant_scores_are_exactly_chance():
    members = torch.tensor([True, False, False, True, False, False, False, False])
    flat = torch.zeros(8)
    assert precision_at_k(flat, members, 2) == pytest.approx(2 / 8)
    assert auroc(flat, members) == 0.5


def test_metrics_refuse_bad_input():
    with pytest.raises(ValueError, match="k=0"):
        precision_at_k(torch.ones(3), torch.ones(3, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="differ in size"):
        auroc(torch.ones(3), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([1.0, float("nan")]), torch.tensor([True, False]))
    assert torch.isnan(torch.tensor(auroc(torch.ones(2), torch.zeros(2, dtype=torch.bool))))


def test_top_units_takes_the_best_and_breaks_ties_by_the_generator():
    scores = torch.tensor([[0.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
    picks = {tuple(top_units(scores, 2, torch.Generator().manual_seed(s))) for s in range(20)}
    assert all(p[0] == 1 for p in picks)  # the strict best always first
    assert {p[1] for p in picks} == {2, 3, 4, 5}  # every tied unit can be second
    assert top_units(scores, 0, torch.Generator()) == []


# ------------------------------------------------------------ a pair changed in one head
@pytest.fixture(scope="module")
def pair():
    """The last layer's head 1 given a new W_V by hand: nothing upstream of its z changes, so
    every exact method must put that head alone first among heads."""
    pretrained = hooked_transformer(CFG, init_seed=0).eval()
    finetuned = copy.deepcopy(pretrained)
    with torch.no_grad():
        finetuned.blocks[1].attn.W_V[1].copy_(torch.randn(16, 8, generator=torch.Generator()
                                                          .manual_seed(1)))
    tokens = torch.randint(0, 12, (16, 8), generator=torch.Generator().manual_seed(2))
    answers = torch.randint(0, 12, (16,), generator=torch.Generator().manual_seed(3))
    return pretrained, finetuned, tokens, answers


def test_every_method_scores_every_unit(pair):
    scores = unit_scores(*pair, eap_ig_steps=2)
    assert tuple(scores) == LOCALISATION_METHODS
    for method, by_kind in scores.items():
        assert by_kind["head"].shape == (2, 2), method
        assert by_kind["neuron"].shape == (2, 24), method
        assert not torch.isnan(by_kind["head"]).any(), method


def test_the_changed_head_is_found_by_the_methods_that_compare_the_pair(pair):
    scores = unit_scores(*pair, methods=("weight", "patch", "attribution", "eap", "eap_ig"),
                         eap_ig_steps=2)
    members = torch.zeros(2, 2, dtype=torch.bool)
    members[1, 1] = True
    for method, by_kind in scores.items():
        heads = by_kind["head"]
        assert heads[1, 1] > 0, method
        others = heads[~members]
        assert torch.all(others.abs() < 1e-6 * heads[1, 1]), (method, heads)
        assert precision_at_k(heads, members, 1) == 1.0 and auroc(heads, members) == 1.0
    # neurons of layer 0 read nothing the change touches: zero where a method compares the pair
    for method in ("weight", "patch", "attribution", "eap"):
        assert torch.all(scores[method]["neuron"][0] == 0), method


def test_edge_methods_give_every_neuron_of_a_layer_its_mlp_score(pair):
    scores = unit_scores(*pair, methods=("eap",))
    neurons = scores["eap"]["neuron"]
    assert torch.all(neurons[1] == neurons[1, 0]) and neurons[1, 0] > 0


def test_random_scores_depend_on_the_seed_only(pair):
    a = unit_scores(*pair, methods=("random",), seed=4)["random"]["neuron"]
    b = unit_scores(*pair, methods=("random",), seed=4)["random"]["neuron"]
    c = unit_scores(*pair, methods=("random",), seed=5)["random"]["neuron"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_method_is_named(pair):
    with pytest.raises(ValueError, match="'probe'"):
        unit_scores(*pair, methods=("probe",))


def test_spearman_averages_tied_ranks():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # [0, 0, 1, 2] ranks as [1.5, 1.5, 3, 4] whichever zero comes first: Pearson of the ranks
    tied, other = torch.tensor([0.0, 0.0, 1.0, 2.0]), torch.tensor([2.0, 1.0, 3.0, 4.0])
    ranks, others = torch.tensor([1.5, 1.5, 3.0, 4.0]), torch.tensor([2.0, 1.0, 3.0, 4.0])
    expected = torch.corrcoef(torch.stack([ranks, others]))[0, 1].item()
    assert spearman(tied, other) == pytest.approx(expected)
    assert spearman(tied.flip(0), other.flip(0)) == pytest.approx(expected)
    assert torch.isnan(torch.tensor(spearman(torch.ones(4), a)))
    with pytest.raises(ValueError, match="differ in size"):
        spearman(a, torch.ones(3))
