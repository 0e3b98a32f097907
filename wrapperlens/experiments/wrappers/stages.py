"""Fine-tuning with a wrapper whose location is known: only a chosen, seeded set of units trains.

The benchmark of localisation methods (`wrapperlens.experiments.wrappers`) needs pairs where the
answer to "where is the wrapper?" is known. This module makes them by construction: a PCFG model
is pretrained as usual, then fine-tuned on the correlated task (count b, C_Tr = 1) with every
parameter frozen except the own parameters of a few units (`UnitSetConfig`: k MLP neurons or k
attention heads, drawn with a seed). Whatever the fine-tuning learns, it can only learn there.

| stage | starts from | trains |
|---|---|---|
| pretrain | random init | everything (the PCFG pretraining) |
| finetune | a pretrain run | everything (the negative control's fine-tuning) |
| localised | a pretrain run | only the units of its `units` section |

A unit's own parameters are those of `wrapperlens.analysis.weight_change.component_parameters`:
neuron n is ``W_in[:, n]``, ``b_in[n]`` and ``W_out[n]``; head h is the slices ``[h]`` of
``W_Q, W_K, W_V, W_O, b_Q, b_K, b_V``. Every other gradient is masked to zero, and a localised
stage refuses weight decay (decoupled decay would shrink the frozen entries of a partly trained
matrix), so after training every weight outside the set is bit-identical to the pretrained
model's (tests/wrapperlens/experiments/wrappers/test_stages.py checks it).

    run = WrapperRun.resolve("localised", "tiny", parent="runs/pt", eta="L")
    run.run_or_reuse("runs/wrapped")
    run.wrapper_units()        # (("neuron", 0, 17), ...): the known answer
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from tasks.data import PCFGStream
from wrapperlens.analysis.weight_change import component_parameters
from wrapperlens.config import ConfigError
from wrapperlens.experiment import StageRule, register_experiment
from wrapperlens.experiments.pcfg.stages import SECTION_TYPES as PCFG_SECTIONS
from wrapperlens.experiments.pcfg.stages import PCFGRun
from wrapperlens.experiments.wrappers import presets as _presets  # noqa: F401 (registers them)
from wrapperlens.experiments.wrappers.units import Unit, UnitSetConfig, draw_units

__all__ = ["restrict_training", "WrapperRun"]


def restrict_training(model: HookedTransformer,
                      units: tuple[Unit, ...]) -> dict[str, torch.Tensor]:
    """Let only `units`' own parameters train: parameters with none of them stop requiring
    gradients, the others get a gradient hook that zeroes every other entry.

    Returns:
        {parameter name: its 0/1 mask} of the partly trained parameters.
    """
    params = dict(model.named_parameters())
    masks: dict[str, torch.Tensor] = {}
    for kind, layer, index in units:
        for name, selector in component_parameters(params, model.cfg.n_heads, kind, layer, index):
            mask = masks.setdefault(name, torch.zeros_like(params[name]))
            mask[selector] = 1.0
    for name, param in params.items():
        if name in masks:
            param.register_hook(lambda grad, mask=masks[name]: grad * mask.to(grad.device))
        else:
            param.requires_grad_(False)
    return masks


@register_experiment
class WrapperRun(PCFGRun):
    """A PCFG run whose fine-tuning may be localised to a known unit set (module docstring)."""

    name = "wrappers"
    stage_rules = (
        *PCFGRun.stage_rules[:2],  # pretrain, finetune: the PCFG experiment's own
        StageRule("localised", parents=("pretrain",), inherits=("task", "model"), eta=True,
                  sections={"train": "localised", "finetune": "finetune_data",
                            "units": "units"}),
    )
    section_types = {**PCFG_SECTIONS, "units": UnitSetConfig}

    def setup(self) -> None:
        if self.stage == "localised" and self.train_config.weight_decay != 0:
            raise ConfigError(
                f"a localised fine-tuning needs train.weight_decay=0, got "
                f"{self.train_config.weight_decay:g}: AdamW's decoupled decay would move the "
                "frozen entries of the matrices the unit set shares with other units")
        super().setup()

    def stream(self) -> PCFGStream:
        """The fine-tuning data for a localised stage too (drawn from a stream of its own)."""
        if self.stage != "localised":
            return super().stream()
        return PCFGStream(self.task, self.train_config.batch_size, finetune=self.finetune_data,
                          stream=self.stage, seed=self.train_config.seed)

    def wrapper_units(self) -> tuple[Unit, ...]:
        """The units a localised stage trains (the benchmark's known answer); () otherwise."""
        if self.stage != "localised":
            return ()
        units, model = self.sections["units"], self.sections["model"]
        width = model.n_heads if units.kind == "head" else model.mlp_width
        return draw_units(units, model.n_layers, width)

    def initial_model(self) -> HookedTransformer:
        model = super().initial_model()
        if self.stage == "localised":
            restrict_training(model, self.wrapper_units())
        return model
