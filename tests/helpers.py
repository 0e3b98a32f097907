"""Small builders shared by the tests (import as `from tests.helpers import ...`).

    spec = tiny_pcfg_spec("pretrain", **{"train.lr": 1e-3})
    run_stage(spec, tmp_path / "pt", progress=False)
    ft = tiny_pcfg_spec("finetune", parent=tmp_path / "pt")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wrapperlens.checkpoints import load_tensors
from wrapperlens.experiments.pcfg.stages import PCFGRun, resolve_configs
from wrapperlens.stages import StageSpec

__all__ = ["FEW_STEPS", "tiny_pcfg_run", "tiny_pcfg_spec", "weights", "assert_same_weights",
           "drawing_from_global_generator"]

#: A `tiny`-preset stage that trains in about a second: 6 steps of 8 sequences, evaluations at
#: 0, 3 and 6 on 20 samples, checkpoints every 2 steps.
FEW_STEPS: dict[str, Any] = {
    "train.steps": 6, "train.batch_size": 8, "train.eval_every": 3, "train.eval_samples": 20,
    "train.checkpoint_every": 2,
}


def tiny_pcfg_run(stage: str = "pretrain", parent: str | os.PathLike | None = None,
                  **overrides: Any) -> PCFGRun:
    """The `tiny` preset's `stage` with FEW_STEPS, then `overrides` (dotted keys, e.g.
    `**{"train.lr": 1e-3}`); finetune / reft need `parent`."""
    return resolve_configs(stage, "tiny", parent=parent, overrides={**FEW_STEPS, **overrides})


def tiny_pcfg_spec(stage: str = "pretrain", parent: str | os.PathLike | None = None,
                   **overrides: Any) -> StageSpec:
    """`tiny_pcfg_run(...).spec()`: the stage as the run engine trains it."""
    return tiny_pcfg_run(stage, parent, **overrides).spec()


def weights(run_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a run directory's `model.safetensors`, read with safetensors directly."""
    return load_tensors(Path(run_dir) / "model.safetensors")


def assert_same_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def drawing_from_global_generator(spec: StageSpec, draws: list) -> StageSpec:
    """`spec` whose batch function and evaluate callback each draw `torch.rand(1)` from torch's
    global generator and append `((kind, step), value)` to `draws`: what dropout or a sampler
    would do (HookedTransformer itself has no dropout)."""

    def batch(step: int):
        draws.append((("batch", step), torch.rand(1).item()))
        return spec.batch(step)

    def evaluate(model, step: int):
        draws.append((("eval", step), torch.rand(1).item()))
        return spec.evaluate(model, step) if spec.evaluate is not None else {}

    return dataclasses.replace(spec, batch=batch, evaluate=evaluate)
