"""The config sections of the compiled-model stages: how the starting model is made
(`compile`) and the fine-tuning data (`finetune`); `task` and `train` are
`tasks.compiled_tasks.CompiledTaskConfig` and `wrapperlens.training.TrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.compiled_tasks import CompiledTaskConfig
from wrapperlens.training import TrainConfig

__all__ = ["GAINS", "CompileConfig", "CompiledFinetuneConfig", "SECTION_TYPES"]


#: The gains of each `compile.gains` mode: (attention logit, MLP staircase slope cap; None: exact).
GAINS = {"exact": (1000.0, None), "tracr": (15.0, 100.0)}


@dataclass(frozen=True)
class CompileConfig:
    """How the starting model is made.

    Attributes:
        operand: What the program is compiled for; "" is the task's O_PT. The Scr.+FT baseline
            compiles for O_FT.
        noise_std: Standard deviation of the Gaussian noise added to every compiled weight
            (paper App. C.1: N(0, 0.001), "to densify them and avoid gradient spikes";
            docs/choices.md#tracr-weight-noise).
        seed: Seed of the noise.
        gains: "tracr" (attention logit 15, MLP staircase slopes at most 100: the order of
            Tracr's default compile, logits ~30 and `mlp_exactness=100`) or "exact" (logit 1000,
            slope 2 / min_gap: exact on every input, for the compiler's tests). Which inputs each
            is exact on: docs/compiled.md#gains.
        attention_logit: Attention logit of a selected key (`tasks.rasp.compile_program`'s
            `scale`); 0: the mode's (exact 1000, tracr 15). Exact mode needs >= 250.
        mlp_slope: Largest slope of a staircase step; 0: the mode's (tracr 100). Exact mode
            takes none (its slope is 2 / min_gap).
    """

    operand: str = ""
    noise_std: float = 1e-3
    seed: int = 0
    gains: str = "tracr"
    attention_logit: float = 0.0
    mlp_slope: float = 0.0

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"compile.noise_std={self.noise_std} must be >= 0")
        if self.gains not in GAINS:
            raise ValueError(f"compile.gains={self.gains!r}: expected one of {', '.join(GAINS)}")
        if self.attention_logit < 0 or self.mlp_slope < 0:
            raise ValueError(f"compile.attention_logit={self.attention_logit} and "
                             f"compile.mlp_slope={self.mlp_slope} must be >= 0 (0: the mode's)")
        if self.gains == "exact" and self.scale < 250:
            raise ValueError(f"compile.attention_logit={self.attention_logit}: below 250 the "
                             "compiled attention is not exact in float32 (compile.gains='exact')")
        if self.gains == "exact" and self.mlp_slope:
            raise ValueError(f"compile.mlp_slope={self.mlp_slope} with compile.gains='exact': "
                             "the exact staircase's slope is 2 / min_gap; set compile.mlp_slope=0")

    @property
    def scale(self) -> float:
        """The attention logit of a selected key (this mode's unless set)."""
        return self.attention_logit or GAINS[self.gains][0]

    @property
    def slope(self) -> float | None:
        """The staircase slope cap (None: exact)."""
        return self.mlp_slope or GAINS[self.gains][1]


@dataclass(frozen=True)
class CompiledFinetuneConfig:
    """The fine-tuning data.

    Attributes:
        target: "ft" (train on O_FT answers, the paper's fine-tuning) or "pt" (on O_PT answers,
            natural inputs: the Scr.+FT baseline's fine-tuning).
        c_tr: Fraction of each batch carrying the spurious correlation (C_Tr); the others never
            do. Must be 0 for target "pt".
    """

    target: str = "ft"
    c_tr: float = 1.0

    def __post_init__(self) -> None:
        if self.target not in ("ft", "pt"):
            raise ValueError(f"finetune.target={self.target!r}: expected 'ft' or 'pt'")
        if not 0.0 <= self.c_tr <= 1.0:
            raise ValueError(f"finetune.c_tr={self.c_tr} must be in [0, 1]")
        if self.target == "pt" and self.c_tr:
            raise ValueError(f"finetune.c_tr={self.c_tr} with finetune.target='pt': training on "
                             "the O_PT answer uses natural inputs; set finetune.c_tr=0")


SECTION_TYPES = {"task": CompiledTaskConfig, "compile": CompileConfig, "train": TrainConfig,
                 "finetune": CompiledFinetuneConfig}
