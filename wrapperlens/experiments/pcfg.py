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
fine-tuning (docs/choices.md §34). Batch t of a stage is drawn from (task.seed, stage, train.seed,
t): fine-tuning and reFT keep their parent's task and model, and `train.seed` varies their data
(docs/choices.md §31).

Evaluation (logged to `metrics.jsonl`): exact-match accuracy of the greedy answer token at the
`<art>` position (docs/choices.md §11). Pretraining logs every family × operand (`acc/C_a`, ...);
fine-tuning and reFT log Acc O_PT and Acc O_FT on three test sets each (docs/choices.md §29):
C_Te = 1 (`acc/O_PT/cte1`: every string carries the correlation), C_Te = 0 (`acc/O_PT/cte0`: no
string carries it, chance correlations excluded) and the strings as sampled
(`acc/O_PT/natural`). `PCFGRun.chance_floors` gives the accuracy of always answering each set's
most common answer (docs/choices.md §30).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformer_lens import HookedTransformer

from tasks.config import FinetuneDataConfig, PCFGTaskConfig
from tasks.data import PCFGStream, PCFGTask, Question, TaskBatch
from wrapperlens.checkpoints import CheckpointError
from wrapperlens.config import ConfigError, apply_overrides, replace, sections_from_dict, to_dict
from wrapperlens.models import ModelConfig, build_model
from wrapperlens.presets import get_preset
from wrapperlens.runs import RunDir
from wrapperlens.stages import StageSpec
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


@dataclass
class PCFGRun:
    """The resolved configs of one stage, with the task they describe.

    Attributes:
        stage: "pretrain", "finetune" or "reft".
        sections: {"task", "model", "train"[, "finetune"]} config objects.
        preset: The preset the defaults came from.
        parent: The run directory this stage starts from (None for pretraining).
    """

    stage: str
    sections: dict[str, Any]
    preset: str
    parent: str | None = None

    def __post_init__(self) -> None:
        self.task = PCFGTask(self.sections["task"])
        self.sections["model"].context_length(self.task.n_ctx)  # a set model.n_ctx must fit
        self._stream = self.stream()
        self._eval_sets: dict[str, TaskBatch] | None = None

    @property
    def train_config(self) -> TrainConfig:
        return self.sections["train"]

    @property
    def finetune_data(self) -> FinetuneDataConfig | None:
        return self.sections.get("finetune")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "preset": self.preset, "parent": self.parent}
        out.update({name: to_dict(cfg) for name, cfg in self.sections.items()})
        return out

    # ------------------------------------------------------------------------------- data
    def stream(self) -> PCFGStream:
        """The training data of this stage: seeded by the task seed, the stage's name (stages
        draw different strings from one task seed) and `train.seed` (docs/choices.md §31)."""
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
        """Named evaluation sets: (question, correlation config, C_Te); docs/choices.md §29.

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
        (docs/choices.md §30). An accuracy near its floor says nothing about the capability."""
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

    def initial_model(self) -> HookedTransformer:
        """A fresh init for pretraining, else the parent run's latest weights."""
        model = self.new_model()
        if self.parent is not None:
            RunDir(self.parent).load_weights_into(model)
        return model

    def spec(self) -> StageSpec:
        """This stage for the run engine (`wrapperlens.stages.run_stage` / `train_or_reuse`)."""
        return StageSpec(
            config=self.to_json(), train=self.train_config, build_model=self.initial_model,
            batch=self.batch, evaluate=self.evaluate,
            description=f"{self.stage} [{self.preset}]",
        )


def _sections_from_json(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    try:
        return sections_from_dict(SECTION_TYPES, config, source)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e  # a saved file that does not parse


def saved_run(run_dir: str | Path) -> PCFGRun:
    """The PCFGRun saved in `run_dir/config.json` (configs only, no weights)."""
    run = RunDir(run_dir)
    config = run.read_config()
    if config.get("stage") not in STAGES:
        raise CheckpointError(f"{run.config_file}: 'stage' must be one of {STAGES}")
    return PCFGRun(
        config["stage"], _sections_from_json(config, str(run.config_file)),
        config.get("preset", "?"), config.get("parent"),
    )


def load_run(run_dir: str | Path) -> tuple[PCFGRun, HookedTransformer]:
    """The run described by `run_dir/config.json`, with its latest weights loaded."""
    run = saved_run(run_dir)
    model = run.new_model()
    RunDir(run_dir).load_weights_into(model)
    model.eval()
    return run, model


def resolve_configs(
    stage: str,
    preset: str = "cpu",
    parent: str | Path | None = None,
    eta: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PCFGRun:
    """The configs of a stage: preset defaults, the parent run's configs, then overrides.

    Fine-tuning and reFT inherit `task` and `model` from the parent run (they must match its
    weights; overriding them is an error; `train.seed` varies their data) and reFT also inherits
    `finetune` (the question whose pretraining counterpart it trains on).

    Raises:
        ConfigError: an unknown stage, key or value; a parent of the wrong stage; an override
            of what the parent fixes; or a learning rate not below the parent's (fine-tuning
            below pretraining, reFT below fine-tuning; docs/choices.md §34).
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    p = get_preset(preset)
    overrides = dict(overrides or {})
    if stage == "pretrain":
        if parent is not None:
            raise ConfigError("pretraining starts from scratch: --from is not allowed")
        sections: dict[str, Any] = {"task": p.task, "model": p.model, "train": p.pretrain}
    else:
        if parent is None:
            raise ConfigError(f"{stage} needs --from RUN_DIR (the run it starts from)")
        parent_run = RunDir(parent)
        parent_cfg = parent_run.read_config()
        inherited = _sections_from_json(parent_cfg, str(parent_run.config_file))
        expected_parent = "pretrain" if stage == "finetune" else "finetune"
        if parent_cfg.get("stage") != expected_parent:
            raise ConfigError(
                f"{stage} starts from a {expected_parent} run, but {parent} is a "
                f"{parent_cfg.get('stage')!r} run"
            )
        locked = [k for k in overrides if k.split(".")[0] in ("task", "model")]
        if locked:
            seed = "seed" in locked[0]
            hint = "; use --train.seed to vary this stage's data order" if seed else ""
            raise ConfigError(
                f"{locked[0]}: task and model are fixed by the parent run {parent}{hint}"
            )
        train_cfg = p.finetune if stage == "finetune" else p.reft
        _, lr = p.eta(stage, eta)
        train_cfg = replace(train_cfg, "train", lr=lr)
        sections = {"task": inherited["task"], "model": inherited["model"], "train": train_cfg}
        if stage == "finetune":
            sections["finetune"] = p.finetune_data
        else:
            if "finetune" in overrides or any(k.startswith("finetune.") for k in overrides):
                raise ConfigError("finetune.*: reFT inherits the fine-tuning question from its parent")
            sections["finetune"] = inherited["finetune"]
    sections = apply_overrides(sections, overrides)
    if stage != "pretrain" and "train" in inherited:
        _check_lr_below_parent(stage, sections["train"].lr, inherited["train"].lr, parent, p.etas)
    return PCFGRun(stage, sections, preset, str(parent) if parent else None)


def _check_lr_below_parent(
    stage: str, lr: float, parent_lr: float, parent: str | Path, etas: Mapping[str, float]
) -> None:
    """Refuse a fine-tuning LR not below pretraining's, or a reFT LR not below fine-tuning's.

    The paper fine-tunes one to three decades below the pretraining rate (App. C.2: 1e-3, then
    1e-4 / 1e-5 / 1e-6) and reverse-fine-tunes below the fine-tuning rate (App. D); at or above
    its parent's rate a stage tests something else (docs/choices.md §34).
    """
    if lr < parent_lr:
        return
    parent_stage = "pretrain" if stage == "finetune" else "finetune"
    rule = ("fine-tuning must use a smaller learning rate than pretraining; the paper fine-tunes "
            "1-3 decades below it" if stage == "finetune" else
            "reFT must use a smaller learning rate than the fine-tuning it reverses, as in the "
            "paper")
    smaller = [name for name, value in etas.items() if value < parent_lr]
    pick = (f"--eta {smaller[0]} or " if smaller else "") + f"--train.lr={parent_lr / 10:g}"
    raise ConfigError(
        f"train.lr={lr:g} of this {stage} run is not below train.lr={parent_lr:g} of its parent "
        f"{parent_stage} run {parent}: {rule} (docs/choices.md §34); pick a smaller one, "
        f"e.g. {pick}"
    )
