"""PCFG pipelines: pretrain, fine-tune and reverse fine-tune runs, and their evaluation.

This module glues `tasks` (data) to the run engine (`wrapperlens.stages`): `resolve_configs`
combines a preset, a parent run and command-line overrides into a `PCFGRun`, and
`PCFGRun.spec()` is the stage spec the engine trains:

    run = resolve_configs("finetune", "cpu", parent="runs/pt", eta="M")
    model, records = run_stage(run.spec(), "runs/ft")      # wrapperlens.stages.run_stage

| stage | starts from | data | default LR |
|---|---|---|---|
| pretrain | random init | the pretraining mixture (families × operands under the prior) | preset |
| finetune | a pretrain run | one question (count b), a fraction C_Tr correlated | η_M |
| reft | a finetune run | the pretraining question (count a), natural strings | η_S |

A stage's learning rate must be below its parent's: fine-tuning below pretraining, reFT below
fine-tuning (docs/choices.md#each-stages-learning-rate-is-below-its-parents). Batch t of a stage is
drawn from (task.seed, stage, train.seed, t): fine-tuning and reFT keep their parent's task and
model, and `train.seed` varies their data (docs/choices.md#seeds-per-stage).

Evaluation (logged to `metrics.jsonl`): exact-match accuracy of the greedy answer token at the
`<art>` position (docs/choices.md#the-accuracy-metric). Pretraining logs every family × operand
(`acc/C_a`, ...); fine-tuning and reFT log Acc O_PT and Acc O_FT on three test sets each
(docs/choices.md#the-test-sets-of-fine-tuning-and-reft): C_Te = 1 (`acc/O_PT/cte1`: every string
carries the correlation), C_Te = 0 (`acc/O_PT/cte0`: no string carries it, chance correlations
excluded) and the strings as sampled (`acc/O_PT/natural`). `PCFGRun.chance_floors` gives the
accuracy of always answering each set's most common answer (docs/choices.md#chance-floors).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformer_lens import HookedTransformer

from tasks.config import FinetuneDataConfig, PCFGTaskConfig
from tasks.data import PCFGStream, PCFGTask, Question, TaskBatch
from wrapperlens.experiment import (ExperimentRun, StageRule, finetune_chain, read_run,
                                    register_experiment)
from wrapperlens.experiment import load_run as load_experiment_run
from wrapperlens.experiments.pcfg import presets as _presets  # noqa: F401 (registers them)
from wrapperlens.models import ModelConfig, build_model
from wrapperlens.training import TrainBatch, TrainConfig

__all__ = [
    "STAGES",
    "SECTION_TYPES",
    "PCFGRun",
    "resolve_configs",
    "load_run",
    "saved_run",
    "answer_accuracy",
]

STAGES = ("pretrain", "finetune", "reft")
SECTION_TYPES = {
    "task": PCFGTaskConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "finetune": FinetuneDataConfig,
}


def answer_accuracy(model: HookedTransformer, batch: TaskBatch, chunk: int = 512) -> float:
    """Fraction of rows whose greedy prediction at `<art>` is the answer token."""
    tokens = torch.from_numpy(batch.tokens).to(model.cfg.device)
    col = batch.answer_col
    correct = 0
    with torch.no_grad():
        for i in range(0, len(tokens), chunk):
            part = tokens[i : i + chunk]
            logits = model(part[:, :col])  # nothing after <art> is needed
            correct += (logits[:, -1].argmax(-1) == part[:, col]).sum().item()
    return correct / len(tokens)


@register_experiment
class PCFGRun(ExperimentRun):
    """One PCFG stage (fills `wrapperlens.experiment.ExperimentRun`: `setup`, `new_model`,
    `batch`, `evaluate`, `chance_floors`), with the task it describes.

    Attributes:
        stage: "pretrain", "finetune" or "reft".
        sections: {"task", "model", "train"[, "finetune"]} config objects.
        preset: The preset the defaults came from.
        parent: The run directory this stage starts from (None for pretraining).
    """

    name = "pcfg"
    stage_rules = finetune_chain(
        StageRule("pretrain", sections={"task": "task", "model": "model", "train": "pretrain"}),
        fixed=("task", "model"))
    section_types = SECTION_TYPES

    def setup(self) -> None:
        self.task = PCFGTask(self.sections["task"])
        self.sections["model"].context_length(self.task.n_ctx)  # a set model.n_ctx must fit
        self._stream = self.stream()
        self._eval_sets: dict[str, TaskBatch] | None = None

    @property
    def finetune_data(self) -> FinetuneDataConfig | None:
        return self.sections.get("finetune")

    # ------------------------------------------------------------------------------- data
    def stream(self) -> PCFGStream:
        """The training data of this stage: seeded by the task seed, the stage's name (stages
        draw different strings from one task seed) and `train.seed`
        (docs/choices.md#seeds-per-stage)."""
        ft = self.finetune_data
        common = {"stream": self.stage, "seed": self.train_config.seed}
        size = self.train_config.batch_size
        if self.stage == "pretrain":
            return PCFGStream(self.task, size, **common)
        if self.stage == "finetune":
            return PCFGStream(self.task, size, finetune=ft, **common)
        # reFT: the pretraining question, natural strings
        question = Question(ft.family, ft.pretrain_operand)
        return PCFGStream(self.task, size, question=question, **common)

    def batch(self, step: int) -> TrainBatch:
        """Training batch of `step` with its loss mask (the whole sequence, or the answer)."""
        b = self._stream.batch(step)
        tokens = torch.from_numpy(b.tokens)
        mask = torch.zeros(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
        if self.train_config.loss == "next_token":
            mask[:] = True
        else:
            mask[:, b.answer_col - 1] = True
        return TrainBatch(tokens, mask)

    def eval_questions(self) -> dict[str, tuple[Question, FinetuneDataConfig | None, float]]:
        """Named evaluation sets: (question, correlation config, C_Te);
        docs/choices.md#the-test-sets-of-fine-tuning-and-reft.

        Fine-tuning and reFT: `.../cte1` strings all carry the correlation; `.../cte0` strings
        carry none (those that do by chance are redrawn, `uncorrelated="exclude"`); `.../natural`
        are the strings as sampled. A set is seeded by its question, C_Te and size, so the
        `cte0` set is the `natural` set with its chance-correlated strings redrawn.
        """
        out: dict[str, tuple[Question, FinetuneDataConfig | None, float]] = {}
        if self.stage == "pretrain":
            for token, family, ops in self.task.pretrain_tokens:
                for op in ops or (None,):
                    q = Question(family, op, token=token)
                    out[f"acc/{q.name}"] = (q, None, 0.0)
            return out
        ft = self.finetune_data
        excluded = dataclasses.replace(ft, uncorrelated="exclude")
        natural = dataclasses.replace(ft, uncorrelated="natural")
        o_pt = Question(ft.family, ft.pretrain_operand)
        o_ft = Question(ft.family, ft.operand, label_operand=ft.label_of)
        test_sets = {"cte0": (excluded, 0.0), "cte1": (ft, 1.0), "natural": (natural, 0.0)}
        for set_name, (correlation, c_te) in test_sets.items():
            for name, question in (("O_PT", o_pt), ("O_FT", o_ft)):
                out[f"acc/{name}/{set_name}"] = (question, correlation, c_te)
        for token, family, ops in self.task.pretrain_tokens:
            if token != family and family == ft.family:  # jailbreak aliases (paper App. E.2)
                q = Question(family, ft.pretrain_operand, token=token)
                out[f"acc/{q.name}/cte0"] = (q, excluded, 0.0)
        return out

    def eval_sets(self) -> dict[str, TaskBatch]:
        if self._eval_sets is None:
            n = self.train_config.eval_samples
            self._eval_sets = {
                name: self.task.eval_set(q, n, corr, c)
                for name, (q, corr, c) in self.eval_questions().items()
            }
        return self._eval_sets

    def chance_floors(self) -> dict[str, float]:
        """Per evaluation set (the names of `eval_sets`): the fraction of its rows whose answer
        is the set's most common answer, i.e. the accuracy of a model that ignores the string
        (docs/choices.md#chance-floors). An accuracy near its floor says nothing about the
        capability."""
        floors = {}
        for name, batch in self.eval_sets().items():
            _, counts = np.unique(batch.answers, return_counts=True)
            floors[name] = float(counts.max()) / len(batch)
        return floors

    def evaluate(self, model: HookedTransformer, step: int | None = None) -> dict[str, float]:
        """Accuracy on every evaluation set (the same sets at every step)."""
        return {name: answer_accuracy(model, b) for name, b in self.eval_sets().items()}

    def new_model(self) -> HookedTransformer:
        return build_model(self.sections["model"], d_vocab=len(self.task.vocab),
                           n_ctx=self.task.n_ctx)


def saved_run(run_dir: str | Path) -> PCFGRun:
    """The PCFGRun saved in `run_dir/config.json` (configs only, no weights)."""
    return read_run(run_dir, PCFGRun)


def load_run(run_dir: str | Path) -> tuple[PCFGRun, HookedTransformer]:
    """The run described by `run_dir/config.json`, with its latest weights loaded (eval mode)."""
    return load_experiment_run(run_dir, PCFGRun)


def resolve_configs(
    stage: str,
    preset: str = "cpu",
    parent: str | Path | None = None,
    eta: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PCFGRun:
    """The configs of a stage: preset defaults, the parent run's configs, then overrides
    (`wrapperlens.experiment.resolve_stage` with `PCFGRun.stage_rules`).

    Fine-tuning and reFT inherit `task` and `model` from the parent run (they must match its
    weights; overriding them is an error; `train.seed` varies their data) and reFT also inherits
    `finetune` (the question whose pretraining counterpart it trains on).

    Raises:
        ConfigError: an unknown stage, key or value; a parent of the wrong stage; an override
            of what the parent fixes; or a learning rate not below the parent's (fine-tuning
            below pretraining, reFT below fine-tuning;
            docs/choices.md#each-stages-learning-rate-is-below-its-parents).
    """
    return PCFGRun.resolve(stage, preset, parent, eta, overrides)
