"""Compile time of the paper's two programs with wrapperlens's compiler and with Tracr.

The Counter (vocabulary a-i, inputs up to 48 letters, App. B.1) and the Max-identifier (rank 5
over all 26 letters, inputs of 10 letters; docs/choices.md#tracr-input-lengths), each compiled
`--repeats` times by

- wrapperlens: `tasks.rasp.compile_program`, then `wrapperlens.compiled.compiled_model` (the
  HookedTransformer), and
- Tracr (when the `tracr` extra is installed; otherwise the table says it is absent):
  `compile_with_tracr`, then `hooked_from_tracr` (its model as a HookedTransformer).

Prints the best and the first wall-clock time of each step and the ratio of the best compile
times, measured in this one run. Tracr and JAX are imported before any timing, but Tracr's first
compile of each program still includes JAX's set-up of the operations of new shapes. Compare
ratios only within one run: a machine shared with other jobs gives noisy absolute times.

    python benchmarks/compile_speed.py
    python benchmarks/compile_speed.py --repeats 5
"""

from __future__ import annotations

import argparse
import string
import time
from collections.abc import Callable
from typing import Any

from tasks.rasp import compile_program, counter, max_identifier
from wrapperlens.compiled import compiled_model
from wrapperlens.experiments.compiled.tracr_bridge import compile_with_tracr, hooked_from_tracr

PROGRAMS = {  # name -> (program builder, vocabulary, max_seq_len)
    "counter": (lambda: counter("a"), list("abcdefghi"), 48),
    "max_identifier": (lambda: max_identifier(5), list(string.ascii_lowercase), 10),
}


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(first time, best time, last result) of `repeats` calls of `fn`."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times[0], min(times), result


def measure(compile_fn: Callable[[], Any], build_fn: Callable[[Any], Any],
            repeats: int) -> tuple[float, float, float, float]:
    """(compile first, compile best, model first, model best)."""
    compile_first, compile_best, compiled = timed(compile_fn, repeats)
    model_first, model_best, _ = timed(lambda: build_fn(compiled), repeats)
    return compile_first, compile_best, model_first, model_best


def tracr_installed() -> bool:
    """Import Tracr and JAX now (so that no timing includes the imports); False if absent."""
    try:
        import haiku  # noqa: F401
        import jax  # noqa: F401
        from tracr.compiler import compiling  # noqa: F401
    except ImportError as err:
        print(f"(Tracr is absent, so only wrapperlens is timed: {err}; "
              f"`pip install wrapperlens[tracr]` adds it)")
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="compiles per program and compiler")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    with_tracr = tracr_installed()
    print(f"{'program':<16}{'compiler':<13}{'compile best':>14}{'first':>10}"
          f"{'model best':>12}{'first':>10}")
    ratios = {}
    for name, (build, vocab, max_seq_len) in PROGRAMS.items():
        ours = measure(lambda: compile_program(build(), vocab, max_seq_len), compiled_model,
                       args.repeats)
        rows = {"wrapperlens": ours}
        if with_tracr:
            rows["tracr"] = measure(lambda: compile_with_tracr(build(), vocab, max_seq_len),
                                    hooked_from_tracr, args.repeats)
        for compiler, (c_first, c_best, m_first, m_best) in rows.items():
            print(f"{name:<16}{compiler:<13}{c_best:>13.4f}s{c_first:>9.4f}s"
                  f"{m_best:>11.4f}s{m_first:>9.4f}s")
        if "tracr" in rows:
            ratios[name] = rows["tracr"][1] / ours[1]
    for name, ratio in ratios.items():
        print(f"{name}: Tracr's best compile time / wrapperlens's = {ratio:.1f}x (this run)")


if __name__ == "__main__":
    main()
