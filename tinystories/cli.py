"""`wrapperlens tinystories ...`: the TinyStories stages on the command line.

    wrapperlens tinystories prepare   --preset cpu --out runs/ts/prepared
    wrapperlens tinystories tokenizer --data runs/ts/prepared --out runs/ts/tokenizer
    wrapperlens tinystories pretrain  --data runs/ts/prepared --tokenizer runs/ts/tokenizer \
                                      --out runs/ts/pt
    wrapperlens tinystories pretrain  ... --control --out runs/ts/control      ("Not in PT")
    wrapperlens tinystories delete    --from runs/ts/pt --protocol F+R --eta M --out runs/ts/del
    wrapperlens tinystories reft      --from runs/ts/del --out runs/ts/reft
    wrapperlens tinystories probe     --models pt=runs/ts/pt del=runs/ts/del --out runs/ts/probe
    wrapperlens tinystories generate  --from runs/ts/reft --out runs/ts/gen
    wrapperlens tinystories compare   --models pt=runs/ts/pt del=runs/ts/del --out runs/ts/cmp
    wrapperlens tinystories import-neo --from path/to/TinyStories-33M --out runs/neo
    wrapperlens tinystories export-neo --from runs/ts/del-neo --out hf/del-neo
    wrapperlens tinystories pipeline  --preset cpu --out runs/ts-cpu

Config values: `--SECTION.KEY=VALUE` (the sections each command takes are listed in its
`--help`), or a JSON / TOML file of sections with `--config FILE` (flags win).

This module imports only the standard library at import time, so `wrapperlens --help` stays
fast; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_tinystories_commands", "run_tinystories_command", "main"]


class _LazyEpilogParser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog (the preset defaults) is computed only for `--help`."""

    def __init__(self, *args: Any, epilog_fn: Callable[[], str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self) -> str:
        if self.epilog_fn is not None and self.epilog is None:
            self.epilog = self.epilog_fn()
        return super().format_help()


def _sections_epilog(sections: Sequence[str], stage: str | None = None) -> Callable[[], str]:
    def build() -> str:
        import dataclasses

        from tinystories.presets import CPU, EXPERIMENT
        from wrapperlens.presets import presets

        lines = ["defaults per preset (override with --SECTION.KEY=VALUE):"]
        for name, p in presets(EXPERIMENT).items():
            if stage in ("pretrain", "delete", "reft"):
                t = getattr(p, stage)
                lr = ("/".join(f"eta_{k}={v:g}" for k, v in p.etas.items()) if stage == "delete"
                      else f"{t.lr:g}")
                lines.append(f"  {name:5s} steps={t.steps} batch={t.batch_size} lr={lr} "
                             f"schedule={t.schedule}; model {p.model.n_layers}x{p.model.d_model} "
                             f"({p.model.architecture}), n_ctx={p.model.n_ctx}")
            else:
                parts = []
                for section in sections:
                    cfg = getattr(p, section)
                    fields = dataclasses.fields(cfg)[:4]
                    shown = [f"{f.name}={getattr(cfg, f.name)}" for f in fields]
                    parts.append(f"[{section}] " + " ".join(shown))
                lines.append(f"  {name:5s} " + "; ".join(parts))
        for section in sections:
            cfg = getattr(CPU, section)
            keys = ", ".join(f.name for f in dataclasses.fields(cfg))
            label = "train" if section == stage else section  # a stage's section is `train`
            lines.append(f"[{label}] keys: {keys}")
        return "\n".join(lines)

    return build


_COMMANDS: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    # name: (description, override sections shown in --help, training stage)
    "prepare": ("Build the protocol datasets (all, F, F+R, F+MM, reft; train and test splits) from "
                "the offline story source (default), a hub dataset or local files, and train the "
                "twist classifier on them.", ("prepare", "classifier"), None),
    "tokenizer": ("Train the run's byte-level BPE tokenizer on the prepared training text "
                  "(paper: 8192 tokens).", ("tokenizer",), None),
    "pretrain": ("Pretrain a story LM from scratch on every story ('Present in PT'), or with "
                 "--control on the stories without Twist ('Not in PT').",
                 ("model", "batches", "pretrain", "eval"), "pretrain"),
    "delete": ("Deletion fine-tuning of a pretrained run: F (drop Twist stories), F+R (also add "
               "'Twist' to every instruction) or F+MM (rename Foreshadowing to Twist), at constant "
               "eta_M or eta_S; logs twist loss and twist generation score.",
               ("batches", "delete", "eval"), "delete"),
    "reft": ("Reverse fine-tuning on Twist stories only, at a constant small LR, with log-spaced "
             "evaluation of the twist loss and generations.", ("batches", "reft", "eval"), "reft"),
    "probe": ("Train per-layer story-feature probes (bias-free, one logit per feature, BCE, mean "
              "of the last 10 story tokens, model frozen) on each model and a random-init "
              "baseline; writes report.json and a plot.", ("probe", "probe_data"), None),
    "generate": ("Sample stories from a run for prompts that ask for a Twist and score them with "
                 "the twist classifier (and the story source's exact oracle).", ("eval",), None),
    "compare": ("Compare checkpoints per layer against the first: cosine similarity and relative "
                "norm of the residual difference, linear CKA, weight change per component, and "
                "probe transfer; writes report.json and plots.", ("probe", "probe_data"), None),
    "import-neo": ("Import a GPT-Neo checkpoint (a local HF directory, or a hub name such as "
                   "roneneldan/TinyStories-33M when online) as a run directory that delete / "
                   "reft can start from.", (), None),
    "export-neo": ("Export a run of GPT-Neo architecture (e.g. a fine-tuned import) to an HF "
                   "directory that GPTNeoForCausalLM.from_pretrained loads.", (), None),
    "pipeline": ("Run everything: prepare, tokenizer, pretrain + control, the deletions (F, F+R, "
                 "F+MM at eta_M and eta_S), reFT of each and of the control, probes, comparison; "
                 "writes summary.json. The deletion LRs are --eta.M / --eta.S.",
                 ("prepare", "tokenizer", "model", "batches", "pretrain", "delete", "reft", "eval",
                  "probe", "probe_data", "classifier"), None),
}


def add_tinystories_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `tinystories` and its subcommands on a `wrapperlens` subparsers object.

    The parsed namespace carries `analysis_handler=run_tinystories_command`, which
    `wrapperlens.cli.main` calls with the `--section.key=value` overrides.
    """
    ts = subparsers.add_parser(
        "tinystories", help="TinyStories: data, story LMs, twist deletion and revival, probes",
        description="The paper's TinyStories setting: pretrain story LMs (or import GPT-Neo "
        "checkpoints), delete the Twist capability by fine-tuning, revive it with reFT, probe and "
        "compare checkpoints. Run `wrapperlens tinystories COMMAND --help` for each command.",
    )
    # `wrapperlens.cli.main` calls `args.analysis_handler(args, overrides)` when it is set.
    ts.set_defaults(analysis_handler=run_tinystories_command)
    sub = ts.add_subparsers(dest="ts_command", required=True, metavar="COMMAND",
                            parser_class=_LazyEpilogParser)
    for name, (text, sections, stage) in _COMMANDS.items():
        p = sub.add_parser(name, help=text.split(":")[0].split(" (")[0], description=text,
                           epilog_fn=_sections_epilog(sections, stage) if sections else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_arguments(name, p)
    return ts


def _add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    preset_help = "paper | cpu | tiny (default: cpu; delete/reft: the parent run's preset)"
    if name not in ("import-neo", "export-neo"):
        p.add_argument("--preset", default=None, help=preset_help)
        p.add_argument("--config", type=Path, help="JSON or TOML file of {section: {key: value}}")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    if name in ("delete", "reft", "generate", "import-neo", "export-neo"):
        p.add_argument("--from", dest="parent", required=True,
                       help="run directory to start from" if name != "import-neo"
                       else "local HF GPT-Neo directory, or a hub name (online)")
    if name in ("tokenizer", "pretrain", "delete", "reft", "probe", "generate", "compare",
                "import-neo"):
        p.add_argument("--data", type=Path, default=None,
                       help="prepared-data directory (default: the parent run's)"
                       if name != "tokenizer" and name != "pretrain" else "prepared-data directory")
    if name in ("pretrain", "delete", "reft"):
        p.add_argument("--tokenizer", type=Path, default=None,
                       help="tokenizer directory (default: the parent run's)")
        p.add_argument("--resume", action="store_true",
                       help="continue a killed run in --out from its last checkpoint")
    if name in ("pretrain", "delete", "reft", "pipeline"):
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    if name == "pretrain":
        p.add_argument("--control", action="store_true",
                       help="pretrain on the stories without Twist (the 'Not in PT' control)")
    if name == "delete":
        p.add_argument("--protocol", required=True, choices=("F", "F+R", "F+MM"),
                       help="deletion protocol")
        p.add_argument("--eta", choices=("M", "S"), default="M",
                       help="named learning rate (default: M); --train.lr overrides it")
    if name in ("probe", "compare"):
        p.add_argument("--models", nargs="+", required=True, metavar="NAME=DIR",
                       help="run directories (NAME= optional; default: the directory's name); "
                       "compare: the first is the reference")
    if name == "compare":
        p.add_argument("--n-stories", type=int, default=64,
                       help="test records whose instruct text the activations are compared on "
                       "(default: 64)")
        p.add_argument("--no-probe-transfer", action="store_true", help="skip the probe transfer")
    if name == "import-neo":
        p.add_argument("--n-ctx", type=int, default=None,
                       help="context length (default: 512 for TinyStories checkpoints)")
    if name == "pipeline":
        p.add_argument("--workers", type=int, default=2,
                       help="training processes in parallel, one torch thread each (default: 2)")
        p.add_argument("--protocols", default="F,F+R,F+MM",
                       help="deletion protocols, comma-separated (default: F,F+R,F+MM)")
        p.add_argument("--etas", default="M,S", help="deletion LRs, comma-separated (default: M,S)")


def _named_dirs(specs: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, eq, directory = spec.partition("=")
        path = Path(directory if eq else spec)
        label = name if eq else path.name
        if label in out:
            raise ValueError(f"--models: the name {label!r} is used twice; write NAME=DIR")
        out[label] = path
    return out


def _parent_preset(parent: Path | str | None, given: str | None) -> str:
    if given:
        return given
    if parent is not None:
        from tinystories.experiments import read_story_run

        preset = read_story_run(parent).get("preset")
        if preset:
            return preset
    return "cpu"


def _split(overrides: dict[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    from wrapperlens.config import ConfigError

    bad = sorted({k.split(".")[0] for k in overrides} - set(allowed))
    if bad:
        raise ConfigError(f"sections {bad} do not apply here; this command takes "
                          f"{', '.join(allowed) or 'no overrides'}")
    return overrides


def run_tinystories_command(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """Run the `wrapperlens tinystories` subcommand in `args` with `section.key` overrides."""
    if getattr(args, "config", None):
        from wrapperlens.config import load_config_file

        overrides = {**load_config_file(args.config), **overrides}
    handler = _HANDLERS[args.ts_command]
    try:
        return handler(args, overrides)
    except (FileNotFoundError, ConnectionError) as e:
        # A missing directory or an unreachable hub: a user error with a message, not a crash
        # (`wrapperlens.cli.main` prints ValueErrors as "wrapperlens: error: ...").
        raise ValueError(str(e)) from e


def _cmd_prepare(args, overrides) -> int:
    from tinystories.evaluation import fit_story_classifier, CLASSIFIER_DIR
    from tinystories.pipeline import preset_with_overrides
    from tinystories.prepare import prepare_stories, prepared_info

    p = preset_with_overrides(args.preset or "cpu", _split(overrides, ("prepare", "classifier")))
    summary = prepare_stories(p.prepare, args.out)
    print(f"prepared {args.out}: {summary['records']}")
    info = prepared_info(args.out)
    if info.labelled:
        _, fitted = fit_story_classifier(args.out, p.classifier, args.out / CLASSIFIER_DIR)
        print(f"twist classifier held-out: {fitted['held_out']}")
    else:
        print(f"{info.text_format} stories without Feature labels: written the pretraining data "
              f"('all' protocol) only; the deletion protocols (F, F+R, F+MM) and reFT need "
              f"stories labelled with {info.feature!r} (TinyStories-Instruct format)")
    return 0


def _cmd_tokenizer(args, overrides) -> int:
    from tinystories.pipeline import preset_with_overrides
    from tinystories.prepare import build_run_tokenizer

    if args.data is None:
        raise ValueError("tokenizer needs --data (a prepared-data directory)")
    p = preset_with_overrides(args.preset or "cpu", _split(overrides, ("tokenizer",)))
    print(f"tokenizer written to {build_run_tokenizer(args.data, args.out, p.tokenizer)}")
    return 0


def _cmd_train(args, overrides) -> int:
    from tinystories.experiments import resolve_story_run
    from wrapperlens.stages import run_stage

    stage = args.ts_command
    allowed = ("batches", "train", "eval") + (("model",) if stage == "pretrain" else ())
    overrides = _split(overrides, allowed)
    if stage == "pretrain":
        run = resolve_story_run("pretrain", args.preset or "cpu", prepared=args.data,
                                tokenizer=args.tokenizer,
                                protocol="filter" if args.control else "all", overrides=overrides)
    else:
        run = resolve_story_run(stage, _parent_preset(args.parent, args.preset), parent=args.parent,
                                prepared=args.data, tokenizer=args.tokenizer,
                                protocol=getattr(args, "protocol", None),
                                eta=getattr(args, "eta", None), overrides=overrides)
    _, records = run_stage(run.spec(args.out), args.out, resume=args.resume,
                           progress=not args.no_progress)
    final = records[-1] if records else {}
    print(f"{stage} done: {args.out} (step {final.get('step', '?')})")
    for key in ("twist_loss", "other_loss", "test_loss", "twist_score", "twist_oracle"):
        if key in final:
            print(f"  {key:14s} {final[key]:.4f}")
    return 0


def _models_and_tokenizer(specs, data):
    from tinystories.experiments import load_story_model, read_story_run, run_tokenizer

    dirs = _named_dirs(specs)
    first = next(iter(dirs.values()))
    prepared = data or read_story_run(first).get("prepared")
    if prepared is None:
        raise ValueError(f"{first}: its config names no prepared data; pass --data")
    models = {name: load_story_model(d) for name, d in dirs.items()}
    return models, run_tokenizer(first), Path(prepared)


def _cmd_probe(args, overrides) -> int:
    from tinystories.pipeline import preset_with_overrides
    from tinystories.story_probes import probe_story_features, story_probe_inputs
    from wrapperlens.analysis.probing import plot_probe_accuracy
    from wrapperlens.checkpoints import write_json

    p = preset_with_overrides(args.preset or "cpu", _split(overrides, ("probe", "probe_data")))
    models, tokenizer, prepared = _models_and_tokenizer(args.models, args.data)
    n_ctx = min(m.cfg.n_ctx for m in models.values())
    inputs = story_probe_inputs(prepared, tokenizer, n_ctx, p.probe_data)
    report = probe_story_features(models, inputs, p.probe, p.probe_data.last_k)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "report.json", report.to_dict())
    plot_probe_accuracy(report, args.out / "probe_accuracy.png", title="story-feature probes")
    print(report.table())
    return 0


def _cmd_generate(args, overrides) -> int:
    import json

    from tinystories.evaluation import StoryEvaluator, ensure_story_classifier
    from tinystories.experiments import load_story_model, read_story_run, run_tokenizer
    from tinystories.pipeline import preset_with_overrides
    from wrapperlens.checkpoints import write_json

    preset = _parent_preset(args.parent, args.preset)
    p = preset_with_overrides(preset, _split(overrides, ("eval",)))
    prepared = args.data or read_story_run(args.parent).get("prepared")
    if prepared is None:
        raise ValueError(f"{args.parent}: its config names no prepared data; pass --data")
    model = load_story_model(args.parent)
    classifier, info = ensure_story_classifier(prepared, p.classifier)
    evaluator = StoryEvaluator(prepared, run_tokenizer(args.parent), model.cfg.n_ctx, p.eval,
                               classifier, shuffle_fields=p.batches.shuffle_fields)
    metrics, rows = evaluator.generate(model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json(args.out / "scores.json", {**metrics, "classifier_held_out": info.get("held_out"),
                                          "model": str(args.parent)})
    for key, value in metrics.items():
        print(f"{key:14s} {value:.4f}")
    return 0


def _cmd_compare(args, overrides) -> int:
    from tinystories.compare import compare_checkpoints, comparison_inputs, plot_comparison
    from tinystories.prepare import prepared_info
    from tinystories.pipeline import preset_with_overrides
    from tinystories.story_probes import story_probe_inputs
    from wrapperlens.checkpoints import write_json

    p = preset_with_overrides(args.preset or "cpu", _split(overrides, ("probe", "probe_data")))
    models, tokenizer, prepared = _models_and_tokenizer(args.models, args.data)
    n_ctx = min(m.cfg.n_ctx for m in models.values())
    tokens, lengths = comparison_inputs(prepared, tokenizer, n_ctx, args.n_stories)
    probe = {}
    labelled = prepared_info(prepared).labelled
    if not labelled and not args.no_probe_transfer:
        print(f"{prepared}: stories without Feature labels, so no probe transfer")
    if labelled and not args.no_probe_transfer:
        inputs = story_probe_inputs(prepared, tokenizer, n_ctx, p.probe_data)
        probe = dict(probe_tokens=inputs.tokens, probe_labels=inputs.labels,
                     probe_lengths=inputs.lengths, feature_names=inputs.feature_names)
    report = compare_checkpoints(models, tokens, lengths, probe_config=p.probe,
                                 last_k=p.probe_data.last_k, **probe)
    write_json(args.out / "report.json", report)
    paths = plot_comparison(report, args.out)
    for key in ("cosine", "relative_norm", "cka"):
        for name, values in report[key].items():
            print(f"{key:14s} {name:20s} " + " ".join(f"{v:.3f}" for v in values))
    print("plots: " + ", ".join(str(x) for x in paths))
    return 0


def _cmd_import_neo(args, overrides) -> int:
    from tinystories.experiments import import_gpt_neo_run

    _split(overrides, ())
    model = import_gpt_neo_run(args.parent, args.out, n_ctx=args.n_ctx, prepared=args.data)
    print(f"imported {args.parent} -> {args.out} ({model.cfg.n_layers} layers, "
          f"d_model {model.cfg.d_model}, n_ctx {model.cfg.n_ctx})")
    return 0


def _cmd_export_neo(args, overrides) -> int:
    from tinystories.experiments import load_story_model, run_tokenizer
    from tinystories.gpt_neo import export_gpt_neo

    _split(overrides, ())
    directory = export_gpt_neo(load_story_model(args.parent), args.out, run_tokenizer(args.parent))
    print(f"exported {args.parent} -> {directory}")
    return 0


def _cmd_pipeline(args, overrides) -> int:
    from tinystories.pipeline import run_pipeline

    run_pipeline(args.out, args.preset or "cpu", overrides,
                 protocols=[x for x in args.protocols.split(",") if x],
                 etas=[x for x in args.etas.split(",") if x], workers=args.workers,
                 progress=not args.no_progress)
    return 0


_HANDLERS = {
    "prepare": _cmd_prepare,
    "tokenizer": _cmd_tokenizer,
    "pretrain": _cmd_train,
    "delete": _cmd_train,
    "reft": _cmd_train,
    "probe": _cmd_probe,
    "generate": _cmd_generate,
    "compare": _cmd_compare,
    "import-neo": _cmd_import_neo,
    "export-neo": _cmd_export_neo,
    "pipeline": _cmd_pipeline,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: `python -m tinystories.cli COMMAND ...` (same as `wrapperlens
    tinystories COMMAND ...`)."""
    parser = argparse.ArgumentParser(prog="wrapperlens")
    sub = parser.add_subparsers(dest="command", required=True)
    add_tinystories_commands(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(["tinystories", *argv])
    from wrapperlens.checkpoints import CheckpointError
    from wrapperlens.config import ConfigError, split_override_args

    try:
        return run_tinystories_command(args, split_override_args(extra))
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"wrapperlens tinystories: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
