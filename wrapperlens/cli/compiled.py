"""`wrapperlens compiled ...`: the compiled (RASP / Tracr-style) models on the command line.

    wrapperlens compiled compile   --preset cpu --out runs/c/compiled
    wrapperlens compiled finetune  --from runs/c/compiled --out runs/c/ft --eta S --finetune.c_tr=1
    wrapperlens compiled reft      --from runs/c/ft --out runs/c/reft            # at η_VS
    wrapperlens compiled prune     --from runs/c/ft --out runs/c/prune.json
    wrapperlens compiled attention --from runs/c/ft --out runs/c/attention.html
    wrapperlens compiled grid      --preset cpu --out runs/compiled-grid      # Table 3, claims 8-12

The paper's second setting (§4, App. G; docs/compiled.md#cross-checking-against-tracr): a program
compiled into a transformer, plus noise, then fine-tuned. The stages are
`wrapperlens.experiments.compiled.stages` (compile, finetune, reft: the run engine, so a finished
run is reused and a killed one continues); `prune` and `grid` are
`wrapperlens.experiments.compiled.grid`; `attention` draws `wrapperlens.analysis.attention_views`.
Options and errors are those of every `wrapperlens` command (`wrapperlens.cli.options`,
`wrapperlens.cli.main`). `table3_text` and `claims_text` format a grid's results.json, as `grid`
prints them.

Only the standard library and `wrapperlens.cli.options` are imported at import time; each command
imports what it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wrapperlens.cli.options import (add_command, add_config, add_device, add_from,
                                     add_no_progress, add_out, add_preset, format_ints, int_list,
                                     is_main_process, resolve_preset, section_keys_help)

__all__ = ["COMPILED_COMMANDS", "add_compiled_commands", "table3_text", "claims_text"]

PRESETS = "paper | cpu | tiny"
#: The accuracies every stage logs (`compiled_runs.EVAL_SETS`), in Table 3's column order.
METRICS = ("acc/O_PT/cte1", "acc/O_FT/cte1", "acc/O_PT/cte0", "acc/O_FT/cte0")
PRUNE_KS = (0, 1, 2, 3, 4, 10, 20)

COMPILED_COMMANDS: dict[str, tuple[str, str]] = {  # name: (description, example)
    "compile": ("Write a compiled model as a run: the program (Counter: count a; Max-identifier: "
                "the 5th largest letter) compiled into a transformer, plus N(0, "
                "compile.noise_std) on every weight; prints its size and its step-0 accuracies.",
                "wrapperlens compiled compile --preset cpu --out runs/c/compiled "
                "--task.program=max_identifier --compile.noise_std=0"),
    "finetune": ("Fine-tune a compile run by SGD on O_FT (count b; the 6th largest) with a "
                 "fraction C_Tr of inputs carrying the spurious correlation, logging Acc O_PT / "
                 "Acc O_FT on C_Te = 1 and 0.",
                 "wrapperlens compiled finetune --from runs/c/compiled --out runs/c/ft --eta S "
                 "--finetune.c_tr=0.5 --train.seed=1"),
    "reft": ("Reverse fine-tune a finetune run on O_PT (natural inputs) at a learning rate below "
             "its parent's (default η_VS), logging the same accuracies.",
             "wrapperlens compiled reft --from runs/c/ft --out runs/c/reft --eta VS"),
    "grid": ("Run Table 3's grid (programs x η x C_Tr x seeds, with reFT, Scr.+FT, pruning and "
             "circuit readouts) as a resumable sweep, write OUT/results.json, print Table 3 and "
             "claims 8-12.",
             "wrapperlens compiled grid --preset cpu --out runs/compiled-grid --seeds 3"),
    "prune": ("Single-weight g·w pruning of a compiled run for the O_PT loss (paper App. G, Fig. "
              "55): Acc O_PT (C_Te 0) after zeroing the top-K weights, against K random weights; "
              "prints the pruned weights. The model file is never modified.",
              "wrapperlens compiled prune --from runs/c/ft --ks 0,1,2,3,4 --out runs/c/prune.json"),
    "attention": ("Draw every head's attention on one input as an HTML page that opens offline "
                  "(circuitsvis), tokens labelled BOS then the letters; prints the model's "
                  "answer at the last position (the one the experiments read).",
                  "wrapperlens compiled attention --from runs/c/ft --out runs/c/attn.html "
                  "--input abcabcabcabc"),
}
STAGES = ("compile", "finetune", "reft")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _epilog(name: str) -> Callable[[], str]:
    """The example, then (stages only) each preset's defaults; imports happen for --help only."""

    def build() -> str:
        lines = ["example:", f"  {COMPILED_COMMANDS[name][1]}"]
        if name not in STAGES:
            return "\n".join(lines)
        from wrapperlens.experiments.compiled.stages import SECTION_TYPES
        from wrapperlens.presets import presets

        lines.append("defaults per preset (override with --SECTION.KEY=VALUE):")
        for preset, p in presets("compiled").items():
            if name == "compile":
                lines.append(f"  {preset:6s} program={p.task.program} length="
                             f"{p.task.n_letters} noise_std={p.compile.noise_std:g} "
                             f"seed={p.compile.seed} scale={p.compile.scale:g}")
            else:
                t = p.finetune if name == "finetune" else p.reft
                etas = "/".join(f"{k}={v:g}" for k, v in p.etas.items())
                lines.append(f"  {preset:6s} steps={t.steps} batch={t.batch_size} lr=eta "
                             f"{p.default_eta[name]} of {etas} optimizer={t.optimizer} "
                             f"momentum={t.momentum} schedule={t.schedule}")
        sections = ("task", "compile") if name == "compile" else ("train", "finetune")
        note = "" if name == "compile" else ("task and compile are the parent run's (reft also "
                                             "keeps its [finetune]); --train.seed varies the "
                                             "data order")
        return "\n".join(lines + section_keys_help(SECTION_TYPES, sections, note))

    return build


def add_compiled_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `compiled` and its subcommands (`COMPILED_COMMANDS`) on `wrapperlens`'s."""
    group = subparsers.add_parser(
        "compiled", help="Compiled (RASP) models: compile, fine-tune, reFT, prune, Table 3",
        description="The paper's compiled models (§4, App. G): a Counter or Max-identifier "
        "program compiled into a transformer, fine-tuned, reverse fine-tuned, pruned and read "
        "out. Run `wrapperlens compiled COMMAND --help` for each command.")
    sub = group.add_subparsers(dest="compiled_command", required=True, metavar="COMMAND")
    handlers = {"compile": _stage, "finetune": _stage, "reft": _stage, "grid": _grid,
                "prune": _prune, "attention": _attention}
    for name, (text, _) in COMPILED_COMMANDS.items():
        # compile: its sections; finetune / reft: resolve_compiled names what the parent fixes
        sections = {"compile": ("task", "compile"), "finetune": None, "reft": None}.get(name, ())
        p = add_command(sub, name, handlers[name], text, sections=sections,
                        epilog_fn=_epilog(name), command=f"compiled {name}")
        _add_arguments(name, p)
    return group


def _add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name in ("finetune", "reft"):
        add_from(p, "compile run (finetune) or finetune run (reft) to start from")
    elif name in ("prune", "attention"):
        add_from(p, "compiled run directory (a finetune or reft run; a compile run works too)")
    if name in STAGES or name == "grid":
        add_preset(p, from_run=name in ("finetune", "reft"), names=PRESETS)
        add_out(p, "run directory to write" if name in STAGES else "sweep directory to write")
    if name in ("finetune", "reft"):
        p.add_argument("--eta", metavar="NAME", default=None,
                       help="named learning rate of the preset: L | M | S | VS (default: M for "
                       "finetune, VS for reft); --train.lr overrides it. reft's must be below "
                       "the --from run's train.lr")
    if name in STAGES:
        add_config(p)
    if name in ("finetune", "reft"):  # compile trains nothing: no device, no progress bar
        add_device(p)
        add_no_progress(p)
    if name == "grid":
        p.add_argument("--seeds", type=_positive, metavar="N",
                       help="seeds per cell (default: the preset's grid.seeds)")
        p.add_argument("--programs", metavar="LIST",
                       help="comma-separated: counter, max_identifier (default: the preset's)")
        p.add_argument("--executor", choices=("local", "ray", "inline"), default="local",
                       help="local: one process per job on every core; ray: Ray tasks; "
                       "inline: one job at a time in this process")
        p.add_argument("--workers", type=_positive, metavar="N",
                       help="jobs at once (default: every core, or the Ray cluster's CPUs)")
        p.add_argument("--threads", type=_positive, default=1, metavar="N",
                       help="torch threads per job (default 1; results depend on it)")
        p.add_argument("--address", metavar="ADDR",
                       help="Ray cluster address (with --executor ray; default: a local Ray)")
        add_device(p)
        add_no_progress(p)
    if name == "prune":
        p.add_argument("--ks", type=int_list, default=PRUNE_KS,
                       help=f"numbers of weights to zero, e.g. 0-4 or 0,1,2,10 (default: "
                       f"{format_ints(PRUNE_KS)})")
        p.add_argument("--random-draws", type=_positive, default=5, metavar="N",
                       help="draws of K random weights (nested in K), averaged")
        p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
        p.add_argument("--out", type=Path, metavar="FILE.json",
                       help="also write the results (every metric per K) to this JSON file")
    if name == "attention":
        p.add_argument("--out", type=Path, required=True, metavar="FILE.html",
                       help="HTML page to write")
        p.add_argument("--input", metavar="LETTERS",
                       help="the input letters, e.g. abcab (at most the task's length; default: "
                       "the first C_Te = 0 evaluation input)")


# ------------------------------------------------------------------------------ handlers
def _print_accuracies(record: Mapping[str, Any], floors: Mapping[str, float]) -> None:
    for name in METRICS:
        if name in record:
            print(f"  {name:16s} {100 * record[name]:6.1f}%   (chance {100 * floors[name]:.1f}%)")


def _stage(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.compiled.stages import resolve_compiled

    stage = args.compiled_command
    run = resolve_compiled(stage, resolve_preset(args), getattr(args, "run", None),
                           getattr(args, "eta", None), overrides)
    reused = run.finished_in(args.out)
    records, _ = run.run_or_reuse(args.out, progress=not getattr(args, "no_progress", True),
                                  device=getattr(args, "device", "cpu"))
    if not is_main_process():
        return 0  # rank 0 reports
    final = records[-1]
    note = " (reused: a finished run of these configs was there)" if reused else ""
    print(f"compiled {stage} done: {args.out} (step {final['step']}){note}")
    cfg, d = run.task.config, run.description
    if stage == "compile":
        c = run.sections["compile"]
        noise = f"N(0, {c.noise_std:g}) noise, seed {c.seed}" if c.noise_std else "no noise"
        print(f"  {cfg.program} compiled for {run.compiled_operand!r}, {cfg.n_letters} letters; "
              f"{noise}")
        print(f"  n_layers {d.config['n_layers']}, n_heads {d.config['n_heads']}, d_model "
              f"{d.config['d_model']}: {len(d.residual_labels)} residual labels")
    elif stage == "finetune":
        ft = run.sections["finetune"]
        print(f"  train.lr {run.train_config.lr:g}; finetune.target {ft.target}, finetune.c_tr "
              f"{ft.c_tr:g}")
    else:
        print(f"  train.lr {run.train_config.lr:g}; O_PT answers on natural inputs")
    _print_accuracies(final, run.chance_floors())
    return 0


def _grid(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.compiled.grid import SETTING
    from wrapperlens.reproduction import failed_jobs, reproduce

    if args.programs is not None:
        overrides = {**overrides, "grid.programs": args.programs}
    results = reproduce([SETTING], args.preset or "cpu", args.out, seeds=args.seeds,
                        overrides=overrides, executor=args.executor, workers=args.workers,
                        threads=args.threads, address=args.address, device=args.device,
                        progress=not args.no_progress)
    jobs = results["runs"] + results["analyses"]
    unfinished = [j for j in jobs if j["status"] != "finished"]
    print(f"{len(jobs) - len(unfinished)} of {len(jobs)} jobs finished")
    for job in unfinished:
        error = (job["error"] or "").strip().splitlines()
        print(f"  {job['status']}: {job['key']}{': ' + error[-1] if error else ''}")
    print()
    print(table3_text(results))
    print()
    print(claims_text(results))
    return 1 if failed_jobs(results) else 0


def _prune(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.checkpoints import write_json
    from wrapperlens.experiments.compiled.analysis import prune_run

    result = prune_run(args.run, list(args.ks), args.seed, args.random_draws)
    print(f"g·w pruning of {args.run} (single weights, O_PT loss; random: mean of "
          f"{args.random_draws} draws, seed {args.seed})")
    print(f"  {'K':>4s}  {'Acc O_PT (C_Te 0)':>17s}  {'K random':>8s}  {'Acc O_FT (C_Te 1)':>17s}")
    for k, top, rand in zip(result["ks"], result["top"], result["random"]):
        print(f"  {k:4d}  {100 * top['acc/O_PT/cte0']:16.1f}%  "
              f"{100 * rand['acc/O_PT/cte0']:7.1f}%  {100 * top['acc/O_FT/cte1']:16.1f}%")
    print("  pruned weights, best g·w first:")
    for i, label in enumerate(result["weights"], 1):
        print(f"  {i:4d}. {label}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, {"run": str(args.run), "random_seed": args.seed,
                              "random_draws": args.random_draws, **result})
        print(f"written {args.out}")
    return 0


def _attention(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.compiled.analysis import attention_view

    view = attention_view(args.run, args.out, args.input)
    print(f"written {args.out}: {view['n_layers']} block(s) x {view['n_heads']} head(s) on "
          f"BOS {view['letters']}")
    truth = f" (O_PT {view['o_pt']!r}: {view['truth']})" if view["truth"] is not None else ""
    print(f"  answer at the last position: {view['answer']}{truth}")
    return 0


# ---------------------------------------------------------------------------- formatting
def _percent(cell: Mapping[str, float] | None) -> str:
    if cell is None:
        return "-"
    return f"{100 * cell['mean']:.1f} [{100 * cell['min']:.1f}, {100 * cell['max']:.1f}]"


def table3_text(results: Mapping[str, Any]) -> str:
    """Table 3 of a grid's results (`results["table3"]`) as aligned text: per program, η and
    C_Tr, each accuracy's mean [min, max] over seeds in %; η "floor" is each set's chance floor,
    η "-" the noisy compiled model before fine-tuning."""
    header = ["program", "η", "C_Tr", "O_PT C_Te=1", "O_FT C_Te=1", "O_PT C_Te=0",
              "O_FT C_Te=0", "seeds"]
    rows = [[r["program"], r["eta"], "-" if r["c_tr"] is None else f"{r['c_tr']:g}",
             *(_percent(r.get(m)) for m in METRICS), str(r["seeds"])]
            for r in results["tables"]["table3"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    title = ("Table 3: Acc (%), mean [min, max] over seeds; η 'floor': the majority answer's "
             "rate (chance), η '-': the compiled model + noise, before fine-tuning")
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])


def claims_text(results: Mapping[str, Any]) -> str:
    """Claims 8-12 of a grid's results: id, status, mean [spread] of the per-seed values (in the
    quantity's own units: differences of fractions), threshold and title."""
    lines = ["Claims (docs/claims.md; rules: wrapperlens/experiments/compiled/claims.py):",
             f"  {'id':>2s}  {'status':15s}  {'mean [min, max]':24s}  {'threshold':9s}  claim"]
    for c in results["claims"]:
        value = "-" if c["mean"] is None else (
            f"{c['mean']:+.3f} [{c['spread'][0]:+.3f}, {c['spread'][1]:+.3f}]")
        threshold = f"> {c['threshold']:g}"
        lines.append(f"  {c['id']:2d}  {c['status']:15s}  {value:24s}  {threshold:9s}  "
                     f"{c['title']}")
    return "\n".join(lines)
