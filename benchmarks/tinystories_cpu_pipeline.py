"""The whole TinyStories pipeline at the `cpu` preset, timed; or an estimate from component times.

    python benchmarks/tinystories_cpu_pipeline.py --out runs/tinystories-cpu      # full run
    python benchmarks/tinystories_cpu_pipeline.py --estimate                      # ~1-2 minutes

The full run is `tinystories.pipeline.run_pipeline(OUT, "cpu", workers=2)` (the same as
`wrapperlens tinystories pipeline --preset cpu --out OUT`): prepare 6000 offline stories, the twist
classifier, the tokenizer, pretraining ("Present in PT") and the control ("Not in PT") in
parallel, the six deletions (F, F+R, F+MM at η_M, η_S) and the control's reFT, the six reFTs,
probes of every model, comparisons. It writes `OUT/summary.json` (twist loss during deletion and
reFT for each protocol and the control, twist score at every generation step, probe accuracy per
feature and layer, classifier accuracy, phase timings) and `OUT/summary.txt`. Target: <= 20
minutes on an unloaded 2-core machine.

`--estimate` times one training step, one evaluation, one generation scoring and one model's
probes (one thread, random weights: generations run to `max_new_tokens`, so that part is an upper
bound) and extrapolates the pipeline's wall time for `--workers` parallel processes, once from
wall-clock times and once from the process's CPU times. Other jobs on the cores inflate the wall
times; the CPU-time estimate is what an unloaded machine would take (roughly: shared caches and
memory bandwidth still slow a busy machine down).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _time(fn, repeat: int) -> dict[str, float]:
    """Seconds per call by the wall clock and by this process's CPU time.

    With one torch thread, the CPU time per call is close to what the call takes on an idle
    core, so on a busy machine the "cpu" estimate predicts an unloaded run better than "wall".
    """
    fn()  # warm-up
    start = {name: clock() for name, clock in CLOCKS.items()}
    for _ in range(repeat):
        fn()
    return {name: (clock() - start[name]) / repeat for name, clock in CLOCKS.items()}


def estimate(workers: int) -> dict:
    from tinystories.evaluation import StoryEvaluator, ensure_story_classifier
    from tinystories.experiments import _generation_steps, resolve_story_run
    from tinystories.lm import StoryBatcher, encode_records, pad_id_of
    from tinystories.pipeline import PROTOCOLS, ETAS
    from tinystories.prepare import build_run_tokenizer, load_prepared, prepare_stories
    from tinystories.presets import EXPERIMENT
    from tinystories.protocols import with_text
    from tinystories.story_probes import probe_story_features, story_probe_inputs
    from tinystories.tokenizer import load_tokenizer
    from wrapperlens.models import build_model
    from wrapperlens.presets import get_preset
    from wrapperlens.runs import RunDir
    from wrapperlens.training import _make_optimizer, masked_loss

    torch.set_num_threads(1)
    p = get_preset("cpu", EXPERIMENT)
    tmp = Path(tempfile.mkdtemp(prefix="ts_estimate_"))
    start = {name: clock() for name, clock in CLOCKS.items()}
    prepare_stories(p.prepare, tmp / "prepared")
    ensure_story_classifier(tmp / "prepared", p.classifier)
    build_run_tokenizer(tmp / "prepared", tmp / "tok", p.tokenizer)
    setup = {name: clock() - start[name] for name, clock in CLOCKS.items()}
    tokenizer = load_tokenizer(tmp / "tok")
    records = load_prepared(tmp / "prepared", "all")
    texts = with_text(records, "instruct", shuffle_fields_seed=0)["text"]
    sequences, _ = encode_records(tokenizer, texts, p.model.n_ctx + 1)
    batcher = StoryBatcher(sequences, p.pretrain.batch_size, p.model.n_ctx, pad_id_of(tokenizer))
    model = build_model(p.model, d_vocab=len(tokenizer))
    opt = _make_optimizer(model, p.pretrain)
    state = {"step": 0}

    def train_step() -> None:
        batch = batcher(state["step"])
        state["step"] += 1
        loss = masked_loss(model(batch.tokens[:, :-1]), batch.tokens, batch.loss_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step = _time(train_step, 10)
    model.eval()
    classifier, _ = ensure_story_classifier(tmp / "prepared", p.classifier)
    evaluator = StoryEvaluator(tmp / "prepared", tokenizer, p.model.n_ctx, p.eval, classifier)
    with torch.no_grad():
        evaluation = _time(lambda: evaluator.losses(model), 3)
        generation = _time(lambda: evaluator.generate(model), 1)
    inputs = story_probe_inputs(tmp / "prepared", tokenizer, p.model.n_ctx, p.probe_data)
    # One call probes the model and its random-init baseline: half of it is one model.
    probe = _time(lambda: probe_story_features({"m": model}, inputs, p.probe), 1)
    probe = {k: v / 2 for k, v in probe.items()}

    # A stand-in parent run (the pretraining's config, no weights) for resolving the deletion
    # and reFT stages.
    pretrain = resolve_story_run("pretrain", "cpu", prepared=tmp / "prepared",
                                 tokenizer=tmp / "tok")
    RunDir(tmp / "pt").write_config(pretrain.to_json())
    runs = {
        "pretrain": pretrain,
        "delete": resolve_story_run("delete", "cpu", parent=tmp / "pt"),
        "reft": resolve_story_run("reft", "cpu", parent=tmp / "pt"),
    }
    n_deleted = len(PROTOCOLS) * len(ETAS)
    n_models = 2 + 2 * n_deleted + 1

    def phase(jobs: list[float]) -> float:  # longest-first onto `workers` processes
        loads = [0.0] * workers
        for job in sorted(jobs, reverse=True):
            loads[loads.index(min(loads))] += job
        return max(loads)

    result: dict = {"workers": workers, "clocks": {}}
    for clock in CLOCKS:
        stage = {
            name: (run.train_config.steps * step[clock]
                   + len(run.train_config.eval_steps()) * evaluation[clock]
                   + len(_generation_steps(run)) * generation[clock])
            for name, run in runs.items()
        }
        phases = {
            "prepare, classifier, tokenizer": setup[clock],
            "pretrain + control": phase([stage["pretrain"]] * 2),
            "deletion (+ control reFT)": phase([stage["delete"]] * n_deleted + [stage["reft"]]),
            "reFT": phase([stage["reft"]] * n_deleted),
            "probes": probe[clock] * (n_models + 1),
            "compare": probe[clock] * (n_deleted + 2) + 10 * evaluation[clock],
        }
        result["clocks"][clock] = {
            "component_s": {"train_step": step[clock], "eval_losses": evaluation[clock],
                            "generation_scoring (upper bound)": generation[clock],
                            "probes_per_model": probe[clock],
                            **{f"stage_{k}": v for k, v in stage.items()}},
            "phases_s": phases,
            "estimated_total_s": sum(phases.values()),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tinystories-cpu"),
                        help="pipeline output directory (default: runs/tinystories-cpu)")
    parser.add_argument("--workers", type=int, default=2, help="parallel training processes")
    parser.add_argument("--estimate", action="store_true",
                        help="time the components and extrapolate instead of running everything")
    args = parser.parse_args(argv)
    if args.estimate:
        result = estimate(args.workers)
        wall, cpu = result["clocks"]["wall"], result["clocks"]["cpu"]
        print(f"{'':40s} {'wall':>9s} {'cpu time':>9s}")
        for name in wall["component_s"]:
            w, c = wall["component_s"][name], cpu["component_s"][name]
            print(f"  {name:38s} {w:8.2f}s {c:8.2f}s")
        for name in wall["phases_s"]:
            w, c = wall["phases_s"][name], cpu["phases_s"][name]
            print(f"phase {name:34s} {w:8.1f}s {c:8.1f}s")
        print(f"estimated total ({args.workers} workers): "
              f"{wall['estimated_total_s'] / 60:.1f} min by the wall clock, "
              f"{cpu['estimated_total_s'] / 60:.1f} min by CPU time "
              "(the unloaded-machine estimate)")
        print(json.dumps(result))
        return 0
    from tinystories.pipeline import run_pipeline

    start = time.perf_counter()
    summary = run_pipeline(args.out, "cpu", workers=args.workers, progress=False)
    minutes = (time.perf_counter() - start) / 60
    print(f"total {minutes:.1f} min (target <= 20 on 2 unloaded cores); phases (s): "
          f"{summary['timings_s']}; summary: {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
