"""Task-family labels against brute-force, one-string-at-a-time reference implementations."""

import numpy as np
import pytest

from tasks.config import PCFGTaskConfig
from tasks.data import PCFGTask, Question
from tasks.families import FAMILIES, NO_OCCURRENCE


# ---- brute-force references: plain Python over a list of characters ---------------------------
def ref_count(s: str, o: str, w: int) -> int:
    return sum(1 for ch in s[-w:] if ch == o)


def ref_count_pairs(s: str, o: str, w: int) -> int:
    tail = s[-w:]
    return sum(1 for i in range(len(tail) - 1) if tail[i] == o and tail[i + 1] == o)


def ref_index(s: str, o: str, k: int) -> int:
    seen = 0
    for dist in range(1, len(s) + 1):  # walk back from <eot>
        if s[-dist] == o:
            seen += 1
            if seen == k:
                return dist
    return NO_OCCURRENCE


def ref_index_pairs(s: str, o: str, k: int) -> int:
    seen = 0
    for dist in range(1, len(s)):  # a pair ends at distance dist, starts at dist + 1
        if s[-dist] == o and s[-dist - 1] == o:
            seen += 1
            if seen == k:
                return dist
    return NO_OCCURRENCE


def ref_token(s: str, offset: int) -> str:
    return s[-offset]


REFERENCES = {"C": ref_count, "CC": ref_count_pairs, "I": ref_index, "IC": ref_index_pairs}


@pytest.fixture(scope="module")
def task():
    return PCFGTask(PCFGTaskConfig(text_length=64, count_window=40, index_occurrence=6,
                                   pair_index_occurrence=3, token_offset=40))


@pytest.mark.parametrize("family", ["C", "CC", "I", "IC", "T"])
def test_labels_match_brute_force_on_grammar_strings(task, family):
    rng = np.random.default_rng(0)
    text = task.sample_text(rng, 3000)
    strings = ["".join(task.terminals[t] for t in row) for row in text]
    o_prime = task.config.o_prime(family)
    for operand in ("a", "b", "c") if FAMILIES[family].takes_operand else (None,):
        q = Question(family, operand)
        got = task.labels(text, q)
        if family == "T":
            want = [task.terminals.index(ref_token(s, o_prime)) for s in strings]
        else:
            want = [REFERENCES[family](s, operand, o_prime) for s in strings]
        np.testing.assert_array_equal(got, want)
        if family in ("I", "IC"):
            assert (got > 0).any()  # the check covers found occurrences, not only NONE


def test_encoded_sequences_follow_the_layout_and_decode_to_the_answer(task):
    rng = np.random.default_rng(1)
    batch = task.question_batch(rng, 50, Question("I", "b"))
    v = task.vocab
    for row, label, text in zip(batch.tokens, batch.labels, batch.text):
        toks = v.to_str_tokens(row)
        assert toks[:5] == ["<sos>", "I", "b", "6", "<sot>"]
        assert toks[-4:-2] == ["<eot>", "<art>"] and toks[-1] == "<eos>"
        assert toks[-2] == ("NONE" if label == NO_OCCURRENCE else str(label))
        assert "".join(toks[5:-4]) == "".join(task.terminals[t] for t in text)
    assert batch.tokens.shape == (50, task.seq_len)
    assert task.n_ctx == 64 + 8


def test_pretrain_mixture_uses_every_family_and_follows_the_prior():
    task = PCFGTask(PCFGTaskConfig(text_length=32, count_window=16, index_occurrence=4,
                                   pair_index_occurrence=2, token_offset=16, prior="M"))
    batch = task.pretrain_batch(np.random.default_rng(2), 20000)
    v = task.vocab
    fam = np.array(v.to_str_tokens(batch.tokens[:, 1]))
    ops = np.array(v.to_str_tokens(batch.tokens[:, 2]))
    for f in FAMILIES:
        assert abs((fam == f).mean() - 0.2) < 0.02
    with_operand = fam != "T"
    assert abs((ops[with_operand] == "a").mean() - 0.9) < 0.01
    assert (ops[with_operand] == "c").sum() == 0  # prior M gives c weight 0
    assert (ops[~with_operand] == "NULL").all()
    # every label answers its own prompt (terminal ids are contiguous in the vocabulary)
    first_terminal = v.id(task.terminals[0])
    for row, label in zip(batch.tokens[:200], batch.labels[:200]):
        toks = v.to_str_tokens(row)
        q = Question(toks[1], None if toks[2] == "NULL" else toks[2])
        assert task.labels(row[None, 5:-4] - first_terminal, q)[0] == label


def test_same_seed_gives_identical_batches_and_streams_differ_by_step(task):
    a = task.pretrain_batch(task.step_rng("train", 7), 64)
    b = task.pretrain_batch(task.step_rng("train", 7), 64)
    c = task.pretrain_batch(task.step_rng("train", 8), 64)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_stream_yields_the_batches_of_its_steps_and_freezes_into_a_dataset(task):
    from tasks.config import FinetuneDataConfig
    from tasks.data import PCFGStream, freeze

    stream = PCFGStream(task, batch_size=8, finetune=FinetuneDataConfig(c_tr=1.0), start_step=3)
    first = next(iter(stream))
    np.testing.assert_array_equal(first["tokens"].numpy(), stream.batch(3).tokens)
    direct = task.finetune_batch(task.step_rng("train", 3), 8, FinetuneDataConfig(c_tr=1.0))
    np.testing.assert_array_equal(first["tokens"].numpy(), direct.tokens)
    reft = PCFGStream(task, batch_size=8, question=Question("C", "a"), stream="reft").batch(0)
    assert (reft.tokens[:, 2] == task.vocab.id("a")).all()
    dataset = freeze(stream.batch(0), task.vocab)
    assert len(dataset) == 8 and set(dataset.column_names) == {"tokens", "labels", "correlated", "text"}
    assert task.vocab.encode(dataset[0]["text"]) == dataset[0]["tokens"]
