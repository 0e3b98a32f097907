"""The PCFG stage commands: pretrain, finetune, reft and eval.

    wrapperlens pretrain --preset cpu --out runs/pt
    wrapperlens finetune --from runs/pt --out runs/ft --eta M --finetune.c_tr=1.0
    wrapperlens reft     --from runs/ft --out runs/reft
    wrapperlens eval     --from runs/ft

The configs come from `wrapperlens.experiments.pcfg.stages.resolve_configs` (preset, then the parent
run's configs, then the overrides) and are trained by the run engine (`wrapperlens.stages`);
finetune and reft default to their parent run's preset. Under `torchrun` every rank trains and
rank 0 alone prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from wrapperlens.cli.options import (add_command, add_from, add_out, add_preset,
                                     add_training_options, is_main_process, resolve_preset,
                                     section_keys_help)

__all__ = ["STAGE_COMMANDS", "add_stage_commands"]

STAGE_HELP = {
    "pretrain": "Pretrain a model from scratch on the PCFG task mixture (all families, operands "
    "drawn from the prior), logging per-family accuracy.",
    "finetune": "Fine-tune a pretrained run on one question (default: count b) with a fraction "
    "C_Tr of spuriously correlated strings, logging Acc O_PT / Acc O_FT at C_Te = 0 and 1.",
    "reft": "Reverse fine-tune a fine-tuned run on the pretraining question (default: count a) at "
    "a smaller learning rate, with log-spaced evaluation.",
}
STAGE_COMMANDS = (*STAGE_HELP, "eval")


def _defaults_epilog(stage: str):
    def build() -> str:
        from wrapperlens.experiments.pcfg.stages import SECTION_TYPES
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
        sections = ("task", "model", "train") if stage == "pretrain" else ("train", "finetune")
        note = "" if stage == "pretrain" else ("task and model are the parent run's (--train.seed "
                                               "varies the data order); reft also keeps its "
                                               "[finetune]")
        return "\n".join(lines + section_keys_help(SECTION_TYPES, sections, note))

    return build


def add_stage_commands(sub: argparse._SubParsersAction) -> None:
    """Register pretrain, finetune, reft and eval."""
    for stage, text in STAGE_HELP.items():
        # sections=None: resolve_configs checks them, naming what the parent run fixes
        p = add_command(sub, stage, _stage, text, help=text.split(",")[0].split(" (")[0],
                        sections=None, epilog_fn=_defaults_epilog(stage))
        if stage != "pretrain":
            add_from(p, "run directory to start from (a pretrain run for finetune, a finetune "
                     "run for reft)")
        add_preset(p, from_run=stage != "pretrain")
        add_out(p, "run directory to write")
        if stage != "pretrain":
            p.add_argument("--eta", choices=("L", "M", "S"), default=None,
                           help="named learning rate of the preset (default: M for finetune, "
                           "S for reft); --train.lr overrides it. It must be below the --from "
                           "run's train.lr")
        add_training_options(p)

    p = add_command(sub, "eval", _eval, "Evaluate the latest weights of a run on the test sets "
                    "of its stage and print one accuracy per set.",
                    help="Evaluate a run directory on its stage's test sets")
    add_from(p, "run directory to evaluate")
    add_out(p, "also write the metrics to this JSON file", required=False)


def _stage(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.pcfg.stages import resolve_configs, saved_run
    from wrapperlens.runs import RunDir
    from wrapperlens.stages import run_stage

    stage = args.command_name
    parent = getattr(args, "run", None)
    if args.resume and not overrides and RunDir(args.out).exists():
        run = saved_run(args.out)  # `--resume` alone: the saved configs
    else:
        run = resolve_configs(stage, resolve_preset(args), parent, getattr(args, "eta", None),
                              overrides)
    _, records = run_stage(run.spec(), args.out, resume=args.resume,
                           progress=not args.no_progress, device=args.device)
    if not is_main_process():
        return 0  # rank 0 reports
    final = records[-1] if records else {}
    print(f"{stage} done: {args.out} (step {final.get('step', '?')})")
    for k, v in final.items():
        if k.startswith("acc/"):
            print(f"  {k:28s} {100 * v:6.1f}%")
    return 0


def _eval(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.checkpoints import write_json
    from wrapperlens.experiments.pcfg.stages import load_run

    run, model = load_run(args.run)
    metrics = run.evaluate(model)
    for k, v in metrics.items():
        print(f"{k:28s} {100 * v:6.1f}%")
    if args.out:
        write_json(args.out, metrics)
    return 0
