"""The compiled models' stages, grid and claims 8-12 (wrapperlens.experiments.compiled)."""

import json

import numpy as np
import pytest
import torch

from tasks.rasp import evaluate
from wrapperlens.config import ConfigError
from wrapperlens.experiments.compiled.claims import evaluate_compiled_claims
from wrapperlens.experiments.compiled.analysis import gradient_letters, prune_run, readout
from wrapperlens.experiments.compiled.grid import SETTING, plan
from wrapperlens.reproduction import reproduce
from wrapperlens.experiments.compiled.stages import (
    load_compiled_run,
    resolve_compiled,
    run_compiled_stage,
)
from wrapperlens.runs import RunDir
from wrapperlens.stages import run_stage

FAST = {"train.steps": 12, "train.eval_every": 6, "train.eval_samples": 100,
        "train.checkpoint_every": 4}


def _compile(root, **overrides):
    run = resolve_compiled("compile", "tiny", overrides=overrides)
    run_compiled_stage(run, root / "compiled", progress=False)
    return run, root / "compiled"


def test_without_noise_the_compile_run_is_the_exact_program(tmp_path):
    run, path = _compile(tmp_path, **{"compile.noise_std": 0.0})
    record = RunDir(path).metrics()[0]
    assert record["acc/O_PT/cte0"] == record["acc/O_PT/cte1"] == 1.0
    # and its weights answer as the RASP evaluator on fresh inputs
    _, model = load_compiled_run(path)
    letters = run.task.natural(np.random.default_rng(5), 50)
    with torch.no_grad():
        predicted = model(run.token_ids(letters))[:, -1].argmax(-1)
    values = [run.description.output_values[i] for i in predicted]
    expected = [evaluate(run.task.program("a"), [run.task.vocab[i] for i in row])[-1]
                for row in letters]
    assert values == expected


@pytest.mark.parametrize("preset", ["tiny", "demo", "cpu", "paper"])
def test_presets_compile_with_tracr_gains(preset):
    run = resolve_compiled("compile", preset)
    cfg = run.sections["compile"]
    assert (cfg.gains, cfg.scale) == ("tracr", 15.0)
    assert cfg.slope == (300.0 if preset == "paper" else 100.0)
    w_k = max(abs(v).max() for k, v in run.description.weights.items() if k.endswith("W_K"))
    w_in = max(abs(v).max() for k, v in run.description.weights.items() if k.endswith("W_in"))
    assert w_k == 15.0 and w_in <= cfg.slope
    exact = resolve_compiled("compile", preset, overrides={"compile.gains": "exact",
                                                          "compile.mlp_slope": 0.0})
    assert (exact.sections["compile"].scale, exact.sections["compile"].slope) == (1000.0, None)


@pytest.mark.parametrize("overrides, match", [
    ({"compile.gains": "loose"}, "compile.gains='loose'"),
    ({"compile.gains": "exact", "compile.attention_logit": 100.0}, "below 250"),
    ({"compile.gains": "exact", "compile.mlp_slope": 50.0}, "2 / min_gap"),
    ({"compile.mlp_slope": -1.0}, "must be >= 0"),
])
def test_bad_gains_are_refused(overrides, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        resolve_compiled("compile", "tiny", overrides=overrides)


def test_noise_is_seeded_and_changes_every_weight(tmp_path):
    _, a = _compile(tmp_path / "a", **{"compile.seed": 3})
    _, b = _compile(tmp_path / "b", **{"compile.seed": 3})
    _, c = _compile(tmp_path / "c", **{"compile.seed": 4})
    exact = resolve_compiled("compile", "tiny").new_model().state_dict()
    wa, wb, wc = (load_compiled_run(p)[1].state_dict() for p in (a, b, c))
    for name, value in exact.items():
        if name in dict(load_compiled_run(a)[1].named_parameters()):
            assert torch.equal(wa[name], wb[name]) and not torch.equal(wa[name], wc[name])
            assert 0 < (wa[name] - value).std() < 2e-3


def test_finetune_and_reft_chain_resumes_to_the_same_weights(tmp_path):
    _, compiled = _compile(tmp_path)
    ft = resolve_compiled("finetune", "tiny", parent=compiled, overrides=FAST)
    assert ft.train_config.optimizer == "sgd" and ft.train_config.lr == 1e-2  # η_M
    run_compiled_stage(ft, tmp_path / "ft", progress=False)
    # killed after 5 steps, then resumed: the momentum buffers come back from the checkpoint
    run_stage(ft.spec(), tmp_path / "killed", progress=False, stop_after=5)
    run_stage(ft.spec(), tmp_path / "killed", progress=False, resume=True)
    whole = RunDir(tmp_path / "ft").load_model().state_dict()
    resumed = RunDir(tmp_path / "killed").load_model().state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    reft = resolve_compiled("reft", "tiny", parent=tmp_path / "ft", overrides=FAST)
    records, _ = run_compiled_stage(reft, tmp_path / "reft", progress=False)
    assert reft.train_config.lr == 1e-4 and reft.sections["finetune"] == ft.sections["finetune"]
    # the logged metrics are those of the saved weights, recomputed independently
    run, model = load_compiled_run(tmp_path / "reft")
    assert run.evaluate(model) == {k: v for k, v in records[-1].items() if k.startswith("acc/")}


def test_training_rows_end_with_the_answer_class(tmp_path):
    _, compiled = _compile(tmp_path)
    for target, operand in (("ft", "b"), ("pt", "a")):
        over = {**FAST, "finetune.target": target, "finetune.c_tr": 1.0 if target == "ft" else 0}
        run = resolve_compiled("finetune", "tiny", parent=compiled, overrides=over)
        batch = run.batch(0)
        letters = batch.tokens[:, 1:-1].numpy() - 1  # BOS is id 0, letter i is id i + 1
        values = [run.description.output_values[i] for i in batch.tokens[:, -1]]
        assert values == list(run.task.answers(letters, operand))
        assert batch.loss_mask.sum() == len(letters) and batch.loss_mask[:, -1].all()


@pytest.mark.parametrize("stage,parent,overrides,match", [
    ("compile", "x", {}, "--from is not allowed"),
    ("finetune", None, {}, "needs --from"),
    ("reft", "compiled", {}, "starts from a compiled finetune run"),
    ("finetune", "compiled", {"task.length": 5}, "fixed by the parent run"),
    ("finetune", "compiled", {"finetune.target": "pt", "finetune.c_tr": 0.5}, "natural inputs"),
])
def test_bad_stages_are_refused(tmp_path, stage, parent, overrides, match):
    _compile(tmp_path)
    parent_dir = tmp_path / parent if parent else None
    with pytest.raises((ConfigError, ValueError), match=match):
        resolve_compiled(stage, "tiny", parent=parent_dir, overrides=overrides)


def test_reft_must_use_a_smaller_rate(tmp_path):
    _, compiled = _compile(tmp_path)
    run_compiled_stage(resolve_compiled("finetune", "tiny", parent=compiled, eta="S",
                                        overrides=FAST), tmp_path / "ft", progress=False)
    with pytest.raises(ConfigError, match="not below train.lr=0.001"):
        resolve_compiled("reft", "tiny", parent=tmp_path / "ft", eta="M")


def test_counter_readout_sums_attention_to_each_letter(tmp_path):
    _, path = _compile(tmp_path, **{"compile.noise_std": 0.0})
    value = readout(tmp_path / "compiled")
    # the exact counting head splits the last query's attention between BOS and the a's: a
    # fraction count(a) / (count(a) + 1) goes to a, nothing to b (mean over inputs)
    run, _ = load_compiled_run(path)
    n = run.train_config.eval_samples if run.train_config else 1000
    letters, _ = run.task.batch(run.task.eval_rng("cte0", n), n, 0.0)
    count = (letters == 0).sum(1)
    assert value["attention_to_a"] == pytest.approx(np.mean(count / (count + 1)), abs=1e-5)
    assert value["attention_to_b"] == pytest.approx(0.0, abs=1e-6)


def test_sorting_readout_of_the_exact_max_identifier_is_perfect(tmp_path):
    _compile(tmp_path, **{"compile.noise_std": 0.0, "task.program": "max_identifier",
                          "task.length": 0})
    assert readout(tmp_path / "compiled") == {"sorting_accuracy": 1.0}


def test_the_plan_covers_table3_and_its_analyses():
    jobs = {g.job.key: g.job for g in plan("cpu")}
    ft = [k for k in jobs if "stage=finetune" in k and k.startswith("program=")]
    assert len(ft) == 2 * 4 * 7 * 3  # programs × η × C_Tr × seeds
    prunes = [j for k, j in jobs.items() if k.startswith("prune/")]
    assert len(prunes) == 2 * 2 * 3  # η_M, η_S × C_Tr 0, 1
    assert all(j.args["gradient_samples"] == 512 for j in prunes)
    assert sum("stage=reft" in k and k.startswith("program=") for k in jobs) == 2 * 2 * 3
    for job in jobs.values():
        assert set(job.after) <= set(jobs)


@pytest.mark.slow
def test_the_tiny_grid_runs_and_decides_every_claim(tmp_path):
    results = reproduce([SETTING], "tiny", tmp_path, executor="inline", progress=False)
    assert all(r["status"] == "finished" for r in results["runs"] + results["analyses"])
    rows = {(r["program"], r["eta"], r["c_tr"]): r for r in results["tables"]["table3"]}
    assert ("counter", "-", None) in rows and ("max_identifier", "VS", 1.0) in rows
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tables"]["table3"] == results["tables"]["table3"]
    statuses = {c["id"]: c["status"] for c in results["claims"]}
    assert set(statuses) == {8, 9, 10, 11, 12} and "not covered" not in statuses.values()
    # a rerun recomputes nothing: every run directory is reused
    again = reproduce([SETTING], "tiny", tmp_path, executor="inline", progress=False)
    assert again["tables"]["table3"] == results["tables"]["table3"]


def test_the_pruning_gradient_is_taken_on_rows_no_scored_set_holds(tmp_path, monkeypatch):
    import wrapperlens.analysis.pruning as pruning

    _, path = _compile(tmp_path)
    seen = []
    real = pruning.answer_loss
    monkeypatch.setattr(pruning, "answer_loss",
                        lambda tokens, *a: seen.append(tokens) or real(tokens, *a))
    result = prune_run(path, [0, 1], random_draws=1)
    run, _ = load_compiled_run(path)
    scored = {tuple(row) for name, (tokens, _) in run.eval_sets().items()
              for row in tokens.tolist()}
    (gradient,) = seen
    assert len(gradient) == 512 and result["gradient"] == {
        "stream": "prune_gradient", "rows": 512, "dropped": 0}
    assert not scored & {tuple(row) for row in gradient.tolist()}
    # the old batch (the first 512 C_Te = 0 evaluation rows) was all scored
    old = run.token_ids(run.eval_letters(0)[:512])
    assert {tuple(row) for row in old.tolist()} <= scored


def test_gradient_rows_that_an_evaluation_set_holds_are_dropped(tmp_path):
    run, _ = _compile(tmp_path)
    drawn = gradient_letters(run, 50)
    assert len(drawn) == 50
    # an evaluation set that happens to hold three of the drawn rows: exactly those go
    cte1 = run.eval_letters(1).copy()
    cte1[[0, 5, 9]] = drawn[[2, 7, 11]]
    run._eval_letters[1] = cte1
    kept = gradient_letters(run, 50)
    assert len(kept) == 47 and not ({r.tobytes() for r in kept}
                                    & {r.tobytes() for r in drawn[[2, 7, 11]]})
    # C_Te = 0 inputs: none carries the correlation
    assert not run.task.is_correlated(kept).any()


def test_the_claim_rules_are_tested_on_hand_made_results():
    # tests/wrapperlens/experiments/test_compiled_claims.py; here: the grid's values are read
    claims = evaluate_compiled_claims({"runs": [], "analyses": []})
    assert [c["id"] for c in claims] == [8, 9, 10, 11, 12]
    assert {c["status"] for c in claims} == {"not covered"}
