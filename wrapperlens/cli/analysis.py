"""The analysis commands: prune, probe, patch, attribute, attention, wrapper-map, scratch-baseline.

    wrapperlens prune       --from runs/ft --out out/prune
    wrapperlens probe       --from runs/ft --out out/probe     # pretrained: runs/ft's parent
    wrapperlens patch       --from runs/ft --component z --out out/patch
    wrapperlens attribute   --from runs/ft --compare-exact --out out/attr
    wrapperlens attention   --from runs/ft --out out/attn      # HTML, renders offline
    wrapperlens wrapper-map --from runs/ft --out out/map
    wrapperlens scratch-baseline --from runs/reft --out out/scratch   # trains Scr.+FT, compares

`--from` is a fine-tuned (or reFT) run; the pretrained model of a pair defaults to the pretraining
run it descends from (its parent links); `--pretrained` names another. Results go to `--out`
(default RUN/analysis/COMMAND) as JSON plus PNG plots (HTML for attention).

Each command builds the tool's options object (`wrapperlens.experiments.pcfg.analysis_options`,
whose defaults are the flags' defaults and whose checks name the field) and calls the library
function with it (`wrapperlens.experiments.pcfg.analysis`); this module only maps flags to
fields and prints a summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wrapperlens.cli.options import (
    add_command,
    add_device,
    add_from,
    add_no_progress,
    add_out,
    add_preset,
    format_ints,
    int_list,
    resolve_preset,
)
from wrapperlens.components import COMPONENTS
from wrapperlens.experiments.pcfg import analysis_options as opts
from wrapperlens.experiments.pcfg.analysis_options import default_of

__all__ = ["ANALYSIS_COMMANDS", "add_analysis_commands"]

ANALYSIS_COMMANDS = (
    "prune", "probe", "patch", "attribute", "attention", "wrapper-map", "scratch-baseline",
)  # fmt: skip

C_TE_HELP = ("fraction of the prompts carrying the fine-tuning correlation count(b) = count(a) + 1 "
             "(C_Te)")


def _analysis(sub, name: str, handler, description: str, help: str, *, pair: bool = True):
    """A command reading `--from RUN` (and `--pretrained RUN` for a pair), writing `--out`."""
    p = add_command(sub, name, handler, description, help=help)
    add_from(p, "fine-tuned (or reFT) run directory written by the trainer")
    if pair:
        p.add_argument("--pretrained", metavar="RUN",
                       help="pretrained run to compare with (default: the pretraining run that "
                       "--from descends from, via the parent links of its config)")
    add_out(p, "output directory (default: RUN/analysis/COMMAND)", required=False)
    return p


def _sampling(p, cls: type, samples: str | None = "samples", c_te: str = "c_te",
              samples_help: str = "number of fresh PCFG prompts to analyse",
              c_te_help: str = C_TE_HELP) -> None:
    if samples is not None:
        p.add_argument("--samples", type=int, default=default_of(cls, samples), dest=samples,
                       metavar="N", help=samples_help)
    p.add_argument("--c-te", type=float, default=default_of(cls, c_te), dest=c_te,
                   metavar="C_TE", help=c_te_help)


def _prompt(p, help: str = "operand of the prompts (default: O_PT, the pretraining operand a)"):
    p.add_argument("--prompt", metavar="OPERAND", help=help)


def _patching(p, cls: type) -> None:
    """The flags PatchOptions and AttributeOptions share."""
    _sampling(p, cls)
    p.add_argument("--all-positions", action="store_true",
                   help="patch every position at once instead of one position at a time")
    p.add_argument("--direction", choices=opts.DIRECTIONS, default=default_of(cls, "direction"),
                   help="pt-to-ft: pretrained activations into the fine-tuned run; "
                   "ft-to-pt: the reverse")
    p.add_argument("--metric", choices=opts.METRICS, default=default_of(cls, "metric"),
                   help="prob: probability of the correct answer; logit_diff: its logit "
                   "minus the logit of the fine-tuning operand's answer on the same string")
    _prompt(p)


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    """Register the analysis commands (`ANALYSIS_COMMANDS`)."""
    p = _analysis(
        sub, "prune", _prune,
        "Single-step g·w pruning of a fine-tuned run (paper App. D, Alg. 3): score every unit by "
        "gradient x weight of the pretraining-task (count O_PT) loss, zero the top-K "
        "(cumulative) and report Acc O_PT / Acc O_FT at C_Te = 0 and 1 for each K. Writes "
        "prune.json and prune.png. The model file is never modified.",
        "Single-step g·w pruning sweep: does removing a few units bring counting a back?",
        pair=False,
    )
    _sampling(p, opts.PruneOptions, "grad_samples", "grad_c_te",
              samples_help="count-O_PT prompts the pruning gradient is taken on",
              c_te_help="fraction of the gradient prompts carrying the fine-tuning correlation "
              "(the test sets are always C_Te = 0 and 1)")
    ks = default_of(opts.PruneOptions, "ks")
    p.add_argument("--ks", type=int_list, default=ks,
                   help=f"numbers of units to prune, e.g. 0-15 or 0,1,2,5,10,20 (default: "
                   f"{format_ints(ks)})")
    p.add_argument("--eligible", default=default_of(opts.PruneOptions, "eligible"),
                   help="which matrices: all_block_linear, mlp_out_and_attn_out (best at CPU "
                   "scale), mlp_out, mlp, attn, or comma-separated parameter names/suffixes "
                   "such as mlp.W_out,blocks.1.attn.W_O")
    p.add_argument("--granularity", choices=("row", "weight"),
                   default=default_of(opts.PruneOptions, "granularity"),
                   help="prune rows (neurons) or single weights")
    p.add_argument("--unit-axis", choices=("input", "output"),
                   default=default_of(opts.PruneOptions, "unit_axis"),
                   help="input: a row W[i, :] of a TransformerLens matrix (a neuron's output "
                   "vector); output: a column W[:, j] (an nn.Linear row)")
    p.add_argument("--eval-samples", type=int,
                   default=default_of(opts.PruneOptions, "eval_samples"),
                   help="samples per test set (default: the run's train.eval_samples)")
    p.add_argument("--random-draws", type=int, metavar="N",
                   default=default_of(opts.PruneOptions, "random_draws"),
                   help="control: also prune K eligible units drawn at random (same kind, "
                   "nested in K), N independent draws averaged; written under 'random' in "
                   "prune.json and dashed in prune.png (default: 0, no control)")
    p.add_argument("--random-seed", type=int,
                   default=default_of(opts.PruneOptions, "random_seed"),
                   help="seed of the random-unit draws")

    p = _analysis(
        sub, "probe", _probe,
        "Train a linear probe on the residual stream at the answer-request token after every "
        "block (B0 = embeddings ... BL) of the pretrained model, the fine-tuned model and a "
        "randomly initialised model of the same shape, and report held-out accuracy. Writes "
        "probe.json and probe.png.",
        "Linear probes of a count at every block, pretrained vs fine-tuned vs random",
    )
    _sampling(p, opts.ProbeOptions)
    _prompt(p)
    p.add_argument("--label", metavar="OPERAND",
                   help="whose answer the probe decodes (default: the prompt's operand); e.g. "
                   "--prompt b --label a asks whether count(a) is still computed on 'count b' "
                   "prompts")
    p.add_argument("--probe-preset", default=default_of(opts.ProbeOptions, "probe_preset"),
                   help="probe training schedule: fast, or paper (4K AdamW steps, LR 1e-3 "
                   "decayed x0.1 at 2K/3K/3.5K)")
    p.add_argument("--random-inits", type=int, metavar="N",
                   default=default_of(opts.ProbeOptions, "random_inits"),
                   help="random-init baselines probed beside the models (default: %(default)s); "
                   "how far an untrained model's probe gets varies with its init")

    p = _analysis(
        sub, "patch", _patch,
        "Activation patching across models: copy one activation (per layer, and per position "
        "unless --all-positions; per head for z, per neuron for post) from the source model's "
        "run into the target model's run on the same prompts, and record the change of the "
        "metric. Writes patch.json (effect array and its axes) and patch.png.",
        "Cross-model activation patching between the pretrained and fine-tuned models",
    )
    p.add_argument("--component", choices=COMPONENTS,
                   default=default_of(opts.PatchOptions, "component"),
                   help="activation to patch (z = one attention head's output before W_O; post "
                   "= one MLP neuron)")
    _patching(p, opts.PatchOptions)

    p = _analysis(
        sub, "attribute", _attribute,
        "Attribution patching across models: (source - target activation) x gradient of the "
        "metric on the target run, from one forward on the source and one forward and backward "
        "on the target. --compare-exact also runs exact patching and reports the Spearman rank "
        "correlation. Writes attribute.json and attribute_<component>.png.",
        "Attribution patching: first-order estimate of every patch at once",
    )
    p.add_argument("--components", default=",".join(default_of(opts.AttributeOptions,
                                                               "components")),
                   help=f"comma-separated, from {', '.join(COMPONENTS)}")
    p.add_argument("--compare-exact", action="store_true",
                   help="also run exact activation patching and report Spearman correlations "
                   "(one patched forward per node: for post per position that is layers x "
                   "positions x d_mlp forwards, minutes at the cpu preset)")
    _patching(p, opts.AttributeOptions)

    p = _analysis(
        sub, "attention", _attention,
        "Draw every head's attention pattern of the pretrained and the fine-tuned model (and "
        "their difference) on one prompt with circuitsvis, as one self-contained attention.html "
        "that renders without network access. A pretraining run is drawn alone.",
        "Attention patterns of the pretrained and fine-tuned models side by side (HTML)",
    )
    _sampling(p, opts.AttentionOptions, samples=None)
    p.add_argument("--example", type=int, default=default_of(opts.AttentionOptions, "example"),
                   help="which prompt of the drawn batch to show")
    _prompt(p, "operand of the prompt (default: O_PT)")
    p.add_argument("--layers", type=int_list, default=default_of(opts.AttentionOptions, "layers"),
                   help="layers to draw, e.g. 0,1 (default: all)")

    p = _analysis(
        sub, "wrapper-map", _wrapper_map,
        "For a pretrained / fine-tuned pair, score every head, MLP neuron and layer (attention, "
        "MLP) three ways: g·w pruning score of the pretraining loss, the effect of patching the "
        "pretrained activation into the fine-tuned run on the pretraining metric, and the "
        "relative weight change. Writes wrapper_map.json (the table with ranks) and "
        "wrapper_map.png (layer x component heatmaps).",
        "Rank heads, neurons and layers by where the fine-tuning change lives",
    )
    _sampling(p, opts.WrapperMapOptions)
    p.add_argument("--metric", choices=opts.METRICS,
                   default=default_of(opts.WrapperMapOptions, "metric"),
                   help="patching metric (see `wrapperlens patch --help`)")
    p.add_argument("--no-neuron-patching", action="store_true",
                   help="skip patching every MLP neuron (d_mlp forwards per layer)")

    p = add_command(
        sub, "scratch-baseline", _scratch_baseline,
        "The reverse fine-tuning baseline Scr.+FT (paper §5, App. E.3): pretrain a model with "
        "the prior weights of a and b swapped (same task, model and pretraining budget as the "
        "first --from run's pretraining), fine-tune it to count a with that reFT run's settings, "
        "and compare the accuracy of counting a on natural strings (C_Te = 0) against "
        "iterations: the reFT runs' Acc O_PT with Scr.+FT's Acc O_FT, measured on the same test "
        "strings. Trains OUT/pretrain and OUT/finetune (finished stages are reused, killed ones "
        "resumed) and writes reft_vs_scratch.json and reft_vs_scratch.png.",
        help="Train the Scr.+FT baseline of a reFT run and compare iterations-to-threshold",
    )
    add_from(p, "reFT run(s) to compare (the first one sets the baseline's configs)", many=True)
    add_out(p)
    add_preset(p, from_run=True)
    p.add_argument("--eta", choices=("L", "M", "S"),
                   help="named learning rate of the Scr.+FT fine-tuning (default: the reFT "
                   "run's own LR)")
    p.add_argument("--threshold", type=float, default=0.9,
                   help="accuracy that counts as revived, in [0, 1]")
    add_device(p)
    add_no_progress(p)


def _out(args: argparse.Namespace) -> Path:
    return args.out or Path(args.run) / "analysis" / args.command_name


def _prune(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg.analysis import prune_run

    options = opts.PruneOptions(
        ks=args.ks, eligible=args.eligible, granularity=args.granularity,
        unit_axis=args.unit_axis, grad_samples=args.grad_samples, grad_c_te=args.grad_c_te,
        eval_samples=args.eval_samples, random_draws=args.random_draws,
        random_seed=args.random_seed,
    )
    out = _out(args)
    result = prune_run(args.run, out, options)
    names = list(result["metrics"][0])
    header = "K".rjust(4) + "".join(n.removeprefix("acc/").rjust(13) for n in names)
    tables = [("top g·w units", result)]
    if "random" in result:
        tables.append((f"random units, mean of {result['random']['draws']}", result["random"]))
    for title, table in tables:
        print(f"{title}:\n{header}")
        for k, m in zip(table["ks"], table["metrics"]):
            print(f"{k:4d}" + "".join(f"{100 * m[n]:12.1f}%" for n in names))
    print(f"written: {out / 'prune.json'}, {out / 'prune.png'}")
    return 0


def _probe(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg.analysis import probe_run

    options = opts.ProbeOptions(prompt=args.prompt, label=args.label, samples=args.samples,
                                c_te=args.c_te, probe_preset=args.probe_preset,
                                random_inits=args.random_inits)
    out = _out(args)
    result = probe_run(args.run, out, options, pretrained=args.pretrained)
    print(f"probe of the {result['label']} on '{result['prompt']}' prompts "
          f"(test accuracy; majority rate {result['majority_rate']:.3f})")
    width = max(len(m) for m in result["accuracy"]) + 2
    print("model".ljust(width) + "".join(p.rjust(7) for p in result["point_names"]))
    for name, accs in result["accuracy"].items():
        print(name.ljust(width) + "".join(f"{a:7.3f}" for a in accs))
    print(f"written: {out / 'probe.json'}, {out / 'probe.png'}")
    return 0


def _patching_fields(args: argparse.Namespace) -> dict[str, Any]:
    return dict(per_position=not args.all_positions, direction=args.direction,
                metric=args.metric, samples=args.samples, c_te=args.c_te, prompt=args.prompt)


def _largest(values: Any, axes: list[str]) -> tuple[float, dict[str, int]]:
    """The entry of largest magnitude of a nested list and where it is, by axis name."""
    import torch

    t = torch.tensor(values)
    flat = int(t.abs().argmax())
    where = [int(i) for i in torch.unravel_index(torch.tensor(flat), t.shape)]
    return float(t.flatten()[flat]), dict(zip(axes, where))


def _patch(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg.analysis import patch_run

    options = opts.PatchOptions(component=args.component, **_patching_fields(args))
    out = _out(args)
    result = patch_run(args.run, out, options, pretrained=args.pretrained)
    value, where = _largest(result["effect"], result["axes"])
    print(f"{args.metric}: target {result['metric_target']:.4f}, source "
          f"{result['metric_source']:.4f}; largest |effect| {value:+.4f} at {where}")
    print(f"written: {out / 'patch.json'}, {out / 'patch.png'}")
    return 0


def _attribute(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg.analysis import attribute_run

    options = opts.AttributeOptions(components=args.components, compare_exact=args.compare_exact,
                                    **_patching_fields(args))
    out = _out(args)
    result = attribute_run(args.run, out, options, pretrained=args.pretrained)
    for component, entry in result["components"].items():
        _, where = _largest(entry["estimate"], entry["axes"])
        line = f"{component:10s} largest |estimate| at {where}"
        if "spearman" in entry:
            line += f"; Spearman vs exact patching {entry['spearman']:.3f}"
        print(line)
    print(f"written: {out / 'attribute.json'} and attribute_<component>.png")
    return 0


def _attention(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg.analysis import attention_run

    options = opts.AttentionOptions(example=args.example, c_te=args.c_te, prompt=args.prompt,
                                    layers=args.layers)
    path = attention_run(args.run, _out(args), options, pretrained=args.pretrained)
    print(f"written: {path} (open it in a browser; no network needed)")
    return 0


def _wrapper_map(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg.analysis import wrapper_map_run

    options = opts.WrapperMapOptions(samples=args.samples, c_te=args.c_te, metric=args.metric,
                                     patch_neurons=not args.no_neuron_patching)
    out = _out(args)
    result = wrapper_map_run(args.run, out, options, pretrained=args.pretrained)
    print(result["table"])
    print(f"written: {out / 'wrapper_map.json'}, {out / 'wrapper_map.png'}")
    return 0


def _scratch_baseline(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg.scratch_baseline import (
        compare_reft_with_scratch,
        run_scratch_baseline,
    )

    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold: expected a number in [0, 1], got {args.threshold}")
    runs = [Path(r) for r in args.runs]
    baseline = run_scratch_baseline(args.out, resolve_preset(args), reft_run=runs[0],
                                    eta=args.eta, progress=not args.no_progress,
                                    device=args.device)
    names: dict[str, Path] = {}
    for path in runs:
        name = f"reFT {path.name}"
        names[name if name not in names else f"reFT {path}"] = path
    result = compare_reft_with_scratch(names, baseline.finetune_dir, args.threshold, args.out)
    print(f"iterations to {args.threshold:g} accuracy on counting a (C_Te = 0):")
    for name, steps in result["iterations_to_threshold"].items():
        print(f"  {name:30s} {steps if steps is not None else 'not reached'}")
    print(f"written: {args.out / 'reft_vs_scratch.json'}, {args.out / 'reft_vs_scratch.png'}")
    return 0
