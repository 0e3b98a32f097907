"""A fourth experiment filling the core: copy the first token, then (fine-tuned) the second."""

from dataclasses import dataclass

import torch

from wrapperlens.claims import Claim, Measured, claim_record
from wrapperlens.experiment import ExperimentRun, StageRule, register_experiment
from wrapperlens.models import ModelConfig, build_model
from wrapperlens.presets import Preset, register_preset
from wrapperlens.planning import Planner, Setting
from wrapperlens.training import TrainBatch, TrainConfig


@dataclass(frozen=True)
class CopyTask:  # the answer is the token at `position`
    vocab: int = 6
    length: int = 4
    position: int = 0


@register_experiment
class Toy(ExperimentRun):
    name = "toy"
    stage_rules = (StageRule("pretrain", sections=dict(task="task", model="model",
                                                       train="pretrain")),
                   StageRule("finetune", parents=("pretrain",), inherits=("model",),
                             sections={"task": "finetune_task", "train": "finetune"}, eta=True))
    section_types = {"task": CopyTask, "model": ModelConfig, "train": TrainConfig}

    def new_model(self):
        task = self.sections["task"]
        return build_model(self.sections["model"], d_vocab=task.vocab, n_ctx=task.length + 1)

    def rows(self, n: int, seed: int) -> torch.Tensor:
        task = self.sections["task"]
        rng = torch.Generator().manual_seed(seed)
        x = torch.randint(task.vocab, (n, task.length), generator=rng)
        return torch.cat([x, x[:, task.position : task.position + 1]], 1)

    def batch(self, step: int) -> TrainBatch:
        tokens = self.rows(self.train_config.batch_size, 1000 * self.train_config.seed + step)
        mask = torch.zeros(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
        mask[:, -1] = True
        return TrainBatch(tokens, mask)

    def evaluate(self, model, step=None) -> dict[str, float]:  # chance: 1 / vocab
        tokens = self.rows(256, seed=2**31 - 1)  # one fixed evaluation set
        with torch.no_grad():
            predicted = model(tokens[:, :-1])[:, -1].argmax(-1)
        return {"acc/copy": (predicted == tokens[:, -1]).float().mean().item()}


_TRAIN = TrainConfig(steps=60, batch_size=32, lr=1e-2, eval_every=30, schedule="constant")
register_preset(Preset("tiny", "toy", dict(task=CopyTask(), finetune_task=CopyTask(position=1),
    model=ModelConfig(n_layers=1, d_model=16, n_heads=2), pretrain=_TRAIN, finetune=_TRAIN),
    etas={"M": 3e-3}, default_eta={"finetune": "M"}))


def plan(preset, overrides):
    jobs = Planner(Toy, preset)
    for seed in range(2):
        pt = jobs.train(f"pretrain/seed={seed}", "pretrain", params={"seed": seed},
                        overrides={"train.seed": seed, "model.init_seed": seed})
        jobs.train(f"finetune/seed={seed}", "finetune", parent=pt, eta="M",
                   overrides={"train.seed": seed}, params={"seed": seed})
    return jobs.ordered()


def _final(stage):  # one value per seed (finished runs): the final accuracy; floor: chance
    return lambda view: Measured([r["final"].get("acc/copy", 0.0) for r in view["runs"]
                                  if r["stage"] == stage and r["status"] == "finished"], 1 / 6)


CLAIMS = (Claim(1, "Pretraining learns to copy", "", "acc/copy after pretraining", 0.5,
                _final("pretrain")),
          Claim(2, "Fine-tuning learns the new position", "", "acc/copy after fine-tuning", 0.5,
                _final("finetune")))
SETTING = Setting("toy", plan, lambda view: [claim_record(c, c.measure(view)) for c in CLAIMS],
                  seeds=lambda preset, overrides: 2)
