"""Attribution patching against exact patching where the metric is linear in the activation, and
against finite differences of hooked forwards (float64) everywhere else."""

import pytest
import torch

from wrapperlens.analysis.attribution import attribution_patching, attribution_scores
from wrapperlens.analysis.logit_metrics import logit_difference
from wrapperlens.analysis.patching import ActivationPatcher, PatchingConfig
from wrapperlens.models import hooked_transformer

BASE = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=20,
            act_fn="gelu", normalization_type="LN", default_prepend_bos=False)  # fmt: skip
BATCH, N_POS = 2, 8


def make_model(seed: int = 0, **overrides):
    return hooked_transformer({**BASE, **overrides}, init_seed=seed)


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, BASE["d_vocab"], (BATCH, N_POS), generator=g)
    corrupted = torch.randint(0, BASE["d_vocab"], (BATCH, N_POS), generator=g)
    return clean, corrupted


# Without normalisation the logits are affine in everything the last MLP (or, attention-only,
# the last attention layer) writes: resid_post, mlp_out and each neuron's post; each head's z.
LINEAR_CASES = {
    "mlp-model": (dict(normalization_type=None), ("resid_post", "mlp_out", "post")),
    "attn-only": (dict(normalization_type=None, attn_only=True), ("resid_post", "attn_out", "z")),
}


@pytest.mark.parametrize("case", LINEAR_CASES)
@pytest.mark.parametrize("cross_model", [False, True])
@pytest.mark.parametrize("reduce", ["mean", "none"])
def test_equals_exact_patching_where_the_metric_is_linear(case, cross_model, reduce, tokens):
    clean, corrupted = tokens
    overrides, components = LINEAR_CASES[case]
    target = make_model(**overrides)
    source = make_model(seed=1, **overrides) if cross_model else None
    target_tokens = clean if cross_model else corrupted
    metric = logit_difference(3, 5, reduce=reduce)
    patcher = ActivationPatcher(target, target_tokens, source_model=source, source_tokens=clean)
    baseline = metric(patcher.target_logits)
    estimates = {
        per_position: attribution_scores(
            target, target_tokens, metric, components, per_position=per_position,
            source_model=source, source_tokens=clean,
        )  # fmt: skip
        for per_position in (True, False)
    }
    for component in components:
        for per_position in (True, False):
            last = PatchingConfig(component, per_position, layers=(BASE["n_layers"] - 1,))
            effect = patcher.sweep(metric, last) - baseline
            estimate = estimates[per_position][component]
            assert estimate.shape[1:] == effect.shape[1:]
            assert effect.abs().max() > 1e-3  # the patches do something
            torch.testing.assert_close(estimate[-1], effect[0], atol=1e-5, rtol=0)


def test_matches_finite_differences_of_hooked_forwards(tokens):
    """d/de metric(act + e * (source - target) on one node) at e = 0, by central differences."""
    clean, corrupted = tokens
    target = make_model(dtype=torch.float64)
    source = make_model(seed=1, dtype=torch.float64)
    metric = logit_difference(3, 5)
    components = ("resid_pre", "resid_mid", "attn_out", "z", "post")
    estimates = attribution_scores(
        target, corrupted, metric, components, source_model=source, source_tokens=clean
    )
    _, source_cache = source.run_with_cache(clean)
    eps = 1e-4
    g = torch.Generator().manual_seed(0)
    for component in components:
        estimate, largest = estimates[component], 0.0
        for _ in range(5):
            node = tuple(int(torch.randint(0, n, (1,), generator=g)) for n in estimate.shape)
            layer, position, *unit = node
            inside = {"z": "attn.hook_z", "post": "mlp.hook_post"}.get(component, f"hook_{component}")
            name = f"blocks.{layer}.{inside}"

            def nudged(e, name=name, position=position, unit=unit):
                def hook(act, hook):
                    act = act.clone()
                    index = (slice(None), position, *unit)
                    act[index] += e * (source_cache[name][index] - act[index])
                    return act

                return metric(target.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))

            with torch.no_grad():
                derivative = (nudged(eps) - nudged(-eps)) / (2 * eps)
            torch.testing.assert_close(estimate[node], derivative, atol=1e-8, rtol=1e-5)
            largest = max(largest, abs(float(derivative)))
        assert largest > 1e-4  # not only nodes the metric cannot see


def test_leaves_the_model_as_it_was_and_works_on_frozen_models(tokens):
    clean, corrupted = tokens
    model = make_model()
    metric = logit_difference(3, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimate = attribution_patching(model, corrupted, metric, "z", source_tokens=clean)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.requires_grad_(False)
    frozen = attribution_patching(model, corrupted, metric, "z", source_tokens=clean)
    torch.testing.assert_close(frozen, estimate, atol=0, rtol=0)
    assert estimate.abs().max() > 1e-4


def test_refusals(tokens):
    clean, corrupted = tokens
    model = make_model()
    metric = logit_difference(3, 5)
    with pytest.raises(ValueError, match="cfg.d_mlp"):
        attribution_patching(model, corrupted, metric, source_model=make_model(d_mlp=48))
    with pytest.raises(ValueError, match="component must be one of"):
        attribution_patching(model, corrupted, metric, "neurons")
    with pytest.raises(ValueError, match="attn-only"):
        attribution_patching(make_model(attn_only=True), corrupted, metric, "post")
    with pytest.raises(ValueError, match="metric must return"):
        attribution_patching(model, corrupted, lambda logits: logits[:, -1])
