"""The twist classifier: held-out accuracy, class balance, texts without evidence, files."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from tinystories.story_source import StorySourceConfig, generate_records
from tinystories.twist_classifier import (
    TwistClassifier,
    TwistClassifierConfig,
    balanced_sample,
    classifier_accuracy,
    load_classifier,
    save_classifier,
    train_twist_classifier,
)
from wrapperlens.checkpoints import CheckpointError


@pytest.fixture(scope="module")
def trained():
    records = generate_records(StorySourceConfig(n_stories=700, seed=11))
    train, test = records[:500], records[500:]
    cfg = TwistClassifierConfig(n_buckets=2**12, steps=60)
    model = train_twist_classifier([r["story"] for r in train],
                                   ["Twist" in r["features"] for r in train], cfg)
    return model, test


def test_classifier_separates_held_out_twist_stories(trained):
    model, test = trained
    report = classifier_accuracy(model, [r["story"] for r in test],
                                 ["Twist" in r["features"] for r in test])
    assert report["accuracy"] >= 0.95 and report["balanced_accuracy"] >= 0.95
    assert report["n_positive"] + report["n_negative"] == len(test)


def test_texts_without_known_ngrams_are_not_twist_stories(trained):
    model, _ = trained
    probs = model.predict_proba(["", "qzx vvw plok", "Then came a big surprise: the old box was a "
                                 "magic door to a secret park."])
    assert probs[0] == 0.5  # no bias: no evidence, no twist (a twist needs p > 0.5)
    assert probs[1] <= 0.5  # unseen words hit only (near-)empty hash buckets
    assert probs[2] > 0.9


def test_balanced_sample_and_errors():
    labels = [True] * 3 + [False] * 10
    chosen = balanced_sample(labels, max_per_class=100, seed=0)
    assert sum(labels[i] for i in chosen) == 3 and len(chosen) == 6
    with pytest.raises(ValueError, match="0 positive"):
        balanced_sample([False] * 4, 10, 0)
    with pytest.raises(ValueError, match="classifier.steps"):
        TwistClassifierConfig(steps=0)


def test_save_and_load_round_trip(trained, tmp_path):
    model, test = trained
    save_classifier(model, tmp_path / "clf", {"held_out": {"accuracy": 1.0}})
    loaded, info = load_classifier(tmp_path / "clf")
    stories = [r["story"] for r in test[:20]]
    assert loaded.predict_proba(stories).tolist() == model.predict_proba(stories).tolist()
    assert info["held_out"] == {"accuracy": 1.0} and info["config"]["n_buckets"] == 2**12


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("weights.weight"), r"Missing key.*weights\.weight"),
    (lambda t: t.__setitem__("bias", torch.zeros(1)), r"Unexpected key.*bias"),
    (lambda t: t.__setitem__("weights.weight", torch.zeros(8, 1)),
     r"weights\.weight.*\[8, 1\].*\[64, 1\]"),
])
def test_load_refuses_a_missing_extra_or_mis_shaped_tensor_naming_file_and_tensor(
    tmp_path, edit, message
):
    # A missing weight must not come back as the zero initialisation (a classifier that
    # answers 0.5 for every text), nor an extra one be dropped.
    save_classifier(TwistClassifier(TwistClassifierConfig(n_buckets=64)), tmp_path / "clf", {})
    path = tmp_path / "clf" / "classifier.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"(?s)classifier\.safetensors.*" + message):
        load_classifier(tmp_path / "clf")


def test_training_works_under_no_grad():
    """A stage builds its classifier on first evaluation, which runs under `torch.no_grad`."""
    texts = ["and then suddenly a twist"] * 8 + ["a calm happy day"] * 8
    labels = [True] * 8 + [False] * 8
    with torch.no_grad():
        model = train_twist_classifier(texts, labels, TwistClassifierConfig(n_buckets=256, steps=20))
    assert classifier_accuracy(model, texts, labels)["accuracy"] == 1.0
