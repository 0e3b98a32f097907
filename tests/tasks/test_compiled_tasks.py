"""The compiled models' fine-tuning data, checked against brute force on every row."""

import numpy as np
import pytest

from tasks.compiled_tasks import CompiledTask, CompiledTaskConfig
from tasks.rasp import evaluate


def _task(program: str, **kw) -> CompiledTask:
    return CompiledTask(CompiledTaskConfig(program=program, **kw))


def _letters(task: CompiledTask, row: np.ndarray) -> list[str]:
    return [task.vocab[i] for i in row]


@pytest.mark.parametrize("program,length", [("counter", 24), ("counter", 48),
                                            ("max_identifier", 10)])
@pytest.mark.parametrize("c", [0.0, 0.3, 1.0])
def test_rows_carry_the_correlation_exactly_where_marked(program, length, c):
    task = _task(program, length=length)
    letters, correlated = task.batch(np.random.default_rng(7), 500, c)
    assert letters.shape == (500, length) and correlated.sum() == round(c * 500)
    for row, marked in zip(letters, correlated):
        words = _letters(task, row)
        if program == "counter":
            relation = words.count("b") == words.count("a") + 1
        else:  # the 6th largest is the letter after the 5th largest (a > b > ...)
            ordered = sorted(words)
            assert len(set(words)) == length  # no repeats
            relation = ord(ordered[5]) - ord(ordered[4]) == 1
        assert relation == marked


@pytest.mark.parametrize("program,operands", [("counter", ("a", "b")),
                                              ("max_identifier", ("5", "6"))])
def test_answers_match_the_rasp_evaluator(program, operands):
    task = _task(program, length=10)
    letters = task.natural(np.random.default_rng(0), 200)
    for operand in operands:
        answers = task.answers(letters, operand)
        for row, answer in zip(letters, answers):
            # every position of a compiled program holds the answer; the experiments read the last
            assert evaluate(task.program(operand), _letters(task, row))[-1] == answer


def test_natural_inputs_keep_chance_correlations():
    task = _task("counter", length=24)
    share = task.is_correlated(task.natural(np.random.default_rng(1), 4000)).mean()
    assert 0.05 < share < 0.3  # count(b) = count(a) + 1 happens by chance


def test_streams_are_a_function_of_seed_stream_and_step():
    task = _task("counter", length=12)
    first = task.batch(task.step_rng("finetune", 3, seed=0), 8, 0.5)[0]
    again = task.batch(task.step_rng("finetune", 3, seed=0), 8, 0.5)[0]
    other = task.batch(task.step_rng("finetune", 3, seed=1), 8, 0.5)[0]
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("kw,match", [
    ({"program": "sorter"}, "programs are counter, max_identifier"),
    ({"program": "counter", "finetune_operand": "z"}, "counts one of abcdefghi"),
    ({"program": "max_identifier", "pretrain_operand": "11"}, "a rank 1..10"),
    ({"program": "counter", "finetune_operand": "a"}, "must differ"),
    ({"program": "max_identifier", "length": 30}, "task.length=30"),
    ({"program": "counter", "counter_form": "alg2"}, "expected one of one_block, alg1"),
    ({"program": "max_identifier", "counter_form": "alg1"}, "is for the Counter"),
])
def test_bad_configs_are_refused_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        CompiledTaskConfig(**kw)


def test_an_impossible_correlation_is_an_error():
    task = _task("max_identifier", length=10, q=20)  # letters 5th and 6th can never be 20 apart
    with pytest.raises(RuntimeError, match="could not draw inputs"):
        task.batch(np.random.default_rng(0), 4, 1.0)


@pytest.mark.parametrize("gains", [(1000.0, None), (15.0, 100.0)])
def test_the_alg1_counter_is_three_blocks_and_answers_as_the_one_block_form(gains):
    """`task.counter_form=alg1` compiles the paper's Alg. 1 (three blocks); on 2000 inputs of
    the task (C = 0 and 1), both forms' compiled models give the brute-force count."""
    from wrapperlens.compiled import compiled_model, run_compiled

    forms = {f: _task("counter", length=16, counter_form=f) for f in ("one_block", "alg1")}
    letters = np.concatenate([forms["alg1"].batch(np.random.default_rng(3), 1000, c)[0]
                              for c in (0.0, 1.0)])
    words = [_letters(forms["alg1"], row) for row in letters]
    layers = {}
    for form, task in forms.items():
        compiled = task.compile("a", *gains)
        layers[form] = compiled.config["n_layers"]
        got = run_compiled(compiled_model(compiled), compiled, words)
        assert [g[-1] for g in got] == task.answers(letters, "a").tolist()
        assert [g for g in got] == [evaluate(task.program("a"), w) for w in words]
    assert layers == {"one_block": 1, "alg1": 3}
