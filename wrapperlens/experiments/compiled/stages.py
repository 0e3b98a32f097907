"""Compiled-model pipelines (paper §4, App. B.1, C.1): compile, fine-tune, reverse fine-tune.

The paper's second setting starts from a model whose capability is known weight by weight: a
RASP program compiled to a transformer (`tasks.rasp`), then fine-tuned. Three stages, run by the
engine of `wrapperlens.stages` like the PCFG ones:

| stage | starts from | model / data | default LR |
|---|---|---|---|
| compile | nothing | the program compiled for `compile.operand` (default O_PT), plus N(0, noise_std) noise | - |
| finetune | a compile run | `finetune.target` "ft": O_FT labels, a fraction C_Tr correlated; "pt": O_PT labels, natural inputs | η_M |
| reft | a finetune run | O_PT labels, natural inputs | η_VS |

The Scr.+FT baseline is a compile run for O_FT (`--compile.operand=b`) fine-tuned to O_PT
(`--finetune.target=pt`). A compile run trains nothing: its directory holds the noisy compiled
weights, one metrics record at step 0 and its provenance, so children open it like any parent.

Every stage logs Acc O_PT and Acc O_FT on C_Te = 1 (`acc/O_PT/cte1`: every input carries the
correlation) and C_Te = 0 (`acc/O_PT/cte0`: none does), read at the last position
(docs/choices.md#tracr-read-out-and-fine-tuning-loss). The loss is the cross-entropy of the answer
there: a training row is the input's token ids followed by the answer's output-class id, which the
model never reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformer_lens import HookedTransformer

from tasks.compiled_tasks import CompiledTask
from wrapperlens.compiled import compiled_model
from wrapperlens.config import ConfigError
from wrapperlens.experiment import (ExperimentRun, StageRule, finetune_chain, read_run,
                                    register_experiment)
from wrapperlens.experiment import load_run as load_experiment_run
from wrapperlens.experiments.compiled import presets as _presets  # noqa: F401 (registers them)
from wrapperlens.experiments.compiled.configs import (SECTION_TYPES, CompileConfig,
                                                      CompiledFinetuneConfig)
from wrapperlens.runs import RunDir
from wrapperlens.training import TrainBatch

__all__ = [
    "STAGES", "SECTION_TYPES", "CompileConfig", "CompiledFinetuneConfig", "CompiledRun",
    "resolve_compiled", "saved_compiled_run", "load_compiled_run", "run_compiled_stage",
    "add_noise", "EVAL_SETS",
]

STAGES = ("compile", "finetune", "reft")
#: Metric name -> (operand role, C_Te): the sets every stage is evaluated on (Table 3's columns).
EVAL_SETS = {f"acc/{role}/cte{c}": (role, c) for c in (1, 0) for role in ("O_PT", "O_FT")}


def add_noise(model: HookedTransformer, std: float, seed: int) -> HookedTransformer:
    """Add N(0, std) to every parameter in place, in `named_parameters` order, from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) * std)
    return model


@register_experiment
class CompiledRun(ExperimentRun):
    """One compiled-model stage (fills `wrapperlens.experiment.ExperimentRun`: `setup`,
    `new_model`, `initial_model`, `batch`, `evaluate`, `chance_floors`), with its task."""

    name = "compiled"
    stage_rules = finetune_chain(
        StageRule("compile", sections={"task": "task", "compile": "compile"}, trains=False),
        fixed=("task", "compile"))
    section_types = SECTION_TYPES

    def setup(self) -> None:
        self.task = CompiledTask(self.sections["task"])
        cfg = self.task.config
        self.compiled_operand = self.sections["compile"].operand or cfg.o_pt
        if self.compiled_operand not in (cfg.o_pt, cfg.o_ft):
            raise ConfigError(f"compile.operand={self.compiled_operand!r}: compile for O_PT "
                              f"{cfg.o_pt!r} or O_FT {cfg.o_ft!r}")
        gains = self.sections["compile"]
        self.description = self.task.compile(self.compiled_operand, gains.scale, gains.slope)
        self._classes = {v: i for i, v in enumerate(self.description.output_values)}
        ids = self.description.token_ids
        self._letter_ids = np.array([ids[v] for v in self.task.vocab])  # letter index -> id
        self._bos_id = ids[self.description.bos]
        self._eval_letters: dict[int, np.ndarray] = {}
        self._eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    # ---------------------------------------------------------------------------------- data
    def operand(self, role: str) -> str:
        """The operand of "O_PT" or "O_FT" (of the task, whatever the model was compiled for)."""
        return self.task.config.o_pt if role == "O_PT" else self.task.config.o_ft

    def classes(self, letters: np.ndarray, operand: str) -> torch.Tensor:
        """Output-class ids of each row's answer for `operand`."""
        return torch.tensor([self._classes[v] for v in self.task.answers(letters, operand)])

    def token_ids(self, letters: np.ndarray) -> torch.Tensor:
        """BOS, then each letter's embedding row."""
        bos = np.full((len(letters), 1), self._bos_id)
        return torch.from_numpy(np.concatenate([bos, self._letter_ids[letters]], axis=1))

    def batch(self, step: int) -> TrainBatch:
        """Training batch of `step`: token ids + the answer's class id; loss at the last input."""
        cfg, ft = self.train_config, self.sections["finetune"]
        rng = self.task.step_rng(self.stage, step, cfg.seed)
        pt_labels = self.stage == "reft" or ft.target == "pt"
        if pt_labels:
            letters, operand = self.task.natural(rng, cfg.batch_size), self.task.config.o_pt
        else:
            letters, _ = self.task.batch(rng, cfg.batch_size, ft.c_tr)
            operand = self.task.config.o_ft
        tokens = torch.cat([self.token_ids(letters), self.classes(letters, operand)[:, None]], 1)
        mask = torch.zeros(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
        mask[:, -1] = True
        return TrainBatch(tokens, mask)

    def eval_letters(self, c_te: int) -> np.ndarray:
        """The fixed evaluation inputs of C_Te = `c_te` (letter indices), seeded by
        `task.eval_seed`: every analysis of the run reads these."""
        if c_te not in self._eval_letters:
            n = self.train_config.eval_samples if self.train_config else 1000
            rng = self.task.eval_rng(f"cte{c_te}", n)
            self._eval_letters[c_te] = self.task.batch(rng, n, float(c_te))[0]
        return self._eval_letters[c_te]

    def eval_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Metric name (`EVAL_SETS`) -> (token ids, answer classes); the sets of one C_Te share
        their token tensor."""
        if self._eval_sets is None:
            tokens = {c: self.token_ids(self.eval_letters(c)) for _, c in EVAL_SETS.values()}
            self._eval_sets = {
                name: (tokens[c], self.classes(self.eval_letters(c), self.operand(role)))
                for name, (role, c) in EVAL_SETS.items()}
        return self._eval_sets

    def chance_floors(self) -> dict[str, float]:
        """Per evaluation set: the accuracy of always giving its most common answer."""
        return {name: float(np.bincount(classes.numpy()).max()) / len(classes)
                for name, (_, classes) in self.eval_sets().items()}

    def evaluate(self, model: HookedTransformer, step: int | None = None) -> dict[str, float]:
        """Accuracy of the answer at the last position on every evaluation set (one forward
        pass per C_Te: O_PT and O_FT are read from the same inputs)."""
        predicted: dict[int, torch.Tensor] = {}  # id of a shared token tensor -> predictions
        out = {}
        with torch.no_grad():
            for name, (tokens, classes) in self.eval_sets().items():
                if id(tokens) not in predicted:
                    logits = model(tokens.to(model.cfg.device))[:, -1]
                    predicted[id(tokens)] = logits.argmax(-1).cpu()
                out[name] = (predicted[id(tokens)] == classes).float().mean().item()
        return out

    # -------------------------------------------------------------------------------- models
    def new_model(self) -> HookedTransformer:
        """The compiled model without noise (the architecture of every stage of this run)."""
        return compiled_model(self.description)

    def initial_model(self) -> HookedTransformer:
        """Compile: the compiled weights plus noise. Otherwise: the parent run's weights."""
        model = self.new_model()
        if self.parent is None:
            c = self.sections["compile"]
            return add_noise(model, c.noise_std, c.seed)
        RunDir(self.parent).load_weights_into(model)
        return model


def run_compiled_stage(run: CompiledRun, out: str | Path, *, progress: bool = True,
                       device: str = "cpu") -> tuple[list[dict], float]:
    """Run (or reuse) one stage into `out` (`ExperimentRun.run_or_reuse`: compile writes the
    noisy compiled model, the others train). Returns its metrics and the seconds spent."""
    return run.run_or_reuse(out, progress=progress, device=device)


def saved_compiled_run(run_dir: str | Path) -> CompiledRun:
    """The CompiledRun saved in `run_dir/config.json` (configs only)."""
    return read_run(run_dir, CompiledRun)


def load_compiled_run(run_dir: str | Path) -> tuple[CompiledRun, HookedTransformer]:
    """The run of `run_dir` with its latest weights loaded, in eval mode."""
    return load_experiment_run(run_dir, CompiledRun)


def resolve_compiled(stage: str, preset: str = "cpu", parent: str | Path | None = None,
                     eta: str | None = None,
                     overrides: Mapping[str, Any] | None = None) -> CompiledRun:
    """The configs of a stage: preset defaults, the parent's configs, then overrides
    (`wrapperlens.experiment.resolve_stage` with `CompiledRun.stage_rules`).

    Fine-tuning and reFT inherit `task` and `compile` from their parent (the weights they start
    from); reFT also inherits `finetune`. A stage's learning rate must be below its parent's
    (reFT below fine-tuning, docs/choices.md#each-stages-learning-rate-is-below-its-parents).

    Raises:
        ConfigError: an unknown stage or key, a parent of the wrong stage, an override of what
            the parent fixes, or a reFT learning rate not below the fine-tuning's.
    """
    return CompiledRun.resolve(stage, preset, parent, eta, overrides)
