"""Checkpoint comparison: checked against identities, an HSIC reference and hand-computed norms."""

import copy

import pytest
import torch

from tinystories.compare import (
    compare_checkpoints,
    linear_cka,
    plot_comparison,
    probe_transfer,
    weight_change,
)
from wrapperlens.analysis.probing import ProbeConfig, probe_features_by_layer
from wrapperlens.models import ModelConfig, build_model


def _hsic_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA through the kernel (HSIC) formula, independent of the feature-space one."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n

    def hsic(k, l):
        return torch.trace(k @ h @ l @ h) / (n - 1) ** 2

    k, l = x @ x.T, y @ y.T
    return float(hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l)))


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(architecture="llama", n_layers=2, d_model=16, n_heads=2, n_ctx=32)
    return build_model(cfg, d_vocab=50).eval()


def test_linear_cka_matches_the_hsic_formula_and_is_invariant_to_rotation_and_scale():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=gen)
    y = x @ torch.randn(8, 5, generator=gen) + 0.5 * torch.randn(60, 5, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    rotated = 3.7 * (x.double() @ q)  # an explicitly rotated and isotropically scaled copy
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x, y), abs=1e-10)
    assert linear_cka(rotated, y) == pytest.approx(_hsic_cka(x, y), abs=1e-10)
    assert _hsic_cka(rotated, y) == pytest.approx(_hsic_cka(x, y), abs=1e-10)
    assert linear_cka(x, rotated) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, y) < 0.99
    # Not invariant to an anisotropic scaling: the test can tell the formulas apart.
    stretched = x * torch.tensor([10.0] + [1.0] * 7)
    assert linear_cka(x, stretched) < 0.9


def test_identical_checkpoints_compare_as_identical(model, tmp_path):
    tokens = torch.randint(0, 50, (6, 12), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([12, 7, 9, 12, 3, 10])
    report = compare_checkpoints({"a": model, "b": copy.deepcopy(model)}, tokens, lengths)
    assert report["points"] == ["B0", "B1", "B2"]
    assert report["cosine"]["b"] == pytest.approx([1.0] * 3, abs=1e-9)
    assert report["relative_norm"]["b"] == pytest.approx([0.0] * 3, abs=1e-9)
    assert report["cka"]["b"] == pytest.approx([1.0] * 3, abs=1e-9)
    assert report["weight_change"]["b"]["total"]["relative"] == 0.0
    paths = plot_comparison(report, tmp_path)
    assert [p.name for p in paths] == ["residual_similarity.png", "weight_change.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_weight_change_of_a_perturbed_copy_equals_the_hand_computed_value(model):
    other = copy.deepcopy(model)
    delta = torch.full_like(other.blocks[1].mlp.W_in, 0.01)
    with torch.no_grad():
        other.blocks[1].mlp.W_in += delta
    def norm(params):
        return torch.sqrt(sum((p.detach().double() ** 2).sum() for p in params))

    mlp_norm, total_norm = norm(model.blocks[1].mlp.parameters()), norm(model.parameters())
    change = weight_change(model, other)
    assert change["blocks.1.mlp"]["absolute"] == pytest.approx(float(delta.norm()), rel=1e-6)
    expected = float(delta.norm() / mlp_norm)
    assert change["blocks.1.mlp"]["relative"] == pytest.approx(expected, rel=1e-6)
    assert change["total"]["relative"] == pytest.approx(float(delta.norm() / total_norm), rel=1e-6)
    assert change["blocks.0.mlp"]["absolute"] == 0.0
    assert change["blocks.1.attn"]["absolute"] == 0.0
    assert "blocks.1.ln2" in change and "embed" in change and "unembed" in change


def test_probe_transfer_to_itself_equals_its_own_probe_accuracy(model):
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 50, (80, 14), generator=gen)
    # One label readable from the last tokens, one random.
    labels = torch.stack([(tokens[:, -1] < 25).float(),
                          torch.randint(0, 2, (80,), generator=gen).float()], dim=1)
    config = ProbeConfig(steps=60)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.blocks[0].mlp.W_out.mul_(3.0)
    transfer = probe_transfer({"a": model, "b": other}, tokens, labels, last_k=3, config=config)
    own = probe_features_by_layer({"a": model, "b": other}, tokens, labels, last_k=3, config=config)
    for name in ("a", "b"):
        assert transfer[name][name] == own.accuracy[name]
    assert transfer["a"]["b"][0] == transfer["a"]["a"][0]  # B0 (embeddings) is unchanged
    assert len(transfer["a"]["b"]) == 3 and len(transfer["a"]["b"][0]) == 2
