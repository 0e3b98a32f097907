"""Probe reports: decodable-by-construction labels, shuffled labels, random-init baselines."""

import pytest
import torch

from wrapperlens.analysis.probing import (
    _with_random_baselines,
    ProbeConfig,
    plot_probe_accuracy,
    probe_accuracy_by_layer,
    probe_features_by_layer,
)
from wrapperlens.models import ModelConfig, build_model

VOCAB, N_CLASSES, SEQ = 12, 4, 6


def _written_model():
    """A 2-layer model whose embedding writes label(t) = t % 4 into one of 4 orthogonal directions.

    W_E[t] = 3 * e_{t % 4} plus small noise in the other dimensions, W_pos = 0; the blocks keep
    their random initialisation (small outputs), so the label is linearly readable at every point.
    """
    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, init_seed=5), n_ctx=SEQ,
                        d_vocab=VOCAB)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embed = 0.05 * torch.randn(VOCAB, 16, generator=gen)
        embed[:, :N_CLASSES] = 3.0 * torch.nn.functional.one_hot(torch.arange(VOCAB) % N_CLASSES)
        model.embed.W_E.copy_(embed)
        model.pos_embed.W_pos.zero_()
    return model


def _data(n=800, seed=1):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, SEQ), generator=gen)
    positions = torch.randint(2, SEQ, (n,), generator=gen)
    return tokens, positions, gen


def test_probe_decodes_a_label_written_into_the_residual_and_not_a_shuffled_one(tmp_path):
    model = _written_model()
    tokens, positions, gen = _data()
    label = tokens[torch.arange(len(tokens)), positions] % N_CLASSES
    report = probe_accuracy_by_layer({"written": model}, tokens, label, positions)
    assert report.point_names == ["B0", "B1", "B2"] and report.baselines == ["random init"]
    assert set(report.accuracy) == {"written", "random init"}
    assert min(report.accuracy["written"]) >= 0.98
    assert len(report.accuracy["random init"]) == 3
    assert 0.2 <= report.majority_rate <= 0.35 and report.n_test == 200

    shuffled = label[torch.randperm(len(label), generator=gen)]
    chance = probe_accuracy_by_layer({"written": model}, tokens, shuffled, positions)
    assert max(chance.accuracy["written"]) <= chance.majority_rate + 0.1
    assert max(chance.train_accuracy["written"]) > max(chance.accuracy["written"])  # it fit noise

    path = plot_probe_accuracy(report, tmp_path / "probe.png", title="written label")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert "random init" in report.table() and "majority rate" in report.table()


def test_random_baseline_has_the_shape_but_not_the_weights_of_each_model():
    a = _written_model()
    b = build_model(ModelConfig(n_layers=1, d_model=8, n_heads=2), n_ctx=SEQ, d_vocab=VOCAB)
    tokens, positions, _ = _data(n=80)
    report = probe_accuracy_by_layer({"a": a, "b": b}, tokens, lambda t: t[:, -1] % 2,
                                     config=ProbeConfig(steps=5), points=[0, 1])
    assert report.baselines == ["random init (a)", "random init (b)"]
    assert report.point_names == ["B0", "B1"]
    models, names = _with_random_baselines({"a": a, "b": b}, seed=3)
    for model, baseline in ((a, models[names[0]]), (b, models[names[1]])):
        ours, theirs = model.state_dict(), baseline.state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
        assert not torch.equal(ours["blocks.0.mlp.W_in"], theirs["blocks.0.mlp.W_in"])
    with pytest.raises(ValueError, match="points"):
        probe_accuracy_by_layer({"b": b}, tokens, tokens[:, 0], config=ProbeConfig(steps=5),
                                points=[2])


def test_several_random_inits_are_distinct_models_of_consecutive_seeds():
    a = _written_model()
    models, names = _with_random_baselines({"a": a}, seed=3, inits=3)
    assert names == ["random init", "random init #2", "random init #3"]
    weights = [models[n].state_dict()["blocks.0.mlp.W_in"] for n in names]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    again, _ = _with_random_baselines({"a": a}, seed=4, inits=1)  # #2 is init seed 4
    assert torch.equal(again["random init"].state_dict()["blocks.0.mlp.W_in"], weights[1])
    with pytest.raises(ValueError, match="random_inits=0"):
        _with_random_baselines({"a": a}, seed=3, inits=0)


def test_feature_probes_read_bits_written_into_the_mean_of_the_last_tokens(tmp_path):
    """Feature f of a sample = bit f of its final token, which fills its last 3 real positions."""
    model = build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, init_seed=6), n_ctx=SEQ,
                        d_vocab=8)
    bits = (torch.arange(8)[:, None] >> torch.arange(3)) & 1  # [token, feature]
    with torch.no_grad():
        model.embed.W_E.zero_()
        model.embed.W_E[:, :3] = 2.0 * bits - 1.0  # +-1 in direction f: bias-free readable
        model.pos_embed.W_pos.zero_()
    gen = torch.Generator().manual_seed(7)
    final = torch.randint(0, 8, (400,), generator=gen)
    lengths = torch.randint(3, SEQ + 1, (400,), generator=gen)
    tokens = torch.randint(0, 8, (400, SEQ), generator=gen)  # padding after `lengths` is noise
    for i, n in enumerate(lengths.tolist()):
        tokens[i, n - 3 : n] = final[i]
    features = bits[final].float()
    report = probe_features_by_layer({"m": model}, tokens, features, ["f0", "f1", "f2"],
                                     last_k=3, lengths=lengths)
    assert all(a >= 0.98 for point in report.accuracy["m"] for a in point)
    assert len(report.majority_rate) == 3 and report.baselines == ["random init"]
    shuffled = features[torch.randperm(400, generator=gen)]
    chance = probe_features_by_layer({"m": model}, tokens, shuffled, last_k=3, lengths=lengths)
    assert all(a <= max(m, 1 - m) + 0.12 for point in chance.accuracy["m"] for a, m in
               zip(point, chance.majority_rate))  # the train split's majority may lose on test
    path = plot_probe_accuracy(report, tmp_path / "features.png")
    assert path.stat().st_size > 5000


def test_labels_that_do_not_fit_n_classes_are_refused():
    tokens, _, _ = _data(n=20)
    with pytest.raises(ValueError, match="n_classes"):
        probe_accuracy_by_layer({"m": _written_model()}, tokens, tokens[:, 0], n_classes=3)
