"""The main job and its report: `wrapperlens reproduce` and `wrapperlens report`.

    wrapperlens reproduce --preset demo --out runs/demo            # ≤ 5 min on 2 cores
    wrapperlens reproduce --preset cpu --out runs/cpu --seeds 3
    wrapperlens reproduce --preset paper --out /shared/paper --executor ray --address auto
    wrapperlens report runs/demo                                   # rebuild, no training

Both live in `wrapperlens.reproduction`; this module only parses.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wrapperlens.cli.options import (add_command, add_config, add_device, add_no_progress,
                                     add_out, add_preset)

__all__ = ["REPRODUCE_COMMANDS", "add_reproduce_commands"]

REPRODUCE_COMMANDS = ("reproduce", "report", "claims", "leaderboard")
#: The settings of the paper's claims (the default) and every setting `--settings` takes.
SETTINGS = ("pcfg", "compiled", "tinystories")
ALL_SETTINGS = (*SETTINGS, "wrappers")


def _settings(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL_SETTINGS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown settings {unknown or text!r}; known: "
                                         f"{', '.join(ALL_SETTINGS)}")
    return names


def _setting_objects(names):
    """The `Setting` of each name (imported here: the CLI is the only place that knows them)."""
    from wrapperlens.experiments.compiled.grid import SETTING as COMPILED
    from wrapperlens.experiments.pcfg.grid import SETTING as PCFG
    from wrapperlens.experiments.wrappers.grid import SETTING as WRAPPERS

    known = {"pcfg": PCFG, "compiled": COMPILED, "wrappers": WRAPPERS}
    if "tinystories" in names:
        from tinystories.grid import SETTING as TINYSTORIES

        known["tinystories"] = TINYSTORIES
    return [known[n] for n in names]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def add_reproduce_commands(sub: argparse._SubParsersAction) -> None:
    """Register reproduce, report and claims."""
    p = add_command(
        sub, "reproduce", _reproduce,
        "The main job: does the finding hold? Runs the preset's grid of each setting (PCFG: "
        "priors x fine-tuning cells x seeds, with reFT, Scr.+FT, pruning, probes and attention "
        "views; the compiled models' Table 3 grid; the TinyStories deletion / revival "
        "pipeline), checks each claim of docs/claims.md by its rule and writes "
        "DIR/results.json and DIR/report.html. "
        "Every run lives under its run id in DIR/runs; run again, finished runs are reused and "
        "an interrupted sweep continues where it stopped; a failed run is recorded and the "
        "others go on.",
        help="Run a preset's grid over seeds and judge each claim", sections=None,
    )
    add_preset(p, from_run=False, names="demo | cpu | paper | tiny", default="demo")
    p.add_argument("--settings", type=_settings, default=SETTINGS, metavar="LIST",
                   help="comma-separated settings to run into one directory and one report: "
                   f"{', '.join(SETTINGS)} (default: all three, claims 1-20), and wrappers "
                   "(the known-wrapper benchmark of localisation methods, docs/wrappers.md; "
                   "presets cpu, tiny, paper)")
    add_out(p, "output directory (default: runs/reproduce-PRESET)", required=False)
    p.add_argument("--seeds", type=_positive, metavar="N",
                   help="seeds per setting (default: the preset's grid.seeds)")
    p.add_argument("--first-seed", type=_non_negative, metavar="S",
                   help="first seed (default 0): seeds S .. S+N-1, e.g. --first-seed 3 for "
                   "held-out seeds 3-5 that no claim rule was chosen on (use another --out)")
    p.add_argument("--executor", choices=("local", "ray", "inline"), default="local",
                   help="local: one process per run on every core (default); ray: Ray tasks "
                   "(pip install 'wrapperlens[ray]'); inline: one run at a time in this process")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster address (with --executor ray; default: a local Ray)")
    p.add_argument("--workers", type=_positive, metavar="N",
                   help="runs at once (default: every core, or the Ray cluster's CPUs)")
    p.add_argument("--threads", type=_positive, default=1, metavar="N",
                   help="torch threads per run (default 1; results depend on it)")
    add_config(p)
    add_device(p)
    add_no_progress(p)

    p = add_command(
        sub, "report", _report,
        "Rebuild DIR/results.json and DIR/report.html of a reproduce directory from its "
        "finished runs, training nothing; runs not finished are marked missing.",
        help="Rebuild the results and report of a reproduce directory",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="a `wrapperlens reproduce` --out")

    p = add_command(
        sub, "claims", _claims,
        "Print the claims table of a reproduce directory; with a second directory of the same "
        "command on other seeds (--first-seed), each claim's verdict on both and the joined "
        "verdict: reproduced or not reproduced only where both agree, else inconclusive.",
        help="The claims table of one or two reproduce directories (held-out seeds)",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="a `wrapperlens reproduce` --out")
    p.add_argument("held_out", type=Path, metavar="HELD_OUT", nargs="?",
                   help="the same command's --out on seeds no rule was chosen on")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")

    p = add_command(
        sub, "leaderboard", _leaderboard,
        "Print the known-wrapper benchmark's leaderboard of a reproduce directory run with "
        "--settings wrappers, as Markdown: per localisation method, precision at the wrapper's "
        "size, AUROC, revival of Acc O_PT when its top units are removed, the wrappers it "
        "finds and its false positives on the negative controls (docs/wrappers.md). With a "
        "second directory of the same command on other seeds (--first-seed), both side by side.",
        help="The known-wrapper leaderboard of one or two reproduce directories",
    )
    p.add_argument("dir", type=Path, metavar="DIR",
                   help="a `wrapperlens reproduce --settings wrappers` --out")
    p.add_argument("held_out", type=Path, metavar="HELD_OUT", nargs="?",
                   help="the same command's --out on other seeds")


def _reproduce(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.reproduction import failed_jobs, reproduce

    preset = args.preset or "demo"
    out = args.out or Path("runs") / f"reproduce-{preset}"
    results = reproduce(_setting_objects(args.settings), preset, out, seeds=args.seeds,
                        first_seed=args.first_seed, overrides=dict(overrides),
                        executor=args.executor, workers=args.workers, threads=args.threads,
                        address=args.address, device=args.device, progress=not args.no_progress)
    failed = failed_jobs(results)
    if failed:
        print(f"{len(failed)} job(s) failed (their errors are in results.json and the report): "
              + ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))
    return 1 if failed else 0


def _report(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.reproduction import rebuild_report

    rebuild_report(_setting_objects(ALL_SETTINGS), args.dir)
    print(f"Written: {args.dir / 'results.json'}, {args.dir / 'report.html'}")
    return 0


def _leaderboard(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.experiments.wrappers.leaderboard import joined_markdown, leaderboard_markdown
    from wrapperlens.results import read_results

    results = read_results(args.dir)
    if args.held_out is None:
        print(leaderboard_markdown(results))
        return 0
    try:
        print(joined_markdown(results, read_results(args.held_out)))
    except ValueError as e:
        raise ValueError(f"{args.dir} and {args.held_out}: {e}") from None
    return 0


def _claims(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from wrapperlens.held_out import combine, markdown_table
    from wrapperlens.reproduction import claims_table
    from wrapperlens.results import read_results

    chosen = read_results(args.dir)
    if args.held_out is None:
        print(claims_table(chosen))
        return 0
    held_out = read_results(args.held_out)
    try:
        rows = combine(chosen, held_out)
    except ValueError as e:
        raise ValueError(f"{args.dir} and {args.held_out}: {e}") from None
    walls = (chosen["wall_seconds"], held_out["wall_seconds"])
    if args.markdown:
        print(markdown_table(rows, walls))
    else:
        for r in rows:
            print(f"{r['id']:3d} {r['title'][:52]:52s} {r['chosen']['status']:>15s} / "
                  f"{r['held_out']['status'] if r['held_out'] else '-':>15s} -> {r['status']}")
    return 0
