"""Is data generation ever the bottleneck? Samples/s of the PCFG batch generator against the
samples/s the trainer consumes, at the `cpu` and `paper` presets (run by hand:
`python benchmarks/data_vs_training.py [--presets cpu paper] [--steps 5]`).

Both rates are measured in this one run on this machine: generation of full training batches
(pretraining mixture, and fine-tuning batches with C_Tr = 1, which edit every string), and
training steps of the preset's model (forward + backward + AdamW, the trainer's own step). Target:
generation >= 10x consumption. On a GPU the trainer consumes much faster; the printed generation
rate is what one CPU core delivers, to compare with a GPU step time measured elsewhere.
"""

from __future__ import annotations

import argparse
import time

import torch

from tasks.config import FinetuneDataConfig
from tasks.data import PCFGTask
from wrapperlens.experiments.pcfg.stages import resolve_configs
from wrapperlens.training import _make_optimizer, masked_loss


def generation_rate(task: PCFGTask, batch: int, finetune: FinetuneDataConfig | None, seconds: float = 3.0) -> float:
    n, step, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rng = task.step_rng("bench", step)
        b = task.pretrain_batch(rng, batch) if finetune is None else task.finetune_batch(rng, batch, finetune)
        n += len(b)
        step += 1
    return n / (time.perf_counter() - start)


def training_rate(preset: str, steps: int) -> tuple[float, int]:
    run = resolve_configs("pretrain", preset)
    model = run.new_model()
    opt = _make_optimizer(model, run.train_config)
    batch = run.batch(0)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = masked_loss(model(batch.tokens[:, :-1]), batch.tokens, batch.loss_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    step_time = sorted(times[1:])[len(times[1:]) // 2]
    return batch.tokens.shape[0] / step_time, batch.tokens.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per preset")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'preset':8}{'batch':>6}{'train samples/s':>17}{'gen pretrain/s':>16}{'gen finetune/s':>16}"
          f"{'ratio PT':>10}{'ratio FT':>10}")
    for preset in args.presets:
        run = resolve_configs("pretrain", preset)
        consume, batch = training_rate(preset, args.steps)
        gen_pt = generation_rate(run.task, batch, None)
        gen_ft = generation_rate(run.task, batch, FinetuneDataConfig(c_tr=1.0))
        print(f"{preset:8}{batch:>6}{consume:>17,.0f}{gen_pt:>16,.0f}{gen_ft:>16,.0f}"
              f"{gen_pt / consume:>9.0f}x{gen_ft / consume:>9.0f}x")


if __name__ == "__main__":
    main()
