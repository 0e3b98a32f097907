"""PCFG task batches: pretraining mixtures, single questions, fine-tuning data with C_Tr.

`PCFGTask` turns grammar windows into token sequences

    <sos> TASK OPERAND O' <sot> t_1 ... t_L <eot> <art> ANSWER <eos>

and is the one place that knows this layout. Every batch is drawn from a numpy Generator seeded
with `(seed, stream, step)`, so batch t of a stream is the same whatever happened before it: a
resumed run sees exactly the data an uninterrupted run would, with no data-loader state to save.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from collections.abc import Iterator

import numpy as np
import torch

from tasks.config import FinetuneDataConfig, PCFGTaskConfig, parse_alias, parse_prior
from tasks.correlation import has_correlation, inject_count_correlation, inject_index_correlation
from tasks.families import FAMILIES, NO_OCCURRENCE
from tasks.grammar import Grammar, paper_grammar
from tasks.pcfg_sampler import sample_windows
from tasks.vocab import ART, EOS, EOT, NO_ANSWER, NULL_OPERAND, SOS, SOT, Vocabulary

__all__ = ["TaskBatch", "Question", "PCFGTask", "PCFGStream", "freeze"]

# Column of each part of a sequence (text starts at TEXT_START).
TASK_COL, OPERAND_COL, OPRIME_COL, TEXT_START = 1, 2, 3, 5


@dataclass(frozen=True)
class Question:
    """One (task token, operand) question, e.g. "count a" = Question("C", "a").

    Attributes:
        family: Task family (C, CC, I, IC, T).
        operand: Operand in the prompt; None for T.
        token: Task token in the prompt; None means the family's own token (aliases differ).
        label_operand: Operand whose answer is the label; None means `operand` (randFT differs).
    """

    family: str
    operand: str | None = None
    token: str | None = None
    label_operand: str | None = None

    @property
    def name(self) -> str:
        name = f"{self.token or self.family}_{self.operand or NULL_OPERAND}"
        if self.label_operand and self.label_operand != self.operand:
            name += f"->{self.label_operand}"
        return name


@dataclass
class TaskBatch:
    """A batch of PCFG sequences.

    Attributes:
        tokens: `[batch, seq]` token ids of the full sequences (answer and `<eos>` included).
        labels: `[batch]` raw labels (a number, a terminal id, or -1 for "no occurrence").
        correlated: `[batch]` whether each string carries the fine-tuning correlation.
        text: `[batch, L]` the strings as terminal ids (indices into `grammar.terminals`).
    """

    tokens: np.ndarray
    labels: np.ndarray
    correlated: np.ndarray
    text: np.ndarray

    @property
    def answer_col(self) -> int:
        """Column of the answer token; the model predicts it at column `answer_col - 1` (<art>)."""
        return self.tokens.shape[1] - 2

    @property
    def answers(self) -> np.ndarray:
        return self.tokens[:, self.answer_col]

    def __len__(self) -> int:
        return len(self.tokens)

    @staticmethod
    def concat(batches: list["TaskBatch"]) -> "TaskBatch":
        return TaskBatch(
            np.concatenate([b.tokens for b in batches]),
            np.concatenate([b.labels for b in batches]),
            np.concatenate([b.correlated for b in batches]),
            np.concatenate([b.text for b in batches]),
        )


def _stable_seed(*parts: object) -> list[int]:
    """Seed material from ints and strings, stable across processes (unlike `hash`)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


class PCFGTask:
    """The PCFG task suite of one grammar and task config.

    Args:
        config: Lengths, windows, families, prior and seeds.
        grammar: Defaults to the paper's grammar (paper Fig. 14).
    """

    def __init__(self, config: PCFGTaskConfig, grammar: Grammar | None = None):
        self.config = config
        self.grammar = grammar if grammar is not None else paper_grammar()
        terminals = tuple(self.grammar.terminals)
        self.vocab = Vocabulary.build(terminals, config.task_tokens, max_number=config.text_length)
        self.prior = parse_prior(config.prior, terminals)
        self._terminal_ids = self.vocab.ids(terminals)
        # The pretraining mixture: every family with every operand, and every alias with its own.
        self.pretrain_tokens: list[tuple[str, str, tuple[str, ...]]] = [
            (f, f, terminals if FAMILIES[f].takes_operand else ()) for f in config.families
        ] + [parse_alias(a) for a in config.aliases]
        for token, family, ops in self.pretrain_tokens:
            unknown = [o for o in ops if o not in terminals]
            if unknown:
                raise ValueError(f"task.aliases: {token}: operands {unknown} are not terminals")
            if FAMILIES[family].takes_operand and sum(self.prior[o] for o in ops) <= 0:
                raise ValueError(f"task token {token!r}: the prior gives its operands {ops} weight 0")

    # ----------------------------------------------------------------------------------- layout
    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    @property
    def n_ctx(self) -> int:
        """Model context: the sequence minus its last token (nothing is predicted after <eos>)."""
        return self.seq_len - 1

    @property
    def answer_col(self) -> int:
        return self.seq_len - 2

    @property
    def terminals(self) -> tuple[str, ...]:
        return tuple(self.grammar.terminals)

    def terminal(self, name: str) -> int:
        """Terminal id (index into grammar.terminals) of a terminal name."""
        try:
            return self.terminals.index(name)
        except ValueError:
            raise ValueError(f"{name!r} is not a terminal of the grammar {self.terminals}") from None

    def sample_text(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`[n, L]` terminal ids: random windows of concatenated derivations."""
        return sample_windows(self.grammar, rng, n, self.config.text_length)

    def encode(self, text: np.ndarray, question: Question, labels: np.ndarray) -> np.ndarray:
        """Token ids `[n, seq]` for strings `text` asked `question` with raw `labels`."""
        family = FAMILIES[question.family]
        n, length = text.shape
        tokens = np.empty((n, length + 9), dtype=np.int64)
        v = self.vocab
        tokens[:, 0] = v.id(SOS)
        tokens[:, TASK_COL] = v.id(question.token or question.family)
        tokens[:, OPERAND_COL] = v.id(question.operand if family.takes_operand else NULL_OPERAND)
        tokens[:, OPRIME_COL] = v.number(self.config.o_prime(question.family))
        tokens[:, 4] = v.id(SOT)
        tokens[:, TEXT_START : TEXT_START + length] = self._terminal_ids[text]
        tokens[:, -4] = v.id(EOT)
        tokens[:, -3] = v.id(ART)
        if family.answer_kind == "terminal":
            tokens[:, -2] = self._terminal_ids[labels]
        else:
            numbers = v.number(0) + np.clip(labels, 0, None)
            tokens[:, -2] = np.where(labels == NO_OCCURRENCE, v.id(NO_ANSWER), numbers)
        tokens[:, -1] = v.id(EOS)
        return tokens

    def labels(self, text: np.ndarray, question: Question) -> np.ndarray:
        family = FAMILIES[question.family]
        operand = question.label_operand or question.operand
        op_id = self.terminal(operand) if family.takes_operand else None
        return family.labels(text, op_id, self.config.o_prime(question.family))

    # ---------------------------------------------------------------------------------- batches
    def question_batch(
        self,
        rng: np.random.Generator,
        n: int,
        question: Question,
        correlation: FinetuneDataConfig | None = None,
        c: float = 0.0,
    ) -> TaskBatch:
        """`n` strings asked one question; a fraction `c` edited to carry `correlation`.

        Args:
            rng: Randomness for strings and edits.
            n: Batch size.
            question: What is asked and which operand's answer is the label.
            correlation: The fine-tuning correlation (family, operands, q, uncorrelated mode);
                needed when c > 0 or when chance correlations are excluded
                (`correlation.resolved_uncorrelated == "exclude"`).
            c: C_Tr (training) or C_Te (test): probability that a string is edited to carry it.
        """
        text = self.sample_text(rng, n)
        correlated = rng.random(n) < c if c > 0 else np.zeros(n, dtype=bool)
        if correlation is not None:
            text = self._apply_correlation(rng, text, correlated, correlation)
        labels = self.labels(text, question)
        if correlation is not None:
            ft = correlation
            correlated = has_correlation(
                text, ft.family, self.terminal(ft.pretrain_operand), self.terminal(ft.label_of),
                self.config.o_prime(ft.family), ft.q,
            )
        return TaskBatch(self.encode(text, question, labels), labels, correlated, text)

    def _apply_correlation(
        self, rng: np.random.Generator, text: np.ndarray, want: np.ndarray, ft: FinetuneDataConfig
    ) -> np.ndarray:
        o_pt, o_ft, filler = (self.terminal(x) for x in (ft.pretrain_operand, ft.label_of, ft.filler))
        o_prime = self.config.o_prime(ft.family)
        text = text.copy()
        for _ in range(1000):  # rows that cannot be edited (or must be excluded) are redrawn
            if ft.family == "C" and want.any():
                text[want] = inject_count_correlation(text[want], o_pt, o_ft, filler, o_prime, ft.q, rng)
                redo = np.zeros(len(text), dtype=bool)
            elif ft.family == "I" and want.any():
                edited, ok = inject_index_correlation(text[want], o_pt, o_ft, filler, o_prime, ft.q, rng)
                text[want] = edited
                redo = np.zeros(len(text), dtype=bool)
                redo[np.flatnonzero(want)[~ok]] = True
            else:
                redo = np.zeros(len(text), dtype=bool)
            if ft.resolved_uncorrelated == "exclude":
                carries = has_correlation(text, ft.family, o_pt, o_ft, o_prime, ft.q)
                redo |= ~want & carries
            if not redo.any():
                return text
            text[redo] = self.sample_text(rng, int(redo.sum()))
        raise RuntimeError("could not draw strings satisfying the correlation constraint in 1000 tries")

    def pretrain_batch(self, rng: np.random.Generator, n: int) -> TaskBatch:
        """The pretraining mixture: a task token uniformly, then its operand from the prior."""
        text = self.sample_text(rng, n)
        which = rng.integers(len(self.pretrain_tokens), size=n)
        u = rng.random(n)
        tokens = np.empty((n, self.seq_len), dtype=np.int64)
        labels = np.empty(n, dtype=np.int64)
        for t, (token, family, ops) in enumerate(self.pretrain_tokens):
            rows = np.flatnonzero(which == t)
            if not len(rows):
                continue
            if not FAMILIES[family].takes_operand:
                groups = [(None, rows)]
            else:
                weights = np.array([self.prior[o] for o in ops])
                cum = np.cumsum(weights / weights.sum())
                pick = np.minimum(np.searchsorted(cum, u[rows], side="right"), len(ops) - 1)
                groups = [(ops[i], rows[pick == i]) for i in range(len(ops))]
            for operand, sub in groups:
                if len(sub):
                    question = Question(family, operand, token=token)
                    labels[sub] = self.labels(text[sub], question)
                    tokens[sub] = self.encode(text[sub], question, labels[sub])
        return TaskBatch(tokens, labels, np.zeros(n, dtype=bool), text)

    def finetune_batch(self, rng: np.random.Generator, n: int, ft: FinetuneDataConfig) -> TaskBatch:
        """Fine-tuning data: the question (ft.family, ft.operand) labelled with ft.label_of, a
        fraction C_Tr correlated, and a fraction `pretrain_mix` of pretraining samples (E.1)."""
        n_mix = int(rng.binomial(n, ft.pretrain_mix)) if ft.pretrain_mix > 0 else 0
        question = Question(ft.family, ft.operand, label_operand=ft.label_of)
        batch = self.question_batch(rng, n - n_mix, question, ft, ft.resolved_c_tr)
        if n_mix:
            batch = TaskBatch.concat([batch, self.pretrain_batch(rng, n_mix)])
        return batch

    # ------------------------------------------------------------------------------- streams
    def step_rng(self, stream: str, step: int, seed: int = 0) -> np.random.Generator:
        """The generator of batch `step` of a named stream: a function of (task seed, stream,
        `seed`, step) only (docs/choices.md#seeds-per-stage).

        `seed` (a stage's `train.seed`) gives one task several data orders; seed 0 is the stream
        as it was before `seed` existed. It is folded into the stream's name rather than added
        as a fourth seed word: numpy's SeedSequence pads short entropy with zeros, so
        (s, name, seed, 0) would be the same generator as (s, name, seed) of another step.
        """
        name = stream if seed == 0 else f"{stream}/seed={seed}"
        return np.random.default_rng(_stable_seed(self.config.seed, name, step))

    def eval_set(
        self, question: Question, n: int, correlation: FinetuneDataConfig | None = None, c: float = 0.0
    ) -> TaskBatch:
        """A fixed evaluation set (seeded by `eval_seed` and the question, C_Te = c)."""
        rng = np.random.default_rng(
            _stable_seed(self.config.eval_seed, question.name, round(c * 1000), n)
        )
        return self.question_batch(rng, n, question, correlation, c)


class PCFGStream(torch.utils.data.IterableDataset):
    """An endless stream of batches, generated on the fly (use with `DataLoader(batch_size=None)`).

    Args:
        task: The task suite.
        batch_size: Samples per batch.
        finetune: If given, fine-tuning batches (one question, C_Tr, pretraining mix).
        question: If given (and no `finetune`), natural strings all asked this question (the
            reverse fine-tuning data). With neither, the pretraining mixture.
        start_step: First step to yield (a resumed run starts where it stopped).
        stream: Name mixed into the seed, so two streams of one task differ.
        seed: Mixed into the seed too (a stage's `train.seed`; `PCFGTask.step_rng`).
    """

    def __init__(
        self,
        task: PCFGTask,
        batch_size: int,
        finetune: FinetuneDataConfig | None = None,
        question: Question | None = None,
        start_step: int = 0,
        stream: str = "train",
        seed: int = 0,
    ):
        super().__init__()
        if finetune is not None and question is not None:
            raise ValueError("PCFGStream takes a fine-tuning config or a question, not both")
        self.task, self.batch_size = task, batch_size
        self.finetune, self.question = finetune, question
        self.start_step, self.stream, self.seed = start_step, stream, seed

    def batch(self, step: int) -> TaskBatch:
        """Batch number `step`: a function of the task seed, the stream name, `seed` and `step`
        only."""
        rng = self.task.step_rng(self.stream, step, self.seed)
        if self.finetune is not None:
            return self.task.finetune_batch(rng, self.batch_size, self.finetune)
        if self.question is not None:
            return self.task.question_batch(rng, self.batch_size, self.question)
        return self.task.pretrain_batch(rng, self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        step = self.start_step
        while True:
            b = self.batch(step)
            yield {"tokens": torch.from_numpy(b.tokens), "labels": torch.from_numpy(b.labels)}
            step += 1


def freeze(batch: TaskBatch, vocab: Vocabulary):
    """A fixed-size `datasets.Dataset` of a batch (columns tokens, labels, correlated, text)."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "tokens": batch.tokens.tolist(),
            "labels": batch.labels.tolist(),
            "correlated": batch.correlated.tolist(),
            "text": [vocab.decode(row) for row in batch.tokens],
        }
    )
