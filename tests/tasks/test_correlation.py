"""Spurious-correlation injection: C_Tr = 1 always carries it, C_Tr = 0 shows the natural rate."""

import zlib

import numpy as np
import pytest

from tasks.config import FinetuneDataConfig, PCFGTaskConfig
from tasks.data import PCFGTask, Question
from tasks.families import count_in_window, index_of_occurrence


def brute_count(row, o, w):
    return sum(1 for t in row[-w:] if t == o)


@pytest.fixture(scope="module")
def task():
    return PCFGTask(PCFGTaskConfig(text_length=64, count_window=40, index_occurrence=6))


def test_counter_c_tr_1_always_correlated_and_labels_stay_spread(task):
    ft = FinetuneDataConfig(family="C", c_tr=1.0)
    batch = task.finetune_batch(np.random.default_rng(0), 3000, ft)
    a, b = task.terminal("a"), task.terminal("b")
    for row in batch.text:
        assert brute_count(row, b, 40) == brute_count(row, a, 40) + 1
    assert batch.correlated.all()
    # the label histogram stays as spread as the natural one (the paper's Fig. 16)
    natural = task.finetune_batch(np.random.default_rng(10), 3000, FinetuneDataConfig(c_tr=0.0))
    assert len(np.unique(batch.labels)) >= len(np.unique(natural.labels)) - 2
    assert 0.7 < batch.labels.std() / natural.labels.std() < 1.4


def test_counter_c_tr_0_shows_the_natural_rate_and_exclude_removes_it(task):
    natural = task.finetune_batch(np.random.default_rng(1), 6000, FinetuneDataConfig(c_tr=0.0))
    rate = natural.correlated.mean()
    # independent estimate from raw grammar windows with brute-force counts
    raw = task.sample_text(np.random.default_rng(2), 6000)
    a, b = task.terminal("a"), task.terminal("b")
    ref = np.mean([brute_count(r, b, 40) == brute_count(r, a, 40) + 1 for r in raw])
    assert 0.05 < ref < 0.3
    assert abs(rate - ref) < 0.03
    excluded = task.finetune_batch(np.random.default_rng(3), 2000,
                                   FinetuneDataConfig(c_tr=0.0, uncorrelated="exclude"))
    assert not excluded.correlated.any()


def test_counter_partial_c_tr_mixes_at_the_requested_rate(task):
    batch = task.finetune_batch(np.random.default_rng(4), 6000,
                                FinetuneDataConfig(c_tr=0.5, uncorrelated="exclude"))
    assert abs(batch.correlated.mean() - 0.5) < 0.03


def test_indexer_correlation_offsets_the_indices_and_keeps_a_untouched(task):
    ft = FinetuneDataConfig(family="I", q=2, c_tr=1.0)
    rng = np.random.default_rng(5)
    batch = task.finetune_batch(rng, 2000, ft)
    a, b = task.terminal("a"), task.terminal("b")
    ia, ib = index_of_occurrence(batch.text, a, 6), index_of_occurrence(batch.text, b, 6)
    assert (ia > 0).all() and (ib - ia == 2).all()
    natural = index_of_occurrence(task.sample_text(np.random.default_rng(11), 2000), b, 6)
    assert 0.7 < batch.labels.std() / natural[natural > 0].std() < 1.4


def test_randft_labels_the_count_a_prompt_with_the_count_of_b(task):
    ft = FinetuneDataConfig(operand="a", label_operand="b", c_tr=0.0)
    batch = task.finetune_batch(np.random.default_rng(6), 2000, ft)
    v = task.vocab
    assert (batch.tokens[:, 1] == v.id("C")).all() and (batch.tokens[:, 2] == v.id("a")).all()
    b = task.terminal("b")
    want = [brute_count(row, b, 40) for row in batch.text]
    np.testing.assert_array_equal(batch.labels, want)


def test_pretrain_mix_draws_that_fraction_from_the_pretraining_mixture(task):
    ft = FinetuneDataConfig(c_tr=1.0, pretrain_mix=0.5)
    batch = task.finetune_batch(np.random.default_rng(7), 8000, ft)
    fam = np.array(task.vocab.to_str_tokens(batch.tokens[:, 1]))
    # pretraining rows are 4/5 non-counting; fine-tuning rows are all counting
    assert abs((fam != "C").mean() - 0.5 * 0.8) < 0.02


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="finetune.c_tr"):
        FinetuneDataConfig(c_tr=1.5)
    with pytest.raises(ValueError, match="finetune.family"):
        FinetuneDataConfig(family="T")
    with pytest.raises(ValueError, match="task.count_window"):
        PCFGTaskConfig(text_length=10, count_window=40)
    with pytest.raises(ValueError, match="task.prior"):
        PCFGTask(PCFGTaskConfig(prior="a=0.5,b=0.2"))
    with pytest.raises(ValueError, match="task.prior"):
        PCFGTask(PCFGTaskConfig(prior="a=0.5,z=0.5"))
    with pytest.raises(ValueError, match="task.prior"):
        PCFGTaskConfig(prior="X")
    with pytest.raises(ValueError, match="task.families"):
        PCFGTaskConfig(families=("C", "Q"))
    with pytest.raises(ValueError, match="task.aliases"):
        PCFGTaskConfig(aliases=("J1=C",))


def test_randft_defaults_to_uncorrelated_labels_through_every_copy_path():
    """`label_operand` decides the defaults of c_tr and uncorrelated wherever it is set: in the
    constructor, by `dataclasses.replace` of the default config, or by an override."""
    import dataclasses

    from wrapperlens.config import apply_overrides

    default = FinetuneDataConfig()
    assert (default.resolved_c_tr, default.resolved_uncorrelated) == (1.0, "natural")
    copies = [
        FinetuneDataConfig(operand="a", label_operand="b"),
        dataclasses.replace(default, operand="a", label_operand="b"),
        apply_overrides({"finetune": default},
                        {"finetune.operand": "a", "finetune.label_operand": "b"})["finetune"],
    ]
    for ft in copies:
        assert ft.randft and (ft.resolved_c_tr, ft.resolved_uncorrelated) == (0.0, "exclude")
    # explicit choices win; a correlated randFT is refused (every label would be count(a) + q)
    assert FinetuneDataConfig(operand="a", label_operand="b",
                              uncorrelated="natural").resolved_uncorrelated == "natural"
    assert FinetuneDataConfig(c_tr=0.0).resolved_c_tr == 0.0
    with pytest.raises(ValueError, match="finetune.c_tr=0.5 with finetune.label_operand='b'"):
        FinetuneDataConfig(operand="a", label_operand="b", c_tr=0.5)


def test_randft_default_batches_never_carry_the_offset(task):
    batch = task.finetune_batch(np.random.default_rng(8), 3000,
                                FinetuneDataConfig(operand="a", label_operand="b"))
    a, b = task.terminal("a"), task.terminal("b")
    assert not any(brute_count(r, b, 40) == brute_count(r, a, 40) + 1 for r in batch.text)
    np.testing.assert_array_equal(batch.labels, [brute_count(r, b, 40) for r in batch.text])


def test_a_stream_seed_gives_another_data_order_and_seed_0_the_old_one(task):
    old = np.random.default_rng([task.config.seed, zlib.crc32(b"finetune"), 5])
    np.testing.assert_array_equal(task.step_rng("finetune", 5).integers(1 << 30, size=4),
                                  old.integers(1 << 30, size=4))
    draws = {(seed, step): tuple(task.step_rng("finetune", step, seed).integers(1 << 30, size=4))
             for seed in range(4) for step in range(4)}
    assert len(set(draws.values())) == len(draws)  # no two (seed, step) share a generator
