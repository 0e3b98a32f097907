"""The options objects of the PCFG analysis tools: normalised values, errors naming the field,
and the library functions taking them by keyword."""

import dataclasses
import inspect

import pytest

from wrapperlens.config import ConfigError
from wrapperlens.experiments.pcfg import analysis as pcfg_analysis
from wrapperlens.experiments.pcfg.analysis_options import (
    AttentionOptions,
    AttributeOptions,
    PatchOptions,
    ProbeOptions,
    PruneOptions,
    WrapperMapOptions,
    default_of,
)

ALL = (PruneOptions, ProbeOptions, PatchOptions, AttributeOptions, AttentionOptions,
       WrapperMapOptions)


@pytest.mark.parametrize("cls", ALL)
def test_the_defaults_are_valid_and_frozen(cls):
    options = cls()
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(options, first, getattr(options, first))


def test_values_are_normalised():
    assert PruneOptions(ks=range(3)).ks == (0, 1, 2)
    assert PruneOptions(eligible="mlp.W_out, blocks.0.attn.W_O").eligible == (
        "mlp.W_out", "blocks.0.attn.W_O")
    assert PruneOptions(eligible="mlp.W_out").eligible == ("mlp.W_out",)  # a name, not a preset
    assert PruneOptions(eligible="mlp_out").eligible == "mlp_out"  # a preset stays a name
    assert AttributeOptions(components="resid_pre, z").components == ("resid_pre", "z")
    assert AttentionOptions(layers=[1, 0]).layers == (1, 0)
    assert default_of(PruneOptions, "ks") == tuple(range(16))
    assert default_of(PruneOptions, "random_draws") == 0  # no random-unit control by default
    assert PruneOptions(random_draws=3, random_seed=7).random_draws == 3
    with pytest.raises(KeyError, match="no field 'nope'"):
        default_of(PruneOptions, "nope")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: PruneOptions(ks=()), "PruneOptions.ks: expected a non-empty sequence"),
        (lambda: PruneOptions(ks=(0, -1)), "PruneOptions.ks"),
        (lambda: PruneOptions(granularity="column"), "PruneOptions.granularity: expected one of"),
        (lambda: PruneOptions(unit_axis="side"), "PruneOptions.unit_axis"),
        (lambda: PruneOptions(grad_samples=0), "PruneOptions.grad_samples: expected a positive"),
        (lambda: PruneOptions(grad_c_te=1.5), "PruneOptions.grad_c_te: expected a number in"),
        (lambda: PruneOptions(eval_samples=0), "PruneOptions.eval_samples"),
        (lambda: PruneOptions(eligible=","), "PruneOptions.eligible"),
        (lambda: PruneOptions(random_draws=-1), "PruneOptions.random_draws: expected an integer"),
        (lambda: PruneOptions(random_draws=True), "PruneOptions.random_draws"),
        (lambda: PruneOptions(random_seed=True), "PruneOptions.random_seed: expected an integer"),
        (lambda: ProbeOptions(samples=True), "ProbeOptions.samples"),
        (lambda: ProbeOptions(probe_preset="slow"), "ProbeOptions.probe_preset: expected one of"),
        (lambda: ProbeOptions(prompt=""), "ProbeOptions.prompt"),
        (lambda: PatchOptions(component="nope"), "PatchOptions.component: expected one of"),
        (lambda: PatchOptions(direction="up"), "PatchOptions.direction"),
        (lambda: PatchOptions(metric="kl"), "PatchOptions.metric"),
        (lambda: PatchOptions(c_te=-0.1), "PatchOptions.c_te"),
        (lambda: AttributeOptions(components=("z", "nope")), "AttributeOptions.components: unkn"),
        (lambda: AttributeOptions(components=()), "AttributeOptions.components"),
        (lambda: AttentionOptions(example=-1), "AttentionOptions.example"),
        (lambda: AttentionOptions(layers=()), "AttentionOptions.layers"),
        (lambda: WrapperMapOptions(samples=0), "WrapperMapOptions.samples"),
    ],
)
def test_bad_values_raise_config_errors_naming_the_field(build, message):
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)


@pytest.mark.parametrize(
    "function, options",
    [(pcfg_analysis.prune_run, PruneOptions), (pcfg_analysis.probe_run, ProbeOptions),
     (pcfg_analysis.patch_run, PatchOptions), (pcfg_analysis.attribute_run, AttributeOptions),
     (pcfg_analysis.attention_run, AttentionOptions),
     (pcfg_analysis.wrapper_map_run, WrapperMapOptions)],
)
def test_each_tool_takes_its_options_object_and_the_pretrained_run_by_keyword(function, options):
    parameters = inspect.signature(function).parameters
    assert list(parameters)[:3] == ["run_dir", "out", "options"]
    assert parameters["options"].annotation in (f"{options.__name__} | None", options | None)
    for name, parameter in list(parameters.items())[3:]:
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
