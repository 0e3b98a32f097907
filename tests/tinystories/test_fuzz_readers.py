"""Fuzzed readers of TinyStories files: `prepare.json` and GPT-Neo HF directories.

Every corrupted input is read correctly or refused naming the file (outcomes and strategies in
`tests/fuzzing.py`); the counts are printed at the end of the module (`pytest -s`) and written to
`$WRAPPERLENS_FUZZ_COUNTS` when set.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from tests.fuzzing import (Tally, bit_flips, classify, dumps, fuzz_settings,
                           json_corruptions, text_corruptions, truncations)
from tinystories.gpt_neo import load_gpt_neo
from tinystories.prepare import PrepareConfig, prepare_stories, prepared_info
from wrapperlens.checkpoints import hooked_config_to_dict

TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    TALLY.write(__name__)



def _copy_with(directory: Path, name: str, data: bytes) -> Path:
    target = Path(tempfile.mkdtemp(prefix="fz_")) / directory.name
    target.mkdir()
    for p in directory.iterdir():
        if p.is_file():
            shutil.copyfile(p, target / p.name)
    (target / name).write_bytes(data)
    return target


# ------------------------------------------------------------------------------ prepare.json
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_stories(PrepareConfig(n_stories=40, story_seed=1, test_fraction=0.25), out)
    small = tmp_path_factory.mktemp("summary")  # prepared_info reads prepare.json only
    shutil.copyfile(out / "prepare.json", small / "prepare.json")
    return small


@given(data=st.data())
@fuzz_settings(1100)
def test_prepare_json_is_read_or_refused_by_name(prepared, data):
    raw = (prepared / "prepare.json").read_bytes()
    expected = prepared_info(prepared)
    what, blob = data.draw(st.one_of(
        text_corruptions(raw),
        json_corruptions(json.loads(raw), size_keys=("n_stories",)).map(
            lambda d: (d[0], dumps(d[1])))))
    target = _copy_with(prepared, "prepare.json", blob)
    outcome, detail = classify(
        lambda: prepared_info(target), expected, ["prepare.json"],
        equal=lambda a, b: (a.text_format, a.labelled, a.feature, a.protocols)
        == (b.text_format, b.labelled, b.feature, b.protocols))
    TALLY.check("prepare.json (prepared_info)", outcome, detail, what)
    shutil.rmtree(target.parent)


# ------------------------------------------------------------------------ GPT-Neo directories
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("gpt_neo")
    config = GPTNeoConfig(vocab_size=11, max_position_embeddings=16, hidden_size=8, num_layers=2,
                          attention_types=[[["global", "local"], 1]], num_heads=2, window_size=4,
                          bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    GPTNeoForCausalLM(config).save_pretrained(directory)
    return directory


def _neo_result(directory: Path):
    model = load_gpt_neo(directory, with_tokenizer=False)
    return hooked_config_to_dict(model.cfg), {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b) -> bool:
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(
        a[1][k].dtype == b[1][k].dtype and torch.equal(a[1][k], b[1][k]) for k in a[1])


def _weight_edits(path: Path):
    tensors = load_file(str(path))
    names = sorted(tensors)

    def save(new) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            save_file(new, f"{tmp}/x", metadata={"format": "pt"})
            return Path(f"{tmp}/x").read_bytes()

    return st.one_of(
        st.tuples(st.sampled_from(names), st.sampled_from(
            [torch.float16, torch.bfloat16, torch.float64, torch.int32]))
        .map(lambda nd: (f"{nd[0]} cast to {nd[1]}", save({**tensors, nd[0]: tensors[nd[0]].to(nd[1])}))),
        st.sampled_from(names).map(lambda n: (f"{n} flattened short", save(
            {**tensors, n: tensors[n].flatten()[:-1].clone()}))),
        st.sampled_from(names).map(lambda n: (f"dropped {n}", save(
            {k: v for k, v in tensors.items() if k != n}))),
        st.sampled_from(names).map(lambda n: (f"extra {n}", save(
            {**tensors, "transformer.extra." + n: tensors[n].clone()}))),
        st.tuples(st.sampled_from(names), st.sampled_from([math.nan, math.inf, -math.inf]))
        .map(lambda nv: (f"{nv[0]} holds {nv[1]}", save(
            {**tensors, nv[0]: tensors[nv[0]].clone().fill_(nv[1])}))),
    )


NEO_SIZES = ("hidden_size", "num_layers", "num_heads", "vocab_size", "max_position_embeddings",
             "window_size", "intermediate_size")


@given(data=st.data())
@fuzz_settings(1100)
def test_gpt_neo_directory_is_read_or_refused_by_name(hf_dir, data):
    config_raw = (hf_dir / "config.json").read_bytes()
    weights = hf_dir / "model.safetensors"
    expected = _neo_result(hf_dir)
    # Flipped bits in the tensor data are not in the list: an HF directory has no checksum, so
    # they are a different checkpoint; a NaN / inf there is (refused).
    header = 8 + int.from_bytes(weights.read_bytes()[:8], "little")
    head = weights.read_bytes()[:header]
    what, name, blob = data.draw(st.one_of(
        st.one_of(text_corruptions(config_raw), json_corruptions(
            json.loads(config_raw), size_keys=NEO_SIZES).map(lambda d: (d[0], dumps(d[1]))))
        .map(lambda wb: (f"config.json {wb[0]}", "config.json", wb[1])),
        st.one_of(bit_flips(head).map(lambda wb: (wb[0], wb[1] + weights.read_bytes()[header:])),
                  truncations(weights.read_bytes()), _weight_edits(weights))
        .map(lambda wb: (f"model.safetensors {wb[0]}", "model.safetensors", wb[1]))))
    target = _copy_with(hf_dir, name, blob)
    outcome, detail = classify(lambda: _neo_result(target), expected, [name], equal=_same)
    TALLY.check("GPT-Neo dir (load_gpt_neo)", outcome, detail, what)
    shutil.rmtree(target.parent)
