"""The components table against real HookedTransformers: every hook name is TransformerLens's own
(`get_act_name`) and in `model.hook_dict`, every cached activation has the shape the table says,
the patchable rows are in the order a block computes them, and each output weight really writes
its component into the residual stream."""

import pytest
import torch
from transformer_lens.utilities import get_act_name

from wrapperlens.components import (
    COMPONENTS,
    TABLE,
    UNIT_AXES,
    activation_shape,
    check_component,
    check_patchable,
    component_size,
    exists,
    get_component,
    hook_name,
    output_weight,
    output_weight_suffix,
    result_axes,
    unit_count,
)
from wrapperlens.models import ModelConfig, build_model, hooked_transformer

# Every size distinct (batch 2, pos 5, n_heads 3, d_head 8, d_model 24, d_mlp 40), so an axis
# named wrongly in the table shows as a wrong size.
SHAPE = dict(n_layers=2, d_model=24, n_heads=3, d_mlp=40, init_seed=0)
BATCH, POS, VOCAB = 2, 5, 11


def _models():
    return {
        "standard": build_model(ModelConfig(**SHAPE), n_ctx=8, d_vocab=VOCAB),
        "rotary": build_model(ModelConfig(**SHAPE, positional="rotary", normalization="RMS"),
                              n_ctx=8, d_vocab=VOCAB),
        "attn-only": hooked_transformer(
            dict(n_layers=2, d_model=24, n_heads=3, d_head=8, n_ctx=8, d_vocab=VOCAB,
                 act_fn="gelu", attn_only=True, default_prepend_bos=False), init_seed=0),
    }  # fmt: skip


@pytest.fixture(scope="module")
def runs():
    """{variant: (model, cache of every hook)} on one [BATCH, POS] input."""
    tokens = torch.randint(0, VOCAB, (BATCH, POS), generator=torch.Generator().manual_seed(0))
    out = {}
    for variant, model in _models().items():
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        out[variant] = (model, cache)
    return out


@pytest.mark.parametrize("variant", ["standard", "rotary", "attn-only"])
def test_every_entry_names_a_real_hook_with_the_size_the_table_says(variant, runs):
    model, cache = runs[variant]
    cfg = model.cfg
    present = 0
    for name, row in TABLE.items():
        for layer in range(cfg.n_layers):
            hook = hook_name(name, layer)
            assert hook == get_act_name(name, layer)  # TransformerLens's name for it
            if not exists(name, cfg):
                assert hook not in cache, f"{hook} fires in a {variant} model"
                continue
            present += 1
            assert hook in model.hook_dict
            act = cache[hook]
            assert tuple(act.shape) == activation_shape(name, cfg, batch=BATCH, pos=POS), hook
            if row.axes[:2] == ("batch", "pos"):
                assert tuple(act.shape[2:]) == component_size(name, cfg), hook
            if row.unit in UNIT_AXES:
                assert act.shape[row.axes.index(UNIT_AXES[row.unit])] == unit_count(name, cfg)
            else:
                assert unit_count(name, cfg) is None
    expected = {"standard": 10, "rotary": 11, "attn-only": 7}[variant]  # rows x layers below
    assert present == expected * cfg.n_layers


def test_requires_matches_which_models_have_the_component(runs):
    standard, rotary, attn_only = (runs[v][0].cfg for v in ("standard", "rotary", "attn-only"))
    assert [c for c in TABLE if not exists(c, attn_only)] == ["resid_mid", "post", "mlp_out",
                                                              "rot_k"]
    assert [c for c in TABLE if not exists(c, standard)] == ["rot_k"]
    assert all(exists(c, rotary) for c in TABLE)


def test_patchable_components_are_listed_in_the_order_a_block_computes_them(runs):
    model, _ = runs["standard"]
    fired: list[str] = []
    by_hook = {hook_name(c, 1): c for c in COMPONENTS}

    def record(act, hook):
        fired.append(by_hook[hook.name])

    with torch.no_grad():
        model.run_with_hooks(torch.zeros(1, POS, dtype=torch.long),
                             fwd_hooks=[(lambda n: n in by_hook, record)])
    assert fired == list(COMPONENTS)
    assert COMPONENTS == tuple(c for c, row in TABLE.items() if row.patchable)


def test_output_weights_write_their_component_into_the_residual_stream(runs):
    model, cache = runs["standard"]
    params = dict(model.named_parameters())
    for layer in range(2):
        z, post = cache[hook_name("z", layer)], cache[hook_name("post", layer)]
        w_o, w_out = params[output_weight("z", layer)], params[output_weight("post", layer)]
        # The unit axis is the weight's first axis: one head's rows, one neuron's row.
        assert w_o.shape[0] == unit_count("z", model.cfg) and w_out.shape[0] == model.cfg.d_mlp
        attn_out = torch.einsum("bphd,hdm->bpm", z, w_o) + model.blocks[layer].attn.b_O
        mlp_out = post @ w_out + model.blocks[layer].mlp.b_out
        torch.testing.assert_close(attn_out, cache[hook_name("attn_out", layer)])
        torch.testing.assert_close(mlp_out, cache[hook_name("mlp_out", layer)])
        assert output_weight("attn_out", layer) == output_weight("z", layer)
        assert output_weight("mlp_out", layer) == output_weight("post", layer)
    assert output_weight_suffix("mlp_out") == "mlp.W_out"
    assert output_weight_suffix("z") == "attn.W_O"


def test_units_and_result_axes():
    assert [c for c in COMPONENTS if TABLE[c].unit == "head"] == ["z"]
    assert [c for c in COMPONENTS if TABLE[c].unit == "neuron"] == ["post"]
    assert TABLE["z"].feature_axes == ("d_head",) and TABLE["post"].feature_axes == ()
    assert TABLE["resid_pre"].feature_axes == ("d_model",)
    assert result_axes("z") == ["layer", "pos", "head"]
    assert result_axes("post", per_position=False) == ["layer", "neuron"]
    assert result_axes("mlp_out", per_position=False) == ["layer"]


def test_unknown_names_are_refused_with_the_known_ones_listed(runs):
    with pytest.raises(ValueError, match=r"unknown component 'hook_z'.*resid_pre, z, attn_out"):
        hook_name("hook_z", 0)
    with pytest.raises(ValueError, match=r"unknown component 'k'.*resid_pre, z, .*resid_post$"):
        check_patchable("k")  # a real row, but not one patching can splice
    assert get_component("k").patchable is False
    with pytest.raises(ValueError, match="layer must be an int >= 0"):
        hook_name("z", -1)
    with pytest.raises(ValueError, match="'resid_pre' has no output weight"):
        output_weight("resid_pre", 0)
    with pytest.raises(ValueError, match="does not exist in an attn-only model"):
        check_component(runs["attn-only"][0], "post")
