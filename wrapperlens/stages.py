"""One stage runner for every experiment: a stage spec in, a finished run directory out.

An experiment (PCFG, compiled programs, TinyStories) describes each of its stages as a
`StageSpec`: the configs that define the run (written to `config.json` and hashed into its run
id), the optimisation settings, and three callables:

- `build_model()`: the model before training (a fresh init, or the parent run's weights);
- `batch(step)`: the global training batch of `step` (a function of the step alone);
- `evaluate(model, step)`: named metrics logged at the evaluation steps.

`run_stage` trains a spec into a run directory, in one process or data-parallel under
`torchrun` (`wrapperlens.distributed`), and records its provenance when it finishes;
`train_or_reuse` reuses a finished run of the same configs and resumes a killed one, so a
multi-stage job (or a sweep keyed on run ids) continues where it stopped.

    spec = pcfg_stage("pretrain", preset="tiny")       # wrapperlens.experiments.pcfg.stages
    model, records = run_stage(spec, "runs/pt")
    records, seconds = train_or_reuse(spec, "runs/pt")   # 0.0 s: already finished
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformer_lens import HookedTransformer

from wrapperlens import distributed
from wrapperlens.config import ConfigError
from wrapperlens.runs import RunDir, as_saved, run_id
from wrapperlens.training import Evaluate, TrainBatch, TrainConfig, train

__all__ = ["StageSpec", "run_stage", "train_or_reuse", "resolve_device"]


@dataclass(frozen=True)
class StageSpec:
    """What one stage trains, on what, and how it is judged.

    Attributes:
        config: Everything that defines the run, JSON-serialisable: at least "stage" and
            "parent" (the run directory it starts from, or None), plus the config sections.
            Written to `config.json`; its content hash is the run id.
        train: Optimisation settings (steps, LR, schedule, evaluation and checkpoint cadence).
        build_model: Returns the model before training.
        batch: `batch(step)` returns the training batch of that step.
        evaluate: `evaluate(model, step)` returns the metrics logged at evaluation steps.
        description: Label of the progress bar.
    """

    config: Mapping[str, Any]
    train: TrainConfig
    build_model: Callable[[], HookedTransformer]
    batch: Callable[[int], TrainBatch]
    evaluate: Evaluate | None = None
    description: str = "train"

    def __post_init__(self) -> None:
        missing = [k for k in ("stage", "parent") if k not in self.config]
        if missing:
            raise ValueError(f"StageSpec.config lacks {missing}")

    @property
    def run_id(self) -> str:
        """Content hash of `config` (see `wrapperlens.runs.run_id`)."""
        return run_id(self.config)


def resolve_device(device: str = "auto") -> str:
    """"auto" means CUDA when available, else CPU; anything else is passed to torch as is."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_stage(
    spec: StageSpec,
    out: str | os.PathLike | RunDir,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    device: str = "cpu",
) -> tuple[HookedTransformer, list[dict]]:
    """Train `spec` into `out`; `resume` continues a killed run of the same configs there.

    Files are written by rank 0 from CPU copies, so a run trained on a GPU (or on several
    processes) resumes or loads on one CPU. Bit-identical determinism is promised on CPU in one
    process; data-parallel runs match it up to the order of float additions.

    Returns:
        The trained model (in eval mode) and the metric records written by this call.

    Raises:
        ConfigError: `out` already holds a run (without `resume`), or its configs differ from
            `spec.config` (with `resume`).
    """
    run = out if isinstance(out, RunDir) else RunDir(out)
    device = distributed.local_device(resolve_device(device))
    distributed.init_from_env(device)
    if spec.train.batch_size < distributed.world_size():
        raise ConfigError(f"train.batch_size={spec.train.batch_size} is smaller than the "
                          f"{distributed.world_size()} data-parallel processes")
    # Every rank checks (all stop with one clear error); rank 0 also writes.
    if distributed.is_main():
        run.write_config(spec.config, resume=resume)
    else:
        run.check_config(spec.config, resume=resume)
    distributed.barrier()
    model = spec.build_model()
    target = torch.device(device)
    if next(model.parameters()).device != target:
        model.to(target)  # TransformerLens updates cfg.device too
    records = train(model, spec.train, spec.batch, run, evaluate=spec.evaluate, resume=resume,
                    progress=progress, description=spec.description, stop_after=stop_after)
    finished = stop_after is None or stop_after >= spec.train.steps
    if distributed.is_main() and finished:
        run.write_provenance(model, world_size=distributed.world_size(), device=device)
    distributed.barrier()  # no rank moves on (e.g. to a child stage) before the run is complete
    return model.eval(), records


def train_or_reuse(
    spec: StageSpec,
    out: str | os.PathLike | RunDir,
    *,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[list[dict], float]:
    """Train `spec` into `out`, reusing a finished run of the same configs there and resuming a
    killed one.

    Returns:
        The records of the run's `metrics.jsonl`, and the seconds spent training in this call
        (0.0 when the run was reused).

    Raises:
        ConfigError: `out` holds a checkpointed run of other configs.
    """
    run = out if isinstance(out, RunDir) else RunDir(out)
    same = run.exists() and run.read_config() == as_saved(spec.config)
    if same and run.is_finished(spec.train.steps):
        return run.metrics(), 0.0
    if run.has_checkpoint() and not same:
        raise ConfigError(f"{run.path} holds a run with other configs; choose another --out")
    start = time.perf_counter()
    run_stage(spec, run, resume=run.has_checkpoint(), progress=progress, device=device)
    return run.metrics(), time.perf_counter() - start

