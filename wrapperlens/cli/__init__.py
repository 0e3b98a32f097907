"""The `wrapperlens` command line (also `python -m wrapperlens`, and `torchrun -m wrapperlens`).

    wrapperlens pretrain --preset cpu --out runs/pt
    wrapperlens finetune --from runs/pt --out runs/ft --eta M --finetune.c_tr=1.0
    wrapperlens prune    --from runs/ft --ks 0-15
    wrapperlens tinystories delete --from runs/ts/pt --protocol F+MM --out runs/ts/del

Modules: `options` (the options every command shares, defined once: `--from`, `--out`,
`--preset`, `--config`, `--resume`, `--device`, `--no-progress`, and the `--SECTION.KEY=VALUE`
overrides), `stages` (pretrain, finetune, reft, eval), `reproduce` (reproduce, report),
`analysis` (prune, probe, patch, attribute, attention, wrapper-map, scratch-baseline), `compiled`
(`wrapperlens compiled compile | finetune | reft | grid | prune | attention`, the compiled RASP
models). The TinyStories commands live in `wrapperlens.cli.tinystories` (the CLI is the roof), built
from the same options; this package imports it only inside `build_parser` (`wrapperlens` never
imports `tinystories` at import time).

Conventions: a command that reads a run takes it as `--from RUN`; `--preset` defaults to that
run's preset (else `cpu`); any config value is `--SECTION.KEY=VALUE` or comes from
`--config FILE` (flags win). `main` is the one error boundary: a `ConfigError`,
`CheckpointError`, other `ValueError`, `FileNotFoundError` or `ConnectionError` (an unreachable
model hub) ends the command with ``wrapperlens: error: ...`` and exit status 2; nothing else
catches them, and any other exception is a bug and shows its traceback.

Why argparse and not a CLI generated from the config dataclasses (tyro, simple-parsing,
jsonargparse): the defaults of a command are not known when its parser is built. They depend on
`--preset` and on the `--from` run (fine-tuning inherits the parent's task and model, which
overriding is an error), so a parser generated from dataclass defaults would show and apply the
wrong ones; our overrides are therefore parsed after argparse, by `wrapperlens.config`, whose
errors name the key and list the known ones. Generating parsers would also import the config
classes, hence torch and TransformerLens, before any `--help` (~10 s); here parsing imports the
standard library and `wrapperlens.config` only, and each command imports what it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from wrapperlens.cli.options import HelpFormatter, Parser, collect_overrides

__all__ = ["main", "build_parser", "USER_ERRORS"]


def build_parser() -> Parser:
    """The `wrapperlens` parser with every command (imports no torch, TransformerLens, tasks)."""
    from wrapperlens.cli.analysis import add_analysis_commands
    from wrapperlens.cli.compiled import add_compiled_commands
    from wrapperlens.cli.reproduce import add_reproduce_commands
    from wrapperlens.cli.stages import add_stage_commands

    parser = Parser(
        prog="wrapperlens",
        description="Pretrain, fine-tune, reverse fine-tune and analyse HookedTransformers on the "
        "PCFG tasks and TinyStories settings of Jain et al. (ICLR 2024).",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_stage_commands(sub)  # pretrain, finetune, reft, eval
    add_reproduce_commands(sub)  # reproduce, report
    add_analysis_commands(sub)  # prune, probe, patch, attribute, attention, wrapper-map, ...
    add_compiled_commands(sub)  # wrapperlens compiled compile | finetune | reft | grid | ...
    from wrapperlens.cli.tinystories import add_tinystories_commands  # light: imports lazily

    add_tinystories_commands(sub)  # wrapperlens tinystories prepare | tokenizer | pretrain | ...
    return parser


# The user's errors: `ConfigError` (a bad flag, key, value or config file) and `CheckpointError`
# (a missing, corrupt or mismatched run) are `ValueError`s, as are the library's checks of a
# value; plus a missing path and an unreachable model hub. (`CheckpointError` is not imported
# here: its module imports torch, and parsing a command must not.)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, ConnectionError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for a user error, after its message)."""
    args, extra = build_parser().parse_known_args(argv)
    try:
        return args.handler(args, collect_overrides(args, extra))
    except USER_ERRORS as e:
        message = str(e)
        config, keys = getattr(args, "config_keys", (None, ()))
        if any(key in message for key in keys) and str(config) not in message:
            message += f" (set in --config {config})"
        print(f"wrapperlens: error: {message}", file=sys.stderr)
        return 2
