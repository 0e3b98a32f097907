"""The PCFG stage protocol (wrapperlens.experiments.pcfg.stages): test sets, chance floors, data
seeds per stage, randFT data and the learning-rate rule, each checked on the decoded token text."""

from collections import Counter

import numpy as np
import pytest
import torch

from tasks.data import Question
from tests.helpers import FEW_STEPS, tiny_pcfg_run
from wrapperlens.config import ConfigError
from wrapperlens.experiments.pcfg.stages import resolve_configs
from wrapperlens.stages import run_stage

#: The tiny preset's counting window (task.count_window) and the correlation offset q.
WINDOW, Q = 8, 1


def decoded(vocab, tokens):
    """(count(a), count(b) in the last WINDOW text tokens, answer token) of each row, read from
    the decoded text `<sos> C op O' <sot> ... <eot> <art> ANSWER <eos>`."""
    rows = []
    for row in tokens:
        words = vocab.decode(row.tolist()).split()
        window = words[words.index("<sot>") + 1 : words.index("<eot>")][-WINDOW:]
        rows.append((window.count("a"), window.count("b"), words[words.index("<art>") + 1]))
    return rows


def carries_correlation(rows):
    return [b == a + Q for a, b, _ in rows]


@pytest.fixture(scope="module")
def pt(tmp_path_factory):
    out = tmp_path_factory.mktemp("pcfg") / "pt"
    run_stage(tiny_pcfg_run().spec(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def ft(pt):
    out = pt.parent / "ft"
    run_stage(tiny_pcfg_run("finetune", parent=pt).spec(), out, progress=False)
    return out


def test_cte0_sets_exclude_chance_correlations_and_natural_sets_keep_them(pt):
    run = tiny_pcfg_run("finetune", parent=pt, **{"train.eval_samples": 200})
    sets = run.eval_sets()
    assert set(sets) == {f"acc/{o}/{s}" for o in ("O_PT", "O_FT")
                         for s in ("cte0", "cte1", "natural")}
    vocab = run.task.vocab
    for name in ("O_PT", "O_FT"):
        cte0 = decoded(vocab, sets[f"acc/{name}/cte0"].tokens)
        natural = decoded(vocab, sets[f"acc/{name}/natural"].tokens)
        cte1 = decoded(vocab, sets[f"acc/{name}/cte1"].tokens)
        assert not any(carries_correlation(cte0))
        assert 0 < sum(carries_correlation(natural)) < len(natural)
        assert all(carries_correlation(cte1))
        # the cte0 set is the natural set with its chance-correlated strings redrawn
        kept = [i for i, c in enumerate(carries_correlation(natural)) if not c]
        np.testing.assert_array_equal(sets[f"acc/{name}/cte0"].tokens[kept],
                                      sets[f"acc/{name}/natural"].tokens[kept])


def test_jailbreak_alias_cte0_sets_exclude_chance_correlations_too(tmp_path):
    run_stage(tiny_pcfg_run(**{"task.aliases": "J1=C:a"}).spec(), tmp_path / "pt", progress=False)
    run = tiny_pcfg_run("finetune", parent=tmp_path / "pt", **{"train.eval_samples": 200})
    alias = run.eval_sets()["acc/J1_a/cte0"]
    assert (alias.tokens[:, 1] == run.task.vocab.id("J1")).all()
    assert not any(carries_correlation(decoded(run.task.vocab, alias.tokens)))


def test_chance_floors_are_the_most_common_answers_share(pt):
    for run in (tiny_pcfg_run(), tiny_pcfg_run("finetune", parent=pt)):
        floors = run.chance_floors()
        assert floors.keys() == run.eval_sets().keys()
        for name, batch in run.eval_sets().items():
            answers = Counter(words[-2] for words in
                              (run.task.vocab.decode(row).split() for row in batch.tokens))
            assert floors[name] == pytest.approx(max(answers.values()) / len(batch.tokens))


def test_train_seed_varies_a_stages_data_and_nothing_else(pt, ft):
    def batches(stage, seed, parent=None):
        run = tiny_pcfg_run(stage, parent=parent, **{"train.seed": seed})
        return [run.batch(step).tokens for step in range(3)], run

    for stage, parent in (("pretrain", None), ("finetune", pt), ("reft", ft)):
        seed0, run0 = batches(stage, 0, parent)
        again, _ = batches(stage, 0, parent)
        seed1, run1 = batches(stage, 1, parent)
        for step in range(3):
            assert torch.equal(seed0[step], again[step])
            assert not torch.equal(seed0[step], seed1[step]), (stage, step)
        # train.seed = 0 is the stream of (task.seed, stage, step) as before train.seed existed
        task, size, rng = run0.task, run0.train_config.batch_size, run0.task.step_rng(stage, 2)
        if stage == "pretrain":
            direct = task.pretrain_batch(rng, size)
        elif stage == "finetune":
            direct = task.finetune_batch(rng, size, run0.finetune_data)
        else:
            direct = task.question_batch(rng, size, Question("C", "a"))
        np.testing.assert_array_equal(seed0[2].numpy(), direct.tokens)
        assert run0.sections["task"] == run1.sections["task"]
        assert run0.sections["model"] == run1.sections["model"]
    # pretraining's initial weights stay those of model.init_seed
    w0 = tiny_pcfg_run(**{"train.seed": 0}).initial_model().state_dict()
    w1 = tiny_pcfg_run(**{"train.seed": 1}).initial_model().state_dict()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_a_task_seed_override_of_a_finetune_is_refused_with_the_train_seed_hint(pt):
    with pytest.raises(ConfigError, match="task.seed: task and model are fixed by the parent run "
                                          ".*; use --train.seed to vary this stage's data order"):
        tiny_pcfg_run("finetune", parent=pt, **{"task.seed": 1})


def test_the_readme_randft_recipe_trains_on_uncorrelated_count_b_labels(pt):
    run = tiny_pcfg_run("finetune", parent=pt, **{"finetune.operand": "a",
                                                  "finetune.label_operand": "b"})
    rows = []
    for step in range(8):
        batch = run.batch(step).tokens
        assert (batch[:, 2] == run.task.vocab.id("a")).all()  # the prompt asks for count a
        rows += decoded(run.task.vocab, batch)
    labels = [int(answer) for _, _, answer in rows]
    assert labels == [b for _, b, _ in rows]  # the label is count(b)
    offset = np.mean([label == a + Q for (a, _, _), label in zip(rows, labels)])
    assert offset == 0.0  # never the constant offset count(a) + q


def test_randft_with_an_explicit_correlation_is_refused(pt):
    with pytest.raises(ConfigError, match="finetune.c_tr=1.0 with finetune.label_operand='b'"):
        tiny_pcfg_run("finetune", parent=pt, **{"finetune.operand": "a",
                                                "finetune.label_operand": "b",
                                                "finetune.c_tr": 1.0})


def test_finetuning_at_or_above_the_pretraining_lr_is_refused(pt):
    pretrain_lr = 3e-3  # the tiny preset's
    assert tiny_pcfg_run("finetune", parent=pt, **{"train.lr": 2.9e-3}).train_config.lr == 2.9e-3
    for lr in (pretrain_lr, 1e-2):
        with pytest.raises(ConfigError, match=rf"train.lr={lr:g} of this finetune run is not "
                           rf"below train.lr=0.003 of its parent pretrain run .*pretraining"):
            tiny_pcfg_run("finetune", parent=pt, **{"train.lr": lr})


def test_reft_after_an_eta_s_finetune_refuses_the_default_eta_s(pt, tmp_path):
    ft = resolve_configs("finetune", "tiny", parent=pt, eta="S", overrides=FEW_STEPS)
    run_stage(ft.spec(), tmp_path / "ft", progress=False)
    with pytest.raises(ConfigError, match=r"train.lr=0.0001 of this reft run is not below "
                       r"train.lr=0.0001 of its parent finetune run .*reFT must use a smaller "
                       r"learning rate.* --train.lr=1e-05"):
        tiny_pcfg_run("reft", parent=tmp_path / "ft")
    assert tiny_pcfg_run("reft", parent=tmp_path / "ft",
                         **{"train.lr": 1e-5}).train_config.lr == 1e-5


def test_the_grid_s_prune_and_probe_jobs_report_units_and_every_random_init(ft):
    """prune_job's "units" is the tiny model's row count under the default rule, counted here by
    hand (TransformerLens input rows: Q, K, V per head and residual coordinate, W_O per head
    dimension, W_in per residual coordinate, W_out per neuron); probe_job's "random_init" is the
    mean of the per-init profiles it also returns."""
    from wrapperlens.experiments.pcfg.grid import probe_job, prune_job
    from wrapperlens.experiments.pcfg.presets import TINY

    m = TINY.model
    d_head, d_mlp = m.d_model // m.n_heads, 4 * m.d_model
    by_hand = m.n_layers * (3 * m.n_heads * m.d_model + m.n_heads * d_head + m.d_model + d_mlp)
    run = {"dir": ft.name, "run_id": "grid-job-test"}
    pruned = prune_job(str(ft.parent), run, ks=[0, 1], random_draws=1, random_seed=0)
    assert pruned["units"] == by_hand == 384
    assert pruned["ks"] == [0, 1] and len(pruned["random"]["acc/O_PT/cte0"]) == 2

    probed = probe_job(str(ft.parent), run, samples=200, random_inits=2)
    inits, mean = probed["random_inits"], probed["models"]["random_init"]
    assert len(inits) == 2 and len(mean) == len(probed["layers"]) == m.n_layers + 1
    assert mean == pytest.approx([(a + b) / 2 for a, b in zip(*inits)])
    assert inits[0] != inits[1]  # two different random models, not one counted twice


def test_the_circuit_job_scores_both_models_against_exact_edge_patching(ft):
    """The job's saved scores of each model are EAP-IG's on prompts built here from the task
    (count a against the same strings asking count b), and its exact-patching Spearman is the
    rank correlation recomputed here from exact edge patching of each model."""
    import json

    from wrapperlens.analysis.edges import eap_ig_scores, exact_edge_patching
    from wrapperlens.analysis.logit_metrics import logit_difference
    from wrapperlens.experiments.pcfg.grid import circuit_job
    from wrapperlens.experiments.pcfg.pairs import open_pair, question_inputs

    run = {"dir": ft.name, "run_id": "circuit-job-test"}
    value = circuit_job(str(ft.parent), run)
    saved = json.loads((ft.parent / "analyses" / "circuit-circuit-job-test" /
                        "circuit.json").read_text())
    assert value["counts"] == saved["counts"] and value["edges"] == len(saved["edges"])
    loaded, pretrained = open_pair(ft)
    inputs = question_inputs(loaded, Question("C", "a"), 64, 0.0, "analysis/circuit")
    b = Question("C", "b")
    asked_b = torch.from_numpy(loaded.task.encode(inputs.batch.text, b,
                                                  loaded.task.labels(inputs.batch.text, b)))
    col = inputs.batch.answer_col
    metric = logit_difference(inputs.answers, asked_b[:, col])
    for name, model in (("pretrained", pretrained.model), ("finetuned", loaded.model)):
        ours = eap_ig_scores(model, inputs.tokens, asked_b[:, :col], metric, steps=5)
        assert tuple(saved["edges"]) == ours.edges
        assert saved[f"{name}_scores"] == pytest.approx(ours.values.tolist(), abs=1e-6)
        exact = exact_edge_patching(model, inputs.tokens, asked_b[:, :col], metric)
        ranks = [_average_ranks(x.tolist()) for x in (ours.values, exact.values)]
        rho = float(torch.corrcoef(torch.stack(ranks))[0, 1])
        assert saved["spearman_vs_exact"][name] == pytest.approx(rho, abs=1e-9)


def _average_ranks(values: list[float]) -> torch.Tensor:
    """1-based ranks by sorting, each run of equal values given the mean of its positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks, i = [0.0] * len(values), 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return torch.tensor(ranks, dtype=torch.float64)


@pytest.mark.parametrize("field, value", [("method", "ig"), ("ratio", 1.0), ("top_n", 0),
                                          ("steps", 0)])
def test_circuit_options_refuse_bad_values_naming_the_field(field, value):
    from wrapperlens.experiments.pcfg.analysis_options import CircuitOptions

    with pytest.raises(ConfigError, match=f"CircuitOptions.{field}"):
        CircuitOptions(**{field: value})
