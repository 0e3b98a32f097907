"""The cost budget of a `wrapperlens reproduce` grid: FLOPs per stage against the trainer's
measured throughput and the machine's matmul peak (run by hand, on an idle machine:
`python benchmarks/reproduce_budget.py --preset cpu [--results runs/cpu]`).

For each stage shape of the preset (pretraining, fine-tuning, reFT) it counts the FLOPs of one
training step (forward and backward, `torch.utils.flop_counter`), times the trainer's step at one
thread (as the sweep runs it: one process per run), and prints the achieved GFLOP/s against a
one- and a two-thread fp32 matmul. Summed over the grid's jobs, that predicts the sweep's time on
`--workers` processes; with `--results DIR` (a finished `reproduce --preset PRESET` directory) it
also prints the measured wall time beside the prediction. The old `cpu` pretraining shape (every
task family, 8000 steps) is costed too, for the grid it would have needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from wrapperlens.experiments.pcfg.grid import plan
from wrapperlens.experiments.pcfg.stages import resolve_configs
from wrapperlens.presets import get_preset


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def step_cost(run, steps: int = 30) -> tuple[float, float]:
    """(FLOPs of one training step, median seconds of one step at one thread)."""
    torch.set_num_threads(1)
    spec = run.spec()
    model = spec.build_model()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)

    def one(step: int) -> None:
        batch = spec.batch(step)
        logits = model(batch.tokens[:, :-1])
        target = batch.tokens[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[batch.loss_mask], target[batch.loss_mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        one(0)
    times = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        one(step)
        times.append(time.perf_counter() - start)
    return counter.get_total_flops(), statistics.median(times[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", type=Path, help="a finished reproduce directory")
    args = parser.parse_args()
    peak1, peak2 = matmul_gflops(1), matmul_gflops(2)
    print(f"fp32 matmul 2048²: {peak1:.0f} GFLOP/s (1 thread), {peak2:.0f} GFLOP/s (2 threads)")

    p = get_preset(args.preset, "pcfg")
    pt = resolve_configs("pretrain", args.preset)
    old = resolve_configs("pretrain", args.preset, overrides={
        "task.families": "C,CC,I,IC,T", "train.steps": 8000})
    # Fine-tuning and reFT shapes: one answer-loss step of each, from a fresh model.
    shapes = {"pretrain": pt, "old pretrain (5 families)": old}
    costs = {name: step_cost(run) for name, run in shapes.items()}
    answer_flops, answer_s = step_cost(resolve_configs(
        "pretrain", args.preset, overrides={"train.loss": "answer"}))
    print(f"\n{'stage':28s} {'GFLOP/step':>10s} {'ms/step':>8s} {'GFLOP/s':>8s} "
          f"{'of 1-thr peak':>13s} {'of 2-thr peak':>13s}")
    rows = {**costs, "finetune / reFT (answer loss)": (answer_flops, answer_s)}
    for name, (flops, seconds) in rows.items():
        rate = flops / seconds / 1e9
        print(f"{name:28s} {flops / 1e9:10.2f} {1e3 * seconds:8.1f} {rate:8.1f} "
              f"{rate / peak1:13.2f} {rate / peak2:13.2f}")

    steps = Counter()  # by label (pretrain, scratch_finetune, jailbreak_pretrain, ...)
    stage_steps = {"pretrain": p.pretrain.steps, "finetune": p.finetune.steps,
                   "reft": p.reft.steps}
    for g in plan(args.preset):
        if g.kind == "run":
            stage, over = g.job.args["stage"], g.job.args["overrides"]
            steps[g.stage] += over.get("train.steps", stage_steps[stage])
    seconds = {stage: n * (costs["pretrain"][1] if "pretrain" in stage else answer_s)
               for stage, n in steps.items()}
    total = sum(seconds.values()) / args.workers
    print(f"\ngrid of `{args.preset}` ({sum(1 for g in plan(args.preset) if g.kind == 'run')} "
          f"runs): training steps per stage {dict(steps)}")
    print(f"predicted training time on {args.workers} one-thread workers: {total / 60:.1f} min "
          "(evaluation and analyses not included)")
    n_pretrain = sum(n for stage, n in steps.items() if "pretrain" in stage) // p.pretrain.steps
    old_total = n_pretrain * 8000 * costs["old pretrain (5 families)"][1] / args.workers
    print(f"the same {n_pretrain} pretrainings at the old shape (8000 steps): "
          f"{old_total / 60:.1f} min on {args.workers} workers")
    if args.results:
        results = json.loads((args.results / "results.json").read_text())
        trained = sum(r["seconds"] for r in results["runs"])
        print(f"measured ({args.results}): wall time {results['wall_seconds'] / 60:.1f} min, "
              f"training {trained / 60:.1f} min summed over runs")


if __name__ == "__main__":
    main()
