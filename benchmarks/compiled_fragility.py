"""How fragile is a compiled model? Noise on its weights, and the first steps of fine-tuning.

The paper adds N(0, 1e-3) to the compiled weights before fine-tuning (App. C.1). This measures,
on the compiled models of `wrapperlens compiled` (docs/compiled.md):

1. Acc O_PT (C_Te = 0 inputs, the last position) of the Counter (24 and 48 letters) and the
   Max-identifier (10) after adding N(0, std) to every weight, over noise seeds (mean [min, max]),
   for each gains mode of our compiler (docs/compiled.md#gains: `exact`; `tracr` with slope cap
   100, and 300 at 48 letters as the `paper` preset) and for Tracr's own compiled model of the same
   program through the bridge (`mlp_exactness=100`, Tracr's default) when the `tracr` extra is
   installed;
2. fine-tuning the noise-free Counter (24 letters, the `cpu` preset's gains) to count b with
   C_Tr = 1 by SGD (momentum 0.9, batch 96, constant η, gradient norm clipped at 1, as the `cpu`
   preset): Acc O_PT, Acc O_FT on C_Te = 1, and how many distinct answers the model gives on the
   evaluation set, after 0, 1, 2, 5, 10, 20 and 50 steps; and the gradient norm of each parameter
   at step 0.

    python benchmarks/compiled_fragility.py --seeds 50 --stds 1e-3   # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import torch

from wrapperlens.experiments.compiled.stages import add_noise, resolve_compiled

STDS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)
STEPS = (0, 1, 2, 5, 10, 20, 50)
N_INPUTS = 1000
#: (label, compile overrides) of our compiler's modes; slope None: the mode's default.
MODES = (("exact", {"compile.gains": "exact"}),
         ("tracr S=100", {"compile.gains": "tracr", "compile.mlp_slope": 100.0}),
         ("tracr S=300", {"compile.gains": "tracr", "compile.mlp_slope": 300.0}))


def _run(program: str, length: int, **overrides):
    over = {"task.program": program, "task.length": length, "compile.noise_std": 0.0, **overrides}
    return resolve_compiled("compile", "cpu", overrides=over)


def _ours(run, letters: np.ndarray) -> tuple[Callable, Callable]:
    tokens, want = run.token_ids(letters), run.classes(letters, run.task.config.o_pt)

    def accuracy(model) -> float:
        with torch.no_grad():
            return (model(tokens)[:, -1].argmax(-1) == want).double().mean().item()
    return run.new_model, accuracy


def _tracrs(run, letters: np.ndarray) -> tuple[Callable, Callable] | None:
    try:
        from wrapperlens.experiments.compiled.tracr_bridge import (
            compile_with_tracr, hooked_from_tracr, run_tracr_hooked)
        task = run.task
        assembled = compile_with_tracr(task.program(task.config.o_pt), list(task.vocab),
                                       task.length, mlp_exactness=100)
    except (ImportError, NotImplementedError) as err:
        print(f"  (Tracr's own model: not measured, {type(err).__name__}: {err})")
        return None
    inputs = [[task.vocab[i] for i in row] for row in letters]
    want = task.answers(letters, task.config.o_pt)

    def accuracy(model) -> float:
        got = run_tracr_hooked(model, assembled, inputs)
        return float(np.mean([g[-1] == w for g, w in zip(got, want)]))
    return (lambda: hooked_from_tracr(assembled)), accuracy


def noise_table(seeds: int, stds: tuple[float, ...]) -> None:
    print("Acc O_PT (C_Te = 0, last position) after N(0, std) on every compiled weight, mean "
          f"[min, max] over {seeds} noise seeds, {N_INPUTS} inputs")
    print(f"{'model':<22}{'compiler':<16}" + "".join(f"{f'std {s:g}':>22}" for s in stds))
    for program, length in (("counter", 24), ("counter", 48), ("max_identifier", 10)):
        base = _run(program, length)
        letters = base.task.batch(base.task.eval_rng("fragility", N_INPUTS), N_INPUTS, 0.0)[0]
        models = [(label, _ours(_run(program, length, **over), letters)) for label, over in MODES]
        models.append(("Tracr (100)", _tracrs(base, letters)))
        for label, made in models:
            if made is None:
                continue
            new_model, accuracy = made
            cells = []
            for std in stds:
                accs = ([accuracy(add_noise(new_model(), std, seed)) for seed in range(seeds)]
                        if std else [accuracy(new_model())])
                cells.append(f"{np.mean(accs):.3f} [{min(accs):.3f}, {max(accs):.3f}]")
            print(f"{program + f' ({length})':<22}{label:<16}" + "".join(f"{c:>22}" for c in cells),
                  flush=True)


def first_steps(lr: float) -> None:
    run = _run("counter", 24)
    model = run.new_model().train()
    tokens, _ = run.eval_sets()["acc/O_FT/cte1"]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    task = run.task
    print(f"\nFine-tuning the Counter (24 letters, gains {run.sections['compile'].gains}) to "
          f"count b, C_Tr = 1, SGD η = {lr:g}")
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
    parser.add_argument("--stds", type=float, nargs="+", default=list(STDS),
                        help="noise standard deviations")
    parser.add_argument("--no-finetune", action="store_true", help="the noise table only")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning η (paper η_S)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    noise_table(args.seeds, tuple(args.stds))
    if not args.no_finetune:
        first_steps(args.lr)


if __name__ == "__main__":
    main()
