"""Edge attribution against exact edge patching: agreement on trained pairs, and cost.

Two parts (`wrapperlens.analysis.edges`; docs/edges.md):

**Agreement** (`--runs FT [FT ...]`, trained PCFG fine-tuning runs, each with its parent): for
every run, two settings on real "count a" prompts (cut after `<art>`), metric = logit[count a] -
logit[count b] at the answer position:

- *one model*: the fine-tuned model, clean "count a" prompts against the same strings asked
  "count b";
- *pair*: the pretrained model's node outputs spliced into the fine-tuned model's run, same
  prompts (what fine-tuning changed, edge by edge).

EAP and EAP-IG (5 steps) are scored against exact edge patching over every edge: Spearman rank
correlation of the signed scores, and the overlap of the top tenth of edges by |score|.

**Cost** (`--cost`): wall time and edges per second of EAP, EAP-IG and exact edge patching, in
one run, on random models of the `cpu` PCFG shape (2 layers x 64, 4 heads, the preset's context)
and the `paper` shape (6 layers x 192, 6 heads, the paper's context). Exact patching costs a
forward per edge, so on the `paper` shape it is timed on `--exact-edges` edges and its time for
the whole graph is that rate times the edge count (said so in the output).

    python benchmarks/edge_attribution.py --runs runs/cpu/runs/<id> ...    # agreement
    python benchmarks/edge_attribution.py --cost                           # cost, one thread
    python benchmarks/edge_attribution.py --reproduction runs/cpu         # every C_Tr 1, η_M pair

Run it on an idle machine; compare times only within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from wrapperlens.analysis.edges import (
    EdgeGraph,
    EdgeScores,
    eap_ig_scores,
    eap_scores,
    exact_edge_patching,
    top_edges,
)
from wrapperlens.analysis.localisation import spearman
from wrapperlens.analysis.logit_metrics import logit_difference
from wrapperlens.models import ModelConfig, build_model



def top_overlap(scores: EdgeScores, exact: EdgeScores, k: int) -> float:
    """Share of the exact top-k edges (by |score|) that `scores` also puts in its top k."""
    return len(set(top_edges(scores, k)) & set(top_edges(exact, k))) / k


# ------------------------------------------------------------------------------- agreement
def count_prompts(run_dir: str, batch: int, seed: int = 0):
    """(run, fine-tuned, pretrained, clean, corrupted, metric) on the run's own task: "count a"
    prompts, the same strings asked "count b", logit difference of the two answers (also the
    trained pair of `patching_speed.py --run`)."""
    from tasks.data import Question
    from wrapperlens.experiments.pcfg.stages import load_run

    run, finetuned = load_run(run_dir)
    if run.parent is None:
        raise SystemExit(f"{run_dir}: expected a fine-tuning run (one with a parent)")
    _, pretrained = load_run(run.parent)
    task, ft = run.task, run.finetune_data
    text = task.sample_text(np.random.default_rng(seed), batch)
    asks = {}
    for operand in (ft.pretrain_operand, ft.operand):
        question = Question(ft.family, operand)
        asks[operand] = task.encode(text, question, task.labels(text, question))
    col = task.answer_col
    clean = torch.from_numpy(asks[ft.pretrain_operand][:, :col])
    corrupted = torch.from_numpy(asks[ft.operand][:, :col])
    right = torch.from_numpy(asks[ft.pretrain_operand][:, col])
    wrong = torch.from_numpy(asks[ft.operand][:, col])
    metric = logit_difference(right, wrong)
    return run, finetuned.eval(), pretrained.eval(), clean, corrupted, metric


def agreement(run_dirs: list[str], batch: int) -> list[dict]:
    rows = []
    for run_dir in run_dirs:
        _, finetuned, pretrained, clean, corrupted, metric = count_prompts(run_dir, batch)
        settings = {"one model": dict(corrupted_tokens=corrupted, source_model=None),
                    "pair": dict(corrupted_tokens=None, source_model=pretrained)}
        for name, how in settings.items():
            args = (finetuned, clean, how["corrupted_tokens"], metric)
            source = how["source_model"]
            exact = exact_edge_patching(*args, source_model=source)
            k = max(1, len(exact.edges) // 10)
            row = {"run": run_dir, "setting": name, "edges": len(exact.edges), "k": k}
            for method, scores in (("EAP", eap_scores(*args, source_model=source)),
                                   ("EAP-IG", eap_ig_scores(*args, steps=5,
                                                            source_model=source))):
                row[f"spearman {method}"] = spearman(scores.values, exact.values)
                row[f"top-k {method}"] = top_overlap(scores, exact, k)
            rows.append(row)
            print(f"{run_dir} [{name}]: {row['edges']} edges, top {k}; Spearman EAP "
                  f"{row['spearman EAP']:.3f} EAP-IG {row['spearman EAP-IG']:.3f}; top-k EAP "
                  f"{row['top-k EAP']:.3f} EAP-IG {row['top-k EAP-IG']:.3f}", flush=True)
    for name in ("one model", "pair"):
        chosen = [r for r in rows if r["setting"] == name]
        if not chosen:
            continue
        summary = []
        for key in ("spearman EAP", "spearman EAP-IG", "top-k EAP", "top-k EAP-IG"):
            values = [r[key] for r in chosen]
            summary.append(f"{key} {statistics.mean(values):.3f} "
                           f"[{min(values):.3f}, {max(values):.3f}]")
        print(f"== {name}, {len(chosen)} runs: " + "; ".join(summary))
    return rows


def reproduction_pairs(out: str) -> list[str]:
    """The run directories of every C_Tr 1, η_M Counter fine-tuning of a reproduce directory."""
    results = json.loads((Path(out) / "results.json").read_text())
    dirs = [str(Path(out) / r["dir"]) for r in results["runs"]
            if r.get("setting") == "pcfg" and r["stage"] == "finetune" and r["status"] ==
            "finished" and r["params"].get("c_tr") == 1.0 and r["params"].get("eta") == "M"
            and r["params"].get("family", "C") == "C" and "prior" in r["params"]]
    if not dirs:
        raise SystemExit(f"{out}/results.json: no finished C_Tr 1, η_M fine-tuning")
    return sorted(dirs)


# ------------------------------------------------------------------------------------ cost
SHAPES = {  # the PCFG presets' model shapes, context and vocabulary
    "cpu": ("cpu", ModelConfig(n_layers=2, d_model=64, n_heads=4)),
    "paper": ("paper", ModelConfig(n_layers=6, d_model=192, n_heads=6)),
}


def shape_context(preset: str) -> tuple[int, int]:
    from tasks.data import PCFGTask
    from wrapperlens.experiments.pcfg.presets import get

    task = PCFGTask(get(preset).task)
    return task.n_ctx, len(task.vocab)


def cost(batch: int, exact_edges: int, batch_edges: int) -> None:
    print(f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, batch {batch}")
    for name, (preset, shape) in SHAPES.items():
        n_ctx, d_vocab = shape_context(preset)
        model = build_model(shape, n_ctx=n_ctx, d_vocab=d_vocab).eval()
        g = torch.Generator().manual_seed(0)
        clean, corrupted = (torch.randint(0, d_vocab, (batch, n_ctx), generator=g)
                            for _ in range(2))
        metric = logit_difference(1, 2)
        edges = EdgeGraph.of(model).edges
        sample = list(edges) if exact_edges <= 0 else list(edges[:: max(1, len(edges) //
                                                                       exact_edges)])
        times = {}
        for method, fn in (
            ("EAP", lambda: eap_scores(model, clean, corrupted, metric)),
            ("EAP-IG (5 steps)", lambda: eap_ig_scores(model, clean, corrupted, metric, steps=5)),
            ("exact", lambda: exact_edge_patching(model, clean, corrupted, metric, sample,
                                                  batch_edges=batch_edges)),
        ):
            fn()  # warm-up
            start = time.perf_counter()
            fn()
            times[method] = time.perf_counter() - start
        exact_all = times["exact"] * len(edges) / len(sample)
        print(f"\n== {name} shape: {shape.n_layers} x {shape.d_model}, {shape.n_heads} heads, "
              f"{n_ctx} positions, vocab {d_vocab}: {len(edges)} edges")
        for method, seconds in times.items():
            n = len(sample) if method == "exact" else len(edges)
            whole = exact_all if method == "exact" else seconds
            note = (f" (timed on {len(sample)} of {len(edges)} edges; whole graph "
                    f"{exact_all:.1f} s at that rate)" if method == "exact" and
                    len(sample) < len(edges) else "")
            print(f"{method:18s} {seconds:8.3f} s  {n / seconds:10.1f} edges/s  "
                  f"{exact_all / whole:7.1f}x faster than exact{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=[], help="trained PCFG fine-tuning runs")
    parser.add_argument("--reproduction", help="a `reproduce` directory: every C_Tr 1, η_M pair")
    parser.add_argument("--batch", type=int, default=32, help="prompts per scoring run")
    parser.add_argument("--cost", action="store_true", help="time the methods at both shapes")
    parser.add_argument("--cost-batch", type=int, default=8)
    parser.add_argument("--exact-edges", type=int, default=256,
                        help="edges exact patching is timed on (0 = all)")
    parser.add_argument("--batch-edges", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = list(args.runs) + (reproduction_pairs(args.reproduction) if args.reproduction else [])
    if not runs and not args.cost:
        parser.error("give --runs, --reproduction or --cost")
    if runs:
        agreement(runs, args.batch)
    if args.cost:
        cost(args.cost_batch, args.exact_edges, args.batch_edges)


if __name__ == "__main__":
    main()
