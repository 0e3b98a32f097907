"""The Scr.+FT baseline of reverse fine-tuning and its comparison with reFT
(docs/choices.md#scrft-baseline-pretraining).

Reverse fine-tuning (reFT) trains a model that was pretrained to count `a` and fine-tuned to count
`b` on counting `a` again. How fast it gets there means little on its own; the paper's yardstick is
**Scr.+FT**: a model "initialized with parameters pre-trained to count O_FT and then fine-tuned to
count O_PT", i.e. a model for which counting `a` is *new*:

1. **Pretrain with the roles of a and b exchanged.** Same task config, model and pretraining budget
   as the reFT run's original pretraining, except that the operand prior swaps a's and b's weights
   (the low prior a=0.999, b=0.001 becomes a=0.001, b=0.999). This model counts b well and a
   poorly, as the original pretrained model counted a well and b poorly.
2. **Fine-tune it to count a** with the reFT run's training settings (steps, batch, learning rate,
   schedule, log-spaced evaluation): a fine-tuning stage with ``finetune.operand=a`` (the prompt
   and label), ``finetune.pretrain_operand=b`` and ``finetune.c_tr=0`` — natural strings, exactly
   the data reFT trains on (reFT draws natural "count a" strings).

**What is compared.** Both curves are *the accuracy of counting a on natural strings (the test
strings as sampled, C_Te = 0) against training iterations*:

| run | metric key in its `metrics.jsonl` | meaning there |
|---|---|---|
| reFT of the fine-tuned model | ``acc/O_PT/natural`` | O_PT = a, the pretraining operand |
| Scr.+FT fine-tuning | ``acc/O_FT/natural`` | O_FT = a, the operand it is fine-tuned on |

The two evaluation sets are the *same strings*: an evaluation set is seeded by the task's
`eval_seed`, the question ("C_a"), C_Te and its size, none of which the swapped prior changes.
The ``.../cte0`` sets would differ: each excludes the strings that carry its own run's
correlation, count(b) = count(a) + q for reFT but count(a) = count(b) + q for Scr.+FT, whose
operands are swapped (docs/choices.md#the-test-sets-of-fine-tuning-and-reft).
`compare_reft_with_scratch` reports the iterations-to-threshold of each (the first logged step at or
above the threshold) and plots both. If reFT reaches the threshold in far fewer steps than Scr.+FT,
the fine-tuned model still held the capability (paper Fig. 9,
docs/claims.md#claim-7-reft-revives-the-capability-faster-than-scrft: reFT ~0.1–3K iterations vs
Scr.+FT ~4.5K at paper scale).

Layout written by `run_scratch_baseline(out, ...)`::

    OUT/pretrain/   the swapped-prior pretraining run
    OUT/finetune/   its fine-tuning to count a (the Scr.+FT curve)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.config import FinetuneDataConfig, PCFGTaskConfig, parse_prior
from tasks.grammar import paper_grammar
from wrapperlens.analysis.reft_curves import (
    ReftCurve,
    accuracy_curve,
    curves_to_threshold,
    plot_reft_curves,
    read_metrics,
)
from wrapperlens.checkpoints import write_json
from wrapperlens.config import ConfigError, from_dict
from wrapperlens.experiments.pcfg.stages import PCFGRun, resolve_configs
from wrapperlens.runs import RunDir
from wrapperlens.stages import train_or_reuse
from wrapperlens.experiments.pcfg import presets
from wrapperlens.training import TrainConfig

__all__ = [
    "REFT_METRIC",
    "SCRATCH_METRIC",
    "ScratchBaseline",
    "swapped_prior",
    "find_pretrain_run",
    "scratch_pretrain_overrides",
    "scratch_finetune_overrides",
    "run_scratch_baseline",
    "compare_reft_with_scratch",
]

#: Counting O_PT (= a) on natural strings, in a reFT run.
REFT_METRIC = "acc/O_PT/natural"
#: Counting O_FT (= a, after the swap) on natural strings, in the Scr.+FT fine-tuning run.
SCRATCH_METRIC = "acc/O_FT/natural"


def swapped_prior(prior: str, x: str = "a", y: str = "b") -> str:
    """The operand prior with the weights of `x` and `y` exchanged, as "a=..,b=..,c=..".

    Example: ``swapped_prior("L") == "a=0.001,b=0.999,c=0"``.
    """
    terminals = tuple(paper_grammar().terminals)
    weights = parse_prior(prior, terminals)
    for op in (x, y):
        if op not in weights:
            raise ValueError(f"swapped_prior: {op!r} is not an operand of the prior {weights}")
    weights[x], weights[y] = weights[y], weights[x]
    return ",".join(f"{t}={weights[t]:g}" for t in terminals)


def find_pretrain_run(run_dir: str | Path) -> Path:
    """Follow `parent` links (`RunDir.ancestors`) from a finetune or reft run back to its
    pretraining run."""
    run = RunDir(run_dir)
    chain = [run, *run.ancestors()]
    for candidate in chain:
        if candidate.exists() and candidate.stage() == "pretrain":
            return candidate.path
    last = chain[-1]
    if not last.exists():
        raise ConfigError(f"{chain[-2].path}: its parent run {str(last.path)!r} was not found")
    raise ConfigError(f"{last.path}: a {last.stage()!r} run with no parent recorded")


def _prefixed(section: str, cfg: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    return {
        f"{section}.{f.name}": getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name not in skip
    }


def scratch_pretrain_overrides(
    reft_run: str | Path | None = None, preset: str = "cpu", base_prior: str = "L"
) -> dict[str, Any]:
    """Overrides of a pretraining stage that make the Scr.+FT model.

    With `reft_run`: its task and model configs and its original pretraining's train config,
    with the prior's O_PT / O_FT weights swapped. Without: the preset's, from `base_prior`
    ("L", the paper's weakly relevant setting) swapped between a and b.
    """
    if reft_run is None:
        p = presets.get(preset)
        task, model, train, ft = p.task, p.model, p.pretrain, p.finetune_data
        prior = base_prior
    else:
        reft_cfg = RunDir(reft_run).read_config()
        if reft_cfg.get("stage") not in ("reft", "finetune"):
            raise ConfigError(
                f"{reft_run}: expected a reft (or finetune) run, got a "
                f"{reft_cfg.get('stage')!r} run"
            )
        pt_cfg = RunDir(find_pretrain_run(reft_run)).read_config()
        task = from_dict(PCFGTaskConfig, reft_cfg["task"], "task")
        from wrapperlens.models import ModelConfig

        model = from_dict(ModelConfig, reft_cfg["model"], "model")
        train = from_dict(TrainConfig, pt_cfg["train"], "train")
        ft = from_dict(FinetuneDataConfig, reft_cfg["finetune"], "finetune")
        prior = task.prior
    overrides = {
        **_prefixed("task", task),
        **_prefixed("model", model),
        **_prefixed("train", train),
    }
    overrides["task.prior"] = swapped_prior(prior, ft.pretrain_operand, ft.label_of)
    return overrides


def scratch_finetune_overrides(
    reft_run: str | Path | None = None, preset: str = "cpu", eta: str | None = None
) -> dict[str, Any]:
    """Overrides of the fine-tuning stage of Scr.+FT: count O_PT (a) on natural strings.

    Training settings come from the reFT run (its learning rate too, unless `eta` names one of
    the preset's), or without one from the preset's reFT settings at `eta` (default the preset's
    default reFT η, `default_eta["reft"]`).
    """
    p = presets.get(preset)
    _, named_lr = p.eta("reft", eta)  # refuses a bad `eta` before any file is read
    if reft_run is None:
        train, ft = p.reft, p.finetune_data
        lr = named_lr
    else:
        reft_cfg = RunDir(reft_run).read_config()
        train = from_dict(TrainConfig, reft_cfg["train"], "train")
        ft = from_dict(FinetuneDataConfig, reft_cfg["finetune"], "finetune")
        lr = named_lr if eta else train.lr
    overrides = _prefixed("train", train)
    overrides["train.lr"] = lr
    overrides.update(
        {
            "finetune.family": ft.family,
            "finetune.operand": ft.pretrain_operand,  # prompt and label: a
            "finetune.label_operand": "",
            "finetune.pretrain_operand": ft.label_of,  # what the swapped pretraining knows: b
            "finetune.c_tr": 0.0,
            "finetune.q": ft.q,
            "finetune.uncorrelated": "natural",
            "finetune.pretrain_mix": 0.0,
            "finetune.filler": ft.filler,
        }
    )
    return overrides


@dataclass
class ScratchBaseline:
    """The two runs of Scr.+FT and its accuracy curve on counting a (C_Te = 0)."""

    pretrain_dir: Path
    finetune_dir: Path
    curve: ReftCurve


def run_scratch_baseline(
    out: str | Path,
    preset: str = "cpu",
    reft_run: str | Path | None = None,
    eta: str | None = None,
    pretrain_overrides: Mapping[str, Any] | None = None,
    finetune_overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> ScratchBaseline:
    """Pretrain with a and b swapped, then fine-tune to count a; see the module docstring.

    Args:
        out: Output directory (``OUT/pretrain``, ``OUT/finetune``).
        preset: Preset of the defaults (and of the named learning rates).
        reft_run: The reFT run to match (task, model, pretraining budget, reFT settings); None
            uses the preset with the low prior.
        eta: Named learning rate of the fine-tuning ("M" or "S" in the paper); default the reFT
            run's learning rate (or the preset's default reFT η).
        pretrain_overrides, finetune_overrides: Applied last (e.g. fewer steps for a test).
        progress: Show progress bars.
        device: Where both stages train ("cpu", "cuda", "auto"; `wrapperlens.stages.run_stage`).

    A stage already finished in `out` with the same configs is reused, and one that was killed
    is resumed; a stage directory holding a run of other configs is an error.
    """
    out = Path(out)
    pt_over = {**scratch_pretrain_overrides(reft_run, preset), **(pretrain_overrides or {})}
    pt_run = resolve_configs("pretrain", preset, overrides=pt_over)
    train_or_reuse(pt_run.spec(), out / "pretrain", progress=progress, device=device)
    ft_over = {**scratch_finetune_overrides(reft_run, preset, eta), **(finetune_overrides or {})}
    ft_run: PCFGRun = resolve_configs(
        "finetune", preset, parent=out / "pretrain", overrides=ft_over
    )
    records, _ = train_or_reuse(ft_run.spec(), out / "finetune", progress=progress,
                                device=device)
    curve = accuracy_curve(records, SCRATCH_METRIC, name="Scr.+FT")
    return ScratchBaseline(out / "pretrain", out / "finetune", curve)


def _same_eval_strings(reft_dir: Path, scratch_dir: Path) -> bool:
    """Whether the two runs evaluate counting a on the same strings (see module docstring)."""
    a, b = RunDir(reft_dir).read_config(), RunDir(scratch_dir).read_config()
    task_a = {k: v for k, v in a["task"].items() if k not in ("prior", "seed")}
    task_b = {k: v for k, v in b["task"].items() if k not in ("prior", "seed")}
    return task_a == task_b and a["train"]["eval_samples"] == b["train"]["eval_samples"]


def compare_reft_with_scratch(
    reft_runs: Mapping[str, str | Path],
    scratch_run: str | Path,
    threshold: float = 0.9,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Iterations-to-threshold of reFT runs and of Scr.+FT on counting a (C_Te = 0).

    Args:
        reft_runs: {legend name: reFT run directory}, e.g. {"reFT eta_S": "runs/reft"}.
        scratch_run: The Scr.+FT *fine-tuning* run (``OUT/finetune`` of `run_scratch_baseline`).
        threshold: Accuracy that counts as "revived".
        out: If given, write ``reft_vs_scratch.json`` and ``reft_vs_scratch.png`` there.

    Returns:
        {"threshold", "iterations_to_threshold": {name: step or None}, "curves": [...],
        "same_eval_strings": {name: bool}, "metrics": {...}}.
    """
    scratch_run = Path(scratch_run)
    curves = [accuracy_curve(read_metrics(d), REFT_METRIC, name=n) for n, d in reft_runs.items()]
    curves.append(accuracy_curve(read_metrics(scratch_run), SCRATCH_METRIC, name="Scr.+FT"))
    result = {
        "threshold": threshold,
        "iterations_to_threshold": curves_to_threshold(curves, threshold),
        "metrics": {
            "reft": REFT_METRIC,
            "scratch": SCRATCH_METRIC,
            "meaning": "accuracy of counting a on natural strings (as sampled, C_Te = 0)",
        },
        "same_eval_strings": {
            n: _same_eval_strings(Path(d), scratch_run) for n, d in reft_runs.items()
        },
        "curves": [c.to_dict() for c in curves],
    }
    if out is not None:
        out = Path(out)
        write_json(out / "reft_vs_scratch.json", result)
        plot_reft_curves(
            curves,
            out / "reft_vs_scratch.png",
            threshold,
            title="counting a (C_Te = 0): reFT vs Scr.+FT",
        )
    return result
