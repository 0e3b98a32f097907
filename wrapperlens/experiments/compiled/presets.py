"""The compiled-model presets: `paper`, `cpu`, `demo` and `tiny` (experiment "compiled").

`paper` is the paper's setting (App. B.1, C.1; docs/paper-settings.md): the Counter on 48 letters
(or `--task.program=max_identifier`, 10 distinct letters), N(0, 1e-3) noise on the compiled
weights, SGD with momentum 0.9 (docs/choices.md#tracr-sgd-momentum), batch 96, 10K iterations with a
2K-step warmup then cosine to 1/100 of the peak,
η_L / η_M / η_S / η_VS = 1e-1 / 1e-2 / 1e-3 / 1e-4, and the grid
C_Tr ∈ {0, 0.2, 0.5, 0.6, 0.8, 0.9, 1}.

`cpu` keeps every setting of `paper` but the length of the Counter's inputs (24 letters: a
quarter of the paper's cost per step) and the steps (400, with the same 20 % warmup), so that the
whole grid of both programs over 3 seeds takes about 6 minutes of the `cpu` reproduction on 2 cores
(docs/choices.md#compiled-models-cpu).

`demo` is the compiled part of the main job (`wrapperlens reproduce --preset demo`): the Counter
alone on 16 letters, 100 steps, one seed, C_Tr 0, 0.5 and 1.

`tiny` is for tests and notebooks: 12 letters, 60 steps, 200 evaluation samples, a grid of one
seed and C_Tr 0 and 1.

Every preset compiles with Tracr-like gains (`compile.gains="tracr"`: attention logit 15, MLP
staircase slopes at most 100, 300 for `paper`'s 48 letters), which are exact on each preset's
input distribution (docs/compiled.md#gains); `compile.gains=exact` gives the exact compiler's.

Every stage's gradient norm is clipped at 1 (the engine's default): the compiled models' large
attention and MLP gains give gradients of norm ~1e4 at the first step, which SGD at η_L turns into
NaNs without it (the paper adds the noise "to avoid gradient spikes" and states no clipping).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tasks.compiled_tasks import CompiledTaskConfig
from wrapperlens.experiments.compiled.configs import CompileConfig, CompiledFinetuneConfig
from wrapperlens.presets import Preset, register_preset
from wrapperlens.training import TrainConfig

__all__ = ["PAPER", "CPU", "TINY", "DEMO", "ETAS", "C_TR_GRID", "CompiledGridConfig"]

#: The paper's learning rates (App. C.1): η_L, η_M, η_S, η_VS.
ETAS = {"L": 1e-1, "M": 1e-2, "S": 1e-3, "VS": 1e-4}
#: The C_Tr values of Table 3.
C_TR_GRID = (0.0, 0.2, 0.5, 0.6, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class CompiledGridConfig:
    """What `wrapperlens compiled grid` runs (`wrapperlens.experiments.compiled.grid.plan`).

    Attributes:
        seeds: Seeds per cell (each: the compile noise and every stage's data order).
        first_seed: The first seed: seeds `first_seed .. first_seed + seeds - 1`.
        programs: "counter" and / or "max_identifier".
        etas: The fine-tuning learning rates, by name.
        c_trs: The C_Tr values (Table 3's).
        prune_ks: Numbers of single weights pruned (0 = unpruned).
        prune_random_draws: Random-weight draws per K (the control).
    """

    seeds: int = 3
    first_seed: int = 0
    programs: tuple[str, ...] = ("counter", "max_identifier")
    etas: tuple[str, ...] = ("L", "M", "S", "VS")
    c_trs: tuple[float, ...] = C_TR_GRID
    prune_ks: tuple[int, ...] = (0, 1, 2, 3, 4, 10, 20)
    prune_random_draws: int = 5

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.first_seed < 0:
            raise ValueError(f"grid.seeds={self.seeds} must be >= 1 and grid.first_seed="
                             f"{self.first_seed} >= 0")
        bad = [p for p in self.programs if p not in ("counter", "max_identifier")] or \
            [e for e in self.etas if e not in ETAS]
        if bad or not self.programs or not self.etas:
            raise ValueError(f"grid: unknown or empty programs / etas: {bad or 'empty'} "
                             f"(programs: counter, max_identifier; etas: {', '.join(ETAS)})")
        if not self.c_trs or any(not 0.0 <= c <= 1.0 for c in self.c_trs):
            raise ValueError(f"grid.c_trs={self.c_trs}: values in [0, 1], at least one")
        if 0 not in self.prune_ks or self.prune_random_draws < 1:
            raise ValueError("grid.prune_ks must include 0 (the unpruned model) and "
                             "grid.prune_random_draws must be >= 1")

    @property
    def seed_range(self) -> range:
        """The seeds the grid runs."""
        return range(self.first_seed, self.first_seed + self.seeds)


def _compiled_preset(name: str, **sections: Any) -> Preset:
    """Fine-tuning at η_M and reFT at η_VS by default (paper App. G: reFT with η_VS revives)."""
    sections.setdefault("compile", CompileConfig())
    sections.setdefault("finetune_data", CompiledFinetuneConfig())
    sections.setdefault("grid", CompiledGridConfig())
    return Preset(name, "compiled", sections, ETAS, default_eta={"finetune": "M", "reft": "VS"})


def _sgd(steps: int, **changes: Any) -> TrainConfig:
    """SGD with momentum on the answer at the last position; 20 % warmup then cosine."""
    base = TrainConfig(steps=steps, batch_size=96, optimizer="sgd", momentum=0.9,
                       weight_decay=0.0, loss="answer", eval_every=max(1, steps // 10),
                       checkpoint_every=max(1, steps // 2))
    return dataclasses.replace(base, **changes)


PAPER = _compiled_preset(
    "paper", task=CompiledTaskConfig(program="counter"),
    # 48 letters: slope 100 is wrong from 14 `a`s (P = 5e-4 per input), 300 from 24 (3e-11)
    compile=CompileConfig(mlp_slope=300.0),
    finetune=_sgd(10_000, eval_every=500, checkpoint_every=1000),
    reft=_sgd(10_000, eval_every=500, checkpoint_every=1000, log_spaced_eval=True),
)
CPU = _compiled_preset(
    "cpu", task=CompiledTaskConfig(program="counter", length=24),
    finetune=_sgd(400), reft=_sgd(400, log_spaced_eval=True),
)
TINY = _compiled_preset(
    "tiny", task=CompiledTaskConfig(program="counter", length=12),
    finetune=_sgd(60, eval_samples=200), reft=_sgd(60, eval_samples=200, log_spaced_eval=True),
    grid=CompiledGridConfig(seeds=1, c_trs=(0.0, 1.0), prune_ks=(0, 1, 2, 4),
                            prune_random_draws=2),
)

# The main job's compiled part (`wrapperlens reproduce --preset demo`): the Counter alone.
DEMO = _compiled_preset(
    "demo", task=CompiledTaskConfig(program="counter", length=16),
    finetune=_sgd(100, eval_samples=500), reft=_sgd(100, eval_samples=500,
                                                   log_spaced_eval=True),
    grid=CompiledGridConfig(seeds=1, programs=("counter",), c_trs=(0.0, 0.5, 1.0),
                            prune_ks=(0, 1, 2, 4), prune_random_draws=2),
)

register_preset(PAPER, CPU, TINY, DEMO)
