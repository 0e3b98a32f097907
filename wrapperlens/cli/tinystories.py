"""`wrapperlens tinystories ...`: the TinyStories stages on the command line.

    wrapperlens tinystories prepare   --preset cpu --out runs/ts/prepared
    wrapperlens tinystories tokenizer --data runs/ts/prepared --out runs/ts/tokenizer
    wrapperlens tinystories pretrain  --data runs/ts/prepared --tokenizer runs/ts/tokenizer \
                                      --out runs/ts/pt
    wrapperlens tinystories pretrain  ... --control --out runs/ts/control      ("Not in PT")
    wrapperlens tinystories delete    --from runs/ts/pt --protocol F+R --eta M --out runs/ts/del
    wrapperlens tinystories reft      --from runs/ts/del --out runs/ts/reft
    wrapperlens tinystories probe     --from pt=runs/ts/pt del=runs/ts/del --out runs/ts/probe
    wrapperlens tinystories generate  --from runs/ts/reft --out runs/ts/gen
    wrapperlens tinystories compare   --from pt=runs/ts/pt del=runs/ts/del --out runs/ts/cmp
    wrapperlens tinystories import-neo --from path/to/TinyStories-33M --out runs/neo
    wrapperlens tinystories export-neo --from runs/ts/del-neo --out hf/del-neo
    wrapperlens tinystories pipeline  --preset cpu --out runs/ts-cpu

Built from the options every `wrapperlens` command shares (`wrapperlens.cli.options`): `--from`
names the run(s) read, `--preset` defaults to the `--from` run's preset (else cpu), config values
are `--SECTION.KEY=VALUE` (each command's `--help` lists its sections) or `--config FILE` (flags
win), and errors end in `wrapperlens.cli.main`'s one error boundary.

They live here, with their experiment, not in `wrapperlens.cli`: they name this package's
sections, protocols and presets, and `wrapperlens` imports `tinystories` only to register them
(inside `wrapperlens.cli.build_parser`). Only the standard library and `wrapperlens.cli.options`
are imported at import time, so `wrapperlens --help` stays fast; each command imports what it
needs when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from wrapperlens.cli.options import (add_command, add_config, add_device, add_from,
                                     add_no_progress, add_out, add_preset, add_resume,
                                     is_main_process, resolve_preset)

__all__ = ["COMMANDS", "add_tinystories_commands"]


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


COMMANDS: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    # name: (description, preset sections shown in --help, training stage)
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
STARTS_FROM_A_RUN = ("delete", "reft", "generate", "probe", "compare")  # --preset: the run's
TRAINING = ("pretrain", "delete", "reft")


def add_tinystories_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `tinystories` and its subcommands on a `wrapperlens` subparsers object."""
    ts = subparsers.add_parser(
        "tinystories", help="TinyStories: data, story LMs, twist deletion and revival, probes",
        description="The paper's TinyStories setting: pretrain story LMs (or import GPT-Neo "
        "checkpoints), delete the Twist capability by fine-tuning, revive it with reFT, probe and "
        "compare checkpoints. Run `wrapperlens tinystories COMMAND --help` for each command.",
    )
    sub = ts.add_subparsers(dest="ts_command", required=True, metavar="COMMAND")
    for name, (text, sections, stage) in COMMANDS.items():
        # The override sections it takes: a stage's own section is `train`; the pipeline's
        # sections are checked by the preset it changes (`preset_with_overrides`).
        allowed = None if name == "pipeline" else tuple(
            "train" if s == stage else s for s in sections)
        p = add_command(sub, name, _HANDLERS[name], text,
                        help=text.split(":")[0].split(" (")[0], sections=allowed,
                        epilog_fn=_sections_epilog(sections, stage) if sections else None,
                        command=f"tinystories {name}")
        _add_arguments(name, p)
    return ts


def _add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name in ("delete", "reft", "generate", "export-neo"):
        add_from(p, "run directory to start from")
    elif name == "import-neo":
        add_from(p, "local HF GPT-Neo directory, or a hub name (online)", metavar="DIR|NAME")
    elif name in ("probe", "compare"):
        add_from(p, "run directories, as NAME=DIR or DIR (NAME: the directory's name); compare: "
                 "the first is the reference", many=True, metavar="[NAME=]RUN")
    if name not in ("import-neo", "export-neo"):
        add_preset(p, from_run=name in STARTS_FROM_A_RUN)
        add_config(p)
    add_out(p)
    if name in ("tokenizer", "pretrain", "delete", "reft", "probe", "generate", "compare",
                "import-neo"):
        p.add_argument("--data", type=Path, default=None, metavar="DIR",
                       required=name == "tokenizer", help={
            "tokenizer": "prepared-data directory", "pretrain": "prepared-data directory",
            "import-neo": "prepared-data directory to record in the run (for delete / reft)",
        }.get(name, "prepared-data directory (default: the --from run's)"))
    if name in TRAINING:
        p.add_argument("--tokenizer", type=Path, default=None, metavar="DIR",
                       help="tokenizer directory" if name == "pretrain"
                       else "tokenizer directory (default: the --from run's)")
        add_resume(p)
        add_device(p)
        add_no_progress(p)
    if name == "pretrain":
        p.add_argument("--control", action="store_true",
                       help="pretrain on the stories without Twist (the 'Not in PT' control)")
    if name == "delete":
        p.add_argument("--protocol", required=True, choices=("F", "F+R", "F+MM"),
                       help="deletion protocol")
        p.add_argument("--eta", choices=("M", "S"), default="M",
                       help="named learning rate (default: M); --train.lr overrides it")
    if name == "compare":
        p.add_argument("--n-stories", type=int, default=64,
                       help="test records whose instruct text the activations are compared on")
        p.add_argument("--no-probe-transfer", action="store_true", help="skip the probe transfer")
    if name == "import-neo":
        p.add_argument("--n-ctx", type=int, default=None,
                       help="context length (default: 512 for TinyStories checkpoints)")
    if name == "pipeline":
        add_no_progress(p)
        p.add_argument("--workers", type=int, default=2,
                       help="training processes in parallel, one torch thread each")
        p.add_argument("--protocols", help="deletion protocols, comma-separated (default: "
                       "the preset's grid.protocols, F,F+R,F+MM)")
        p.add_argument("--etas", help="deletion LRs, comma-separated (default: the preset's "
                       "grid.etas, M,S)")
        p.add_argument("--executor", choices=("local", "ray", "inline"), default=None,
                       help="local: one process per run (default with --workers > 1); ray: Ray "
                       "tasks (pip install 'wrapperlens[ray]'); inline: this process")


def _named_dirs(specs: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, eq, directory = spec.partition("=")
        path = Path(directory if eq else spec)
        label = name if eq else path.name
        if label in out:
            raise ValueError(f"--from: the name {label!r} is used twice; write NAME=DIR")
        out[label] = path
    return out


def _cmd_prepare(args, overrides) -> int:
    from tinystories.evaluation import fit_story_classifier, CLASSIFIER_DIR
    from tinystories.pipeline import preset_with_overrides
    from tinystories.prepare import prepare_stories

    p = preset_with_overrides(resolve_preset(args), overrides)
    summary = prepare_stories(p.prepare, args.out)
    print(f"prepared {args.out}: {summary['records']}")
    data = summary["data"]  # what prepared_info would read back
    if data["labelled"]:
        _, fitted = fit_story_classifier(args.out, p.classifier, args.out / CLASSIFIER_DIR)
        print(f"twist classifier held-out: {fitted['held_out']}")
    else:
        print(f"{data['format']} stories without Feature labels: written the pretraining data "
              f"('all' protocol) only; the deletion protocols (F, F+R, F+MM) and reFT need "
              f"stories labelled with {data['feature']!r} (TinyStories-Instruct format)")
    return 0


def _cmd_tokenizer(args, overrides) -> int:
    from tinystories.pipeline import preset_with_overrides
    from tinystories.prepare import build_run_tokenizer

    p = preset_with_overrides(resolve_preset(args), overrides)
    print(f"tokenizer written to {build_run_tokenizer(args.data, args.out, p.tokenizer)}")
    return 0


def _cmd_train(args, overrides) -> int:
    from tinystories.experiments import resolve_story_run
    from wrapperlens.stages import run_stage

    stage = args.ts_command
    if stage == "pretrain":
        run = resolve_story_run("pretrain", resolve_preset(args), prepared=args.data,
                                tokenizer=args.tokenizer,
                                protocol="filter" if args.control else "all", overrides=overrides)
    else:
        run = resolve_story_run(stage, resolve_preset(args), parent=args.run,
                                prepared=args.data, tokenizer=args.tokenizer,
                                protocol=getattr(args, "protocol", None),
                                eta=getattr(args, "eta", None), overrides=overrides)
    _, records = run_stage(run.spec(args.out), args.out, resume=args.resume,
                           progress=not args.no_progress, device=args.device)
    if not is_main_process():
        return 0  # rank 0 reports
    final = records[-1] if records else {}
    print(f"{stage} done: {args.out} (step {final.get('step', '?')})")
    for key in ("twist_loss", "other_loss", "test_loss", "twist_score", "twist_oracle"):
        if key in final:
            print(f"  {key:14s} {final[key]:.4f}")
    return 0


def _models_and_tokenizer(dirs: dict[str, Path], data):
    from tinystories.experiments import load_story_model, run_tokenizer, story_data

    first = next(iter(dirs.values()))
    prepared = data or story_data(first).prepared
    if prepared is None:
        raise ValueError(f"{first}: its config names no prepared data; pass --data")
    models = {name: load_story_model(d) for name, d in dirs.items()}
    return models, run_tokenizer(first), Path(prepared)


def _cmd_probe(args, overrides) -> int:
    from tinystories.pipeline import preset_with_overrides
    from tinystories.story_probes import probe_story_features, story_probe_inputs
    from wrapperlens.analysis.probing import plot_probe_accuracy
    from wrapperlens.checkpoints import write_json

    dirs = _named_dirs(args.runs)
    p = preset_with_overrides(resolve_preset(args, next(iter(dirs.values()))), overrides)
    models, tokenizer, prepared = _models_and_tokenizer(dirs, args.data)
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
    from tinystories.experiments import load_story_model, run_tokenizer, story_data
    from tinystories.pipeline import preset_with_overrides
    from wrapperlens.checkpoints import write_json

    p = preset_with_overrides(resolve_preset(args), overrides)
    prepared = args.data or story_data(args.run).prepared
    if prepared is None:
        raise ValueError(f"{args.run}: its config names no prepared data; pass --data")
    model = load_story_model(args.run)
    classifier, info = ensure_story_classifier(prepared, p.classifier)
    evaluator = StoryEvaluator(prepared, run_tokenizer(args.run), model.cfg.n_ctx, p.eval,
                               classifier, shuffle_fields=p.batches.shuffle_fields)
    metrics, rows = evaluator.generate(model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json(args.out / "scores.json", {**metrics, "classifier_held_out": info.get("held_out"),
                                          "model": str(args.run)})
    for key, value in metrics.items():
        print(f"{key:14s} {value:.4f}")
    return 0


def _cmd_compare(args, overrides) -> int:
    from tinystories.compare import compare_checkpoints, comparison_inputs, plot_comparison
    from tinystories.prepare import prepared_info
    from tinystories.pipeline import preset_with_overrides
    from tinystories.story_probes import story_probe_inputs
    from wrapperlens.checkpoints import write_json

    dirs = _named_dirs(args.runs)
    p = preset_with_overrides(resolve_preset(args, next(iter(dirs.values()))), overrides)
    models, tokenizer, prepared = _models_and_tokenizer(dirs, args.data)
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

    model = import_gpt_neo_run(args.run, args.out, n_ctx=args.n_ctx, prepared=args.data)
    print(f"imported {args.run} -> {args.out} ({model.cfg.n_layers} layers, "
          f"d_model {model.cfg.d_model}, n_ctx {model.cfg.n_ctx})")
    return 0


def _cmd_export_neo(args, overrides) -> int:
    from tinystories.experiments import load_story_model, run_tokenizer
    from tinystories.gpt_neo import export_gpt_neo

    directory = export_gpt_neo(load_story_model(args.run), args.out, run_tokenizer(args.run))
    print(f"exported {args.run} -> {directory}")
    return 0


def _listed(text: str | None) -> list[str] | None:
    """"F,F+R" -> ["F", "F+R"]; None (not given) stays None."""
    return None if text is None else [x for x in text.split(",") if x]


def _cmd_pipeline(args, overrides) -> int:
    from tinystories.pipeline import run_pipeline

    run_pipeline(args.out, resolve_preset(args), overrides,
                 protocols=_listed(args.protocols), etas=_listed(args.etas),
                 workers=args.workers,
                 progress=not args.no_progress, executor=args.executor)
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
