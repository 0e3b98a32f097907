"""Story LMs pretrained on real, plain TinyStories text at the `cpu` preset, timed.

    python benchmarks/tinystories_plain_text.py --out runs/plain-cpu [--seeds 2]

The real sample (`shared/data/tinystories/tinystories_v1_train_head2MiB.txt` beside the
repository: 2,316 complete stories, `<|endoftext|>`-separated, no Feature labels) goes through the
same path as `wrapperlens tinystories prepare | tokenizer | pretrain | compare`: prepare (the
pretraining data only: plain stories have no deletion protocols), the run's BPE tokenizer, one
`cpu`-preset pretraining per seed (`model.init_seed` and `train.seed` set to the seed), and a
checkpoint comparison of the seeds' models on held-out stories. It prints one table row per
seed (held-out loss at step 0 and at the end, last training loss, seconds) and the mean ± spread
(half the range) of the final held-out loss, and writes `OUT/summary.json`. Without the sample
it runs on the repository's excerpt of it, `tests/data/tinystories/` (its first 400 stories;
the numbers are then not the README's). Other jobs on the cores inflate the seconds: run it on
an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FULL_SAMPLE = REPO / ".." / "shared" / "data" / "tinystories" / "tinystories_v1_train_head2MiB.txt"
EXCERPT = REPO / "tests" / "data" / "tinystories" / "tinystories_v1_train_head330000B.txt"
SAMPLE = FULL_SAMPLE if FULL_SAMPLE.is_file() else EXCERPT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/plain-cpu"))
    parser.add_argument("--data", type=Path, default=SAMPLE, help="a plain-text stories file")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="cpu", help="cpu (default; the README's table) or tiny")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"{args.data}: no such file")
    if args.data.resolve() == EXCERPT.resolve():
        print(f"running on the excerpt {EXCERPT} (400 stories): the full sample "
              f"{FULL_SAMPLE} is not there, or was not asked for", file=sys.stderr)
    torch.set_num_threads(args.threads)

    from tinystories.compare import compare_checkpoints, comparison_inputs
    from tinystories.experiments import load_story_model, resolve_story_run
    from tinystories.prepare import build_run_tokenizer, prepare_stories
    from tinystories.presets import EXPERIMENT
    from tinystories.tokenizer import load_tokenizer
    from wrapperlens.checkpoints import write_json
    from wrapperlens.presets import get_preset
    from wrapperlens.stages import train_or_reuse

    p = get_preset(args.preset, EXPERIMENT)
    start = time.perf_counter()
    summary = prepare_stories(dataclasses.replace(p.prepare, source=str(args.data)),
                              args.out / "prepared")
    build_run_tokenizer(args.out / "prepared", args.out / "tokenizer", p.tokenizer)
    setup_s = time.perf_counter() - start

    rows = []
    for seed in range(args.seeds):
        run = resolve_story_run(
            "pretrain", args.preset, prepared=args.out / "prepared", tokenizer=args.out / "tokenizer",
            overrides={"model.init_seed": seed, "train.seed": seed},
        )
        out = args.out / f"pretrain-seed{seed}"
        records, seconds = train_or_reuse(run.spec(out), out, progress=False)
        rows.append({"seed": seed, "test_loss_start": records[0]["test_loss"],
                     "test_loss_end": records[-1]["test_loss"], "train_loss_end": records[-1]["loss"],
                     "steps": records[-1]["step"], "seconds": seconds})

    models = {f"seed {r['seed']}": load_story_model(args.out / f"pretrain-seed{r['seed']}")
              for r in rows}
    tokenizer = load_tokenizer(args.out / "tokenizer")
    n_ctx = next(iter(models.values())).cfg.n_ctx
    tokens, lengths = comparison_inputs(args.out / "prepared", tokenizer, n_ctx)
    comparison = compare_checkpoints(models, tokens, lengths, probe_config=p.probe)
    ends = [r["test_loss_end"] for r in rows]
    result = {"records": summary["records"], "setup_s": setup_s, "runs": rows,
              "test_loss_end_mean": sum(ends) / len(ends),
              "test_loss_end_spread": (max(ends) - min(ends)) / 2,
              "cka_vs_seed0": comparison["cka"], "threads": args.threads}
    write_json(args.out / "summary.json", result)

    print(f"prepared {summary['records']}; setup (prepare + tokenizer) {setup_s:.0f} s")
    print("| seed | held-out loss, step 0 → end | training loss at the end | steps | time |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['test_loss_start']:.3f} → {r['test_loss_end']:.3f} | "
              f"{r['train_loss_end']:.3f} | {r['steps']} | {r['seconds']:.0f} s |")
    print(f"final held-out loss {result['test_loss_end_mean']:.3f} ± "
          f"{result['test_loss_end_spread']:.3f} (mean ± half-range over {len(rows)} seeds)")
    for name, values in comparison["cka"].items():
        print(f"CKA per layer, {name} vs seed 0: " + " ".join(f"{v:.3f}" for v in values))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
