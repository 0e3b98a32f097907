"""PCFG sampler throughput on one core (run by hand: `python benchmarks/pcfg_sampler_speed.py`).

Prints windows/s of `sample_windows` for the paper grammar (targets: >= 150k/s at length 32 and
>= 20k/s at length 250), derivations/s, and the same without flattened subtree tables, to show
what the flattening buys. Best of several repeats, measured in one run.
"""

from __future__ import annotations

import time

import numpy as np

import tasks.pcfg_sampler as pcfg_sampler
from tasks.grammar import PAPER_RULES, Grammar, paper_grammar
from tasks.pcfg_sampler import sample_derivations, sample_windows


def best_rate(fn, items: int, repeats: int = 7) -> float:
    fn()  # warm-up (and table compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def main() -> None:
    rng = np.random.default_rng(0)
    grammar = paper_grammar()
    print(f"{'what':<34}{'batch':>7}{'length':>8}{'per second':>14}")
    for batch in (512, 4096):
        for length in (32, 250):
            rate = best_rate(lambda: sample_windows(grammar, rng, batch, length), batch)
            print(f"{'windows':<34}{batch:>7}{length:>8}{rate:>14,.0f}")
    rate = best_rate(lambda: sample_derivations(grammar, rng, 4096), 4096)
    print(f"{'derivations':<34}{4096:>7}{'-':>8}{rate:>14,.0f}")

    flat_trees = pcfg_sampler.MAX_FLAT_TREES
    pcfg_sampler.MAX_FLAT_TREES = 0  # a fresh grammar instance compiles without subtree tables
    try:
        plain = Grammar.from_rules({lhs: [(p, 0.5) for p in prods] for lhs, prods in PAPER_RULES.items()})
        for length in (32, 250):
            rate = best_rate(lambda: sample_windows(plain, rng, 4096, length), 4096)
            print(f"{'windows, no flattened subtrees':<34}{4096:>7}{length:>8}{rate:>14,.0f}")
        rate = best_rate(lambda: sample_derivations(plain, rng, 4096), 4096)
        print(f"{'derivations, no flattened subtrees':<34}{4096:>7}{'-':>8}{rate:>14,.0f}")
    finally:
        pcfg_sampler.MAX_FLAT_TREES = flat_trees


if __name__ == "__main__":
    main()
