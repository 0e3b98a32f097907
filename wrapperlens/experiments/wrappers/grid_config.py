"""The benchmark section of a wrappers preset: which known wrappers, how many seeds, which
methods, and the rule that says a method "reports a wrapper" (docs/wrappers.md)."""

from __future__ import annotations

from dataclasses import dataclass

from wrapperlens.analysis.localisation import LOCALISATION_METHODS
from wrapperlens.experiments.wrappers.units import UNIT_KINDS

__all__ = ["METHODS", "BenchmarkConfig", "parse_wrapper"]

#: The localisation methods the benchmark scores, in the leaderboard's order, "random" (the
#: chance level) last (docs/wrappers.md#the-methods).
METHODS = LOCALISATION_METHODS


def parse_wrapper(text: str) -> tuple[str, int]:
    """`"neuron:4"` -> ("neuron", 4).

    Raises:
        ValueError: not KIND:COUNT, an unknown kind or a count below 1.
    """
    kind, _, count = text.partition(":")
    if kind not in UNIT_KINDS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"benchmark wrapper {text!r}: expected KIND:COUNT with KIND one of "
                         f"{', '.join(UNIT_KINDS)} and COUNT >= 1, e.g. neuron:4")
    return kind, int(count)


@dataclass(frozen=True)
class BenchmarkConfig:
    """The grid of the known-wrapper benchmark.

    Attributes:
        seeds: Seeds; seed s sets the pretraining's `train.seed` and `model.init_seed`, the unit
            draw's `units.seed` and every fine-tuning's `train.seed`.
        first_seed: The first seed (3 for held-out seeds 3-5).
        wrappers: The known wrappers fine-tuned from every pretraining, `KIND:COUNT`.
        localised_eta: The η of the localised fine-tunings.
        control: Train the negative control per seed: a model pretrained with the a/b prior
            swapped (it never learns to count a), fully fine-tuned at `control_eta`.
        control_eta: The η of the control's fine-tuning.
        samples: "count a" prompts per pair: the first half is what every method scores on, the
            second half what removals are evaluated on (no method sees it).
        random_draws: Random unit sets per removal (the chance level of revival).
        eap_ig_steps: EAP-IG's integration steps.
        revival_margin: A method reports a wrapper when removing its top-k units raises
            Acc O_PT by more than this over removing k random units (docs/wrappers.md#metrics).
        methods: The methods scored (any of `METHODS`).
    """

    seeds: int = 3
    first_seed: int = 0
    wrappers: tuple[str, ...] = ("neuron:4", "neuron:16", "head:1")
    localised_eta: str = "L"
    control: bool = True
    control_eta: str = "M"
    samples: int = 400
    random_draws: int = 5
    eap_ig_steps: int = 5
    revival_margin: float = 0.1
    methods: tuple[str, ...] = METHODS

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"benchmark.seeds={self.seeds} must be >= 1")
        if self.first_seed < 0:
            raise ValueError(f"benchmark.first_seed={self.first_seed} must be >= 0")
        if not self.wrappers:
            raise ValueError("benchmark.wrappers is empty")
        parsed = [parse_wrapper(w) for w in self.wrappers]
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"benchmark.wrappers {self.wrappers} repeats a wrapper")
        if self.samples < 4:
            raise ValueError(f"benchmark.samples={self.samples} must be >= 4 (two halves)")
        if self.random_draws < 1:
            raise ValueError(f"benchmark.random_draws={self.random_draws} must be >= 1")
        if self.eap_ig_steps < 1:
            raise ValueError(f"benchmark.eap_ig_steps={self.eap_ig_steps} must be >= 1")
        if not 0.0 < self.revival_margin < 1.0:
            raise ValueError(f"benchmark.revival_margin={self.revival_margin} must be in (0, 1)")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ValueError(f"benchmark.methods: {unknown or 'none'}; expected any of "
                             + ", ".join(METHODS))

    @property
    def seed_range(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)

    def parsed_wrappers(self) -> list[tuple[str, int]]:
        return [parse_wrapper(w) for w in self.wrappers]
