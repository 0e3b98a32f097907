"""Tracr-like gains (attention logit 30, staircase slopes capped): on which inputs they are exact.

Brute force against the evaluator / the task's own answers (docs/compiled.md#gains):

- the Counter, one input per count 0..n: with slope cap 100 every count up to 13 is right and 14
  is the first wrong one (the step between 13 and 14 `a`s, 1/210 apart, needs slope 210 to close);
  with cap 300 at 48 letters, up to 23;
- each experiment's own input distribution (`tasks.compiled_tasks`, with and without the
  correlation, compiled for O_PT and for O_FT): no wrong answer on 3000 sampled inputs, and the
  binomial probability of a count beyond the exact range is below 1e-6 per input;
- the compiled weights have the stated gains.
"""

from math import comb

import numpy as np
import pytest

from tasks.compiled_tasks import CompiledTask, CompiledTaskConfig
from tasks.rasp import compile_program, counter, evaluate, max_identifier
from wrapperlens.compiled import compiled_model, run_compiled

LOGIT = 15.0
#: (program, letters, slope cap) of the presets: tiny, demo, cpu, paper (and the Max-identifier).
SETTINGS = [("counter", 12, 100.0), ("counter", 16, 100.0), ("counter", 24, 100.0),
            ("counter", 48, 300.0), ("max_identifier", 10, 100.0)]


def _first_wrong_count(n: int, slope: float) -> int | None:
    compiled = compile_program(counter("a"), list("abcdefghi"), n, scale=LOGIT, mlp_slope=slope)
    inputs = [(["a"] * k + list("bcdefghi") * n)[:n] for k in range(n + 1)]
    got = run_compiled(compiled_model(compiled), compiled, inputs)
    wrong = [k for k, (x, g) in enumerate(zip(inputs, got)) if g != evaluate(counter("a"), x)]
    return wrong[0] if wrong else None


def _tail(n: int, k: int, p: float = 1 / 9) -> float:
    return sum(comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize("n, slope, first_wrong", [(12, 100.0, None), (16, 100.0, 14),
                                                   (24, 100.0, 14), (48, 100.0, 14),
                                                   (48, 300.0, 24)])
def test_counter_exact_up_to_the_count_the_slope_separates(n, slope, first_wrong):
    assert _first_wrong_count(n, slope) == first_wrong
    if first_wrong is not None and slope == dict(((s[1], s[2]) for s in SETTINGS)).get(n):
        # O_FT inputs carry count(b) = count(a) + 1, hence the shift by one.
        assert _tail(n, first_wrong - 1) < 1e-6


@pytest.mark.parametrize("program, n, slope", SETTINGS)
def test_tracr_gains_exact_on_the_experiment_distribution(program, n, slope):
    task = CompiledTask(CompiledTaskConfig(program=program, length=n))
    rng = np.random.default_rng(0)
    for operand in (task.config.o_pt, task.config.o_ft):
        compiled = task.compile(operand, LOGIT, slope)
        model = compiled_model(compiled)
        letters = np.concatenate([task.batch(rng, 1500, c)[0] for c in (0.0, 1.0)])
        got = run_compiled(model, compiled, [[task.vocab[i] for i in row] for row in letters])
        want = task.answers(letters, operand)
        wrong = [(row, g[-1], w) for row, g, w in zip(letters, got, want) if g[-1] != w]
        assert wrong == [], f"{program} ({n}) for {operand}: {len(wrong)} wrong, {wrong[:2]}"


@pytest.mark.parametrize("program, n, slope", SETTINGS)
def test_tracr_gains_are_the_stated_ones(program, n, slope):
    """Largest |W_in| is the slope cap (or below it), largest |W_K| the attention logit; the
    exact compile of the same program has MLP gains over twice as large (2.2x for the
    Max-identifier, 16x for the Counter at 48 letters, cap 300) and logit 1000."""
    prog = counter("a") if program == "counter" else max_identifier(5)
    vocab = list("abcdefghi") if program == "counter" else [chr(97 + i) for i in range(26)]
    tracr = compile_program(prog, vocab, n, scale=LOGIT, mlp_slope=slope).weights
    exact = compile_program(prog, vocab, n).weights
    w_in = max(abs(v).max() for k, v in tracr.items() if k.endswith("W_in"))
    w_k = max(abs(v).max() for k, v in tracr.items() if k.endswith("W_K"))
    assert w_in <= slope and w_k == LOGIT
    assert max(abs(v).max() for k, v in exact.items() if k.endswith("W_in")) > 2 * w_in
    assert max(abs(v).max() for k, v in exact.items() if k.endswith("W_K")) == 1000.0
