"""PCFG runs for analysis: open a run or a pretrained / fine-tuned pair, draw its inputs.

The analysis tools (`wrapperlens.experiments.pcfg.analysis`) and notebooks start here:

    ft, pt = open_pair("runs/ft")                       # pt: the run "runs/ft" descends from
    inputs = question_inputs(ft, ft.question("a"), 64)  # "count a" prompts cut after <art>
    ft.model(inputs.tokens)[:, -1]                      # logits of the answer

Inputs. A fine-tuned (or reFT) run knows its fine-tuning question: family F (Counting), O_FT (b)
and O_PT (a). Every input here is a fresh batch of "F O" prompts, drawn from a stream of its own
(`analysis/<tool>`, seeded by the task seed) so that no tool fits on the evaluation sets, cut
just after the answer-request token `<art>`: the model's last position predicts the answer there.
A fraction C_Te of the strings carries the fine-tuning correlation (count(b) = count(a) + 1).

Models. The fine-tuned model is the run given; the pretrained model defaults to the run the
fine-tuning started from, found through the run's parent links (reFT → finetune → pretrain).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from tasks.config import FinetuneDataConfig
from tasks.data import PCFGTask, Question, TaskBatch
from wrapperlens.experiments.pcfg.stages import PCFGRun, answer_accuracy, load_run
from wrapperlens.experiments.pcfg.scratch_baseline import find_pretrain_run

__all__ = [
    "LoadedRun",
    "Inputs",
    "open_run",
    "open_pair",
    "open_pretrained",
    "require_finetune",
    "question_inputs",
    "accuracy_evaluator",
    "make_metric",
    "ft_answers",
]


# ------------------------------------------------------------------------------------ runs
@dataclass
class LoadedRun:
    """A run directory's configs and model."""

    path: Path
    run: PCFGRun
    model: HookedTransformer

    @property
    def task(self) -> PCFGTask:
        return self.run.task

    @property
    def finetune(self) -> FinetuneDataConfig | None:
        return self.run.finetune_data

    def question(self, operand: str | None = None) -> Question:
        """A question of the fine-tuning family (Counting for pretraining runs); default O_PT."""
        ft = self.finetune
        family = ft.family if ft else "C"
        default = ft.pretrain_operand if ft else "a"
        operand = operand or default
        self.task.terminal(operand)  # raises naming the terminals if unknown
        return Question(family, operand)


def open_run(path: str | Path) -> LoadedRun:
    """A run directory's configs and latest weights (the model in eval mode)."""
    run, model = load_run(path)
    return LoadedRun(Path(path), run, model)


def open_pair(
    run_dir: str | Path, pretrained: str | Path | None = None
) -> tuple[LoadedRun, LoadedRun]:
    """(fine-tuned, pretrained) runs; `pretrained` defaults to the run's pretraining ancestor."""
    ft = open_run(run_dir)
    if ft.run.stage == "pretrain":
        raise ValueError(
            f"{run_dir} is a pretraining run; a pair starts from a finetune or reft run "
            "(its pretrained model is found from it)"
        )
    return ft, open_pretrained(ft, pretrained)


def open_pretrained(ft: LoadedRun, pretrained: str | Path | None = None) -> LoadedRun:
    """The pretrained run of an open fine-tuned run: `pretrained`, or its pretraining ancestor;
    checked to share the fine-tuned model's architecture and vocabulary."""
    pt = open_run(pretrained if pretrained is not None else find_pretrain_run(ft.path))
    from wrapperlens.analysis.patching import check_same_architecture

    try:
        check_same_architecture(pt.model, ft.model)
    except ValueError as e:
        raise ValueError(f"{pt.path} vs {ft.path}: {e}") from None
    if pt.task.vocab != ft.task.vocab:
        raise ValueError(f"{pt.path} and {ft.path} use different vocabularies (task configs)")
    return pt


def require_finetune(loaded: LoadedRun, tool: str) -> FinetuneDataConfig:
    """The run's fine-tuning question; a pretraining run is an error naming `tool` and the run."""
    if loaded.finetune is None:
        raise ValueError(
            f"{tool} needs a finetune or reft run (it evaluates Acc O_PT / Acc O_FT); "
            f"{loaded.path} is a {loaded.run.stage!r} run"
        )
    return loaded.finetune


# ---------------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Model inputs cut after `<art>` and their answers (the model's last position predicts them).

    Attributes:
        tokens: `[n, pos]` prompt tokens up to and including `<art>`.
        answers: `[n]` the answer token of each prompt.
        batch: The full `TaskBatch` (labels, strings, correlation flags).
    """

    tokens: Tensor
    answers: Tensor
    batch: TaskBatch


def question_inputs(
    loaded: LoadedRun, question: Question, n: int, c_te: float = 0.0, stream: str = "analysis"
) -> Inputs:
    """`n` fresh prompts asking `question`; a fraction `c_te` carry the fine-tuning correlation."""
    if n < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n}")
    if not 0.0 <= c_te <= 1.0:
        raise ValueError(f"C_Te must be in [0, 1], got {c_te}")
    correlation = loaded.finetune
    if c_te > 0 and correlation is None:
        correlation = FinetuneDataConfig()  # a pretraining run: the paper's count(b) = count(a) + 1
    rng = loaded.task.step_rng(stream, 0)
    batch = loaded.task.question_batch(rng, n, question, correlation, c_te)
    col = batch.answer_col
    tokens = torch.from_numpy(batch.tokens[:, :col])
    return Inputs(tokens, torch.from_numpy(batch.tokens[:, col]), batch)


def accuracy_evaluator(loaded: LoadedRun, n: int | None = None):
    """`evaluate(model) -> {"acc/O_PT/cte0": ..., "acc/O_FT/cte1": ...}` on the run's test sets."""
    require_finetune(loaded, "this analysis")
    n = n or loaded.run.train_config.eval_samples
    sets = {
        name: loaded.task.eval_set(q, n, corr, c)
        for name, (q, corr, c) in loaded.run.eval_questions().items()
        if name.startswith(("acc/O_PT/", "acc/O_FT/"))
    }
    return lambda model: {name: answer_accuracy(model, b) for name, b in sets.items()}


def make_metric(kind: str, loaded: LoadedRun, inputs: Inputs):
    """The patching metric: "prob" of the correct answer, or "logit_diff": the correct answer's
    logit minus the O_FT answer's (`ft_answers`)."""
    from wrapperlens.analysis.logit_metrics import answer_probability, logit_difference

    if kind == "prob":
        return answer_probability(inputs.answers)
    if kind == "logit_diff":
        return logit_difference(inputs.answers, ft_answers(loaded, inputs))
    raise ValueError(f"metric must be 'prob' or 'logit_diff', got {kind!r}")


def ft_answers(loaded: LoadedRun, inputs: Inputs) -> Tensor:
    """The O_FT answer token of each string (the competing answer of a logit difference)."""
    ft = require_finetune(loaded, "metric 'logit_diff'")
    question = Question(ft.family, ft.operand, label_operand=ft.label_of)
    labels = loaded.task.labels(inputs.batch.text, question)
    tokens = loaded.task.encode(inputs.batch.text, question, labels)
    return torch.from_numpy(tokens[:, inputs.batch.answer_col])
