"""Frozen, validated configs of the PCFG data: what pretraining and fine-tuning strings look like.

Configs hold only JSON-friendly values (str, int, float, bool, tuples of str), so that they are
written beside every artifact and overridden on the command line as `--task.key=value`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tasks.families import FAMILIES

__all__ = ["PRIORS", "PCFGTaskConfig", "FinetuneDataConfig", "parse_prior", "parse_alias"]

#: The paper's operand priors P_T(a, b, c) (paper App. C.2); "L"/"M"/"H" are the low / medium / high
#: prior of sampling the fine-tuning operand b in pretraining.
PRIORS: dict[str, dict[str, float]] = {
    "L": {"a": 0.999, "b": 0.001, "c": 0.0},
    "M": {"a": 0.9, "b": 0.1, "c": 0.0},
    "H": {"a": 0.5, "b": 0.3, "c": 0.2},
}


def parse_prior(prior: str, terminals: tuple[str, ...]) -> dict[str, float]:
    """A named prior ("L", "M", "H") or a custom one written "a=0.7,b=0.2,c=0.1".

    Raises:
        ValueError: unknown name or operand, negative weight, or weights not summing to 1.
    """
    if prior in PRIORS:
        weights = dict(PRIORS[prior])
    else:
        weights = {}
        for part in prior.split(","):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(
                    f"task.prior={prior!r}: expected one of {sorted(PRIORS)} or 'a=0.7,b=0.2,c=0.1'"
                )
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"task.prior: weight {value!r} of {name.strip()!r} is not a number") from None
    unknown = sorted(set(weights) - set(terminals))
    if unknown:
        raise ValueError(f"task.prior: operands {unknown} are not terminals of the grammar {terminals}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"task.prior: negative weight in {weights}")
    if abs(sum(weights.values()) - 1.0) > 1e-6:
        raise ValueError(f"task.prior: weights {weights} sum to {sum(weights.values())}, not 1")
    return {t: weights.get(t, 0.0) for t in terminals}


def parse_alias(alias: str) -> tuple[str, str, tuple[str, ...]]:
    """Parse an extra task token "TOKEN=FAMILY:op1+op2" (the synthetic jailbreak, paper App. E.2).

    Returns (token, family, operands). Example: "J1=C:a" is a second Counting token that
    pretraining pairs only with operand a.
    """
    token, sep, rest = alias.partition("=")
    family, sep2, ops = rest.partition(":")
    if not (sep and sep2 and token and family and ops):
        raise ValueError(f"task.aliases: {alias!r} is not of the form 'TOKEN=FAMILY:op1+op2'")
    if family not in FAMILIES:
        raise ValueError(f"task.aliases: {alias!r} names unknown family {family!r}")
    return token, family, tuple(ops.split("+"))


#: Longest string window: the vocabulary has a token per number up to L and the model a position
#: per token, so a corrupted L (1e9) is refused before anything that size is built (paper: 250).
MAX_TEXT_LENGTH = 2**16


@dataclass(frozen=True)
class PCFGTaskConfig:
    """The pretraining data: strings, task families and operand prior.

    Attributes:
        text_length: L, the length of each string window (paper 250).
        count_window: O' of C and CC, the window the count is taken in (paper 40).
        index_occurrence: O' of I, which occurrence from the end is indexed (paper 6).
        pair_index_occurrence: O' of IC (paper 6; smaller at short L, where six `aa` pairs
            rarely occur).
        token_offset: O' of T, how far before `<eot>` the token is read (paper 40).
        families: Task families used in pretraining, drawn uniformly.
        prior: Operand prior: "L", "M", "H" or "a=...,b=...,c=...".
        aliases: Extra task tokens, each "TOKEN=FAMILY:ops" (synthetic jailbreak); drawn as
            often as each family, with the operand drawn from the prior restricted to `ops`.
        grammar: "paper" (the only built-in; custom grammars are passed in Python).
        seed: Seed of the training data streams: batch t of a stage is drawn from
            (seed, stage, train.seed, t) (docs/choices.md#seeds-per-stage), so a fine-tuning run,
            which keeps its parent's task, varies its data with `train.seed`.
        eval_seed: Seed of the fixed evaluation sets.
    """

    text_length: int = 250
    count_window: int = 40
    index_occurrence: int = 6
    pair_index_occurrence: int = 6
    token_offset: int = 40
    families: tuple[str, ...] = ("C", "CC", "I", "IC", "T")
    prior: str = "H"
    aliases: tuple[str, ...] = ()
    grammar: str = "paper"
    seed: int = 0
    eval_seed: int = 12345

    def __post_init__(self) -> None:
        if not 2 <= self.text_length <= MAX_TEXT_LENGTH:
            raise ValueError(f"task.text_length must be in [2, {MAX_TEXT_LENGTH}], "
                             f"got {self.text_length}")
        for name in ("count_window", "index_occurrence", "pair_index_occurrence", "token_offset"):
            value = getattr(self, name)
            if not 1 <= value <= self.text_length:
                raise ValueError(
                    f"task.{name}={value} must be in [1, task.text_length={self.text_length}]"
                )
        if not self.families:
            raise ValueError("task.families is empty")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"task.families: unknown families {unknown}; known: {list(FAMILIES)}")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"task.families has duplicates: {self.families}")
        tokens = set(self.families)
        for alias in self.aliases:
            token, _, _ = parse_alias(alias)
            if token in tokens or token in FAMILIES:
                raise ValueError(f"task.aliases: token {token!r} is already a task token")
            tokens.add(token)
        if self.grammar != "paper":
            raise ValueError(f"task.grammar={self.grammar!r}: only 'paper' is built in")
        if self.prior not in PRIORS and "=" not in self.prior:
            raise ValueError(f"task.prior={self.prior!r}: expected one of {sorted(PRIORS)} or 'a=..,b=..'")

    @property
    def task_tokens(self) -> tuple[str, ...]:
        """Every task-family token: all five families (so a vocabulary is shared by all runs of
        one grammar) followed by the aliases."""
        return tuple(FAMILIES) + tuple(parse_alias(a)[0] for a in self.aliases)

    def o_prime(self, family: str) -> int:
        """The O' value of a family (its window, occurrence number or offset)."""
        return getattr(self, FAMILIES[family].parameter)

    @property
    def seq_len(self) -> int:
        """Tokens in a full sequence: <sos> T O O' <sot> text <eot> <art> answer <eos>."""
        return self.text_length + 9


@dataclass(frozen=True)
class FinetuneDataConfig:
    """The fine-tuning data: one (task token, operand) question, optionally spuriously correlated.

    Two fields default to "decided by the question" (None / ""), so that the default follows
    `label_operand` wherever it is set, through overrides and `dataclasses.replace` alike (a
    resolved value stored in the field would be copied by them): `resolved_c_tr` and
    `resolved_uncorrelated` are what the data uses.

    Attributes:
        family: Fine-tuned task family; "C" (Counter) or "I" (Indexer) in the paper.
        operand: O_FT, the operand in the prompt (paper: b).
        label_operand: Whose answer is the label; "" means `operand`. randFT (paper App. E.4) asks
            for the count of a and trains on the count of b: operand="a", label_operand="b".
            randFT data carries no correlation (docs/choices.md#randft-labels).
        pretrain_operand: O_PT, the operand the correlation ties the label to (paper: a).
        c_tr: Fraction of training strings edited to carry the correlation (C_Tr). None: 1.0,
            or 0.0 for randFT. randFT refuses any other value: with the correlation every
            randFT label would be count(a) + q, a constant offset of the prompt's own answer.
        q: The correlation offset: count(b) = count(a) + q, or index(b) - index(a) = q.
        uncorrelated: What the other strings are: "natural" (sampled as is; about 18% carry
            the Counter correlation by chance, docs/choices.md#chance-correlations-at-c_tr-0) or
            "exclude" (rejected if they do). "": "natural", or "exclude" for randFT.
        pretrain_mix: Fraction of each batch drawn from the pretraining distribution (E.1).
        filler: The terminal used to add or remove O_FT tokens when injecting the correlation.
    """

    family: str = "C"
    operand: str = "b"
    label_operand: str = ""
    pretrain_operand: str = "a"
    c_tr: Optional[float] = None  # not `float | None`: config coercion knows typing.Union only
    q: int = 1
    uncorrelated: str = ""
    pretrain_mix: float = 0.0
    filler: str = "c"

    def __post_init__(self) -> None:
        if self.family not in ("C", "I"):
            raise ValueError(f"finetune.family={self.family!r}: fine-tuning tasks are 'C' and 'I'")
        if self.c_tr is not None and not 0.0 <= self.c_tr <= 1.0:
            raise ValueError(f"finetune.c_tr={self.c_tr} must be in [0, 1]")
        if not 0.0 <= self.pretrain_mix < 1.0:
            raise ValueError(f"finetune.pretrain_mix={self.pretrain_mix} must be in [0, 1)")
        if self.uncorrelated not in ("", "natural", "exclude"):
            raise ValueError(
                f"finetune.uncorrelated={self.uncorrelated!r}: expected 'natural' or 'exclude'"
            )
        if len({self.label_of, self.pretrain_operand, self.filler}) != 3:
            raise ValueError(
                "the fine-tuning label operand (finetune.label_operand or finetune.operand), "
                "finetune.pretrain_operand and finetune.filler must differ, got "
                f"{self.label_of!r}, {self.pretrain_operand!r}, {self.filler!r}"
            )
        if self.randft and self.c_tr:
            raise ValueError(
                f"finetune.c_tr={self.c_tr} with finetune.label_operand={self.label_operand!r} "
                f"!= finetune.operand={self.operand!r} (randFT): correlated strings would make "
                f"every label count({self.pretrain_operand}) + {self.q}, an offset of the "
                "prompt's own answer; randFT trains on uncorrelated labels (leave finetune.c_tr "
                "unset or 0; docs/choices.md#randft-labels)"
            )
        if self.family == "C" and self.q < 0:
            raise ValueError(f"finetune.q={self.q} must be >= 0 for the Counter")
        if self.family == "I" and self.q < 1:
            raise ValueError(f"finetune.q={self.q} must be >= 1 for the Indexer")

    @property
    def label_of(self) -> str:
        """The operand whose answer is the label."""
        return self.label_operand or self.operand

    @property
    def randft(self) -> bool:
        """Whether the label answers another operand's question than the prompt (App. E.4)."""
        return self.label_of != self.operand

    @property
    def resolved_c_tr(self) -> float:
        """C_Tr as the data uses it: `c_tr`, else 1.0 (0.0 for randFT)."""
        if self.c_tr is not None:
            return float(self.c_tr)
        return 0.0 if self.randft else 1.0

    @property
    def resolved_uncorrelated(self) -> str:
        """`uncorrelated` as the data uses it: else "natural" ("exclude" for randFT)."""
        return self.uncorrelated or ("exclude" if self.randft else "natural")
