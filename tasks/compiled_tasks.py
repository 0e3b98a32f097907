"""The fine-tuning data of the paper's compiled models (§4, App. B.1): Counter and Max-identifier.

A compiled model computes its program's answer at every position; the experiments read it at the
last one (docs/choices.md#tracr-read-out-and-fine-tuning-loss). Two programs, each with a
pretraining operand O_PT (what the model is compiled for) and a fine-tuning operand O_FT:

| program | input | O_PT | O_FT | spurious correlation (q = 1) |
|---|---|---|---|---|
| `counter` | `length` letters from a-i, with replacement | count `a` | count `b` | count(b) = count(a) + q |
| `max_identifier` | `length` distinct letters from a-z | 5th largest | 6th largest | the O_FT-th largest letter is q letters after the O_PT-th |

"Largest" follows the paper's order a > b > c > ..., so the k-th largest is the k-th letter in
alphabetical order. Max-identifier's O_FT is not stated by the paper; the 6th largest makes the
q = 1 value offset of its example a property of the input's two neighbouring order statistics
(docs/choices.md#max-identifier-o_ft).

A batch is `(letters, correlated)`: letter indices into `vocab` ([n, length]) and which rows carry
the correlation. A row marked correlated always does, and an unmarked row never does (chance
correlations are redrawn), so C_Tr and C_Te are exact fractions (as the PCFG sets,
docs/choices.md#the-test-sets-of-fine-tuning-and-reft). `answers` gives each row's answer by brute
force. Batch t of a stream is a function of (task seed, stream, seed, t) alone, as the PCFG streams
(docs/choices.md#seeds-per-stage).

This module imports nothing of wrapperlens.
"""

from __future__ import annotations

import string
import zlib
from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Int

from tasks.rasp.compiler import compile_program
from tasks.rasp.description import CompiledProgram
from tasks.rasp.expr import SOp
from tasks.rasp.programs import counter, counter_alg1, max_identifier

__all__ = ["PROGRAMS", "CompiledTaskConfig", "CompiledTask"]

#: Program -> (vocabulary, default length, default O_PT, default O_FT), paper App. B.1 and
#: docs/choices.md#tracr-input-lengths, docs/choices.md#max-identifier-o_ft.
PROGRAMS = {
    "counter": (tuple("abcdefghi"), 48, "a", "b"),
    "max_identifier": (tuple(string.ascii_lowercase), 10, "5", "6"),
}
_MAX_REDRAWS = 200
#: The Counter's two programs (`CompiledTaskConfig.counter_form`).
COUNTER_FORMS = {"one_block": counter, "alg1": counter_alg1}


@dataclass(frozen=True)
class CompiledTaskConfig:
    """Which program, on which inputs, with which two operands.

    Attributes:
        program: "counter" or "max_identifier".
        length: Letters per input (the compiled model's maximum length). 0: the paper's (Counter
            48, Max-identifier 10; docs/choices.md#tracr-input-lengths).
        pretrain_operand: O_PT: the counted letter (Counter) or the rank (Max-identifier, "5").
            "": the paper's.
        finetune_operand: O_FT: "b" (Counter) or "6" (Max-identifier). "": the paper's.
        counter_form: The Counter's program: "one_block" (`tasks.rasp.counter`: one
            `SelectorWidth` over the tokens, one block) or "alg1" (`tasks.rasp.counter_alg1`: the
            paper's Alg. 1, a map, the width and the final identity Aggregate, three blocks).
            The same answers on every input; the counting head is block 0's or block 1's.
        q: The correlation's offset (count(b) - count(a), or the letter distance of the O_FT-th
            largest from the O_PT-th).
        seed: Seed of the training streams (with each stage's `train.seed`).
        eval_seed: Seed of the fixed evaluation sets.
    """

    program: str = "counter"
    length: int = 0
    pretrain_operand: str = ""
    finetune_operand: str = ""
    counter_form: str = "one_block"
    q: int = 1
    seed: int = 0
    eval_seed: int = 1234

    def __post_init__(self) -> None:
        if self.program not in PROGRAMS:
            raise ValueError(f"task.program={self.program!r}: programs are {', '.join(PROGRAMS)}")
        vocab = PROGRAMS[self.program][0]
        if self.length < 0 or (self.program == "max_identifier" and self.length > len(vocab)):
            raise ValueError(f"task.length={self.length}: must be 0 (the paper's) or 1.."
                             f"{len(vocab) if self.program == 'max_identifier' else 'any'}")
        ops = (self.o_pt, self.o_ft)
        if ops[0] == ops[1]:
            raise ValueError(f"task.pretrain_operand and task.finetune_operand must differ, "
                             f"both are {ops[0]!r}")
        for key, op in zip(("pretrain_operand", "finetune_operand"), ops):
            if self.program == "counter" and op not in vocab:
                raise ValueError(f"task.{key}={op!r}: the Counter counts one of {''.join(vocab)}")
            if self.program == "max_identifier" and not (op.isdigit() and
                                                         1 <= int(op) <= self.n_letters):
                raise ValueError(f"task.{key}={op!r}: a rank 1..{self.n_letters} (the k-th "
                                 f"largest of {self.n_letters} letters)")
        if self.counter_form not in COUNTER_FORMS:
            raise ValueError(f"task.counter_form={self.counter_form!r}: expected one of "
                             f"{', '.join(COUNTER_FORMS)}")
        if self.counter_form != "one_block" and self.program != "counter":
            raise ValueError(f"task.counter_form={self.counter_form!r} is for the Counter; "
                             f"task.program={self.program!r}")
        if self.q < 1:
            raise ValueError(f"task.q={self.q} must be >= 1")

    @property
    def n_letters(self) -> int:
        """Letters per input (`length`, or the program's default)."""
        return self.length or PROGRAMS[self.program][1]

    @property
    def o_pt(self) -> str:
        return self.pretrain_operand or PROGRAMS[self.program][2]

    @property
    def o_ft(self) -> str:
        return self.finetune_operand or PROGRAMS[self.program][3]


def _stable_seed(*parts: object) -> list[int]:
    # tasks.data's rule (crc32 of strings), kept here so this module does not import torch
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


class CompiledTask:
    """Programs, compiled models' descriptions and data of one `CompiledTaskConfig`."""

    def __init__(self, config: CompiledTaskConfig) -> None:
        self.config = config
        self.vocab: tuple[str, ...] = PROGRAMS[config.program][0]
        self.length = config.n_letters

    # ------------------------------------------------------------------------------ programs
    def program(self, operand: str) -> SOp:
        """The RASP program for `operand` (count that letter, or find that rank)."""
        if self.config.program == "counter":
            return COUNTER_FORMS[self.config.counter_form](operand)
        return max_identifier(int(operand))

    def compile(self, operand: str, scale: float = 1000.0,
                mlp_slope: float | None = None) -> CompiledProgram:
        """The compiled program for `operand`, for inputs of up to `length` letters (gains as
        `tasks.rasp.compile_program`; the defaults are exact)."""
        return compile_program(self.program(operand), list(self.vocab), self.length, scale=scale,
                               mlp_slope=mlp_slope)

    def answers(self, letters: Int[np.ndarray, "n length"], operand: str) -> np.ndarray:
        """Each row's answer for `operand`, by brute force: a count, or a letter."""
        if self.config.program == "counter":
            return (letters == self.vocab.index(operand)).sum(axis=1)
        kth = np.sort(letters, axis=1)[:, int(operand) - 1]
        return np.array(self.vocab)[kth]

    def is_correlated(self, letters: Int[np.ndarray, "n length"]) -> Bool[np.ndarray, " n"]:
        """Rows whose O_FT answer is their O_PT answer + q (count, or letter distance)."""
        c = self.config
        if c.program == "counter":
            return self.answers(letters, c.o_ft) == self.answers(letters, c.o_pt) + c.q
        ordered = np.sort(letters, axis=1)
        return ordered[:, int(c.o_ft) - 1] - ordered[:, int(c.o_pt) - 1] == c.q

    # ---------------------------------------------------------------------------------- data
    def _draw(self, rng: np.random.Generator, n: int) -> Int[np.ndarray, "n length"]:
        if self.config.program == "counter":
            return rng.integers(0, len(self.vocab), size=(n, self.length))
        # distinct letters: the first `length` of a random permutation of the alphabet
        return np.argsort(rng.random((n, len(self.vocab))), axis=1)[:, : self.length]

    def _inject_count(self, rng: np.random.Generator,
                      letters: Int[np.ndarray, "n length"]) -> np.ndarray:
        """Edit each row so that count(O_FT) = count(O_PT) + q: surplus O_FT letters become other
        letters, missing ones replace letters that are neither operand (random positions)."""
        a, b = self.vocab.index(self.config.o_pt), self.vocab.index(self.config.o_ft)
        others = np.array([i for i in range(len(self.vocab)) if i not in (a, b)])
        x = letters.copy()
        need = (x == a).sum(axis=1) + self.config.q
        keys = rng.random(x.shape)

        def rank_among(eligible: np.ndarray) -> np.ndarray:
            order = np.argsort(np.where(eligible, keys, np.inf), axis=1)
            return np.argsort(order, axis=1)  # 0 for the eligible position of smallest key, ...

        is_b = x == b
        surplus = is_b & (rank_among(is_b) >= need[:, None])
        x[surplus] = others[rng.integers(0, len(others), size=int(surplus.sum()))]
        missing = need - (x == b).sum(axis=1)
        free = (x != a) & (x != b)
        x[free & (rank_among(free) < missing[:, None])] = b
        return x

    def sample(self, rng: np.random.Generator,
               correlated: Bool[np.ndarray, " n"]) -> Int[np.ndarray, "n length"]:
        """One input per entry of `correlated`: carrying the correlation where True, never where
        False.

        Raises:
            RuntimeError: the correlation cannot be met (e.g. q too large for the length).
        """
        correlated = np.asarray(correlated, dtype=bool)
        x = self._draw(rng, len(correlated))
        if self.config.program == "counter":
            x[correlated] = self._inject_count(rng, x[correlated])
        for _ in range(_MAX_REDRAWS):
            wrong = self.is_correlated(x) != correlated
            if not wrong.any():
                return x
            fresh = self._draw(rng, int(wrong.sum()))
            if self.config.program == "counter":
                fresh[correlated[wrong]] = self._inject_count(rng, fresh[correlated[wrong]])
            x[wrong] = fresh
        raise RuntimeError(f"{self.config.program}: could not draw inputs with the correlation "
                           f"(q={self.config.q}, length {self.length}) in {_MAX_REDRAWS} draws")

    def batch(self, rng: np.random.Generator, n: int,
              c: float) -> tuple[np.ndarray, np.ndarray]:
        """`n` inputs, the first round(c * n) correlated (a fixed fraction, not a draw)."""
        correlated = np.arange(n) < round(c * n)
        return self.sample(rng, correlated), correlated

    def natural(self, rng: np.random.Generator, n: int) -> Int[np.ndarray, "n length"]:
        """`n` inputs as drawn (a chance correlation kept): the data of reFT and Scr.+FT."""
        return self._draw(rng, n)

    def step_rng(self, stream: str, step: int, seed: int = 0) -> np.random.Generator:
        """The generator of batch `step` of a named stream (as `tasks.data.PCFGTask.step_rng`)."""
        return np.random.default_rng(_stable_seed(self.config.seed, f"{stream}/seed={seed}", step))

    def eval_rng(self, name: str, n: int) -> np.random.Generator:
        """The generator of a fixed evaluation set."""
        return np.random.default_rng(_stable_seed(self.config.eval_seed, name, n))
