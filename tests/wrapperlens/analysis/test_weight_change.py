"""Relative weight change of heads, neurons and layer parts against norms computed by hand."""

import copy

import pytest
import torch

from wrapperlens.analysis.weight_change import weight_changes
from wrapperlens.models import hooked_transformer

CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=24, n_ctx=8, d_vocab=12,
           act_fn="gelu", normalization_type="LN", default_prepend_bos=False)  # fmt: skip


@pytest.fixture(scope="module")
def pretrained():
    return hooked_transformer(CFG, init_seed=0).eval()


def test_relative_weight_change_by_hand(pretrained):
    ft = copy.deepcopy(pretrained)
    with torch.no_grad():
        ft.blocks[0].attn.W_O[1].mul_(3.0)
        ft.blocks[1].mlp.W_in[:, 5].add_(1.0)
    head_params = [
        pretrained.blocks[0].attn.get_parameter(n)[1]
        for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
    ]
    norm = torch.cat([p.flatten() for p in head_params]).norm()
    expected = (2.0 * pretrained.blocks[0].attn.W_O[1].norm() / norm).item()
    mlp = pretrained.blocks[1].mlp
    neuron = torch.cat([mlp.W_in[:, 5], mlp.b_in[5:6], mlp.W_out[5]]).norm()
    layer = torch.cat([p.flatten() for n, p in pretrained.named_parameters()
                       if n.startswith(("blocks.1.mlp.", "blocks.1.ln2."))]).norm()
    delta = CFG["d_model"] ** 0.5  # W_in[:, 5] moved by 1.0 in each of d_model entries
    got = weight_changes(pretrained, ft, [("head", 0, 1), ("head", 0, 0), ("neuron", 1, 5),
                                          ("neuron", 1, 4), ("mlp", 1, None), ("attn", 1, None)])
    assert got[0] == pytest.approx(expected, rel=1e-5)
    assert got[1] == 0.0 and got[3] == 0.0 and got[5] == 0.0
    assert got[2] == pytest.approx(delta / neuron.item(), rel=1e-5)
    assert got[4] == pytest.approx(delta / layer.item(), rel=1e-5)
