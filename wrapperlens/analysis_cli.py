"""The analysis commands of the `wrapperlens` command line.

    wrapperlens prune       --run runs/ft --out out/prune
    wrapperlens probe       --run runs/ft --out out/probe     # pretrained: runs/ft's parent
    wrapperlens patch       --run runs/ft --component z --out out/patch
    wrapperlens attribute   --run runs/ft --compare-exact --out out/attr
    wrapperlens attention   --run runs/ft --out out/attn      # HTML, renders offline
    wrapperlens wrapper-map --run runs/ft --out out/map
    wrapperlens scratch-baseline --reft runs/reft --out out/scratch   # trains Scr.+FT, compares

Every command reads trainer run directories: `--run` is a fine-tuned (or reFT) run, and the
pretrained model of a pair defaults to the pretraining run it descends from (the `parent` links in
`config.json`); `--pretrained` overrides it. Results go to `--out` (default RUN/analysis/COMMAND)
as JSON plus PNG plots (HTML for attention). The work is done by `wrapperlens.experiments.
pcfg_analysis`; this module only parses arguments and prints a summary.

`wrapperlens.cli` wires these in with `add_analysis_commands(subparsers)` and dispatches a parsed
command with `args.analysis_handler(args, overrides)`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wrapperlens.components import COMPONENTS

__all__ = ["ANALYSIS_COMMANDS", "add_analysis_commands", "parse_int_list"]


def parse_int_list(text: str) -> list[int]:
    """ "0-15" -> 0..15, "0,1,2,5,10" -> that list, "0-3,8" -> 0,1,2,3,8."""
    values: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            values += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like '0-15' or '0,1,5', got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"no integers in {text!r}")
    return values


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _common(
    p: argparse.ArgumentParser,
    pair: bool,
    samples: int | None,
    c_te: float,
    samples_help: str = "number of fresh PCFG prompts to analyse",
    c_te_help: str = "fraction of the prompts carrying the fine-tuning correlation "
    "count(b) = count(a) + 1 (C_Te)",
) -> None:
    p.add_argument(
        "--run",
        required=True,
        type=Path,
        metavar="RUN_DIR",
        help="fine-tuned (or reFT) run directory written by the trainer",
    )
    if pair:
        p.add_argument(
            "--pretrained",
            type=Path,
            metavar="RUN_DIR",
            help="pretrained run to compare with (default: the pretraining run that "
            "--run descends from, via the 'parent' entries of config.json)",
        )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output directory (default: RUN_DIR/analysis/COMMAND)",
    )
    if samples is not None:
        p.add_argument("--samples", type=_positive, default=samples, help=samples_help)
    p.add_argument("--c-te", type=_fraction, default=c_te, dest="c_te", help=c_te_help)


def _patch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--all-positions",
        action="store_true",
        help="patch every position at once instead of one position at a time",
    )
    p.add_argument(
        "--direction",
        choices=("pt-to-ft", "ft-to-pt"),
        default="pt-to-ft",
        help="pt-to-ft (default): pretrained activations into the fine-tuned run; "
        "ft-to-pt: the reverse",
    )
    p.add_argument(
        "--metric",
        choices=("prob", "logit_diff"),
        default="prob",
        help="prob (default): probability of the correct answer; logit_diff: its logit "
        "minus the logit of the fine-tuning operand's answer on the same string",
    )
    p.add_argument(
        "--prompt",
        metavar="OPERAND",
        help="operand of the prompts (default: O_PT, the pretraining operand a)",
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        hidden = action.default is None or action.default is False
        if "default" in text or action.required or hidden:
            return text
        return super()._get_help_string(action)


def add_analysis_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the analysis commands (`ANALYSIS_COMMANDS`) to a CLI's subparsers."""
    fmt = _HelpFormatter

    p = subparsers.add_parser(
        "prune",
        formatter_class=fmt,
        help="Single-step g·w pruning sweep: does removing a few units bring counting a back?",
        description="Single-step g·w pruning of a fine-tuned run (Jain et al. 2024, Alg. 3): score "
        "every unit by gradient x weight of the pretraining-task (count O_PT) loss, zero the "
        "top-K (cumulative) and report Acc O_PT / Acc O_FT at C_Te = 0 and 1 for each K. Writes "
        "prune.json and prune.png. The model file is never modified.",
    )
    _common(
        p,
        pair=False,
        samples=512,
        c_te=0.0,
        samples_help="count-O_PT prompts the pruning gradient is taken on",
        c_te_help="fraction of the gradient prompts carrying the fine-tuning correlation "
        "(the test sets are always C_Te = 0 and 1)",
    )
    p.set_defaults(analysis_handler=_prune)
    p.add_argument(
        "--ks",
        type=parse_int_list,
        default="0-15",
        help="numbers of units to prune, e.g. 0-15 or 0,1,2,5,10,20",
    )
    p.add_argument(
        "--eligible",
        default="all_block_linear",
        help="which matrices: all_block_linear, mlp_out_and_attn_out (best at CPU "
        "scale), mlp_out, mlp, attn, or comma-separated parameter names/suffixes "
        "such as mlp.W_out,blocks.1.attn.W_O",
    )
    p.add_argument(
        "--granularity",
        choices=("row", "weight"),
        default="row",
        help="prune rows (neurons) or single weights",
    )
    p.add_argument(
        "--unit-axis",
        choices=("input", "output"),
        default="input",
        help="input: a row W[i, :] of a TransformerLens matrix (a neuron's output "
        "vector); output: a column W[:, j] (an nn.Linear row)",
    )
    p.add_argument(
        "--eval-samples",
        type=_positive,
        default=None,
        help="samples per test set (default: the run's train.eval_samples)",
    )

    p = subparsers.add_parser(
        "probe",
        formatter_class=fmt,
        help="Linear probes of a count at every block, pretrained vs fine-tuned vs random",
        description="Train a linear probe on the residual stream at the answer-request token "
        "after every block (B0 = embeddings ... BL) of the pretrained model, the fine-tuned "
        "model and a randomly initialised model of the same shape, and report held-out "
        "accuracy. Writes probe.json and probe.png.",
    )
    _common(p, pair=True, samples=2000, c_te=0.0)
    p.set_defaults(analysis_handler=_probe)
    p.add_argument(
        "--prompt",
        metavar="OPERAND",
        help="operand of the prompts (default: O_PT, the pretraining operand a)",
    )
    p.add_argument(
        "--label",
        metavar="OPERAND",
        help="whose answer the probe decodes (default: the prompt's operand); e.g. "
        "--prompt b --label a asks whether count(a) is still computed on 'count b' "
        "prompts",
    )
    p.add_argument(
        "--probe-preset",
        choices=("fast", "paper"),
        default="fast",
        help="probe training schedule (paper: 4K AdamW steps, LR 1e-3 decayed x0.1 at 2K/3K/3.5K)",
    )

    p = subparsers.add_parser(
        "patch",
        formatter_class=fmt,
        help="Cross-model activation patching between the pretrained and fine-tuned models",
        description="Activation patching across models: copy one activation (per layer, and per "
        "position unless --all-positions; per head for z, per neuron for post) from the source "
        "model's run into the target model's run on the same prompts, and record the change of "
        "the metric. Writes patch.json (effect array and its axes) and patch.png.",
    )
    _common(p, pair=True, samples=64, c_te=0.0)
    p.set_defaults(analysis_handler=_patch)
    p.add_argument(
        "--component",
        choices=COMPONENTS,
        default="resid_pre",
        help="activation to patch (z = one attention head's output before W_O; post = "
        "one MLP neuron)",
    )
    _patch_options(p)

    p = subparsers.add_parser(
        "attribute",
        formatter_class=fmt,
        help="Attribution patching: first-order estimate of every patch at once",
        description="Attribution patching across models: (source - target activation) x "
        "gradient of the metric on the target run, from one forward on the source and one "
        "forward and backward on the target. --compare-exact also runs exact patching and "
        "reports the Spearman rank correlation. Writes attribute.json and "
        "attribute_<component>.png.",
    )
    _common(p, pair=True, samples=64, c_te=0.0)
    p.set_defaults(analysis_handler=_attribute)
    p.add_argument(
        "--components",
        default="resid_pre,z,post",
        help=f"comma-separated, from {', '.join(COMPONENTS)}",
    )
    p.add_argument(
        "--compare-exact",
        action="store_true",
        help="also run exact activation patching and report Spearman correlations (one "
        "patched forward per node: for post per position that is layers x positions x d_mlp "
        "forwards, minutes at the cpu preset)",
    )
    _patch_options(p)

    p = subparsers.add_parser(
        "attention",
        formatter_class=fmt,
        help="Attention patterns of the pretrained and fine-tuned models side by side (HTML)",
        description="Draw every head's attention pattern of the pretrained and the fine-tuned "
        "model (and their difference) on one prompt with circuitsvis, as one self-contained "
        "attention.html that renders without network access. A pretraining run is drawn alone.",
    )
    _common(p, pair=True, samples=None, c_te=1.0)
    p.set_defaults(analysis_handler=_attention)
    p.add_argument("--example", type=int, default=0, help="which prompt of the drawn batch to show")
    p.add_argument("--prompt", metavar="OPERAND", help="operand of the prompt (default: O_PT)")
    p.add_argument(
        "--layers",
        type=parse_int_list,
        default=None,
        help="layers to draw, e.g. 0,1 (default: all)",
    )

    p = subparsers.add_parser(
        "wrapper-map",
        formatter_class=fmt,
        help="Rank heads, neurons and layers by where the fine-tuning change lives",
        description="For a pretrained / fine-tuned pair, score every head, MLP neuron and layer "
        "(attention, MLP) three ways: g·w pruning score of the pretraining loss, the effect of "
        "patching the pretrained activation into the fine-tuned run on the pretraining metric, "
        "and the relative weight change. Writes wrapper_map.json (the table with ranks) and "
        "wrapper_map.png (layer x component heatmaps).",
    )
    _common(p, pair=True, samples=128, c_te=0.0)
    p.set_defaults(analysis_handler=_wrapper_map)
    p.add_argument(
        "--metric",
        choices=("prob", "logit_diff"),
        default="prob",
        help="patching metric (see `wrapperlens patch --help`)",
    )
    p.add_argument(
        "--no-neuron-patching",
        action="store_true",
        help="skip patching every MLP neuron (d_mlp forwards per layer)",
    )

    p = subparsers.add_parser(
        "scratch-baseline",
        formatter_class=fmt,
        help="Train the Scr.+FT baseline of a reFT run and compare iterations-to-threshold",
        description="The reverse fine-tuning baseline Scr.+FT (paper §5, App. E.3): pretrain a model with "
        "the prior weights of a and b swapped (same task, model and pretraining budget as the "
        "first --reft run's pretraining), fine-tune it to count a with that reFT run's settings, "
        "and compare the accuracy of counting a on natural strings (C_Te = 0) against "
        "iterations: the reFT runs' Acc O_PT with Scr.+FT's Acc O_FT, measured on the same test "
        "strings. Trains OUT/pretrain and OUT/finetune (finished stages are reused, killed ones "
        "resumed) and writes reft_vs_scratch.json and reft_vs_scratch.png.",
    )
    p.set_defaults(analysis_handler=_scratch_baseline)
    p.add_argument(
        "--reft",
        required=True,
        action="append",
        type=Path,
        metavar="RUN_DIR",
        help="reFT run to compare (repeatable; the first one sets the baseline's configs)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument(
        "--preset", help="preset of the named learning rates (default: the reFT run's preset)"
    )
    p.add_argument(
        "--eta",
        choices=("L", "M", "S"),
        help="named learning rate of the Scr.+FT fine-tuning (default: the reFT run's own LR)",
    )
    p.add_argument(
        "--threshold", type=_fraction, default=0.9, help="accuracy that counts as revived"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


ANALYSIS_COMMANDS = (
    "prune", "probe", "patch", "attribute", "attention", "wrapper-map", "scratch-baseline",
)  # fmt: skip


def _out(args: argparse.Namespace) -> Path:
    return args.out or Path(args.run) / "analysis" / args.command


def _check_no_overrides(args: argparse.Namespace, overrides: Mapping[str, Any]) -> None:
    if overrides:
        from wrapperlens.config import ConfigError

        raise ConfigError(
            f"{args.command} takes no config overrides (got --{next(iter(overrides))})"
        )


def _eligible(text: str) -> str | tuple[str, ...]:
    from wrapperlens.analysis.pruning import ELIGIBLE_PRESETS

    if text in ELIGIBLE_PRESETS:
        return text
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _prune(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg_analysis import prune_run

    _check_no_overrides(args, overrides)
    out = _out(args)
    result = prune_run(
        args.run,
        out,
        args.ks,
        _eligible(args.eligible),
        args.granularity,
        args.unit_axis,
        args.samples,
        args.c_te,
        args.eval_samples,
    )
    names = list(result["metrics"][0])
    print("K".rjust(4) + "".join(n.removeprefix("acc/").rjust(13) for n in names))
    for k, m in zip(result["ks"], result["metrics"]):
        print(f"{k:4d}" + "".join(f"{100 * m[n]:12.1f}%" for n in names))
    print(f"written: {out / 'prune.json'}, {out / 'prune.png'}")
    return 0


def _probe(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg_analysis import probe_run

    _check_no_overrides(args, overrides)
    out = _out(args)
    result = probe_run(
        args.run,
        out,
        args.pretrained,
        args.prompt,
        args.label,
        args.samples,
        args.c_te,
        args.probe_preset,
    )
    print(
        f"probe of the {result['label']} on '{result['prompt']}' prompts "
        f"(test accuracy; majority rate {result['majority_rate']:.3f})"
    )
    width = max(len(m) for m in result["accuracy"]) + 2
    print("model".ljust(width) + "".join(p.rjust(7) for p in result["point_names"]))
    for name, accs in result["accuracy"].items():
        print(name.ljust(width) + "".join(f"{a:7.3f}" for a in accs))
    print(f"written: {out / 'probe.json'}, {out / 'probe.png'}")
    return 0


def _patch(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    import torch

    from wrapperlens.experiments.pcfg_analysis import patch_run

    _check_no_overrides(args, overrides)
    out = _out(args)
    result = patch_run(
        args.run,
        out,
        args.pretrained,
        args.component,
        not args.all_positions,
        args.direction,
        args.metric,
        args.samples,
        args.c_te,
        args.prompt,
    )
    effect = torch.tensor(result["effect"])
    largest = int(effect.abs().argmax())
    where = [int(i) for i in torch.unravel_index(torch.tensor(largest), effect.shape)]
    print(
        f"{args.metric}: target {result['metric_target']:.4f}, source "
        f"{result['metric_source']:.4f}; largest |effect| {float(effect.flatten()[largest]):+.4f} "
        f"at {dict(zip(result['axes'], where))}"
    )
    print(f"written: {out / 'patch.json'}, {out / 'patch.png'}")
    return 0


def _attribute(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    import torch

    from wrapperlens.experiments.pcfg_analysis import attribute_run

    _check_no_overrides(args, overrides)
    out = _out(args)
    components = tuple(c.strip() for c in args.components.split(",") if c.strip())
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ValueError(f"--components: unknown {unknown}; choose from {', '.join(COMPONENTS)}")
    result = attribute_run(
        args.run,
        out,
        args.pretrained,
        components,
        not args.all_positions,
        args.direction,
        args.metric,
        args.samples,
        args.c_te,
        args.prompt,
        args.compare_exact,
    )
    for component, entry in result["components"].items():
        estimate = torch.tensor(entry["estimate"])
        where = [int(i) for i in torch.unravel_index(estimate.abs().argmax(), estimate.shape)]
        line = f"{component:10s} largest |estimate| at {dict(zip(entry['axes'], where))}"
        if "spearman" in entry:
            line += f"; Spearman vs exact patching {entry['spearman']:.3f}"
        print(line)
    print(f"written: {out / 'attribute.json'} and attribute_<component>.png")
    return 0


def _attention(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg_analysis import attention_run

    _check_no_overrides(args, overrides)
    path = attention_run(
        args.run, _out(args), args.pretrained, args.example, args.c_te, args.prompt, args.layers
    )
    print(f"written: {path} (open it in a browser; no network needed)")
    return 0


def _wrapper_map(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg_analysis import wrapper_map_run

    _check_no_overrides(args, overrides)
    out = _out(args)
    result = wrapper_map_run(
        args.run,
        out,
        args.pretrained,
        args.samples,
        args.c_te,
        args.metric,
        not args.no_neuron_patching,
    )
    print(result["table"])
    print(f"written: {out / 'wrapper_map.json'}, {out / 'wrapper_map.png'}")
    return 0


def _scratch_baseline(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.checkpoints import read_json
    from wrapperlens.experiments.scratch_baseline import (
        compare_reft_with_scratch,
        run_scratch_baseline,
    )

    _check_no_overrides(args, overrides)
    first = args.reft[0]
    preset = args.preset or read_json(first / "config.json").get("preset", "cpu")
    baseline = run_scratch_baseline(
        args.out, preset, reft_run=first, eta=args.eta, progress=not args.no_progress
    )
    names = {}
    for path in args.reft:
        name = f"reFT {path.name}"
        names[name if name not in names else f"reFT {path}"] = path
    result = compare_reft_with_scratch(names, baseline.finetune_dir, args.threshold, args.out)
    print(f"iterations to {args.threshold:g} accuracy on counting a (C_Te = 0):")
    for name, steps in result["iterations_to_threshold"].items():
        print(f"  {name:30s} {steps if steps is not None else 'not reached'}")
    print(f"written: {args.out / 'reft_vs_scratch.json'}, {args.out / 'reft_vs_scratch.png'}")
    return 0
