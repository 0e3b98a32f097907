"""Story-feature probes: high accuracy where the trace is in the probed text, chance on shuffled
labels, and story-only inputs."""

import pytest
import torch

from tinystories.prepare import PrepareConfig, build_run_tokenizer, load_prepared, prepare_stories
from tinystories.story_probes import ProbeDataConfig, probe_story_features, story_probe_inputs
from tinystories.tokenizer import TokenizerConfig, load_tokenizer
from wrapperlens.analysis.probing import ProbeConfig
from wrapperlens.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe_data")
    prepare_stories(PrepareConfig(n_stories=700, story_seed=3, test_fraction=0.1), out / "prepared")
    tokenizer = load_tokenizer(build_run_tokenizer(out / "prepared", out / "tok",
                                                   TokenizerConfig(vocab_size=1024)))
    cfg = ProbeDataConfig(split="train", n_stories=600)
    return story_probe_inputs(out / "prepared", tokenizer, 256, cfg), tokenizer, out / "prepared"


def test_inputs_are_story_only_text_with_true_labels(inputs):
    probe_inputs, tokenizer, prepared = inputs
    records = load_prepared(prepared, "all", "train")
    for i in (0, 5, 17):
        ids = probe_inputs.tokens[i, : probe_inputs.lengths[i]].tolist()
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids[1:]) == records[i]["story"]  # no instruction
        assert probe_inputs.labels[i].tolist() == [
            float(f in records[i]["features"]) for f in probe_inputs.feature_names]
    assert probe_inputs.tokens.shape[0] == 600


def test_probes_read_traces_at_the_end_of_the_story_and_not_shuffled_labels(inputs):
    probe_inputs, _, _ = inputs
    names = probe_inputs.feature_names
    moral = names.index("MoralValue")
    # Column 0 replaced by a shuffled balanced label, unrelated to the text: any classifier scores
    # 0.5 in expectation (a bias-free probe cannot even learn a base rate).
    labels = probe_inputs.labels.clone()
    perm = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))
    labels[:, 0] = (perm < labels.shape[0] // 2).float()
    shuffled = type(probe_inputs)(probe_inputs.tokens, probe_inputs.lengths, labels, names)
    cfg = ModelConfig(architecture="llama", n_layers=1, d_model=32, n_heads=2, n_ctx=256)
    model = build_model(cfg, d_vocab=1024).eval()
    report = probe_story_features({"random": model}, shuffled, ProbeConfig(steps=200), last_k=10,
                                  points=[0])
    accuracy = report.accuracy["random"][0]  # B0: the mean embedding of the last 10 tokens
    # "The moral of the story is: ..." is the last sentence: readable from the last 10 tokens.
    assert accuracy[moral] >= 0.97
    assert abs(accuracy[0] - 0.5) <= 0.12  # n_test = 150: one standard deviation is 0.04
    assert report.n_test == 150

