"""Wrapper map: a hand-made "fine-tuned" copy with one known component changed is found first by
weight change and by patching; pruning scores equal g·w computed by hand with autograd."""

import copy

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F

from wrapperlens.analysis.wrapper_map import WrapperMapConfig, plot_wrapper_map, wrapper_map
from wrapperlens.models import hooked_transformer

CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=24, n_ctx=8, d_vocab=12,
           act_fn="gelu", normalization_type="LN", default_prepend_bos=False)  # fmt: skip
BATCH, POS = 6, 7


@pytest.fixture(scope="module")
def pretrained():
    return hooked_transformer(CFG, init_seed=0).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 12, (BATCH, POS), generator=g), torch.randint(
        0, 12, (BATCH,), generator=g
    )


def changed_copy(model, edit):
    ft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        edit(ft, g)
    return ft


def prob_of_answer(model, tokens, answers):
    with torch.no_grad():
        probs = model(tokens)[:, -1].softmax(-1)
    return probs[torch.arange(len(answers)), answers].mean().item()


def rows_of(wmap, kind):
    return {r["label"]: r for r in wmap.rows if r["kind"] == kind}


def test_a_changed_head_ranks_first_by_weight_change_and_patching(pretrained, inputs):
    tokens, answers = inputs

    def edit(m, g):
        w = m.blocks[1].attn.W_V[1]
        w += torch.randn(w.shape, generator=g)

    ft = changed_copy(pretrained, edit)
    before = {k: v.clone() for k, v in ft.state_dict().items()}
    wmap = wrapper_map(pretrained, ft, tokens, answers)
    heads = rows_of(wmap, "head")
    assert heads["L1H1"]["rank_weight"] == 1 and heads["L1H1"]["rank_patch"] == 1
    for label, row in heads.items():
        if label != "L1H1":
            assert row["weight_change"] == 0.0
            assert abs(row["patch_effect"]) < 1e-6  # identical activations in both models
    # Splicing the pretrained head's z into the fine-tuned run *is* the pretrained run.
    m_pt, m_ft = prob_of_answer(pretrained, tokens, answers), prob_of_answer(ft, tokens, answers)
    assert wmap.metric_pretrained == pytest.approx(m_pt, abs=1e-6)
    assert wmap.metric_finetuned == pytest.approx(m_ft, abs=1e-6)
    assert heads["L1H1"]["patch_effect"] == pytest.approx(m_pt - m_ft, abs=1e-6)
    assert heads["L1H1"]["patch_restored"] == pytest.approx(1.0, abs=1e-3)
    layers = rows_of(wmap, "attn")
    assert layers["L1 attn"]["rank_weight"] == 1 and layers["L0 attn"]["weight_change"] == 0.0
    assert all(r["weight_change"] == 0.0 for r in wmap.rows if r["kind"] in ("neuron", "mlp"))
    # Neither model was modified.
    assert all(torch.equal(before[k], v) for k, v in ft.state_dict().items())


def test_a_changed_neuron_ranks_first_by_weight_change_and_patching(pretrained, inputs):
    tokens, answers = inputs

    def edit(m, g):
        m.blocks[1].mlp.W_in[:, 5] += 2 * torch.randn(CFG["d_model"], generator=g)

    ft = changed_copy(pretrained, edit)
    wmap = wrapper_map(pretrained, ft, tokens, answers)
    neurons = rows_of(wmap, "neuron")
    assert neurons["L1N5"]["rank_weight"] == 1 and neurons["L1N5"]["rank_patch"] == 1
    others = [r for label, r in neurons.items() if label != "L1N5"]
    assert all(r["weight_change"] == 0.0 and abs(r["patch_effect"]) < 1e-6 for r in others)
    assert neurons["L1N5"]["patch_restored"] == pytest.approx(1.0, abs=1e-3)
    assert rows_of(wmap, "mlp")["L1 mlp"]["rank_weight"] == 1
    assert wmap.top("neuron", "weight_change", 1)[0]["label"] == "L1N5"


def test_a_w_o_change_is_seen_by_attn_out_patching_but_not_by_z_patching(pretrained):
    ft = changed_copy(pretrained, lambda m, g: m.blocks[0].attn.W_O[1].mul_(3.0))
    # z comes before W_O, so the head's z is the same in both models; attn_out is not.
    wmap = wrapper_map(
        pretrained, ft, torch.randint(0, 12, (4, POS)), torch.zeros(4, dtype=torch.long)
    )
    heads, layers = rows_of(wmap, "head"), rows_of(wmap, "attn")
    assert abs(heads["L0H1"]["patch_effect"]) < 1e-6
    assert abs(layers["L0 attn"]["patch_effect"]) > 1e-4


def test_pruning_scores_equal_gradient_times_weight(pretrained, inputs):
    tokens, answers = inputs
    ft = changed_copy(
        pretrained,
        lambda m, g: m.blocks[0].mlp.W_out.add_(
            0.3 * torch.randn(m.blocks[0].mlp.W_out.shape, generator=g)
        ),
    )
    wmap = wrapper_map(
        pretrained, ft, tokens, answers, config=WrapperMapConfig(patch_neurons=False)
    )
    # Independent reference: autograd of the answer cross-entropy on a fresh copy.
    ref = copy.deepcopy(ft)
    loss = F.cross_entropy(ref(tokens)[:, -1], answers)
    params = [ref.blocks[l].attn.W_O for l in range(2)] + [
        ref.blocks[l].mlp.W_out for l in range(2)
    ]
    grads = torch.autograd.grad(loss, params)
    rows = {r["label"]: r for r in wmap.rows}
    for layer in range(2):
        head_gw = (grads[layer] * params[layer]).sum((-1, -2))
        neuron_gw = (grads[2 + layer] * params[2 + layer]).sum(-1)
        for h in range(CFG["n_heads"]):
            assert rows[f"L{layer}H{h}"]["prune_score"] == pytest.approx(
                head_gw[h].item(), abs=1e-5
            )
        for n in range(CFG["d_mlp"]):
            assert rows[f"L{layer}N{n}"]["prune_score"] == pytest.approx(
                neuron_gw[n].item(), abs=1e-5
            )
        assert rows[f"L{layer} attn"]["prune_score"] == pytest.approx(
            head_gw.sum().item(), abs=1e-5
        )
        assert rows[f"L{layer} mlp"]["prune_score"] == pytest.approx(
            neuron_gw.sum().item(), abs=1e-5
        )
    # Ranks follow the signed pruning score; skipped neuron patching leaves no patch rank.
    heads = sorted((r for r in wmap.rows if r["kind"] == "head"), key=lambda r: -r["prune_score"])
    assert [r["rank_prune"] for r in heads] == [1, 2, 3, 4]
    assert all(
        r["patch_effect"] is None and r["rank_patch"] is None
        for r in wmap.rows
        if r["kind"] == "neuron"
    )


def test_identical_models_give_zero_change_and_effect(pretrained, inputs):
    tokens, answers = inputs
    wmap = wrapper_map(
        pretrained,
        copy.deepcopy(pretrained),
        tokens,
        answers,
        config=WrapperMapConfig(kinds=("head", "attn", "mlp")),
    )
    assert {r["kind"] for r in wmap.rows} == {"head", "attn", "mlp"}
    assert len(wmap.rows) == 2 * 2 + 2 + 2
    for r in wmap.rows:
        assert r["weight_change"] == 0.0 and abs(r["patch_effect"]) < 1e-6
        assert r["patch_restored"] is None  # no gap to restore


def test_refuses_models_of_different_shape_and_bad_config(pretrained, inputs):
    tokens, answers = inputs
    other = hooked_transformer({**CFG, "d_mlp": 32}, init_seed=0)
    with pytest.raises(ValueError, match="d_mlp"):
        wrapper_map(pretrained, other, tokens, answers)
    with pytest.raises(ValueError, match="wrapper_map.kinds"):
        WrapperMapConfig(kinds=("heads",))
    with pytest.raises(ValueError, match="wrapper_map.patches_per_forward"):
        WrapperMapConfig(patches_per_forward=-1)


def test_table_and_plot(pretrained, inputs, tmp_path):
    tokens, answers = inputs
    ft = changed_copy(
        pretrained,
        lambda m, g: m.blocks[1].attn.W_Q.add_(
            torch.randn(m.blocks[1].attn.W_Q.shape, generator=g)
        ),
    )
    wmap = wrapper_map(pretrained, ft, tokens, answers)
    text = wmap.table(k=2)
    assert "head   by weight_change" in text and "L1H" in text
    grid = wmap.grid("head", "weight_change")
    assert grid.shape == (2, 2) and grid[0].eq(0).all() and grid[1].gt(0).all()
    assert wmap.grid("mlp", "weight_change").shape == (2, 1)
    image = matplotlib.image.imread(plot_wrapper_map(wmap, tmp_path / "map.png"))
    assert image[..., :3].std() > 0.05
    with pytest.raises(ValueError, match="by must be one of"):
        wmap.top("head", "size")
