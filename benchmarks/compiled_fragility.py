"""How fragile is a compiled model? Noise on its weights, and the first steps of fine-tuning.

The paper adds N(0, 1e-3) to the compiled weights before fine-tuning (App. C.1). This measures,
on the compiled models of `wrapperlens compiled` (docs/compiled.md):

1. Acc O_PT (C_Te = 0 evaluation set) of the Counter (24 and 48 letters) and the Max-identifier
   after adding N(0, std) to every weight, for several stds, over noise seeds (mean [min, max]);
2. fine-tuning the noise-free Counter (24 letters) to count b with C_Tr = 1 by SGD (momentum 0.9,
   batch 96, constant η, gradient norm clipped at 1, as the `cpu` preset): Acc O_PT, Acc O_FT
   on C_Te = 1, and how many distinct answers the model gives on the evaluation set, after 0, 1,
   2, 5, 10, 20 and 50 steps; and the gradient norm of each parameter at step 0.

    python benchmarks/compiled_fragility.py            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from wrapperlens.experiments.compiled.stages import add_noise, resolve_compiled

STDS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)
STEPS = (0, 1, 2, 5, 10, 20, 50)


def _run(program: str, length: int):
    over = {"task.program": program, "task.length": length, "compile.noise_std": 0.0}
    return resolve_compiled("compile", "cpu", overrides=over)


def noise_table(seeds: int) -> None:
    print("Acc O_PT (C_Te = 0) after N(0, std) on every compiled weight, mean [min, max] over "
          f"{seeds} noise seeds")
    print(f"{'model':<24}" + "".join(f"{f'std {s:g}':>22}" for s in STDS))
    for program, length in (("counter", 24), ("counter", 48), ("max_identifier", 10)):
        run = _run(program, length)
        cells = []
        for std in STDS:
            accs = [run.evaluate(add_noise(run.new_model(), std, seed))["acc/O_PT/cte0"]
                    for seed in range(seeds)]
            cells.append(f"{np.mean(accs):.3f} [{min(accs):.3f}, {max(accs):.3f}]")
        print(f"{program + f' ({length})':<24}" + "".join(f"{c:>22}" for c in cells))


def first_steps(lr: float) -> None:
    run = _run("counter", 24)
    model = run.new_model().train()
    tokens, _ = run.eval_sets()["acc/O_FT/cte1"]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    task = run.task
    print(f"\nFine-tuning the exact Counter (24 letters) to count b, C_Tr = 1, SGD η = {lr:g}")
    print(f"{'step':>5} {'Acc O_PT cte1':>14} {'Acc O_FT cte1':>14} {'distinct answers':>17}")
    for step in range(max(STEPS) + 1):
        if step in STEPS:
            model.eval()
            metrics = run.evaluate(model)
            with torch.no_grad():
                distinct = len(set(model(tokens)[:, -1].argmax(-1).tolist()))
            print(f"{step:>5} {metrics['acc/O_PT/cte1']:>14.3f} "
                  f"{metrics['acc/O_FT/cte1']:>14.3f} {distinct:>17}")
            model.train()
        letters, _ = task.batch(task.step_rng("fragility", step), 96, 1.0)
        logits = model(run.token_ids(letters))[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, run.classes(letters, "b"))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            norms = {n: p.grad.norm().item() for n, p in model.named_parameters()}
            top = sorted(norms.items(), key=lambda kv: -kv[1])[:4]
            print("  gradient norms at step 0 (largest): "
                  + ", ".join(f"{n} {v:.3g}" for n, v in top))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds per std")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning η (paper η_S)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    noise_table(args.seeds)
    first_steps(args.lr)


if __name__ == "__main__":
    main()
