"""The options every command shares, defined once, and the `--SECTION.KEY=VALUE` overrides.

A command is registered with `add_command` and takes the shared options it needs:

- `--from RUN`: the run directory it reads (every command that reads a run; a pair's
  pretrained run, when named explicitly, is `--pretrained RUN`);
- `--out DIR`: where it writes;
- `--preset NAME`: the scale of the defaults; default: the `--from` run's preset, else `cpu`;
- `--config FILE`: a JSON / TOML file of `{section: {key: value}}` overrides;
- `--resume`: continue a killed run in `--out` from its last checkpoint;
- `--device`: cpu, cuda or auto;
- `--no-progress`: hide progress bars.

Anything else on the line must be an override `--SECTION.KEY=VALUE` (or `--SECTION.KEY VALUE`);
`collect_overrides` merges them over `--config` (flags win) and refuses sections the command does
not take. The values themselves are checked by the configs they change (`wrapperlens.config`).

Only the standard library and `wrapperlens.config` are imported here; what a command needs to
run (or to print its `--help` epilog) is imported when it is used.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wrapperlens.config import ConfigError, load_config_file, split_override_args

__all__ = [
    "Parser",
    "HelpFormatter",
    "add_command",
    "add_from",
    "add_out",
    "add_preset",
    "add_config",
    "add_resume",
    "add_device",
    "add_no_progress",
    "add_training_options",
    "collect_overrides",
    "check_sections",
    "resolve_preset",
    "is_main_process",
    "int_list",
    "format_ints",
]

PRESETS_HELP = "paper | cpu | tiny"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog (e.g. each preset's defaults) is built only for `--help`,
    so that parsing a command imports nothing its epilog needs."""

    def __init__(self, *args: Any, epilog_fn: Callable[[], str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self) -> str:
        if self.epilog_fn is not None and self.epilog is None:
            self.epilog = self.epilog_fn()
        return super().format_help()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" where a default is worth showing, and keeps multi-line text (the
    per-preset epilogs) as written while wrapping one-paragraph descriptions."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        hidden = action.default is None or action.default is False
        if "default" in text or action.required or hidden or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace, dict[str, Any]], int],
    description: str,
    *,
    help: str | None = None,
    sections: Sequence[str] | None = (),
    epilog_fn: Callable[[], str] | None = None,
    command: str | None = None,
) -> argparse.ArgumentParser:
    """Register a command; `main` calls `handler(args, overrides)` for it.

    Args:
        subparsers: Where to add it.
        name: The command's name on the line.
        handler: Runs the command; returns the exit code.
        description: What it does (its `--help`); the first sentence is its line in the list.
        help: The line in the list of commands (default: the description's first clause).
        sections: The override sections it takes: a tuple (empty: no overrides), or None when
            the library it calls checks every section itself.
        epilog_fn: Builds the `--help` epilog (imports are allowed there: help only).
        command: Its name in error messages (default `name`; e.g. "tinystories probe").
    """
    short = help or description.split(". ")[0].split(":")[0].split(" (")[0].rstrip(".")
    p = subparsers.add_parser(name, help=short, description=description, epilog_fn=epilog_fn,
                              formatter_class=HelpFormatter)
    p.set_defaults(handler=handler, sections=None if sections is None else tuple(sections),
                   command_name=command or name)
    return p


def add_from(
    p: argparse.ArgumentParser, help: str, *, required: bool = True, many: bool = False,
    metavar: str = "RUN",
) -> None:
    """`--from RUN` (or `--from RUN [RUN ...]` with `many`) into `args.run` / `args.runs`."""
    if many:
        p.add_argument("--from", dest="runs", nargs="+", required=required, metavar=metavar,
                       help=help)
    else:
        p.add_argument("--from", dest="run", required=required, metavar=metavar, help=help)


def add_out(
    p: argparse.ArgumentParser, help: str = "output directory", *, required: bool = True
) -> None:
    p.add_argument("--out", type=Path, required=required, metavar="DIR", help=help)


def add_preset(p: argparse.ArgumentParser, *, from_run: bool, names: str = PRESETS_HELP,
               default: str | None = None) -> None:
    """`--preset`; a command that starts from a run defaults to that run's preset."""
    default = default or ("the --from run's preset, else cpu" if from_run else "cpu")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help=f"scale of the defaults: {names} (default: {default})")


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="JSON or TOML file of {section: {key: value}} overrides (flags win)")


def add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run in --out from its last checkpoint")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="cpu | cuda | auto (default: auto = cuda when available)")


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_training_options(p: argparse.ArgumentParser) -> None:
    """What every training stage takes: --config, --resume, --device, --no-progress."""
    add_config(p)
    add_resume(p)
    add_device(p)
    add_no_progress(p)


def check_sections(command: str, overrides: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse overrides of sections `command` does not take (the message names them)."""
    if not overrides:
        return
    if not allowed:
        raise ConfigError(f"{command} takes no config overrides (got --{next(iter(overrides))})")
    bad = sorted({k.split(".")[0] for k in overrides} - set(allowed))
    if bad:
        raise ConfigError(f"sections {bad} do not apply here; {command} takes "
                          f"{', '.join(allowed)}")


def collect_overrides(args: argparse.Namespace, extra: Sequence[str]) -> dict[str, Any]:
    """The overrides of a parsed command: `--config FILE`, then the `--SECTION.KEY=VALUE` flags
    left over by argparse (flags win), checked against the command's sections.

    Raises:
        ConfigError: a leftover argument that is not an override, a bad config file, or a
            section the command does not take.
    """
    overrides: dict[str, Any] = split_override_args(extra)
    config = getattr(args, "config", None)
    if config is not None:
        from_file = load_config_file(config)
        # The error boundary names the file beside a refused key that came from it.
        args.config_keys = (config, {k for k in from_file if k not in overrides})
        overrides = {**from_file, **overrides}
    if args.sections is not None:
        check_sections(args.command_name, overrides, args.sections)
    return overrides


def resolve_preset(args: argparse.Namespace, run: str | Path | None = None) -> str:
    """`--preset`, else the preset saved in the config of `run` (default: the `--from` run, the
    first one of several), else "cpu"."""
    if getattr(args, "preset", None):
        return args.preset
    if run is None:
        run = (getattr(args, "runs", None) or [getattr(args, "run", None)])[0]
    if run is not None:
        from wrapperlens.runs import RunDir

        saved = RunDir(run)
        if saved.exists():
            preset = saved.read_config().get("preset")
            if isinstance(preset, str) and preset:
                return preset
    return "cpu"


def is_main_process() -> bool:
    """Whether this process reports: always outside `torchrun`, rank 0 under it."""
    from wrapperlens import distributed

    return distributed.is_main()


def section_keys_help(section_types: Mapping[str, type], sections: Sequence[str],
                      note: str) -> list[str]:
    """Help lines listing each section's keys (`--SECTION.KEY=VALUE`), then `note`."""
    import dataclasses

    lines = [f"[{section}] keys: " + ", ".join(f.name for f in
                                                dataclasses.fields(section_types[section]))
             for section in sections]
    return lines + ([note] if note else [])


def int_list(text: str) -> tuple[int, ...]:
    """An argparse type: "0-15" -> 0..15, "0,1,2,5,10" -> that list, "0-3,8" -> 0,1,2,3,8."""
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
    return tuple(values)


def format_ints(values: Sequence[int]) -> str:
    """The inverse of `int_list` for help texts: (0, 1, 2, 3, 8) -> "0-3,8"."""
    parts: list[str] = []
    i = 0
    values = list(values)
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)
