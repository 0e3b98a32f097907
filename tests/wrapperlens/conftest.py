"""Builders shared by the wrapperlens tests."""

from pathlib import Path

import pytest

from wrapperlens.experiments.pcfg.stages import resolve_configs
from wrapperlens.stages import run_stage

#: Small batches and evaluation sets for tiny-preset runs made inside tests.
SMALL = {"train.batch_size": 16, "train.eval_samples": 40, "train.checkpoint_every": 50}


def make_tiny_chain(root: Path, pretrain_steps: int, finetune_steps: int, reft_steps: int) -> Path:
    """Train a tiny pretrain (low prior) -> finetune -> reft chain into root/{pt,ft,reft}."""
    stages = [("pretrain", "pt", None, pretrain_steps, {"task.prior": "L"}),
              ("finetune", "ft", root / "pt", finetune_steps, {}),
              ("reft", "reft", root / "ft", reft_steps, {})]
    for stage, name, parent, steps, extra in stages:
        overrides = {**SMALL, **extra, "train.steps": steps, "train.eval_every": steps}
        run_stage(resolve_configs(stage, "tiny", parent=parent, overrides=overrides).spec(),
                  root / name, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_chain():
    """`tiny_chain(root, pretrain_steps, finetune_steps, reft_steps)` -> root."""
    return make_tiny_chain
