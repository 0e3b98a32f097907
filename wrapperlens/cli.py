"""The `wrapperlens` command line.

    wrapperlens pretrain --preset cpu --out runs/pt
    wrapperlens finetune --from runs/pt --out runs/ft --eta M --finetune.c_tr=1.0
    wrapperlens reft     --from runs/ft --out runs/reft
    wrapperlens eval     --from runs/ft
    wrapperlens reproduce --preset cpu

Any config value can be changed with `--SECTION.KEY=VALUE` (sections: task, model, train,
finetune) or a JSON / TOML file of sections given with `--config FILE`; flags win over the file.
Unknown keys and bad values are errors that name the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser"]

STAGE_HELP = {
    "pretrain": "Pretrain a model from scratch on the PCFG task mixture (all families, operands "
    "drawn from the prior), logging per-family accuracy.",
    "finetune": "Fine-tune a pretrained run on one question (default: count b) with a fraction "
    "C_Tr of spuriously correlated strings, logging Acc O_PT / Acc O_FT at C_Te = 0 and 1.",
    "reft": "Reverse fine-tune a fine-tuned run on the pretraining question (default: count a) at "
    "a smaller learning rate, with log-spaced evaluation.",
}


def _defaults_epilog(stage: str) -> str:
    from wrapperlens.presets import presets

    lines = ["defaults per preset (override with --SECTION.KEY=VALUE):"]
    for name, p in presets("pcfg").items():
        tr = {"pretrain": p.pretrain, "finetune": p.finetune, "reft": p.reft}[stage]
        lr = tr.lr if stage == "pretrain" else (
            f"eta {p.default_eta[stage]} of "
            + "/".join(f"{k}={v:g}" for k, v in p.etas.items())
        )
        lines.append(
            f"  {name:6s} steps={tr.steps} batch={tr.batch_size} lr={lr} loss={tr.loss} "
            f"schedule={tr.schedule}; text_length={p.task.text_length}; model "
            f"{p.model.n_layers}x{p.model.d_model} ({p.model.n_heads} heads)"
        )
    from wrapperlens.experiments.pcfg import SECTION_TYPES

    sections = ("task", "model", "train") if stage == "pretrain" else ("train", "finetune")
    for section in sections:
        keys = ", ".join(f.name for f in dataclasses.fields(SECTION_TYPES[section]))
        lines.append(f"[{section}] keys: {keys}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wrapperlens",
        description="Pretrain, fine-tune, reverse fine-tune and analyse HookedTransformers on the "
        "PCFG tasks of Jain et al. (ICLR 2024).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(
            stage, help=text.split(",")[0], description=text, epilog=_defaults_epilog(stage),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--preset", default="cpu", help="paper | cpu | tiny (default: cpu)")
        p.add_argument("--out", required=True, type=Path, help="run directory to write")
        if stage != "pretrain":
            p.add_argument("--from", dest="parent", required=True, type=Path,
                           help="run directory to start from")
            p.add_argument("--eta", choices=("L", "M", "S"), default=None,
                           help="named learning rate of the preset (default: M for finetune, "
                           "S for reft); --train.lr overrides it")
        p.add_argument("--config", type=Path, help="JSON or TOML file of {section: {key: value}}")
        p.add_argument("--resume", action="store_true",
                       help="continue a killed run in --out from its last checkpoint")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        p.add_argument("--device", default="auto",
                       help="cpu | cuda | auto (default: auto = cuda when available)")

    p = sub.add_parser("eval", help="Evaluate a run directory on its stage's test sets",
                       description="Evaluate the latest weights of a run on the test sets of its "
                       "stage and print one accuracy per set.")
    p.add_argument("--from", dest="parent", required=True, type=Path, help="run directory")
    p.add_argument("--out", type=Path, help="also write the metrics to this JSON file")

    p = sub.add_parser(
        "reproduce", help="Pretrain, fine-tune at every eta and print a summary table",
        description="The main job: pretrain on the preset, fine-tune the result to count b at "
        "each of eta_L, eta_M, eta_S, and print Acc O_PT / Acc O_FT at C_Te = 0 and 1.",
    )
    p.add_argument("--preset", default="cpu", help="paper | cpu | tiny (default: cpu)")
    p.add_argument("--out", type=Path, default=None, help="directory (default: runs/reproduce-PRESET)")
    p.add_argument("--config", type=Path, help="JSON or TOML file of overrides")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--device", default="auto",
                   help="cpu | cuda | auto (default: auto = cuda when available)")
    from wrapperlens.analysis_cli import add_analysis_commands

    add_analysis_commands(sub)  # prune, probe, patch, attribute, attention, wrapper-map, ...
    from tinystories.cli import add_tinystories_commands  # stdlib-only; commands import lazily

    add_tinystories_commands(sub)  # wrapperlens tinystories prepare | tokenizer | pretrain | ...
    return parser


def _run_stage_command(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from wrapperlens import distributed
    from wrapperlens.config import load_config_file
    from wrapperlens.experiments.pcfg import resolve_configs, saved_run
    from wrapperlens.runs import RunDir
    from wrapperlens.stages import run_stage

    if args.config:
        overrides = {**load_config_file(args.config), **overrides}
    if args.resume and not overrides and RunDir(args.out).exists():
        run = saved_run(args.out)
    else:
        run = resolve_configs(args.command, args.preset, getattr(args, "parent", None),
                              getattr(args, "eta", None), overrides)
    _, records = run_stage(run.spec(), args.out, resume=args.resume,
                           progress=not args.no_progress, device=args.device)
    if not distributed.is_main():
        return 0  # rank 0 reports
    final = records[-1] if records else {}
    accs = {k: v for k, v in final.items() if k.startswith("acc/")}
    print(f"{args.command} done: {args.out} (step {final.get('step', '?')})")
    for k, v in accs.items():
        print(f"  {k:28s} {100 * v:6.1f}%")
    return 0


def _eval_command(args: argparse.Namespace) -> int:
    from wrapperlens.checkpoints import write_json
    from wrapperlens.experiments.pcfg import load_run

    run, model = load_run(args.parent)
    metrics = run.evaluate(model)
    for k, v in metrics.items():
        print(f"{k:28s} {100 * v:6.1f}%")
    if args.out:
        write_json(args.out, metrics)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    from wrapperlens.checkpoints import CheckpointError
    from wrapperlens.config import ConfigError, split_override_args

    try:
        overrides = split_override_args(extra)
        if hasattr(args, "analysis_handler"):
            return args.analysis_handler(args, overrides)
        if overrides and args.command in ("eval",):
            raise ConfigError(f"{args.command} takes no config overrides")
        if args.command in STAGE_HELP:
            return _run_stage_command(args, overrides)
        if args.command == "eval":
            return _eval_command(args)
        if args.command == "reproduce":
            from wrapperlens.experiments.reproduce import reproduce

            out = args.out or Path("runs") / f"reproduce-{args.preset}"
            if args.config:
                from wrapperlens.config import load_config_file

                overrides = {**load_config_file(args.config), **overrides}
            reproduce(args.preset, out, overrides, progress=not args.no_progress,
                      device=args.device)
            return 0
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"wrapperlens: error: {e}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
