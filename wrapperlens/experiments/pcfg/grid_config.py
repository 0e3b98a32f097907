"""What `wrapperlens reproduce` runs: the grid section of a PCFG preset.

The grid is priors × fine-tuning cells × seeds, plus the runs and analyses the claims need
(docs/claims.md#pcfg-counter-and-indexer):

| part | for each | what |
|---|---|---|
| pretraining | prior × seed | the preset's pretraining under that prior |
| fine-tuning | pretraining × cell | a cell is `FAMILY:C_TR:ETA`, e.g. `C:1:M` (count b, C_Tr = 1, η_M) |
| reFT | fine-tuning at `reft_after` (Counter, C_Tr = 1) | back to counting a at `reft_eta` |
| Scr.+FT | seed | pretrain with the low prior's a/b weights swapped, fine-tune to count a at `reft_eta` |
| pruning | fine-tuning at `prune_eta` (low prior, Counter, C_Tr = 1) | top-K g·w units vs K random units |
| probes | fine-tuning at `probe_etas` (Counter, C_Tr = 0 and 1) | count(a) by layer: fine-tuned, pretrained, `probe_random_inits` random inits |
| attention | seed 0, low prior, Counter, C_Tr = 1, η_M | the pair's attention patterns |
| circuit | seed 0, low prior, Counter, C_Tr = 1, η_M | the pair's circuits (EAP-IG) and their diff |
| appendix | seed × experiment of `appendix` | claims 13-16 (App. E, H.1): `wrapperlens.experiments.pcfg.appendix` |

Every section can be overridden like the others: `--grid.seeds=5`, `--grid.cells=C:1:M,C:0.8:M`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GridConfig", "Cell", "parse_cell", "SEED_ROLES", "COUNT_A_NATURAL",
           "APPENDIX_EXPERIMENTS"]

#: The appendix experiments a grid can run (claims 13-16; docs/claims.md).
APPENDIX_EXPERIMENTS = ("jailbreak", "randft", "mix", "inhibitor")


@dataclass(frozen=True)
class Cell:
    """One fine-tuning setting of the grid: task family, C_Tr and named learning rate."""

    family: str
    c_tr: float
    eta: str

    @property
    def name(self) -> str:
        return f"{self.family}/c_tr={self.c_tr:g}/eta={self.eta}"


def parse_cell(text: str) -> Cell:
    """`"C:1:M"` -> Cell("C", 1.0, "M").

    Raises:
        ValueError: not three `:`-separated parts, an unknown family or a C_Tr outside [0, 1].
    """
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"grid cell {text!r}: expected FAMILY:C_TR:ETA, e.g. C:1:M")
    family, c_tr, eta = parts
    if family not in ("C", "I"):
        raise ValueError(f"grid cell {text!r}: family {family!r} is not C (Counter) or I (Indexer)")
    try:
        value = float(c_tr)
    except ValueError:
        raise ValueError(f"grid cell {text!r}: C_Tr {c_tr!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"grid cell {text!r}: C_Tr {value} is not in [0, 1]")
    return Cell(family, value, eta)


@dataclass(frozen=True)
class GridConfig:
    """The grid of a preset (see the module docstring).

    Attributes:
        priors: Pretraining priors, "L" (weakly relevant b) to "H".
        seeds: Seeds per setting; seed s sets `train.seed` and `model.init_seed` of the
            pretraining and `train.seed` of every stage that descends from it.
        first_seed: The first seed: the grid runs seeds `first_seed .. first_seed + seeds - 1`
            (3 for held-out seeds 3-5; docs/reproduction.md#held-out-seeds).
        cells: Fine-tuning settings `FAMILY:C_TR:ETA`, each run from every pretraining.
        reft_after: The η of the Counter C_Tr = 1 fine-tunings that are reverse fine-tuned ("" = none).
        reft_eta: The η of reFT and of Scr.+FT's fine-tuning; must be below `reft_after`'s.
        scratch: Train the Scr.+FT baseline (one per seed).
        prune_eta: The η of the low-prior Counter C_Tr = 1 fine-tunings that are pruned ("" = none).
        prune_ks: Numbers of units pruned (top g·w, and the same number of random units).
        prune_random_draws: Random-unit draws averaged per K.
        probe_etas: The ηs of the Counter C_Tr = 0 and C_Tr = 1 fine-tunings that are probed,
            every prior.
        probe_samples: Prompts per probe (split into probe training and test rows).
        probe_random_inits: Random-init baselines of every probe (their mean is the floor a
            probe of an untrained model reaches).
        attention: Write the attention view of one pair.
        circuit: Score the edges of the same pair (EAP-IG, with exact edge patching beside it)
            and diff its pretrained and fine-tuned circuits (`wrapperlens.analysis.circuit_diff`).
        appendix: The appendix experiments run per seed (claims 13-16), any of "jailbreak",
            "randft", "mix" and "inhibitor" (`wrapperlens.experiments.pcfg.appendix`).
        mix: The fraction of pretraining data in each fine-tuning batch of the "mix" experiment
            (paper App. E.1 mixes 50/50, 10/90 and 0.1/99.9 PT/FT).
    """

    priors: tuple[str, ...] = ("L", "H")
    seeds: int = 3
    first_seed: int = 0
    cells: tuple[str, ...] = ("C:1:L", "C:1:M", "C:1:S")
    reft_after: str = "L"
    reft_eta: str = "M"
    scratch: bool = True
    prune_eta: str = "S"
    prune_ks: tuple[int, ...] = tuple(range(16))
    prune_random_draws: int = 3
    probe_etas: tuple[str, ...] = ("L", "M", "S")
    probe_samples: int = 2000
    probe_random_inits: int = 3
    attention: bool = True
    circuit: bool = True
    appendix: tuple[str, ...] = ()
    mix: float = 0.1

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"grid.seeds={self.seeds} must be >= 1")
        if self.first_seed < 0:
            raise ValueError(f"grid.first_seed={self.first_seed} must be >= 0")
        if not self.priors:
            raise ValueError("grid.priors is empty")
        cells = [parse_cell(c) for c in self.cells]
        if len({c.name for c in cells}) != len(cells):
            raise ValueError(f"grid.cells {self.cells} repeats a cell")
        unknown = sorted(set(self.appendix) - set(APPENDIX_EXPERIMENTS))
        if unknown:
            raise ValueError(f"grid.appendix: {', '.join(unknown)} unknown; expected any of "
                             + ", ".join(APPENDIX_EXPERIMENTS))
        if not 0.0 < self.mix < 1.0:
            raise ValueError(f"grid.mix={self.mix} must be in (0, 1)")
        if self.probe_random_inits < 1:
            raise ValueError(f"grid.probe_random_inits={self.probe_random_inits} must be >= 1")
        if self.prune_random_draws < 0:
            raise ValueError(f"grid.prune_random_draws={self.prune_random_draws} must be >= 0")

    @property
    def seed_range(self) -> range:
        """The seeds the grid runs."""
        return range(self.first_seed, self.first_seed + self.seeds)

    def parsed_cells(self) -> list[Cell]:
        return [parse_cell(c) for c in self.cells]

    def has_cell(self, family: str, c_tr: float, eta: str) -> bool:
        return Cell(family, float(c_tr), eta) in self.parsed_cells()


#: Which seed varies what, in every spread of the report.
SEED_ROLES = {
    "pretrain": "seed s: train.seed = s (data order) and model.init_seed = s (initial weights)",
    "finetune": "train.seed = s (data order), from the pretraining of seed s",
    "reft": "train.seed = s (data order), from the fine-tuning of seed s",
    "scratch": "seed s: as pretraining, then as fine-tuning",
}

#: Counting a on natural strings, in reFT runs (O_PT = a) and Scr.+FT runs (O_FT = a) alike.
COUNT_A_NATURAL = "acc/count_a/natural"
