"""Batched linear probes: training all points together equals training each alone; configs."""

import pytest
import torch

from wrapperlens.analysis.linear_probes import (
    PROBE_PRESETS,
    ProbeConfig,
    probe_split,
    standardize,
    train_probes,
)


def test_batched_probes_equal_probes_trained_one_point_at_a_time():
    gen = torch.Generator().manual_seed(4)
    features = torch.randn(3, 60, 5, generator=gen)
    labels = torch.randint(0, 3, (60,), generator=gen)
    train = torch.arange(45)
    config = ProbeConfig(steps=40, batch_size=16)
    weight, bias = train_probes(features, labels, train, config, n_classes=3)
    for p in range(3):
        w, b = train_probes(features[p : p + 1], labels, train, config, n_classes=3)
        torch.testing.assert_close(w[0], weight[p], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b[0], bias[p], atol=1e-5, rtol=1e-5)


def test_configs_are_validated_and_the_paper_preset_follows_the_paper():
    paper = PROBE_PRESETS["paper"]
    assert (paper.steps, paper.lr, paper.lr_milestones, paper.lr_gamma) == (
        4000, 1e-3, (2000, 3000, 3500), 0.1)
    with pytest.raises(ValueError, match="probe.test_fraction"):
        ProbeConfig(test_fraction=1.0)
    with pytest.raises(ValueError, match="probe.lr_milestones"):
        ProbeConfig(lr_milestones=(3, 2))


def test_the_split_holds_out_the_test_fraction_and_standardize_uses_train_statistics():
    train, test = probe_split(20, ProbeConfig(test_fraction=0.25, seed=3))
    assert len(test) == 5 and sorted(torch.cat([train, test]).tolist()) == list(range(20))
    again = probe_split(20, ProbeConfig(test_fraction=0.25, seed=3))
    assert torch.equal(again[0], train) and torch.equal(again[1], test)
    x = 5 * torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(0)) + 3
    z = standardize(x, train)
    torch.testing.assert_close(z[:, train].mean(1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, train].std(1), torch.ones(2, 4))
    with pytest.raises(ValueError, match="empty split"):
        probe_split(2, ProbeConfig(test_fraction=0.1))
