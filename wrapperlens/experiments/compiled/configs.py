"""The config sections of the compiled-model stages: how the starting model is made
(`compile`) and the fine-tuning data (`finetune`); `task` and `train` are
`tasks.compiled_tasks.CompiledTaskConfig` and `wrapperlens.training.TrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.compiled_tasks import CompiledTaskConfig
from wrapperlens.training import TrainConfig

__all__ = ["CompileConfig", "CompiledFinetuneConfig", "SECTION_TYPES"]


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
        scale: Attention logit of a selected key (`tasks.rasp.compile_program`).
    """

    operand: str = ""
    noise_std: float = 1e-3
    seed: int = 0
    scale: float = 1000.0

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"compile.noise_std={self.noise_std} must be >= 0")
        if self.scale < 250:
            raise ValueError(f"compile.scale={self.scale}: below 250 the compiled attention is "
                             "not exact in float32")


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
