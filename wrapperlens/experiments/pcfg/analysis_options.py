"""The options of the PCFG analysis tools (`prune_run`, `probe_run`, `patch_run`, ...).

One frozen dataclass per tool says *how* to analyse a run; the run directories themselves are
the functions' arguments:

    from wrapperlens.experiments.pcfg.analysis import patch_run
    from wrapperlens.experiments.pcfg.analysis_options import PatchOptions

    patch_run("runs/ft", "out/patch", PatchOptions(component="z", samples=32))

Each class checks its values in `__post_init__` and raises `ConfigError` naming the field
(``PatchOptions.c_te: expected a number in [0, 1], got 2.0``). The defaults here are the only
copy: the command line (`wrapperlens prune | probe | patch | ...`) reads them for its flags.

Terms: O_PT / O_FT are the pretraining / fine-tuning operands (a / b); C_Te is the fraction of
prompts that carry the fine-tuning correlation count(b) = count(a) + 1 (`docs/terms.md`).

This module imports nothing heavy at import time (the command line reads it at start-up); the
checks that need a vocabulary owned by a torch module import it when an object is built.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from wrapperlens.config import ConfigError

__all__ = [
    "DIRECTIONS",
    "METRICS",
    "PruneOptions",
    "ProbeOptions",
    "PatchOptions",
    "AttributeOptions",
    "AttentionOptions",
    "WrapperMapOptions",
    "CircuitOptions",
    "EDGE_METHODS",
    "default_of",
]

# Which model's activations are copied into which: pretrained into fine-tuned, or the reverse.
DIRECTIONS = ("pt-to-ft", "ft-to-pt")
# prob: probability of the correct answer; logit_diff: its logit minus the O_FT answer's logit.
METRICS = ("prob", "logit_diff")


def default_of(cls: type, name: str) -> Any:
    """The default value of field `name` of an options class (what the CLI shows and uses)."""
    for f in fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _fail(obj: object, name: str, expected: str) -> None:
    value = getattr(obj, name)
    raise ConfigError(f"{type(obj).__name__}.{name}: expected {expected}, got {value!r}")


def _positive(obj: object, name: str, allow_none: bool = False) -> None:
    value = getattr(obj, name)
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(obj, name, "a positive integer" + (" or None" if allow_none else ""))


def _fraction(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        _fail(obj, name, "a number in [0, 1]")


def _choice(obj: object, name: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if getattr(obj, name) not in choices:
        _fail(obj, name, "one of " + ", ".join(choices))


def _operand(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if value is not None and (not isinstance(value, str) or not value):
        _fail(obj, name, "an operand name such as 'a', or None")


def _int_tuple(obj: object, name: str, minimum: int = 0, allow_none: bool = False) -> None:
    """Store an iterable of ints (a list, a range) as a tuple; refuse anything else."""
    value = getattr(obj, name)
    if allow_none and value is None:
        return
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if (
        not items
        or any(isinstance(v, bool) or not isinstance(v, int) for v in items)
        or min(items) < minimum
    ):
        _fail(obj, name, f"a non-empty sequence of integers >= {minimum}")
    object.__setattr__(obj, name, items)  # frozen: the normalised value is set once, here


def _patch_checks(obj: Any) -> None:
    """The fields PatchOptions and AttributeOptions share."""
    if not isinstance(obj.per_position, bool):
        _fail(obj, "per_position", "true or false")
    _choice(obj, "direction", DIRECTIONS)
    _choice(obj, "metric", METRICS)
    _positive(obj, "samples")
    _fraction(obj, "c_te")
    _operand(obj, "prompt")


@dataclass(frozen=True)
class PruneOptions:
    """Single-step g·w pruning sweep of a fine-tuned run (paper App. D, Alg. 3).

    Attributes:
        ks: Numbers of units to prune (cumulative, highest score first); 0 = the run as it is.
            Any sequence of ints (a range, a list); stored as a tuple.
        eligible: Which matrices: a preset of `wrapperlens.analysis.pruning.ELIGIBLE_PRESETS`
            ("all_block_linear", "mlp_out_and_attn_out", ...), or parameter names / block
            suffixes, as a tuple or one comma-separated string ("mlp.W_out,blocks.1.attn.W_O").
        granularity: "row" (a neuron's vector) or "weight" (single entries).
        unit_axis: "input" (a TransformerLens row ``W[i, :]``) or "output" (a column).
        grad_samples: Count-O_PT prompts the pruning gradient is taken on.
        grad_c_te: Fraction of those prompts carrying the fine-tuning correlation (the test
            sets are always C_Te = 0 and 1).
        eval_samples: Samples per test set; None = the run's `train.eval_samples`.
        random_draws: Draws of the random-unit control (prune K random eligible units of the
            same kind instead of the top-K, nested, averaged over the draws); 0 = no control.
        random_seed: Seed of the control's draws.
    """

    ks: Sequence[int] = tuple(range(16))
    eligible: str | Sequence[str] = "all_block_linear"
    granularity: str = "row"
    unit_axis: str = "input"
    grad_samples: int = 512
    grad_c_te: float = 0.0
    eval_samples: int | None = None
    random_draws: int = 0
    random_seed: int = 0

    def __post_init__(self) -> None:
        from wrapperlens.analysis.pruning import ELIGIBLE_PRESETS

        _int_tuple(self, "ks")
        if isinstance(self.eligible, str) and self.eligible not in ELIGIBLE_PRESETS:
            names = tuple(p.strip() for p in self.eligible.split(",") if p.strip())
            object.__setattr__(self, "eligible", names)  # parameter names, not a preset
        elif not isinstance(self.eligible, str):
            object.__setattr__(self, "eligible", tuple(self.eligible))
        _choice(self, "granularity", ("row", "weight"))
        _choice(self, "unit_axis", ("input", "output"))
        if not self.eligible or not all(isinstance(e, str) and e for e in self.eligible):
            _fail(self, "eligible", f"one of {sorted(ELIGIBLE_PRESETS)} or parameter names")
        _positive(self, "grad_samples")
        _fraction(self, "grad_c_te")
        _positive(self, "eval_samples", allow_none=True)
        if isinstance(self.random_draws, bool) or not isinstance(self.random_draws, int) \
                or self.random_draws < 0:
            _fail(self, "random_draws", "an integer >= 0 (0 = no random-unit control)")
        if isinstance(self.random_seed, bool) or not isinstance(self.random_seed, int):
            _fail(self, "random_seed", "an integer")
        self.prune_config  # built once here, which runs PruneConfig's own checks

    @functools.cached_property
    def prune_config(self):  # -> wrapperlens.analysis.pruning.PruneConfig
        """The task-agnostic pruning config these options select."""
        from wrapperlens.analysis.pruning import PruneConfig

        return PruneConfig(self.eligible, self.granularity, self.unit_axis)


@dataclass(frozen=True)
class ProbeOptions:
    """Linear probes of a count at every block (paper §5.1, Fig. 8, App. D).

    Attributes:
        prompt: Operand of the prompts ("count `prompt`"); None = O_PT.
        label: Operand whose answer the probe decodes; None = the prompt's. E.g. prompt "b",
            label "a" asks whether count(a) is still computed on "count b" prompts.
        samples: Prompts drawn (split into probe training and test rows).
        c_te: Fraction of the prompts carrying the fine-tuning correlation.
        probe_preset: Probe training schedule, a key of
            `wrapperlens.analysis.probing.PROBE_PRESETS` ("fast", or "paper": 4K AdamW steps).
        random_inits: Random-init baselines (init seeds 12345, 12346, ...): how far a probe of
            an untrained model of the same shape gets, and how much that varies.
    """

    prompt: str | None = None
    label: str | None = None
    samples: int = 2000
    c_te: float = 0.0
    probe_preset: str = "fast"
    random_inits: int = 3

    def __post_init__(self) -> None:
        from wrapperlens.analysis.probing import PROBE_PRESETS

        _operand(self, "prompt")
        _operand(self, "label")
        _positive(self, "samples")
        _fraction(self, "c_te")
        _choice(self, "probe_preset", sorted(PROBE_PRESETS))
        _positive(self, "random_inits")


@dataclass(frozen=True)
class PatchOptions:
    """Cross-model activation patching (beyond the paper, which does not patch).

    Attributes:
        component: Activation to patch, a name of `wrapperlens.components.COMPONENTS`
            ("z" = one head's output before W_O; "post" = one MLP neuron).
        per_position: Patch one position at a time (else every position at once).
        direction: "pt-to-ft" (pretrained activations into the fine-tuned run) or "ft-to-pt".
        metric: "prob" (probability of the correct answer) or "logit_diff" (its logit minus
            the logit of the fine-tuning operand's answer on the same string).
        samples: Prompts patched.
        c_te: Fraction of the prompts carrying the fine-tuning correlation.
        prompt: Operand of the prompts; None = O_PT.
    """

    component: str = "resid_pre"
    per_position: bool = True
    direction: str = "pt-to-ft"
    metric: str = "prob"
    samples: int = 64
    c_te: float = 0.0
    prompt: str | None = None

    def __post_init__(self) -> None:
        from wrapperlens.components import COMPONENTS

        _choice(self, "component", COMPONENTS)
        _patch_checks(self)


@dataclass(frozen=True)
class AttributeOptions:
    """Attribution patching: a first-order estimate of every patch at once.

    Attributes:
        components: Names of `wrapperlens.components.COMPONENTS`, as a tuple or one
            comma-separated string ("resid_pre,z").
        compare_exact: Also run exact activation patching and report the Spearman rank
            correlation (one patched forward per node).
        per_position, direction, metric, samples, c_te, prompt: As in `PatchOptions`.
    """

    components: str | Sequence[str] = ("resid_pre", "z", "post")
    per_position: bool = True
    direction: str = "pt-to-ft"
    metric: str = "prob"
    samples: int = 64
    c_te: float = 0.0
    prompt: str | None = None
    compare_exact: bool = False

    def __post_init__(self) -> None:
        from wrapperlens.components import COMPONENTS

        names = self.components
        if isinstance(names, str):
            names = [c.strip() for c in names.split(",") if c.strip()]
        names = tuple(names)
        object.__setattr__(self, "components", names)
        unknown = [c for c in names if c not in COMPONENTS]
        if unknown or not names:
            raise ConfigError(
                f"AttributeOptions.components: unknown {unknown}; choose from "
                f"{', '.join(COMPONENTS)}"
            )
        if not isinstance(self.compare_exact, bool):
            _fail(self, "compare_exact", "true or false")
        _patch_checks(self)


@dataclass(frozen=True)
class AttentionOptions:
    """Attention patterns of the pretrained and fine-tuned models side by side.

    Attributes:
        example: Which prompt of the drawn batch to show (0-based).
        c_te: Fraction of the drawn prompts carrying the fine-tuning correlation.
        prompt: Operand of the prompt; None = O_PT.
        layers: Layers to draw; None = all.
    """

    example: int = 0
    c_te: float = 1.0
    prompt: str | None = None
    layers: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.example, bool) or not isinstance(self.example, int) or self.example < 0:
            _fail(self, "example", "an integer >= 0")
        _fraction(self, "c_te")
        _operand(self, "prompt")
        _int_tuple(self, "layers", allow_none=True)


#: Edge scoring methods of `CircuitOptions` (`wrapperlens.analysis.edges`).
EDGE_METHODS = ("eap-ig", "eap", "exact")


@dataclass(frozen=True)
class CircuitOptions:
    """The pretrained and fine-tuned circuits of "count a" and their diff, edge by edge.

    Both models are scored on the same prompts asking O_PT (clean) against the same strings
    asking O_FT (corrupted), metric = logit[O_PT answer] - logit[O_FT answer] at `<art>`.

    Attributes:
        method: "eap-ig", "eap" or "exact" (edge patching).
        steps: EAP-IG's interpolation steps.
        top_n: Edges in each circuit (by |score|).
        ratio: Kept while |fine-tuned| / |pretrained| stays within this factor, else reweighted.
        samples: Prompts scored.
        compare_exact: Also run exact edge patching on both models and report the Spearman
            correlation of the method's scores with it.
    """

    method: str = "eap-ig"
    steps: int = 5
    top_n: int = 20
    ratio: float = 2.0
    samples: int = 64
    compare_exact: bool = True

    def __post_init__(self) -> None:
        _choice(self, "method", EDGE_METHODS)
        _positive(self, "steps")
        _positive(self, "top_n")
        _positive(self, "samples")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or \
                not 1.0 < self.ratio < float("inf"):
            _fail(self, "ratio", "a finite number above 1")
        if not isinstance(self.compare_exact, bool):
            _fail(self, "compare_exact", "true or false")


@dataclass(frozen=True)
class WrapperMapOptions:
    """Where the fine-tuning change lives: heads, neurons and layer parts ranked three ways.

    Attributes:
        samples: O_PT prompts scored.
        c_te: Fraction of the prompts carrying the fine-tuning correlation.
        metric: Patching metric, as in `PatchOptions`.
        patch_neurons: Also patch every MLP neuron (d_mlp forwards per layer).
    """

    samples: int = 128
    c_te: float = 0.0
    metric: str = "prob"
    patch_neurons: bool = True

    def __post_init__(self) -> None:
        _positive(self, "samples")
        _fraction(self, "c_te")
        _choice(self, "metric", METRICS)
        if not isinstance(self.patch_neurons, bool):
            _fail(self, "patch_neurons", "true or false")
