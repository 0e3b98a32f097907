"""Activation patching against TransformerLens's `patching` module, brute-force hooked forwards,
and identities (self-patching changes nothing; patching the whole layer-0 residual reproduces the
source run)."""

import pytest
import torch
import transformer_lens.patching as tlp

from wrapperlens.analysis.logit_metrics import answer_probability, logit_difference
from wrapperlens.analysis.partial_forward import RowEdit, SuffixForward, suffix_unsupported_reason
from wrapperlens.analysis.patching import (
    COMPONENTS,
    ActivationPatcher,
    Patch,
    PatchingConfig,
    activation_patching,
)
from wrapperlens.components import TABLE, hook_name, result_axes
from wrapperlens.models import hooked_transformer

tlp.tqdm = lambda iterable, **kwargs: iterable  # quiet reference runs

BASE = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=20,
            act_fn="gelu", normalization_type="LN", default_prepend_bos=False)  # fmt: skip
VARIANTS = {
    "ln-standard": {},
    "rms-rotary": dict(normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8),
    "nonorm-relu": dict(normalization_type=None, act_fn="relu"),
}
BATCH, N_POS = 2, 8


def make_model(seed: int = 0, **overrides):
    return hooked_transformer({**BASE, **overrides}, init_seed=seed)


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, BASE["d_vocab"], (BATCH, N_POS), generator=g)
    corrupted = torch.randint(0, BASE["d_vocab"], (BATCH, N_POS), generator=g)
    return clean, corrupted


def plain_metric(logits):
    """No `positions` attribute: every position is computed. Reads the second-to-last one."""
    return logits[:, -2].log_softmax(-1)[:, 4].mean()


# (component, per_position, reference: model, tokens, cache, metric -> tensor)
def _resid_post(model, tokens, cache, metric):
    return tlp.generic_activation_patch(
        model, tokens, cache, metric, tlp.layer_pos_patch_setter, "resid_post",
        index_axis_names=("layer", "pos"),
    )  # fmt: skip


NEURONS = (0, 17, 63)


def _neurons(model, tokens, cache, metric):
    index_df = tlp.make_df_from_ranges([2, N_POS, len(NEURONS)], ["layer", "pos", "neuron"])
    index_df["neuron"] = index_df["neuron"].map(lambda i: NEURONS[i])
    flat = tlp.generic_activation_patch(
        model, tokens, cache, metric, tlp.layer_pos_head_vector_patch_setter, "post",
        index_df=index_df,
    )  # fmt: skip
    return flat.reshape(2, N_POS, len(NEURONS))


TL_CASES = {
    "resid_pre": ("resid_pre", True, {}, tlp.get_act_patch_resid_pre),
    "resid_mid": ("resid_mid", True, {}, tlp.get_act_patch_resid_mid),
    "resid_post": ("resid_post", True, {}, _resid_post),
    "attn_out": ("attn_out", True, {}, tlp.get_act_patch_attn_out),
    "mlp_out": ("mlp_out", True, {}, tlp.get_act_patch_mlp_out),
    "z_by_pos": ("z", True, {}, tlp.get_act_patch_attn_head_out_by_pos),
    "z_all_pos": ("z", False, {}, tlp.get_act_patch_attn_head_out_all_pos),
    "post_neurons": ("post", True, {"neurons": NEURONS}, _neurons),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", TL_CASES)
def test_matches_transformer_lens(variant, case, tokens):
    clean, corrupted = tokens
    model = make_model(**VARIANTS[variant])
    component, per_position, extra, reference = TL_CASES[case]
    _, clean_cache = model.run_with_cache(clean)
    patcher = ActivationPatcher(model, corrupted, source_tokens=clean)
    # A metric that declares the position it reads, and (once) a plain function of all logits.
    metrics = [logit_difference(3, 5)] + ([plain_metric] if variant == "ln-standard" else [])
    for metric in metrics:
        expected = reference(model, corrupted, clean_cache, metric)
        assert expected.std() > 1e-4  # the patches do differ
        options = [dict(patches_per_forward=1), dict(patches_per_forward=5)]
        if variant == "ln-standard":
            options.append(dict(patches_per_forward=2, recompute="layer"))
        for option in options:
            config = PatchingConfig(component, per_position, **extra, **option)
            result = patcher.sweep(metric, config)
            assert result.shape == expected.shape
            torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("same_tokens", [True, False])
def test_cross_model_matches_transformer_lens_with_the_other_models_cache(same_tokens, tokens):
    clean, corrupted = tokens
    source, target = make_model(seed=0), make_model(seed=1)
    target_tokens = clean if same_tokens else corrupted
    _, source_cache = source.run_with_cache(clean)
    metric = logit_difference(3, 5)
    for component, reference in [
        ("resid_pre", tlp.get_act_patch_resid_pre),
        ("z", tlp.get_act_patch_attn_head_out_by_pos),
        ("mlp_out", tlp.get_act_patch_mlp_out),
    ]:
        expected = reference(target, target_tokens, source_cache, metric)
        result = activation_patching(
            target, target_tokens, metric, PatchingConfig(component, patches_per_forward=4),
            source_model=source, source_tokens=clean,
        )  # fmt: skip
        assert expected.std() > 1e-3
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_patching_a_run_with_itself_changes_nothing(variant, tokens):
    clean, _ = tokens
    model = make_model(**VARIANTS[variant])
    patcher = ActivationPatcher(model, clean)
    metric = logit_difference(3, 5, reduce="none")
    baseline = metric(patcher.target_logits)
    for component in COMPONENTS:
        for per_position in (True, False):
            neurons = (0, 63) if component == "post" else None
            config = PatchingConfig(component, per_position, neurons=neurons, patches_per_forward=3)
            result = patcher.sweep(metric, config)
            assert result.shape[-1] == BATCH
            torch.testing.assert_close(result, baseline.expand_as(result), atol=1e-5, rtol=0)


def test_sweeps_have_the_axes_that_result_axes_names(tokens):
    clean, corrupted = tokens
    patcher = ActivationPatcher(make_model(), corrupted, source_tokens=clean)
    sizes = {"layer": 1, "pos": 3, "head": 2, "neuron": 2}
    for component in COMPONENTS:
        units = {"head": {"heads": (0, 3)}, "neuron": {"neurons": (1, 5)}}
        for per_position in (True, False):
            config = PatchingConfig(
                component, per_position, layers=(1,), positions=(2, 4, 6) if per_position else None,
                **units.get(TABLE[component].unit, {}),
            )  # fmt: skip
            result = patcher.sweep(logit_difference(3, 5), config)
            assert list(result.shape) == [sizes[a] for a in result_axes(component, per_position)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("recompute", ["suffix", "layer"])
def test_patching_all_of_layer_0_resid_pre_reproduces_the_source_logits(variant, recompute, tokens):
    clean, corrupted = tokens
    model = make_model(**VARIANTS[variant])
    patcher = ActivationPatcher(model, corrupted, source_tokens=clean)
    source_logits = patcher.source_logits

    def distance_to_source(logits):
        return (logits - source_logits).abs().amax(dim=(1, 2))

    assert distance_to_source(patcher.target_logits).min() > 1e-2
    config = PatchingConfig("resid_pre", per_position=False, layers=(0,), recompute=recompute)
    assert patcher.sweep(distance_to_source, config).max() < 1e-5


def test_per_example_answer_positions_and_metrics(tokens):
    """Answers read mid-sequence, at a different position per example (the truncated forward)."""
    clean, corrupted = tokens
    model = make_model()
    _, clean_cache = model.run_with_cache(clean)
    positions = torch.tensor([3, 6])
    metrics = [
        logit_difference(torch.tensor([1, 2]), [4, 5], position=positions),
        answer_probability(7, position=positions),
        logit_difference(3, 5, position=4),
    ]
    patcher = ActivationPatcher(model, corrupted, source_tokens=clean)
    for metric in metrics:
        expected = tlp.get_act_patch_attn_head_out_by_pos(model, corrupted, clean_cache, metric)
        result = patcher.sweep(metric, PatchingConfig("z", patches_per_forward=5))
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)
    # Positions after the last answer position cannot matter.
    result = patcher.sweep(metrics[0], PatchingConfig("resid_pre"))
    baseline = metrics[0](patcher.target_logits)
    torch.testing.assert_close(result[:, 7], baseline.expand(2), atol=1e-6, rtol=0)
    per_example = logit_difference(3, 5, position=positions, reduce="none")
    result = patcher.sweep(per_example, PatchingConfig("resid_pre"))
    assert result.shape == (2, N_POS, BATCH)
    torch.testing.assert_close(
        result.mean(-1),
        patcher.sweep(logit_difference(3, 5, position=positions)),
        atol=1e-6,
        rtol=0,
    )


def test_logits_a_metric_did_not_declare_are_nan(tokens):
    clean, corrupted = tokens
    patcher = ActivationPatcher(make_model(), corrupted, source_tokens=clean)

    def reads_position_5(logits):
        return logits[:, 5, 0].mean()

    reads_position_5.positions = (-1,)  # a false declaration
    result = patcher.sweep(reads_position_5, PatchingConfig("resid_pre", patches_per_forward=1))
    assert torch.isnan(result[:, :6]).all() and not torch.isnan(result[:, 6:]).any()


def logits_by_brute_force(model, target_tokens, source_cache, edits):
    """Full forward per edit, the edit applied by a hook: the independent reference."""
    out = []
    for edit in edits:

        def hook(act, hook, edit=edit):
            act = act.clone()
            edit.apply(act, slice(None), source_cache[hook.name], 0)
            return act

        name = hook_name(edit.component, edit.layer)
        out.append(model.run_with_hooks(target_tokens, fwd_hooks=[(name, hook)]))
    return torch.cat(out)


@pytest.mark.parametrize("variant", VARIANTS)
def test_suffix_forward_equals_a_full_forward(variant, tokens):
    clean, corrupted = tokens
    model = make_model(**VARIANTS[variant])
    names = lambda name: name.startswith("blocks.")  # noqa: E731
    _, source_cache = model.run_with_cache(clean, names_filter=names)
    target_logits, target_cache = model.run_with_cache(corrupted, names_filter=names)
    suffix = SuffixForward(model, dict(target_cache.cache_dict), target_logits)
    edits = [  # sorted by layer and entry point, as `run` requires
        RowEdit(0, "resid_pre", 3),
        RowEdit(0, "z", 5, 2),
        RowEdit(0, "mlp_out", None),
        RowEdit(1, "attn_out", 4),
        RowEdit(1, "post", 6, 10),
        RowEdit(1, "resid_post", 7),
    ]
    expected = logits_by_brute_force(model, corrupted, source_cache, edits)
    sources = [source_cache[hook_name(e.component, e.layer)] for e in edits]
    with torch.no_grad():
        full = suffix.run(edits, sources)
        torch.testing.assert_close(full, expected, atol=1e-5, rtol=0)
        for i, edit in enumerate(edits):  # one patch per forward too
            torch.testing.assert_close(
                suffix.run([edit], [sources[i]]), expected[i * BATCH : (i + 1) * BATCH],
                atol=1e-5, rtol=0,
            )  # fmt: skip
        read = [4, 6]
        partial = suffix.run(edits[3:], sources[3:], read_positions=read)
    expected = expected[3 * BATCH :]
    torch.testing.assert_close(partial[:, read], expected[:, read], atol=1e-5, rtol=0)
    torch.testing.assert_close(partial[:, :4], expected[:, :4], atol=1e-5, rtol=0)
    unread = [5, 7]
    assert torch.isnan(partial[:, unread]).all()


@pytest.mark.parametrize(
    "overrides", [dict(parallel_attn_mlp=True), dict(attention_dir="bidirectional")]
)
def test_unsupported_architectures_fall_back_to_the_layer_forward(overrides, tokens):
    clean, corrupted = tokens
    model = make_model(**overrides)
    assert suffix_unsupported_reason(model) is not None
    _, clean_cache = model.run_with_cache(clean)
    metric = logit_difference(3, 5)
    expected = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    with pytest.warns(UserWarning, match="suffix forward unsupported"):
        result = activation_patching(model, corrupted, metric, source_tokens=clean)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)


def test_metrics_compute_what_they_say():
    logits = torch.randn(2, 4, 6)
    diff = logit_difference(torch.tensor([1, 2]), 3, position=torch.tensor([0, 2]), reduce="none")
    expected = [logits[0, 0, 1] - logits[0, 0, 3], logits[1, 2, 2] - logits[1, 2, 3]]
    torch.testing.assert_close(diff(logits), torch.stack(expected))
    prob = answer_probability(5)
    torch.testing.assert_close(prob(logits), logits[:, -1].softmax(-1)[:, 5].mean())
    assert diff.positions == (0, 2) and prob.positions == (-1,)
    with pytest.raises(ValueError, match="vocabulary"):
        logit_difference(6, 0)(logits)
    with pytest.raises(ValueError, match="out of range"):
        answer_probability(0, position=4)(logits)
    with pytest.raises(ValueError, match="reduce"):
        answer_probability(0, reduce="sum")


def test_refusals(tokens):
    clean, corrupted = tokens
    model = make_model()
    metric = logit_difference(3, 5)
    for field, value in [("d_mlp", 48), ("n_layers", 3), ("n_ctx", 12)]:
        with pytest.raises(ValueError, match=f"cfg.{field}"):
            ActivationPatcher(model, corrupted, source_model=make_model(**{field: value}))
    # (the run-time shape check of the test suite may see the mismatch first: a TypeError)
    with pytest.raises((ValueError, TypeError), match="source_tokens"):
        ActivationPatcher(model, corrupted, source_tokens=clean[:, :-1])
    with pytest.raises(ValueError, match="vocabulary"):
        ActivationPatcher(model, corrupted + BASE["d_vocab"])
    with pytest.raises(ValueError, match="n_ctx"):
        ActivationPatcher(model, torch.zeros(1, 17, dtype=torch.long))
    for bad, message in [
        (dict(component="resid"), "component must be one of"),
        (dict(component="resid_pre", heads=(0,)), "heads apply to component 'z' only"),
        (dict(component="z", neurons=(0,)), "neurons apply to component 'post' only"),
        (dict(per_position=False, positions=(1,)), "per_position=False"),
        (dict(layers=(-1,)), "layers must be"),
        (dict(patches_per_forward=-1), "patches_per_forward"),
        (dict(recompute="everything"), "recompute"),
    ]:
        with pytest.raises(ValueError, match=message):
            PatchingConfig(**bad)
    patcher = ActivationPatcher(model, corrupted, source_tokens=clean)
    for config, message in [
        (PatchingConfig(layers=(2,)), "layer 2 is out of range"),
        (PatchingConfig(positions=(N_POS,)), f"position {N_POS} is out of range"),
        (PatchingConfig("z", heads=(4,)), "head 4 is out of range"),
        (PatchingConfig("post", neurons=(64,)), "neuron 64 is out of range"),
    ]:
        with pytest.raises(ValueError, match=message):
            patcher.sweep(metric, config)
    with pytest.raises(ValueError, match="component must be one of"):
        patcher.patched_metrics([Patch(0, "hook_resid_pre")], metric)
    with pytest.raises(ValueError, match="takes no head or neuron index"):
        patcher.patched_metrics([Patch(0, "resid_pre", 1, 0)], metric)
    with pytest.raises(ValueError, match="metric must return"):
        patcher.sweep(lambda logits: logits[:, -1], PatchingConfig(layers=(1,)))
    attn_only = make_model(attn_only=True)
    with pytest.raises(ValueError, match="attn-only"):
        ActivationPatcher(attn_only, corrupted).sweep(metric, PatchingConfig("mlp_out"))
