"""g·w pruning, its random-unit control and hook ablations against hand computations, finite
differences, brute force and weight edits."""

import itertools
import math

import pytest
import torch

from wrapperlens.analysis.ablation import (
    ablated,
    head_ablation_hooks,
    mean_activations,
    neuron_ablation_hooks,
)
from wrapperlens.analysis.pruning import (
    PruneConfig,
    PruneUnit,
    answer_accuracy,
    answer_loss,
    eligible_parameters,
    prune_sweep,
    pruned,
    pruning_scores,
)
from wrapperlens.analysis.pruning_control import random_prune_sweep
from wrapperlens.models import ModelConfig, build_model, hooked_transformer


def _hand_model():
    """One block, no LayerNorm, ReLU, d_model = d_vocab = 2, W_U = I: logits = residual.

    Every weight is zero except b_in = (1, 2, 0.5) (so the hidden activations are h = b_in for any
    input) and the three MLP output rows w_0 = (0, 1), w_1 = (1, 0), w_2 = (0, 3). The residual
    at the answer position is r = h_0 w_0 + h_1 w_1 + h_2 w_2 = (2, 2.5); with target class 0,
    dL/dr = softmax(r) - e_0 = (-p1, p1), p1 = sigmoid(0.5). The g·w of W_out row j is
    h_j * (w_j · dL/dr) = h_j * p1 * (w_j1 - w_j0): (1, -2, 1.5) * p1, so row 2 is the top unit;
    every other eligible matrix is zero or sees a zero input, so it scores 0. Summed over a
    column k of W_out instead (unit_axis="output"): (-2 p1, 2.5 p1), so column 1 wins.
    """
    model = hooked_transformer(
        dict(n_layers=1, d_model=2, n_heads=1, d_head=2, d_mlp=3, n_ctx=1, d_vocab=2,
             act_fn="relu", normalization_type=None, attention_dir="causal", seed=None),
        init_seed=0,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.blocks[0].mlp.b_in.copy_(torch.tensor([1.0, 2.0, 0.5]))
        model.blocks[0].mlp.W_out.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 3.0]]))
        model.unembed.W_U.copy_(torch.eye(2))
    tokens, answers = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    return model, tokens, answers


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_state(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_hand_set_model_prunes_exactly_the_row_a_hand_computation_names():
    model, tokens, answers = _hand_model()
    p1 = 1 / (1 + math.exp(-0.5))
    loss_fn = answer_loss(tokens, -1, answers)
    top = pruning_scores(model, loss_fn).top(2)
    assert top[0].param == "blocks.0.mlp.W_out" and top[0].index == (2, None)
    assert top[0].score == pytest.approx(1.5 * p1, rel=1e-6)
    assert top[1].index == (0, None) and top[1].score == pytest.approx(p1, rel=1e-6)
    by_column = pruning_scores(model, loss_fn, PruneConfig(unit_axis="output")).top(1)[0]
    assert (by_column.param, by_column.index) == ("blocks.0.mlp.W_out", (None, 1))
    assert by_column.score == pytest.approx(2.5 * p1, rel=1e-6)
    single = pruning_scores(model, loss_fn, PruneConfig(granularity="weight")).top(1)[0]
    assert (single.param, single.index) == ("blocks.0.mlp.W_out", (2, 1))  # 0.5 * 3 * p1

    before = _state(model)
    with pruned(model, top[:1]):
        assert torch.equal(model.blocks[0].mlp.W_out[2], torch.zeros(2))
        assert torch.equal(model.blocks[0].mlp.W_out[:2], before["blocks.0.mlp.W_out"][:2])
        assert answer_accuracy(model, tokens, -1, answers) == 1.0  # r = (2, 1): class 0 now
    _assert_same_state(model, before)
    assert answer_accuracy(model, tokens, -1, answers) == 0.0


def test_row_scores_equal_a_finite_difference_of_the_loss_along_the_row():
    """d/dt L(w_row * (1 + t)) at t = 0 is sum(g * w) over the row: checked in float64."""
    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, init_seed=1), n_ctx=6,
                        d_vocab=11).double()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (8, 6), generator=gen)
    answers = torch.randint(0, 11, (8,), generator=gen)
    loss_fn = answer_loss(tokens, torch.tensor([5, 4, 5, 3, 5, 5, 2, 5]), answers)
    for axis in ("input", "output"):
        scores = pruning_scores(model, loss_fn, PruneConfig(unit_axis=axis))
        units = scores.top(3) + scores.top(scores.n_units)[-2:]  # best and worst
        for unit in units:
            param = dict(model.named_parameters())[unit.param]
            eps, values = 1e-4, []
            with torch.no_grad():
                original = param[unit.selector].clone()
                for t in (eps, -eps):
                    param[unit.selector] = original * (1 + t)
                    values.append(loss_fn(model).item())
                param[unit.selector] = original
            assert unit.score == pytest.approx((values[0] - values[1]) / (2 * eps), abs=1e-7)


def test_sweep_prunes_cumulative_prefixes_and_leaves_the_model_bit_identical():
    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, init_seed=2), n_ctx=6,
                        d_vocab=11)
    model.train()
    tokens = torch.randint(0, 11, (16, 6), generator=torch.Generator().manual_seed(1))
    loss_fn = answer_loss(tokens, -1, tokens[:, 0])
    config = PruneConfig(eligible="mlp_out_and_attn_out")
    names = eligible_parameters(model, config.eligible)
    assert names == [f"blocks.{l}.{m}" for l in range(2) for m in ("attn.W_O", "mlp.W_out")]
    seen = []

    def evaluate(m):
        zero_rows = {(n, tuple(i.tolist())) for n in names
                     for i in torch.nonzero(dict(m.named_parameters())[n].eq(0).all(-1))}
        seen.append(zero_rows)
        accuracy = answer_accuracy(m, tokens, -1, tokens[:, 0])
        return {"zero_rows": float(len(zero_rows)), "acc": accuracy}

    before = _state(model)
    sweep = prune_sweep(model, loss_fn, [5, 0, 2, 2, 1], evaluate, config)
    _assert_same_state(model, before)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert sweep.ks == [0, 1, 2, 5] and sweep.curve("zero_rows") == [0, 1, 2, 5]
    assert len(sweep.units) == 5 and all(u.param in names for u in sweep.units)
    assert [u.score for u in sweep.units] == sorted((u.score for u in sweep.units), reverse=True)
    for k, rows in zip(sweep.ks, seen):
        assert rows == {(u.param, u.index[:-1]) for u in sweep.units[:k]}
    assert sweep.to_dict()["units"][0]["label"].endswith(", :]")


def test_bad_configs_and_units_are_refused_with_the_field_named():
    model, tokens, answers = _hand_model()
    with pytest.raises(ValueError, match="prune.eligible"):
        PruneConfig(eligible="everything")
    with pytest.raises(ValueError, match="mlp.W_nope"):
        eligible_parameters(model, ("mlp.W_out", "mlp.W_nope"))
    with pytest.raises(ValueError, match="no parameter"):
        with pruned(model, [PruneUnit("blocks.9.mlp.W_out", (0, None), 1.0)]):
            pass
    with pytest.raises(ValueError, match="out of range"):
        answer_loss(tokens, 3, answers)


def _zero_entries(model, names):
    """{(parameter, flat index)} of every exactly-zero weight of `names`."""
    params = dict(model.named_parameters())
    return {(n, int(i)) for n in names for i in torch.nonzero(params[n].flatten() == 0)}


def _brute_force_units(model, names, config):
    """Every unit as its set of (parameter, flat index) entries, listed parameter by parameter,
    each parameter's units in row-major order over the unit axes (independent of the module)."""
    units = []
    for name in names:
        shape = tuple(dict(model.named_parameters())[name].shape)
        if config.granularity == "weight":
            unit_shape = shape
        else:
            unit_shape = shape[:-1] if config.unit_axis == "input" else shape[:-2] + shape[-1:]
        for index in itertools.product(*map(range, unit_shape)):
            mask = torch.zeros(shape, dtype=torch.bool)
            if config.granularity == "weight":
                mask[index] = True
            elif config.unit_axis == "input":
                mask[index] = True  # the trailing d_out axis is left whole
            else:
                mask[(*index[:-1], slice(None), index[-1])] = True
            units.append({(name, int(i)) for i in torch.nonzero(mask.flatten())})
    return units


@pytest.mark.parametrize("granularity, unit_axis",
                         [("row", "input"), ("row", "output"), ("weight", "input")])
def test_random_control_prunes_the_units_a_brute_force_draw_with_the_same_generator_picks(
        granularity, unit_axis):
    model = build_model(ModelConfig(n_layers=2, d_model=8, n_heads=2, init_seed=4), n_ctx=5,
                        d_vocab=7)
    config = PruneConfig(eligible="mlp_out_and_attn_out", granularity=granularity,
                         unit_axis=unit_axis)
    names = eligible_parameters(model, config.eligible)
    tokens = torch.randint(0, 7, (6, 5), generator=torch.Generator().manual_seed(5))
    already_zero = _zero_entries(model, names)
    seen = []

    def evaluate(m):
        seen.append(_zero_entries(m, names) - already_zero)
        return {"acc": answer_accuracy(m, tokens, -1, tokens[:, 0]), "zeros": len(seen[-1])}

    before = _state(model)
    ks = [0, 1, 3, 7]
    control = random_prune_sweep(model, ks, evaluate, config, draws=1, seed=11)
    _assert_same_state(model, before)

    units = _brute_force_units(model, names, config)
    order = torch.randperm(len(units), generator=torch.Generator().manual_seed(11))
    for k, zeroed in zip(ks, seen):
        assert zeroed == set().union(*(units[int(i)] for i in order[:k]))
    assert control.ks == ks and control.metrics == control.per_draw[0].metrics
    assert control.to_dict()["nested"] and len(control.to_dict()["per_draw"][0]["units"]) == 7


def test_random_control_is_seeded_starts_unpruned_and_meets_the_top_sweep_when_all_are_pruned():
    model = build_model(ModelConfig(n_layers=2, d_model=8, n_heads=2, init_seed=6), n_ctx=5,
                        d_vocab=7)
    tokens = torch.randint(0, 7, (12, 5), generator=torch.Generator().manual_seed(7))
    loss_fn = answer_loss(tokens, -1, tokens[:, 0])
    config = PruneConfig(eligible="mlp_out")
    n_units = pruning_scores(model, loss_fn, config).n_units  # 2 layers x d_mlp neurons

    def evaluate(m):
        with torch.no_grad():
            return {"loss": loss_fn(m).item(), "acc": answer_accuracy(m, tokens, -1, tokens[:, 0])}

    unpruned = evaluate(model)
    ks = [0, 2, n_units]
    first = random_prune_sweep(model, ks, evaluate, config, draws=3, seed=1)
    assert first.to_dict() == random_prune_sweep(model, ks, evaluate, config, 3, seed=1).to_dict()
    assert first.to_dict() != random_prune_sweep(model, ks, evaluate, config, 3, seed=2).to_dict()
    assert all(d.metrics[0] == unpruned for d in first.per_draw) and first.metrics[0] == unpruned
    for name in ("loss", "acc"):
        mean = sum(d.metrics[1][name] for d in first.per_draw) / 3
        assert first.curve(name)[1] == pytest.approx(mean)
    top = prune_sweep(model, loss_fn, ks, evaluate, config)
    assert first.metrics[-1] == pytest.approx(top.metrics[-1])  # every neuron pruned either way
    assert all(len({u.label for u in d.units}) == n_units for d in first.per_draw)
    with pytest.raises(ValueError, match="the number of units"):
        random_prune_sweep(model, [n_units + 1], evaluate, config)
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        random_prune_sweep(model, [1], evaluate, config, draws=0)


def _small_model():
    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=4, init_seed=3), n_ctx=7,
                        d_vocab=13)
    tokens = torch.randint(0, 13, (5, 7), generator=torch.Generator().manual_seed(2))
    return model, tokens


def test_zero_ablating_a_head_equals_zeroing_its_output_weights():
    model, tokens = _small_model()
    with ablated(model, heads=[(1, 2)]):
        logits, cache = model.run_with_cache(tokens)
    assert torch.equal(cache["blocks.1.attn.hook_z"][:, :, 2], torch.zeros(5, 7, 4))
    _, clean = model.run_with_cache(tokens)
    others = [0, 1, 3]
    torch.testing.assert_close(cache["blocks.1.attn.hook_z"][:, :, others],
                               clean["blocks.1.attn.hook_z"][:, :, others])
    with pruned(model, [PruneUnit("blocks.1.attn.W_O", (2, None, None), 0.0)]):
        reference = model(tokens)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


def test_zero_ablating_a_neuron_equals_zeroing_its_output_row():
    model, tokens = _small_model()
    hooks = neuron_ablation_hooks(model, [(0, 5), (0, 9)])
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    units = [PruneUnit("blocks.0.mlp.W_out", (n, None), 0.0) for n in (5, 9)]
    with pruned(model, units):
        reference = model(tokens)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


def test_mean_ablation_writes_the_reference_mean_that_transformer_lens_caches():
    model, tokens = _small_model()
    reference = torch.randint(0, 13, (9, 7), generator=torch.Generator().manual_seed(3))
    _, ref_cache = model.run_with_cache(reference)
    with ablated(model, heads=[(0, 1)], neurons=[(1, 3)], mode="mean", reference_tokens=reference):
        _, cache = model.run_with_cache(tokens)
    z_mean = ref_cache["blocks.0.attn.hook_z"][:, :, 1].mean(0)
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"][:, :, 1], z_mean.expand(5, 7, 4))
    post_mean = ref_cache["blocks.1.mlp.hook_post"][:, :, 3].mean(0)
    torch.testing.assert_close(cache["blocks.1.mlp.hook_post"][:, :, 3], post_mean.expand(5, 7))
    means = mean_activations(model, reference, ["blocks.0.attn.hook_z"], per_position=False)
    hooks = head_ablation_hooks(model, [(0, 1)], means)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    with model.hooks(fwd_hooks=hooks):
        _, flat = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    torch.testing.assert_close(flat["blocks.0.attn.hook_z"][:, :, 1],
                               z_mean.mean(0).expand(5, 7, 4))
    torch.testing.assert_close(flat["blocks.0.attn.hook_z"][:, :, 0],
                               cache["blocks.0.attn.hook_z"][:, :, 0])
    with pytest.raises(ValueError, match="head \\(2, 0\\)"):
        head_ablation_hooks(model, [(2, 0)])
    with pytest.raises(ValueError, match="reference_tokens"):
        with ablated(model, heads=[(0, 0)], mode="mean"):
            pass
